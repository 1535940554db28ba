"""Metrics for streaming transcription, defined once for the CLI, notebooks, server and benchmarks.

- WER/CER through ``jiwer`` after a named text normalizer (Whisper's English normalizer for
  English, the basic multilingual one otherwise); the normalizer is always reported.
- Commit latency per word: ``emitted_at`` of the commit event minus the end time of the same
  word in the audio, where audio word times come from an offline word-timestamp pass and are
  matched to streamed words by aligning the two word sequences.
- First-text latency, tail latency, real-time factor and lag.

Events follow the rtlab event contract: a commit is
``{"type": "commit", "words": [{"text", "start", "end"}, ...], "emitted_at": float}`` and the
last event of a stream is ``{"type": "summary", "emitted_at", "audio_seconds", ...}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.metadata
import math
import os
import platform
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jiwer
import numpy as np

from ..kernels import cpu_description, kernel_overrides

__all__ = [
    "NORMALIZERS", "ErrorRate", "LagSeries", "LatencyStats", "LoadSampler", "RateDifference", "WordDifference", "WordsKept", "align_words", "cer",
    "commit_latencies", "environment_info", "first_text_latency", "get_normalizer",
    "lag_series", "normalizer_for_language", "paired_difference", "rtf", "tail_latency", "wer", "word_differences", "words_kept",
]  # fmt: skip

#: Names accepted by :func:`get_normalizer`. ``"none"`` leaves text untouched (for debugging
#: a normalizer's effect, never for reported numbers).
NORMALIZERS: tuple[str, ...] = ("whisper-english", "whisper-basic", "none")

DEFAULT_NORMALIZER = "whisper-english"


# --------------------------------------------------------------------------- normalizers


@functools.lru_cache(maxsize=None)
def get_normalizer(name: str) -> Callable[[str], str]:
    """Return the text normalizer called ``name`` (one of :data:`NORMALIZERS`).

    Instances are cached: the English normalizer loads a spelling table on construction.
    Raises ``ValueError`` listing the valid names for an unknown name.
    """
    if name == "whisper-english":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    if name == "whisper-basic":
        from whisper_normalizer.basic import BasicTextNormalizer

        return BasicTextNormalizer()
    if name == "none":
        return _identity
    raise ValueError(f"unknown normalizer {name!r}; valid names: {', '.join(NORMALIZERS)}")


def _identity(text: str) -> str:
    return text


def normalizer_for_language(language: str | None) -> str:
    """Name of the normalizer to use for ``language``.

    English (``None``, ``"en"``, ``"en-US"`` ...) gets ``"whisper-english"``; every other
    language gets ``"whisper-basic"``, because the English normalizer rewrites numbers and
    spellings in ways that are wrong for other languages.
    """
    if language is None:
        return "whisper-english"
    lang = language.strip().lower().replace("_", "-")
    if lang in ("", "en", "english") or lang.startswith("en-"):
        return "whisper-english"
    return "whisper-basic"


def _normalize(text: str, normalizer: str) -> str:
    # Collapse whitespace so that CER never counts runs of spaces left by a normalizer.
    return " ".join(get_normalizer(normalizer)(text).split())


# --------------------------------------------------------------------------- WER / CER

_COUNT_FIELDS = ("substitutions", "deletions", "insertions", "hits")


@dataclass(frozen=True)
class ErrorRate:
    """A word (or character) error rate with the edit counts it was computed from.

    ``value`` is a fraction: ``(substitutions + deletions + insertions) / reference_words``.
    For CER the counts are characters (``unit == "char"``) though the field keeps its name.
    With no reference words at all the rate is undefined, whatever the hypothesis: ``value``
    is ``inf``, :attr:`defined_value` and ``to_dict`` give ``None`` (a stream that said nothing
    about nothing is not a perfect one). The hypothesis's words are still counted as
    insertions, so that :meth:`pool` holds them against the other files' words.
    """

    value: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_words: int
    normalizer: str
    unit: str = "word"

    @classmethod
    def from_counts(
        cls, *, substitutions: int, deletions: int, insertions: int, hits: int,
        normalizer: str, unit: str = "word",
    ) -> ErrorRate:  # fmt: skip
        """Build an ErrorRate from edit counts; the reference length is ``S + D + hits``."""
        n = substitutions + deletions + hits
        value = (substitutions + deletions + insertions) / n if n else math.inf
        return cls(value, substitutions, deletions, insertions, hits, n, normalizer, unit)

    @classmethod
    def pool(cls, rates: Iterable[ErrorRate]) -> ErrorRate:
        """Corpus-level rate over several files: edit counts are summed, not rates averaged.
        A file without reference words adds its insertions and no words (it is not counted
        as a perfect file); when no file has reference words the pooled rate is undefined.

        Raises ``ValueError`` when the rates used different normalizers or units, since their
        counts are not comparable, or when ``rates`` is empty.
        """
        rates = list(rates)
        if not rates:
            raise ValueError("cannot pool an empty list of error rates")
        kinds = {(r.normalizer, r.unit) for r in rates}
        if len(kinds) > 1:
            raise ValueError(f"cannot pool error rates computed differently: {sorted(kinds)}")
        counts = {k: sum(getattr(r, k) for r in rates) for k in _COUNT_FIELDS}
        return cls.from_counts(**counts, normalizer=rates[0].normalizer, unit=rates[0].unit)

    @property
    def errors(self) -> int:
        """Substitutions, deletions and insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def defined_value(self) -> float | None:
        """``value``, or None where it is undefined (``inf``: no reference words). Tables and
        JSON take this one: JSON has no infinity, and ``json.dumps`` would write
        ``Infinity``, which strict parsers refuse."""
        return self.value if math.isfinite(self.value) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``value`` is ``None`` when undefined)."""
        return {**dataclasses.asdict(self), "value": self.defined_value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorRate:
        """Inverse of :meth:`to_dict`: the value is recomputed from the counts, except that
        one written as ``None`` (undefined) is read back undefined, never as a number."""
        counts = {k: int(data[k]) for k in _COUNT_FIELDS}
        rate = cls.from_counts(
            **counts, normalizer=str(data["normalizer"]), unit=str(data.get("unit", "word"))
        )
        if "value" in data and data["value"] is None:
            rate = dataclasses.replace(rate, value=math.inf)
        return rate


def _as_list(texts: list[str] | tuple[str, ...] | str) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _error_rate(
    references: list[str] | str,
    hypotheses: list[str] | str,
    normalizer: str,
    unit: str,
) -> ErrorRate:
    refs = _as_list(references)
    hyps = _as_list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    kept_refs: list[str] = []
    kept_hyps: list[str] = []
    orphan_insertions = 0
    for ref, hyp in zip(refs, hyps):
        ref_n, hyp_n = _normalize(ref, normalizer), _normalize(hyp, normalizer)
        if ref_n:
            kept_refs.append(ref_n)
            kept_hyps.append(hyp_n)
        else:
            # jiwer (< 4) refuses empty references; every hypothesis unit there is an
            # insertion, which is what an alignment against nothing would give anyway.
            orphan_insertions += len(hyp_n.split()) if unit == "word" else len(hyp_n)
    s = d = i = h = 0
    if kept_refs:
        process = jiwer.process_words if unit == "word" else jiwer.process_characters
        out = process(kept_refs, kept_hyps)
        s, d, i, h = out.substitutions, out.deletions, out.insertions, out.hits
    return ErrorRate.from_counts(
        substitutions=s, deletions=d, insertions=i + orphan_insertions, hits=h,
        normalizer=normalizer, unit=unit,
    )  # fmt: skip


def wer(
    references: list[str] | str,
    hypotheses: list[str] | str,
    normalizer: str = DEFAULT_NORMALIZER,
) -> ErrorRate:
    """Corpus-level word error rate of ``hypotheses`` against ``references``.

    Both sides go through the named normalizer first. Pairs whose normalized reference is
    empty are not given to jiwer; their hypothesis words are counted as insertions. When
    every reference is empty the rate is undefined (``inf``; see :class:`ErrorRate`).
    """
    return _error_rate(references, hypotheses, normalizer, "word")


def cer(
    references: list[str] | str,
    hypotheses: list[str] | str,
    normalizer: str = DEFAULT_NORMALIZER,
) -> ErrorRate:
    """Corpus-level character error rate (spaces count as characters, as in jiwer)."""
    return _error_rate(references, hypotheses, normalizer, "char")


@dataclass(frozen=True)
class RateDifference:
    """How much higher one system's pooled error rate is than another's on the same
    utterances (``value``: a's rate minus b's, as a fraction), with a paired bootstrap
    confidence interval from ``low`` to ``high``: the utterances (or groups of them) are
    drawn with replacement ``resamples`` times and the difference pooled again each time.
    ``groups`` is how many units were drawn. An interval that holds 0 means the sets are
    too small to tell the two apart at that ``confidence``. With one unit there is no
    interval (``low`` and ``high`` are None): every draw is that unit, and a zero-wide
    interval would read as certainty where there is no evidence of spread at all."""

    value: float
    low: float | None
    high: float | None
    confidence: float
    resamples: int
    groups: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self, unit: str = "groups") -> str:
        """``+2.7 points (95% CI -0.9 to +6.1, 5 groups)``; ``unit`` names what was drawn
        (``"clips"``, ``"files"``). With one unit: ``+2.7 points (1 clip: no interval)``."""
        if self.low is None or self.high is None:
            one = unit[:-1] if self.groups == 1 and unit.endswith("s") else unit
            return f"{100 * self.value:+.1f} points ({self.groups} {one}: no interval)"
        return (f"{100 * self.value:+.1f} points ({100 * self.confidence:.0f}% CI {100 * self.low:+.1f} to "
                f"{100 * self.high:+.1f}, {self.groups} {unit})")  # fmt: skip


def paired_difference(
    a: Sequence[ErrorRate],
    b: Sequence[ErrorRate],
    groups: Sequence[Any] | None = None,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> RateDifference:
    """Pooled ``a`` minus pooled ``b`` (per-utterance error rates of two systems on the same
    references, in the same order), with a percentile bootstrap interval over the
    utterances; ``groups`` (one key per utterance) makes utterances that are not
    independent (the same clip at several shifts) be drawn together. The same ``seed``
    gives the same interval. With a single utterance or group there is no interval
    (see :class:`RateDifference`).

    Raises ``ValueError`` when the lists differ in length, an utterance's reference counts
    differ between the two (not the same references), or nothing is referenced."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists, not {len(a)} and {len(b)}")
    if groups is not None and len(groups) != len(a):
        raise ValueError(f"{len(groups)} group keys for {len(a)} utterances")
    keys = list(range(len(a))) if groups is None else list(groups)
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    sums = np.zeros((len(index), 3))  # a's errors, b's errors, reference words
    for key, rate_a, rate_b in zip(keys, a, b):
        if rate_a.reference_words != rate_b.reference_words or rate_a.unit != rate_b.unit:
            raise ValueError("paired_difference compares two systems on the same references; "
                             f"an utterance has {rate_a.reference_words} reference words in one and {rate_b.reference_words} "
                             "in the other")  # fmt: skip
        sums[index[key]] += (rate_a.errors, rate_b.errors, rate_a.reference_words)
    if sums[:, 2].sum() == 0:
        raise ValueError("paired_difference needs reference words")
    return _drawn_by_group(sums, confidence, resamples, seed)


