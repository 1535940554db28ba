"""The rules a Whisper pass's words go through before a streaming policy sees them.

Shared by rtlab's Whisper backends (``rtlab-faster-whisper``, ``rtlab-openai-whisper``),
so that two engines compared under one streaming policy differ by their engine and not
by their post-processing; an outside plugin for another Whisper engine can use them too.
Words are ``(text, start, end, probability)`` tuples, as Whisper's word alignment gives
them, with times in seconds from the start of the pass's audio (16 kHz mono float32).

A pass decodes one window of at most 30 s and, when the model stopped more than
``CONTINUE_AFTER_SECONDS`` before the audio's end, a continued window from its last word.
:func:`settle_window` applies the rules to one window's words and joins them to the
pass's words so far; :func:`continue_from` says where the next window starts, if one
should; :func:`merge_word_pieces` turns the pass's words into rtlab words;
:func:`window_options` checks the two options that choose the windows and
:func:`decoding_options` the two that bound the decoder; :func:`is_silent` and
:func:`needs_fallback` are Whisper's no-speech check and temperature fallback. The
faster-whisper plugin's README explains each rule with the clip that called for it.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple, Sequence

import numpy as np

from .backends import SAMPLE_RATE, Word
from .errors import InvalidOption
from .levels import FRAME, frame_rms, silence_level
from .options import is_number

# Whisper's own thresholds (whisper.transcribe's defaults) for its no-speech check and its
# temperature fallback.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
# Decode again from the last word when the model stopped this early.
CONTINUE_AFTER_SECONDS = 1.0
MAX_WORD_SECONDS = 1.0  # a word aligned longer than this covers audio the model skipped
QUIET_MARGIN_SECONDS = 0.25  # Whisper's word ends are loose: look for speech this far after one
MIN_WORD_SECONDS = 0.02  # one alignment frame: a word said in less was not aligned to audio
ONSET_FRAMES = 3  # 60 ms louder than silence in a row: sound, not a click
UNALIGNED_RUN = 3  # this many such words in a row: text the audio lacks (see cut_unaligned)
LOOP_REPEATS = 3  # the same words this many times in a row: the decoder is looping
#: ``beam_size`` left unset on a Whisper backend: beam search on a multilingual model, where it
#: hears 2-7 WER points more of the shared speech than greedy decoding when streamed, at about
#: 5% more compute on faster-whisper (docs/benchmarks/2026-12-04-beam-search-streaming.md);
#: greedy on an English-only one. Both Whisper plugins choose so (openai-whisper's own command
#: line searches 5 beams too): the two engines' tables compare the same decoding.
MULTILINGUAL_BEAM_SIZE = 5
#: A Whisper decode's tokens, at most this many per second of audio, plus 16 (:func:`token_budget`):
#: both Whisper plugins' ``max_tokens_per_second`` default and AlignAtt's own budget.
MAX_TOKENS_PER_SECOND = 8.0
# Text said over speech, not made up in a pause: the voice-activity model hears speech in
# at least this fraction of its frames (see cut_anomalous_tail).
SPOKEN_FRACTION = 0.5
# A tail said in less than this per word was squeezed in after the speech, not said: the
# voice-activity model under it hears the end of the word before (Whisper's word ends are
# loose), and the rule stands (see cut_anomalous_tail).
MIN_SAID_SECONDS = 0.2
# What key() strips from either end of a word: anything that is not a letter or a digit.
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def key(text: str) -> str:
    """A word as compared between passes and windows, here and by LocalAgreement: case-folded,
    without the punctuation or symbols around it ("Dog." and "dog", "«Oui" and "oui",
    "¿Qué" and "qué" agree)."""
    return _EDGES.sub("", text.strip().casefold())


def agreed_prefix(before: Sequence[str], after: Sequence[str]) -> int:
    """How many words two hypotheses begin with alike, compared by :func:`key`."""
    count = 0
    for one, other in zip(before, after):
        if key(one) != key(other):
            break
        count += 1
    return count


class Window(NamedTuple):
    """One window's words after :func:`settle_window`."""

    pieces: list[tuple]  #: the pass's words so far, this window's included
    words: list[tuple]  #: what this window added
    looped: bool  #: the decoder repeated itself (the pass stops; the next pass tries again)
    cut: bool  #: a rule took some of the window's text (the next window is not prompted with it)

    def prompt_tokens(self, tokens: list[int], encode: Callable[[str], list[int]]) -> list[int]:
        """What the next window's prompt gains from this one: its decoded ``tokens``, or,
        where a rule cut some of their text, the words kept, encoded again. Prompted with
        text that was cut (and the speech it was said over), the model would go on after
        it and skip that speech."""
        return encode("".join(word[0] for word in self.words)) if self.cut else tokens


