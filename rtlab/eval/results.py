"""Per-file and per-configuration benchmark records, built from stream events.

:class:`StreamResult` is everything measured for one file streamed with one configuration
(a plain, JSON-serialisable record that names its normalizer and clock mode);
:func:`evaluate_stream` scores a stream's events into one; :func:`summarize` pools the
results of one configuration over a corpus; :func:`to_dataframe` turns records into a
pandas DataFrame. The metric definitions themselves live in :mod:`rtlab.eval.metrics`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtlab.core.events import join_words
from rtlab.options import is_number
from rtlab.eval.metrics import (
    ErrorRate,
    LatencyStats,
    WordsKept,
    _committed_words,
    commit_latencies,
    first_text_latency,
    lag_series,
    normalizer_for_language,
    rtf,
    tail_latency,
    wer,
    words_kept,
)

__all__ = ["StreamResult", "detected_language", "evaluate_stream", "summarize", "to_dataframe"]


@dataclass
class StreamResult:
    """Everything measured for one file streamed with one configuration.

    ``word_latencies`` keeps the per-word commit latencies so that :func:`summarize` can
    pool them across files; ``latency`` is their summary (a :class:`LatencyStats` dict).
    ``lag`` is a :class:`~rtlab.eval.metrics.LagSeries` dict (stats and ``[emitted_at, lag]``
    samples) when the processor's lag samples were given; ``error`` is the message of the
    stream's error event, if it ended with one. ``words_kept`` (a
    :class:`~rtlab.eval.metrics.WordsKept` dict) says how much of the offline pass's text
    the stream kept and what it added, when there was an offline pass. ``language`` is the
    language the stream was transcribed in, as its summary event reports it (asked for or
    detected); for a stream that failed before its summary, the configuration's
    ``language`` option, or None where it asked for none. With no reference words
    (``reference`` empty, or nothing left of it by the normalizer) ``wer`` is undefined:
    ``None`` in :meth:`to_dict` and after :meth:`from_dict`.
    ``audio_seconds`` and ``compute_seconds`` come from the summary event: ``None``
    (unknown, never a made-up 0.0) for a stream that failed before its summary, or whose
    summary does not say; ``rtf`` is then ``None`` too.
    """

    file: str
    config: dict[str, Any]
    reference: str
    hypothesis: str
    wer: ErrorRate
    latency: dict[str, Any]
    first_text_latency: float | None
    tail_latency: float | None
    rtf: float | None
    audio_seconds: float | None
    compute_seconds: float | None
    normalizer: str
    clock: str
    offline_hypothesis: str | None = None
    offline_wer: ErrorRate | None = None
    word_latencies: list[float] = field(default_factory=list)
    lag: dict[str, Any] | None = None
    error: str | None = None
    words_kept: dict[str, Any] | None = None
    language: str | None = None
    #: The compute the passes took on this machine, from the summary event: on the modeled
    #: and unaware clocks ``compute_seconds`` is what the clock counted (the cost model's,
    #: or none), and this is what was measured (None where the summary does not say).
    measured_compute_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (error rates become dicts)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["wer"] = self.wer.to_dict()
        d["offline_wer"] = self.offline_wer.to_dict() if self.offline_wer else None
        d["config"] = dict(self.config)
        d["word_latencies"] = list(self.word_latencies)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a line of a results JSONL).

        Results written before unknown seconds were ``None`` gave a failed stream (one with
        an ``error``, which never has a summary) 0.0 audio and compute seconds, measured by
        nobody: those are read back as unknown (``None``)."""
        d = dict(data)
        if d.get("error") and d.get("audio_seconds") == 0 and d.get("compute_seconds") == 0:
            d["audio_seconds"] = d["compute_seconds"] = None
        d["wer"] = ErrorRate.from_dict(d["wer"])
        if d.get("offline_wer"):
            d["offline_wer"] = ErrorRate.from_dict(d["offline_wer"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def evaluate_stream(
    *,
    file: str,
    reference: str,
    events: Sequence[Mapping[str, Any]],
    reference_words: Sequence[Mapping[str, Any]] | None = None,
    config: Mapping[str, Any] | None = None,
    offline_hypothesis: str | None = None,
    normalizer: str | None = None,
    language: str | None = None,
    clock: str = "simulated",
    lag_samples: Iterable[tuple[float, float]] | None = None,
) -> StreamResult:
    """Score one stream's events into a :class:`StreamResult`.

    The hypothesis is the committed words as text (:func:`rtlab.core.events.join_words`). Audio and compute seconds come
    from the summary event (``None`` without one: a failed stream measured neither), and
    so does the language, else the ``language`` option of ``config``. Without
    ``reference_words`` (offline word times) there are no per-word latencies.
    ``normalizer`` defaults to the one for ``language``. ``lag_samples`` (the
    processor's ``(emitted_at, lag)`` pairs) become ``lag``.
    """
    norm = normalizer or normalizer_for_language(language)
    words, _ = _committed_words(events)
    hypothesis = join_words(words)
    summary = next((e for e in events if e.get("type") == "summary"), {})
    audio_seconds = _seconds(summary, "audio_seconds")
    compute_seconds = _seconds(summary, "compute_seconds")
    latencies = commit_latencies(events, reference_words, norm) if reference_words else []
    offline_wer = kept = None
    if offline_hypothesis is not None:
        offline_wer = wer(reference, offline_hypothesis, norm)
        kept = words_kept(offline_hypothesis, hypothesis, norm).to_dict()
    error = next((e for e in events if e.get("type") == "error"), None)
    return StreamResult(
        file=file,
        config=dict(config or {}),
        reference=reference,
        hypothesis=hypothesis,
        wer=wer(reference, hypothesis, norm),
        latency=LatencyStats.from_values(latencies).to_dict(),
        first_text_latency=first_text_latency(events),
        # The summary's own audio_seconds: one without it has no tail latency (None), not
        # one measured from the start of the stream.
        tail_latency=tail_latency(events),
        rtf=rtf(compute_seconds, audio_seconds),
        audio_seconds=audio_seconds,
        compute_seconds=compute_seconds,
        normalizer=norm,
        clock=clock,
        offline_hypothesis=offline_hypothesis,
        offline_wer=offline_wer,
        word_latencies=latencies,
        lag=lag_series(lag_samples).to_dict() if lag_samples is not None else None,
        error=f"{error.get('error')}: {error.get('message')}" if error else None,
        words_kept=kept,
        language=_language(summary, config),
        measured_compute_seconds=_seconds(summary, "measured_compute_seconds"),
    )


def _seconds(summary: Mapping[str, Any], key: str) -> float | None:
    """A summary's figure, or None where it has none (no summary: the stream failed)."""
    value = summary.get(key)
    return float(value) if is_number(value) else None


def _language(summary: Mapping[str, Any], config: Mapping[str, Any] | None) -> str | None:
    """The summary's language; without one (the stream failed before its summary), the
    language the configuration asked for, which the stream was being transcribed in."""
    for language in (summary.get("language"), (config or {}).get("language")):
        if isinstance(language, str) and language:
            return language
    return None


def detected_language(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The language a stream transcribed, as its summary event names it (the one asked
    for, or the one the policy detected); None without a summary or a language."""
    summary = next((e for e in reversed(events) if e.get("type") == "summary"), {})
    language = summary.get("language")
    return language if isinstance(language, str) and language else None


def _stats(values: Iterable[float | None]) -> dict[str, Any]:
    return LatencyStats.from_values(values).to_dict()


def summarize(results: Sequence[StreamResult]) -> dict[str, Any]:
    """Corpus-level summary over many files of one configuration.

    WER pools edit counts across files (a long file weighs more than a short one, as in
    every published corpus WER); word latencies are pooled over all words; RTF is total
    compute over total audio. ``offline_wer`` is present only when every file has one.
    ``lag`` pools the lag samples of every file that has them; ``errors`` counts the
    streams that ended with an error event. ``words_kept`` pools the streams' words kept
    against offline (counts summed) and ``words_kept_lowest`` is the lowest fraction of
    one stream; both are present only when every file has an offline pass.
    ``files_without_reference`` counts the files with no reference words (their WER is
    undefined; the pooled WER counts their ``words_without_reference`` committed words as
    insertions, and is undefined when no file has reference words).
    ``audio_seconds``, ``compute_seconds`` and ``rtf`` pool only the streams that measured
    both seconds: ``files_without_seconds`` counts the others (failed before their summary,
    their seconds unknown), left out rather than counted as 0.0; all three are None when no
    stream measured them.
    ``measured_compute_seconds`` sums the measured compute of those same streams (None
    unless every one has it) and ``measured_rtf`` is it over their audio: on the modeled
    and unaware clocks, ``rtf`` is the clock's and this the machine's.
    Raises ``ValueError`` for no results or results scored with different normalizers.
    """
    if not results:
        raise ValueError("summarize() needs at least one StreamResult")
    # A failed stream's seconds are unknown: pooled as 0.0 they would pass for a stream
    # that took no compute, and lower the RTF.
    timed = [r for r in results if r.audio_seconds is not None and r.compute_seconds is not None]
    audio = sum(r.audio_seconds for r in timed) if timed else None
    compute = sum(r.compute_seconds for r in timed) if timed else None
    offline = [r.offline_wer for r in results if r.offline_wer is not None]
    pooled_offline = ErrorRate.pool(offline) if len(offline) == len(results) else None
    kept = [WordsKept.from_dict(r.words_kept) for r in results if r.words_kept]
    every_kept = len(kept) == len(results)
    fractions = [k.fraction for k in kept if k.fraction is not None]
    unreferenced = [r for r in results if not r.wer.reference_words]
    measured_each = [r.measured_compute_seconds for r in timed]
    measured = sum(measured_each) if timed and None not in measured_each else None
    return {
        "files": len(results),
        "normalizer": sorted({r.normalizer for r in results}),
        "clock": sorted({r.clock for r in results}),
        "wer": ErrorRate.pool(r.wer for r in results).to_dict(),
        "files_without_reference": len(unreferenced),
        "words_without_reference": sum(r.wer.insertions for r in unreferenced),
        "offline_wer": pooled_offline.to_dict() if pooled_offline else None,
        "words_kept": WordsKept.pool(kept).to_dict() if every_kept else None,
        "words_kept_lowest": min(fractions) if every_kept and fractions else None,
        "latency": _stats(v for r in results for v in r.word_latencies),
        "first_text_latency": _stats(r.first_text_latency for r in results),
        "tail_latency": _stats(r.tail_latency for r in results),
        "lag": _stats(lag for r in results if r.lag for _, lag in r.lag["samples"]),
        "errors": sum(1 for r in results if r.error),
        "rtf": rtf(compute, audio),
        "audio_seconds": audio,
        "compute_seconds": compute,
        "files_without_seconds": len(results) - len(timed),
        "measured_compute_seconds": measured,
        "measured_rtf": rtf(measured, audio),
    }


def to_dataframe(records: Iterable[StreamResult | Mapping[str, Any]]) -> Any:
    """A pandas DataFrame with one row per record; nested dicts become dotted columns
    (``wer.value``, ``latency.p95``, ``config.model`` ...). Needs pandas."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(
            "to_dataframe() needs pandas, which is not installed: pip install pandas "
            "(or pip install 'rtlab[plots]')"
        ) from exc
    rows = [r.to_dict() if isinstance(r, StreamResult) else dict(r) for r in records]
    return pd.json_normalize(rows)