def grouped_difference(
    a: Sequence[ErrorRate],
    a_groups: Sequence[Any],
    b: Sequence[ErrorRate],
    b_groups: Sequence[Any],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> RateDifference:
    """Pooled ``a`` minus pooled ``b`` where the two ran on different utterances of the same
    groups: a long stream's eleven repetitions of a clip against the clip streamed alone at
    four placements. Each side's rate over a group is pooled over its own utterances of
    it, and ``b``'s is weighted by ``a``'s reference words there, so that a group weighs
    the same on both sides: pooled as they came, a group ``b`` ran more often than ``a``
    would weigh more in ``b``'s rate, and two systems equal on every group could differ
    (French clips four times alone, English ones eleven times in their long stream). With
    the same utterances on both sides it is :func:`paired_difference`. The groups (one key
    per utterance on each side) are drawn with replacement, each bringing its utterances
    on both sides; the interval is the percentile bootstrap of the difference. The same
    ``seed`` gives the same interval; with one group there is none.

    Raises ``ValueError`` when a side's keys do not match its utterances, the two sides do
    not have the same groups, a group has no reference words on one side, or the rates
    are of different units."""
    if len(a) != len(a_groups) or len(b) != len(b_groups) or not a or not b:
        raise ValueError(f"grouped_difference needs one group key per utterance on each side and utterances on both, "
                         f"not {len(a)} rates with {len(a_groups)} keys and {len(b)} rates with {len(b_groups)} keys")  # fmt: skip
    if set(a_groups) != set(b_groups):
        only = sorted(map(str, set(a_groups) ^ set(b_groups)))
        raise ValueError(f"grouped_difference compares two systems on the same groups; only one side has {', '.join(only)}")
    if len({rate.unit for rate in [*a, *b]}) > 1:
        raise ValueError("grouped_difference compares rates of one unit (words or characters), not both")
    index = {key: i for i, key in enumerate(dict.fromkeys(a_groups))}
    sums = np.zeros((len(index), 4))  # a's errors and reference words, b's errors and reference words
    for key, rate in zip(a_groups, a):
        sums[index[key], :2] += (rate.errors, rate.reference_words)
    for key, rate in zip(b_groups, b):
        sums[index[key], 2:] += (rate.errors, rate.reference_words)
    empty = [str(key) for key, i in index.items() if not sums[i, 1] or not sums[i, 3]]
    if empty:
        raise ValueError(f"grouped_difference needs reference words in every group on both sides; none in {', '.join(empty)}")
    # b's errors at a's reference words in each group: b's rate there, weighed as in a
    drawable = np.column_stack([sums[:, 0], sums[:, 2] * sums[:, 1] / sums[:, 3], sums[:, 1]])
    return _drawn_by_group(drawable, confidence, resamples, seed)


def _drawn_by_group(sums: np.ndarray, confidence: float, resamples: int, seed: int) -> RateDifference:
    """The difference of pooled rates from per-group sums (a's errors, b's errors, reference
    words), with its percentile bootstrap interval over the groups."""
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"confidence must be between 0 and 1 and resamples at least 1, not {confidence!r}, {resamples!r}")
    value = (sums[:, 0].sum() - sums[:, 1].sum()) / sums[:, 2].sum()
    if len(sums) < 2:
        return RateDifference(float(value), None, None, confidence, resamples, len(sums))
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))
    drawn = sums[draws].sum(axis=1)  # (resamples, 3)
    words = np.where(drawn[:, 2] > 0, drawn[:, 2], np.nan)
    differences = (drawn[:, 0] - drawn[:, 1]) / words
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(differences, [tail, 100 - tail])
    return RateDifference(float(value), float(low), float(high), confidence, resamples, len(sums))