def settle_window(pieces: Sequence[tuple], words: list[tuple], audio: np.ndarray, *, continued: bool) -> Window:
    """``words``, one window's, after the rules, joined to ``pieces`` (the pass's words of
    the windows before; ``continued``: this window continues them).

    In order: a loop is cut (:func:`cut_repetition`); Whisper's hallucination rule runs on
    the text after the last sentence end, with a voice-activity check on the audio under
    it (:func:`cut_anomalous_tail`); text the alignment found no audio for goes
    (:func:`cut_unaligned`); the times of a model that stopped early are put right
    (:func:`retime_stopped_early`). A continued window that begins inside the last word of
    the window before drops that word (or that begins with it, within an alignment frame of
    its end), and the word before ends where this window's first word starts."""
    words, looped = cut_repetition(words)
    tail = cut_anomalous_tail(
        words, continued=continued, spoken=lambda start, end: is_spoken(audio, start, end),
        said=[piece[0] for piece in pieces],
    )  # fmt: skip
    settled = retime_stopped_early(cut_unaligned(tail), audio=audio)
    cut = len(settled) < len(words)
    joined = list(pieces)
    if joined and settled:
        if key(settled[0][0]) == key(joined[-1][0]) and settled[0][1] < joined[-1][2] + MIN_WORD_SECONDS:
            # The continued window began inside the last word, or heard it again from its
            # end on (the alignment ended it early): the same word, once.
            settled = settled[1:]
        if settled:  # the last word of the window before ends where this one starts
            text, start, end, probability = joined[-1]
            joined[-1] = (text, start, max(start, min(end, settled[0][1])), probability)
    return Window(joined + settled, settled, looped, cut)


#: How a backend windows a buffer: ``buffer`` (one window per buffer of up to 30 s, continued
#: by :func:`continue_from`, the rules of :func:`settle_window`) or ``seek`` (the engine's own
#: loop, which pads every window to 30 s).
WINDOWS = ("buffer", "seek")
MAX_PAD_SECONDS = 30.0


def window_options(backend: str, window: object, pad_seconds: object) -> tuple[str, float | None]:
    """A Whisper backend's ``window`` and ``pad_seconds`` options, checked: the window is
    one of :data:`WINDOWS`, ``pad_seconds`` (seconds of silence after the audio, instead of
    Whisper's padding to 30 s) unset or from 0 to 30, and only with ``window=buffer``.
    Raises :class:`~rtlab.errors.InvalidOption` naming ``backend`` and the option."""
    if window not in WINDOWS:
        raise InvalidOption(f"{backend}: window must be one of {', '.join(WINDOWS)}, not {window!r}")
    if pad_seconds is None:
        return window, None
    if not is_number(pad_seconds) or not 0 <= pad_seconds <= MAX_PAD_SECONDS:
        raise InvalidOption(
            f"{backend}: pad_seconds must be a number of seconds from 0 to 30 (or unset, for Whisper's "
            f"30 s windows), not {pad_seconds!r}"
        )
    if window != "buffer":
        raise InvalidOption(f"{backend}: pad_seconds needs window=buffer ({backend}'s own loop pads to 30 s)")
    return window, float(pad_seconds)


def decoding_options(backend: str, temperature: object, max_tokens_per_second: object) -> tuple[list[float], float]:
    """A Whisper backend's ``temperature`` (a number from 0 to 1, or a list of them: the
    fallback's temperatures in order) as a list of floats, and ``max_tokens_per_second``
    (above 0) as a float. Raises :class:`~rtlab.errors.InvalidOption` naming ``backend``."""
    temperatures = temperature if isinstance(temperature, (list, tuple)) else [temperature]
    if not temperatures or any(not is_number(t) or not 0 <= t <= 1 for t in temperatures):
        raise InvalidOption(f"{backend}: temperature must be a number from 0 to 1 or a list of them, not {temperature!r}")
    if not is_number(max_tokens_per_second) or max_tokens_per_second <= 0:
        raise InvalidOption(f"{backend}: max_tokens_per_second must be a number above 0, not {max_tokens_per_second!r}")
    return [float(t) for t in temperatures], float(max_tokens_per_second)


def default_beam_size(multilingual: bool) -> int:
    """The ``beam_size`` a Whisper backend left without one decodes with, chosen when its
    model loads: :data:`MULTILINGUAL_BEAM_SIZE` on a multilingual model, else 1."""
    return MULTILINGUAL_BEAM_SIZE if multilingual else 1


def is_silent(no_speech_prob: float, avg_logprob: float, *, continued: bool = False) -> bool:
    """Whisper's no-speech check: the model finds the window silent (its no-speech
    probability above the threshold) and its text unlikely. A continued window is
    speculative (it may hold only the silence after a sentence), so there the no-speech
    probability alone rules it out: "That's it." is what tiny.en hears in a second of it.

    ``avg_logprob`` is Whisper's: the generated tokens' log probabilities, timestamps
    included, summed and divided by their number plus one."""
    return no_speech_prob > NO_SPEECH_THRESHOLD and (continued or avg_logprob < LOG_PROB_THRESHOLD)


def _failed(compression_ratio: float, avg_logprob: float) -> bool:
    """Whisper's rules for a failed decode: its text too repetitive (compression ratio) or
    too unlikely."""
    return compression_ratio > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD


def needs_fallback(compression_ratio: float, avg_logprob: float, no_speech_prob: float) -> bool:
    """Whether Whisper's temperature fallback decodes a window again, hotter: its text is
    too repetitive (compression ratio) or too unlikely, and the window is not silence
    (decoding silence hotter only makes words up)."""
    return not is_silent(no_speech_prob, avg_logprob) and _failed(compression_ratio, avg_logprob)


def retry_without_prompt(prompt_tokens: Sequence[int], compression_ratio: float, avg_logprob: float) -> bool:
    """Whether a window whose every decode failed Whisper's fallback rules is decoded once
    more without its prompt: it had one (``prompt_tokens``) and the decode kept is a loop
    (its text's ``compression_ratio`` above ``COMPRESSION_RATIO_THRESHOLD``) or unlikely
    (``avg_logprob`` below ``LOG_PROB_THRESHOLD``); ``whisper.transcribe`` drops the prompt
    after a hot fallback for the same reason. A prompt that ends mid-sentence can lead the
    model astray on every decode of the buffers after it, and the stream loses that speech
    for good: a loop ("recorded by a" ahead of a buffer that began "board Byron.", tiny.en
    greedy: "foreign foreign ...", from the prompt's "foreigners"; 30 s of speech heard as
    nothing), or next to no text (a buffer cut at "after", the prompt's last word, that
    held "a glowing account of its splinters recorded by Lord Byron.": " the" at a log
    probability of -1.7 on every pass, which the tail rule then dropped)."""
    return bool(prompt_tokens) and _failed(compression_ratio, avg_logprob)


def token_budget(max_tokens_per_second: float, seconds: float) -> int:
    """How many tokens a Whisper decode of ``seconds`` of audio may emit: 16 plus
    ``max_tokens_per_second`` for each second, up to Whisper's 30 s window. The budget
    bounds a pass's work, so that a decoder stuck repeating itself costs about a normal
    pass, not many times the audio."""
    return int(16 + max_tokens_per_second * min(seconds, 30.0))