# --------------------------------------------------------------------------- words kept


@dataclass(frozen=True)
class WordsKept:
    """How much of an offline pass's transcript a streamed transcript of the same audio
    keeps, and what it adds.

    The two normalized word sequences are aligned with the fewest edits (offline as the
    reference): an offline word aligned to a streamed word is *kept*, whether the stream
    heard it the same way or not (a spelling the stream got differently is the speech
    heard, not dropped); an offline word with no streamed counterpart is *dropped*; a
    streamed word with no offline counterpart is *added*. ``fraction`` is kept words over
    offline words (``None`` when the offline pass heard nothing: then only ``added``
    says anything).
    """

    offline_words: int
    kept: int
    dropped: int
    added: int
    normalizer: str

    @property
    def fraction(self) -> float | None:
        return self.kept / self.offline_words if self.offline_words else None

    @classmethod
    def pool(cls, values: Iterable[WordsKept]) -> WordsKept:
        """Counts summed over several streams (a long stream weighs more than a short one).
        Raises ``ValueError`` for none, or for values scored with different normalizers."""
        values = list(values)
        if not values:
            raise ValueError("cannot pool an empty list of words-kept counts")
        if len({v.normalizer for v in values}) > 1:
            raise ValueError(f"cannot pool words kept under different normalizers: {sorted({v.normalizer for v in values})}")
        return cls(*(sum(getattr(v, name) for v in values) for name in ("offline_words", "kept", "dropped", "added")),
                   normalizer=values[0].normalizer)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, ``fraction`` included."""
        return {**dataclasses.asdict(self), "fraction": self.fraction}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WordsKept:
        """Inverse of :meth:`to_dict`."""
        return cls(int(data["offline_words"]), int(data["kept"]), int(data["dropped"]), int(data["added"]),
                   str(data["normalizer"]))  # fmt: skip


def words_kept(offline: str, streamed: str, normalizer: str = DEFAULT_NORMALIZER) -> WordsKept:
    """The words of ``offline`` (an offline pass's text) that ``streamed`` (the committed
    text of a stream of the same audio, by the same model) keeps; see :class:`WordsKept`."""
    reference = _normalize(offline, normalizer)
    hypothesis = _normalize(streamed, normalizer)
    if not reference:
        return WordsKept(0, 0, 0, len(hypothesis.split()), normalizer)
    if not hypothesis:
        n = len(reference.split())
        return WordsKept(n, 0, n, 0, normalizer)
    out = jiwer.process_words(reference, hypothesis)
    n = out.hits + out.substitutions + out.deletions
    return WordsKept(n, out.hits + out.substitutions, out.deletions, out.insertions, normalizer)


def confirmed_words_kept(offline: str, streamed: str, reference: str, normalizer: str = DEFAULT_NORMALIZER) -> WordsKept:
    """:func:`words_kept` over the offline pass's words that ``reference`` confirms (aligned
    with the fewest edits, heard as the reference has them): whether a stream dropped speech
    that the offline pass got right. A word the offline pass heard that the reference does
    not have (a mishearing that splits one word into several, a word made up) is not
    counted as a word to keep; ``added`` is the stream's words with no offline counterpart,
    as in :func:`words_kept`."""
    heard = _normalize(offline, normalizer).split()
    truth = _normalize(reference, normalizer).split()
    hypothesis = _normalize(streamed, normalizer).split()
    confirmed = set()
    if heard and truth:
        for chunk in jiwer.process_words(" ".join(truth), " ".join(heard)).alignments[0]:
            if chunk.type == "equal":
                confirmed.update(range(chunk.hyp_start_idx, chunk.hyp_end_idx))
    if not heard or not hypothesis:
        return WordsKept(len(confirmed), 0, len(confirmed), len(hypothesis), normalizer)
    dropped, added = set(), 0
    for chunk in jiwer.process_words(" ".join(heard), " ".join(hypothesis)).alignments[0]:
        if chunk.type == "delete":
            dropped.update(range(chunk.ref_start_idx, chunk.ref_end_idx))
        elif chunk.type == "insert":
            added += chunk.hyp_end_idx - chunk.hyp_start_idx
    lost = len(confirmed & dropped)
    return WordsKept(len(confirmed), len(confirmed) - lost, lost, added, normalizer)


# --------------------------------------------------------------------------- word differences


@dataclass(frozen=True)
class WordDifference:
    """One place where a text differs from a base text of the same audio (normalized words).

    ``reference`` is the reference's words there (None without a reference) and ``cost``
    the change in errors against the reference when only this place of the base takes the
    other text's words (positive: the other text is worse there; None without a
    reference). The places of two texts usually add up to the difference of their whole
    error counts, not always (two places can share an edit).
    """

    base: tuple[str, ...]
    other: tuple[str, ...]
    reference: tuple[str, ...] | None
    cost: int | None


def _reference_bounds(words: list[str], reference: list[str]) -> tuple[list[int], list[int]]:
    """For each boundary k of ``words`` (0 to len), the first and the last reference
    position aligned with it: the reference words between them are ones the words leave
    out there."""
    low, high = [len(reference)] * (len(words) + 1), [0] * (len(words) + 1)
    for _, i1, i2, j1, j2 in difflib.SequenceMatcher(None, words, reference, autojunk=False).get_opcodes():
        for k in range(i1, i2 + 1):
            j = j1 if i2 == i1 else j1 + (k - i1) * (j2 - j1) // (i2 - i1)
            low[k], high[k] = min(low[k], j), max(high[k], j2 if i2 == i1 else j)
    return low, high


def word_differences(
    base: str, other: str, reference: str | None = None, normalizer: str = DEFAULT_NORMALIZER
) -> list[WordDifference]:
    """Every place where ``other`` (e.g. a stream's text) differs from ``base`` (e.g. the
    offline pass's on the same audio), both normalized, in order; with ``reference``, the
    reference's words at each place and what the place costs (see :class:`WordDifference`)."""
    base_words, other_words = _normalize(base, normalizer).split(), _normalize(other, normalizer).split()
    truth = _normalize(reference, normalizer).split() if reference is not None else None

    def edits(words: list[str]) -> int:  # (both sides normalized already)
        return wer(" ".join(truth), " ".join(words), "none").errors

    total = edits(base_words) if truth is not None else 0
    low, high = _reference_bounds(base_words, truth) if truth is not None else ([], [])
    found = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, base_words, other_words, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        there = cost = None
        if truth is not None:
            there = tuple(truth[low[i1] : max(low[i1], high[i2])])
            cost = edits(base_words[:i1] + other_words[j1:j2] + base_words[i2:]) - total
        found.append(WordDifference(tuple(base_words[i1:i2]), tuple(other_words[j1:j2]), there, cost))
    return found


# --------------------------------------------------------------------------- alignment


def _tokens(words: Sequence[Mapping[str, Any]], normalizer: str) -> tuple[list[str], list[int]]:
    """Normalized tokens of ``words`` and, for each token, the index of its word."""
    tokens: list[str] = []
    owners: list[int] = []
    for index, word in enumerate(words):
        # A word may normalize to nothing ("uh", "-") or to several tokens ("Mr." stays one,
        # but "don't-care" or "3rd-party" can split); each token keeps its word's index.
        for token in _normalize(str(word.get("text", "")), normalizer).split():
            tokens.append(token)
            owners.append(index)
    return tokens, owners


def align_words(
    reference_words: Sequence[Mapping[str, Any]],
    hypothesis_words: Sequence[Mapping[str, Any]],
    normalizer: str = DEFAULT_NORMALIZER,
) -> list[tuple[int, int]]:
    """Match hypothesis words to reference words by aligning the two word sequences.

    Each word's ``"text"`` is normalized on its own (so multi-word number rewrites of the
    English normalizer do not apply across words). The alignment maximises the number of
    equal tokens (a longest-common-subsequence alignment): a minimum-edit alignment breaks
    ties toward substitutions, which would throw away matches that latency needs.
    Substituted, inserted and deleted words are left out. Returns sorted, unique
    ``(reference_index, hypothesis_index)`` pairs; a word that normalized to several tokens
    may appear in more than one pair.
    """
    ref_tokens, ref_owner = _tokens(reference_words, normalizer)
    hyp_tokens, hyp_owner = _tokens(hypothesis_words, normalizer)
    if not ref_tokens or not hyp_tokens:
        return []
    # rapidfuzz (installed with jiwer) runs the alignment in C; a Python DP is too slow for
    # an hour of speech.
    from rapidfuzz.distance import Indel

    pairs: set[tuple[int, int]] = set()
    for op in Indel.opcodes(ref_tokens, hyp_tokens):
        if op.tag != "equal":
            continue
        for offset in range(op.src_end - op.src_start):
            pairs.add((ref_owner[op.src_start + offset], hyp_owner[op.dest_start + offset]))
    return sorted(pairs)


def _committed_words(
    events: Iterable[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[float]]:
    """Committed words in order, each with its commit event's ``emitted_at``."""
    words: list[Mapping[str, Any]] = []
    emitted: list[float] = []
    for event in events:
        if event.get("type") != "commit":
            continue
        for word in event.get("words") or ():
            words.append(word)
            emitted.append(float(event["emitted_at"]))
    return words, emitted


def commit_latencies(
    commits: Iterable[Mapping[str, Any]],
    reference_words: Sequence[Mapping[str, Any]],
    normalizer: str = DEFAULT_NORMALIZER,
) -> list[float]:
    """Per-word commit latency in seconds, in the order the words were committed.

    ``commits`` may be the whole event list; only ``"commit"`` events are read. A committed
    word's latency is its event's ``emitted_at`` minus the ``"end"`` of the aligned reference
    word; when it aligned to several reference words the latest end is used, because the
    word cannot be complete before all of it was spoken. Unmatched words are skipped.
    """
    words, emitted = _committed_words(commits)
    latest_end: dict[int, float] = {}
    for ref_index, hyp_index in align_words(reference_words, words, normalizer):
        end = float(reference_words[ref_index]["end"])
        latest_end[hyp_index] = max(end, latest_end.get(hyp_index, -math.inf))
    return [emitted[j] - latest_end[j] for j in sorted(latest_end)]


# --------------------------------------------------------------------------- latency summaries


@dataclass(frozen=True)
class LatencyStats:
    """Summary of a list of latencies (seconds). All fields but ``count`` are ``None`` when
    there were no finite values."""

    count: int
    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    p95: float | None = None
    max: float | None = None

    @classmethod
    def from_values(cls, values: Iterable[float | None]) -> LatencyStats:
        """Stats of ``values``; ``None`` and NaN entries are ignored. Percentiles use numpy's
        default linear interpolation."""
        arr = np.asarray([v for v in values if v is not None], dtype=float)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return cls(count=0)
        p50, p90, p95 = np.percentile(arr, [50, 90, 95])
        return cls(int(arr.size), float(arr.mean()), float(p50), float(p90), float(p95),
                   float(arr.max()))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def first_text_latency(events: Iterable[Mapping[str, Any]]) -> float | None:
    """``emitted_at`` of the first commit that carries words (seconds from stream start), or
    ``None`` when nothing was committed."""
    for event in events:
        if event.get("type") == "commit" and event.get("words"):
            return float(event["emitted_at"])
    return None


def tail_latency(
    events: Iterable[Mapping[str, Any]], audio_seconds: float | None = None
) -> float | None:
    """Time from the end of the audio to the final summary event.

    ``audio_seconds`` defaults to the summary's own ``"audio_seconds"``. Returns ``None``
    when there is no summary event (the stream did not finish).
    """
    for event in events:
        if event.get("type") == "summary":
            audio = audio_seconds if audio_seconds is not None else event.get("audio_seconds")
            if audio is None:
                return None
            return float(event["emitted_at"]) - float(audio)
    return None


def rtf(compute_seconds: float | None, audio_seconds: float | None) -> float | None:
    """Real-time factor: compute seconds per audio second (below 1 is faster than real time).
    ``None`` when there was no audio, or either figure is unknown (``None``: a stream that
    failed before its summary measured neither)."""
    if compute_seconds is None or audio_seconds is None or audio_seconds <= 0:
        return None
    return compute_seconds / audio_seconds


@dataclass(frozen=True)
class LagSeries:
    """Lag (audio received minus audio processed) sampled over a stream.

    Unpacks as ``stats, samples = lag_series(...)``.
    """

    stats: LatencyStats
    samples: list[tuple[float, float]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.stats, self.samples))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``stats`` and ``samples`` as ``[emitted_at, lag]`` pairs."""
        return {"stats": self.stats.to_dict(), "samples": [list(s) for s in self.samples]}


def lag_series(lag_samples: Iterable[tuple[float, float]]) -> LagSeries:
    """Stats over ``(emitted_at, lag_seconds)`` samples, with the samples sorted by time."""
    samples = sorted((float(t), float(lag)) for t, lag in lag_samples)
    return LagSeries(LatencyStats.from_values(lag for _, lag in samples), samples)


# --------------------------------------------------------------------------- environment


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _total_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the file reports kB
    except (OSError, ValueError, IndexError):
        pass
    return None


#: Recorded in every environment, installed or not (None): rtlab, the metrics' libraries,
#: the engines the plugins here run on and Silero VAD's runtime.
_REPORTED_PACKAGES = (
    "rtlab", "numpy", "jiwer", "whisper-normalizer", "faster-whisper", "ctranslate2", "openai-whisper", "torch",
    "onnxruntime", "imageio-ffmpeg",
)


def _plugin_distributions() -> list[str]:
    """The installed distributions that register rtlab plugins (entry point group
    ``rtlab``), this repository's and any other: a backend's or a policy's version moves
    the words as much as its engine's."""
    names = {e.dist.name for e in importlib.metadata.entry_points(group="rtlab") if e.dist is not None}
    return sorted(names - {"rtlab"}, key=str.lower)


class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds from creation to
    :meth:`stop`: other work on the machine moves compute-bound figures, and a benchmark
    page says how much there was."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = []
        self.done = threading.Event()

        def sample() -> None:
            while True:
                self.samples.append(os.getloadavg()[0])
                if self.done.wait(every):
                    return

        self.thread = threading.Thread(target=sample, name="rtlab-load-sampler", daemon=True)
        self.thread.start()

    def stop(self) -> dict[str, float] | None:
        """Stop sampling; the smallest and largest sample (None where there is no load average)."""
        self.done.set()
        self.thread.join()
        return {"min": min(self.samples), "max": max(self.samples)} if self.samples else None


def environment_info() -> dict[str, Any]:
    """Hardware and software versions to store next to every benchmark number.

    Besides versions, the CPU's model and vector extensions, any variable that pins the
    compute kernels, and the FFmpeg that decodes (where from, its version, its CPU flags):
    the words a model hears can change with each of them (see :mod:`rtlab.kernels`).
    """
    from ..decoders.ffmpeg import ffmpeg_description

    cpu_model, extensions = cpu_description()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_model": cpu_model,
        "cpu_vector_extensions": extensions,
        "kernel_overrides": kernel_overrides(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": _total_memory_bytes(),
        "python": sys.version.split()[0],
        "packages": {name: _package_version(name) for name in (*_REPORTED_PACKAGES, *_plugin_distributions())},
        "ffmpeg": ffmpeg_description(),
    }