def continue_from(window: Window, audio: np.ndarray, seconds: float) -> float | None:
    """Where the pass's next window starts (seconds into ``audio``: where the model's text
    so far ends, as :func:`retime_stopped_early` put it right), or ``None`` when there is
    nothing more to decode: the decoder looped (the next pass tries again from a longer
    buffer), the text reaches within ``CONTINUE_AFTER_SECONDS`` of ``seconds`` (the end of
    the audio the pass's windows cover), or only silence follows it (a second encoder run
    would find nothing)."""
    if window.looped or not window.pieces:
        return None
    end = window.pieces[-1][2]
    if seconds - end < CONTINUE_AFTER_SECONDS or is_quiet_after(audio, end + QUIET_MARGIN_SECONDS):
        return None
    return end


def repetition(
    words: Sequence[tuple], times: int = LOOP_REPEATS, longest: int = 4, ending_after: int = 0
) -> tuple[int, int] | None:
    """The first run of one to ``longest`` words said ``times`` times in a row in ``words``
    (compared by :func:`key`) that ends after the first ``ending_after`` words, as ``(start,
    size)``: its first occurrence is ``words[start : start + size]``; None if there is none."""
    first = max(0, ending_after - times * longest)  # no run starting before it ends after them
    keys = [key(word[0]) for word in words[first:]]
    ending_after -= first
    for start in range(len(keys)):
        for size in range(1, longest + 1):
            if start + times * size > len(keys):
                break
            if start + times * size <= ending_after:
                continue
            gram = keys[start : start + size]
            if all(keys[start + k * size : start + (k + 1) * size] == gram for k in range(1, times)):
                return first + start, size
    return None


def cut_repetition(words: list[tuple], times: int = LOOP_REPEATS, longest: int = 4) -> tuple[list[tuple], bool]:
    """``words`` up to the first run of one to ``longest`` words said ``times`` times in a
    row, keeping one of them; and whether there was such a run. Whisper without its
    temperature fallback can fall into a loop ("loud, loud, loud, ..."), and two passes
    agree on a loop as readily as on speech."""
    run = repetition(words, times, longest)
    if run is None:
        return words, False
    start, size = run
    return words[: start + size], True


def anomaly_score(word: tuple) -> float:
    """Whisper's score of a word that is likely hallucinated (openai-whisper's and
    faster-whisper's ``word_anomaly_score``): improbable, or aligned very short or very long."""
    duration = word[2] - word[1]
    return (
        (1.0 if word[3] < 0.15 else 0.0)
        + (max(0.0, 0.133 - duration) * 15)
        + max(0.0, duration - 2.0)
    )


def cut_anomalous_tail(
    words: list[tuple],
    continued: bool = False,
    spoken: Callable[[float, float], bool] | None = None,
    said: Sequence[str] = (),
) -> list[tuple]:
    """``words`` without the text after the window's last sentence end (in a continued
    window, all of it) when Whisper's hallucination rule (``is_segment_anomaly``: its
    first 8 words score 3 or more, or about one per word) finds that text anomalous,
    unless ``spoken(start, end)`` (when given) says the audio under it is speech and the
    text does not repeat what was said before it (``said``: the texts of the pass's
    earlier windows; and the window's own text before it) and lasts at least
    ``MIN_SAID_SECONDS`` a word (base's "Gracias.", probability 0.03, in the 0.1 s after a
    Spanish speaker's last word, where the VAD still hears that word).

    What Whisper makes up in the noise after the speech ends ("So, let's see.") follows a
    finished sentence, often as a window continued after the model stopped there, and the
    pass at the end of a stream commits it without a second pass to agree. The rule alone
    also takes real words: a continued window that opens with a word squeezed into one
    frame ("and", probability 0.03: a score of 3) before "counseled him.", said clearly,
    or the "years." a number ended with. Whisper asks for silence around the text too;
    a voice-activity model on the audio under it is that check.

    A continued window is decoded because there was sound after the model's last word;
    where the voice-activity model hears no speech under its text (a breath, a click after
    the sentence), all of it goes, anomalous or not ("That's it.", probabilities 0.39 and
    0.62, over the sounds after a FLEURS speaker's last word)."""
    if continued and spoken is not None and words and not spoken(words[0][1], words[-1][2]):
        return []
    ends = [i for i, word in enumerate(words[:-1]) if word[0].rstrip().endswith((".", "?", "!"))]
    # A first window without a sentence end is held to the rule only where the VAD hears
    # speech under none of its words (base's "1.0.1", probability 0.05, in a fan's noise).
    whole = not ends and not continued
    if whole and spoken is None:
        return words
    keep = ends[-1] + 1 if ends else 0
    tail = [word for word in words[keep:] if any(c.isalnum() for c in word[0])][:8]
    score = sum(anomaly_score(word) for word in tail)
    if tail and (score >= 3 or score + 0.01 >= len(tail)):
        if whole:
            return words if any(spoken(word[1], word[2]) for word in words) else []
        before = [*said, *(word[0] for word in words[:keep])]
        start, end = words[keep][1], words[-1][2]
        said_out = end - start >= MIN_SAID_SECONDS * len(tail)
        if spoken is not None and said_out and not _repeats(tail, before) and spoken(start, end):
            return words
        return words[:keep]
    return words


def _repeats(tail: list[tuple], said: Sequence[str]) -> bool:
    """Whether ``tail`` opens with three words that ``said`` (the text before it) already
    has in a row: a decoder saying again what it said, over
    whatever audio (base repeated pt-003's first sentence over its second)."""
    keys = [key(word[0]) for word in tail[:3]]
    earlier = [key(text) for text in said]
    return len(keys) == 3 and any(earlier[i : i + 3] == keys for i in range(len(earlier) - 2))


def is_spoken(audio: np.ndarray, start: float, end: float) -> bool:
    """Whether Silero VAD (``rtlab.vad``) hears speech in at least ``SPOKEN_FRACTION`` of
    its frames from ``start`` to ``end`` (seconds into ``audio``), run from a second before
    ``start``. Loudness does not tell a clear word from the breath or click Whisper
    hallucinates over at a sentence's end; the VAD does. A span shorter than a VAD frame
    (text squeezed into the buffer's last frame) is not speech."""
    from .vad import FRAME, SileroVAD

    lead = max(0.0, start - 1.0)
    probabilities = SileroVAD().process(audio[int(lead * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
    first = int((start - lead) * SAMPLE_RATE) // FRAME
    heard = probabilities[first:]
    return len(heard) > 0 and float(np.mean(heard > 0.5)) >= SPOKEN_FRACTION


def cut_unaligned(
    words: list[tuple], shortest: float = MIN_WORD_SECONDS, run: int = UNALIGNED_RUN, longest: float = MAX_WORD_SECONDS
) -> list[tuple]:
    """``words`` without text the alignment found no audio for: a run of ``run`` or more
    words in a row that each last less than ``shortest`` seconds (the alignment squeezes
    such text into a single frame).

    The run goes, the words around it stay: an aligned word was heard in the audio, and a
    run amid speech is a phrase the decoder said twice or that the alignment could not
    place, with the speech it was said over before and after it. A run that ends the window
    is what a decoder that repeats its prompt after the speech ended produces: it goes with
    the word before it when the alignment stretched that word over more than ``longest``
    seconds (the phrase's first word, laid over the silence the rest of it never covered)."""
    kept: list[tuple] = []
    index = 0
    while index < len(words):
        end = index
        while end < len(words) and words[end][2] - words[end][1] < shortest:
            end += 1
        if end - index >= run:
            if end == len(words) and kept and kept[-1][2] - kept[-1][1] > longest:
                kept.pop()
            index = end
            continue
        end = max(end, index + 1)
        kept.extend(words[index:end])
        index = end
    return kept


def retime_stopped_early(
    words: list[tuple], shortest: float = MIN_WORD_SECONDS, longest: float = MAX_WORD_SECONDS,
    audio: np.ndarray | None = None,
) -> list[tuple]:  # fmt: skip
    """``words`` with the times of a model that stopped early put right.

    When Whisper's text ends before the audio does, the alignment stretches the last word
    it could place over the audio the text never covered, and squeezes the words after it
    (a short run: a long one is cut by :func:`cut_unaligned`) into the window's last frame.
    The stretched word gets the window's typical word length (its median aligned word, at
    least 0.1 s) and the squeezed ones follow it, as long each: they were said right after
    it, and the next window decodes from there. Left as they are, they would end where the
    audio ends, and the speech under the stretched word would look like a pause.

    Given the window's ``audio``, the stretched word starts where sound first rises above
    the window's silence level within it (:func:`sound_onset`): the alignment can give it
    the silence before it too, and a word kept at the start of that silence is taken for
    one heard in silence and dropped (a Portuguese "e Schlegel", a window's only word after
    a pause, was aligned from the pause's start)."""
    last = len(words) - 1
    while last >= 0 and words[last][2] - words[last][1] < shortest:
        last -= 1
    if last < 0 or words[last][2] - words[last][1] <= longest:
        return words
    aligned = [w[2] - w[1] for w in words if shortest <= w[2] - w[1] <= longest]
    typical = min(max(float(np.median(aligned)) if aligned else 0.0, 0.1), longest)
    retimed = list(words[:last])
    start = words[last][1]
    if audio is not None:
        start = sound_onset(audio, start, words[last][2])
    for text, _, _, probability in words[last:]:
        retimed.append((text, start, start + typical, probability))
        start += typical
    return retimed


def sound_start(
    audio: np.ndarray, start: float, end: float | None = None, run: int = ONSET_FRAMES, *, level: float | None = None
) -> float | None:
    """Where sound starts in ``audio`` from ``start`` to ``end`` (seconds; None: to the end
    of ``audio``): the first of ``run`` 20 ms frames in a row louder than ``level`` (by
    default the audio's silence level, :func:`rtlab.levels.silence_level`; a click or a
    breath is shorter), or None when there are none."""
    if level is None:
        level = silence_level(audio)
    if level is None:
        return None
    first = int(start * SAMPLE_RATE) // FRAME
    loud = frame_rms(audio[first * FRAME : None if end is None else int(end * SAMPLE_RATE)]) > level
    for index in range(len(loud) - run + 1):
        if loud[index : index + run].all():
            return max(start, (first + index) * FRAME / SAMPLE_RATE)
    return None


def sound_onset(audio: np.ndarray, start: float, end: float, run: int = ONSET_FRAMES) -> float:
    """:func:`sound_start`, or ``start`` when no sound starts before ``end``."""
    found = sound_start(audio, start, end, run)
    return start if found is None else found


def is_quiet_after(audio: np.ndarray, seconds: float) -> bool:
    """Whether every 20 ms frame of ``audio`` from ``seconds`` on is silence by the buffer's
    own level (``rtlab.levels.silence_level``, the rule LocalAgreement drops words by)."""
    frames = frame_rms(audio[int(seconds * SAMPLE_RATE) :])
    level = silence_level(audio)
    return level is not None and len(frames) > 0 and float(frames.max()) <= level


def merge_word_pieces(pieces) -> list[Word]:
    """Whisper words, given as ``(text, start, end, probability)``, as rtlab words.

    A piece that continues the previous word without a space and starts with punctuation
    ("-fark", "'s") is glued to it, so joining words with single spaces gives back
    Whisper's text ("round-fark", "it's")."""
    words: list[Word] = []
    for text, start, end, probability in pieces:
        if not text:
            continue
        glued = words and not text[0].isspace() and not text[0].isalnum()
        if not glued and not any(character.isalnum() for character in text):
            continue  # " ." on its own: what a decoder stuck in a loop emits
        if glued:
            last = words[-1]
            last["text"] += text.strip()
            last["end"] = end
            last["probability"] = min(last["probability"], probability)
        else:
            words.append(
                {"text": text.strip(), "start": start, "end": end, "probability": probability}
            )
    return words
