"""AlignAtt, the policy of Simul-Whisper and SimulStreaming (Papi et al., 2023; Wang et
al., 2024; Macháček and Polák, 2025).

Every ``min_chunk`` seconds the whole audio buffer (at most ``audio_max_len`` seconds, one
encoder window) is encoded once and decoded greedily (or with beam search: below), one
token at a time, after the tokens already emitted for the buffer. Before a token is
accepted, the policy asks where the model looked to choose it: the most attended frame of
the alignment heads' cross-attention (normalised over the tokens of the decode, median-
filtered over frames, averaged over heads, as SimulStreaming does). A token chosen while
looking within ``frame_threshold`` frames of the end of the audio is not accepted: the
model is about to read audio it has not fully heard, and decoding stops until the next
chunk. What was accepted is committed at once: there is no second pass to agree with.

The last word a chunk decodes is held back (shown as partial text) unless ``never_fire``:
the chunk may end inside it ("sea" of "seashore"); a word that closes an annotation an
earlier word opened ("FUNDO]" after "[MÚSICA DE") is not, its marker ends it. At the end
of the stream the last decode runs to the end of text (at most
:data:`rtlab.words.MAX_TOKENS_PER_SECOND` tokens per second of buffer, plus 16) and keeps every word:
SimulStreaming stops it 4 frames before the end of the audio, which loses a last word
said right at the end of a clip, and no more audio will come to wait for.

With ``vad`` the voice-activity controller (:mod:`rtlab.policies.vac`) works as
SimulStreaming's VAC: no decode over silence, and when a pause of ``vad_silence_ms`` ends
an utterance, its last decode runs to the end of text, keeps the words heard in speech,
and the next utterance starts afresh (buffer cut in the pause, nothing forced, the context
back to ``init_prompt``).

With ``onset_agreement`` (rtlab's option, off by default), the stream's first words (with
``vad``, each utterance's) wait for a second opinion: until something is committed, every
decode starts from the start of the buffer, and only the words two consecutive decodes
begin with alike are committed (Whisper guesses on the first second or two of audio, and
one decode's guess would be final). From the first commit on, decoding goes on after the
committed words as usual. With ``agreement`` (rtlab's, off by default) every word waits
so: each decode goes on after the committed words, and of its new words those the decode
before it began alike are committed (LocalAgreement-2's rule on AlignAtt's decodes: the
same compute, a word waits up to one chunk more, and none is final on one decode alone).

With ``onset_logprob`` (rtlab's, off by default) the first words (with ``vad``, each
utterance's) wait while the model is unsure of them: until something is committed, a
decode whose words to commit have a mean token log-probability below the option
(Whisper's ``logprob_threshold``, under which its transcribe takes a decode for failed,
is -1) commits nothing and shows them as partial text, and the next decode starts from
the start of the buffer again, nothing forced. Once the buffer holds
:data:`ONSET_WAIT_LONGEST` seconds the words go however unsure; the last decode keeps
every word. The decoder must give the tokens' scores (``IncrementalDecoder.scores``).

With ``decode_afresh`` (rtlab's option, off by default), nothing is forced: every decode
starts from the start of the buffer, after the context, and says the buffer's committed
words again before what is new; its words are aligned with them by text and only those
after them are kept (see ``_not_heard_before``). A committed word the model chose wrongly
is then not forced again: a decode that goes on after "piranha de" (Portuguese FLEURS,
base, for "pirâmide") said "piranha de" again where the clip says "pirâmide" a second
time, and one from the start said "pirâmide". Decodes read the buffer's text again each
chunk, so they take more compute.

A decoder can fall into a loop that the attention rule does not stop (it keeps looking
at the same audio): a decode stops where one to ten words come three times in a row,
counting the words already emitted for the buffer, and keeps their first occurrence. A
loop begun in the emitted words (the decoder, forced with them, goes on with it) keeps no
new word, and the buffer starts afresh after the loop's first occurrence, decoded again
with nothing forced; so is the rest of the buffer after a loop in a last decode (the
stream's, an utterance's), which no decode follows.

A last decode (the stream's; with ``vad``, an utterance's) also stops before a word chosen
looking more than :data:`REREAD_SECONDS` before the furthest audio read so far (by the
words emitted for the buffer and the decode's own words before it): the model went back to
audio it had transcribed and says it again (tiny.en, in the last decode of an English
clip: "... even in the middle of a sentence. Even in the middle of a sentence.").
Annotations of sound that is not speech are not asked: Whisper looks at the start of the
buffer to write them. Other decodes are not cut so: on a long buffer the model may look
back before it goes on, and a decode stopped there each time kept the speech after it
waiting until it left the buffer (a 4.7-minute English stream without ``vad`` lost 145
words).

When the buffer outgrows ``audio_max_len``, its oldest audio leaves it, cut between two
committed words (SimulStreaming cuts whole chunks, whose tokens can belong to the audio
before them; a cut between words keeps the decoder's forced tokens and its audio
together), and the words before the cut become the decoder's context (Whisper's previous
text), after ``init_prompt``. The context is trimmed from its oldest word to
``max_context_tokens`` tokens and so that the decode keeps room for new text;
``static_init_prompt`` is never trimmed.

Whisper writes sound that is not speech as an annotation ("[MÚSICA DE FUNDO]", "* Musik *",
"(speaking in foreign language)").
Its offline decode suppresses the tokens annotations are written with; AlignAtt leaves them
choosable (a "[" is how a decode waits over sound that is not speech yet; suppressed, the
model invents words there instead, see docs/benchmarks/2026-12-03-alignatt-non-speech-and-trim.md)
and keeps them out of what it commits (:class:`Annotations`); the decoder is forced with
them as with any emitted word, so the decodes are those of a policy without the filter.

With the backend's ``beam_size`` above 1, each decode searches that many beams, and the
rules above are asked of the best candidate at each step (:meth:`AlignAtt._decode_beams`);
the decoder must be able to (``IncrementalDecoder.beam_search``).

The decoding itself is the backend's: it declares the capability
:data:`~rtlab.policies.incremental.INCREMENTAL_DECODING` and gives each session an
:class:`~rtlab.policies.incremental.IncrementalDecoder`, the session's decoder state
(encoder output, key/value cache, language), freed with the policy.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

from ..backends import SAMPLE_RATE, Backend, Word
from ..errors import InvalidOption
from ..options import is_finite_number, is_number, is_whole_number
from ..vad import Pause
from ..words import LOOP_REPEATS, MAX_TOKENS_PER_SECOND, agreed_prefix, key, repetition, token_budget
from . import Policy, Step
from .incremental import INCREMENTAL_DECODING, Decoded, IncrementalDecoder
from .reheard import START_SLACK, after_committed
from .vac import KEEP_SILENCE, ONSET_LEAD, controller

#: A decode checks for a loop (rtlab.words.repetition) every this many new tokens.
LOOP_CHECK_TOKENS = 4
#: The longest run of words the loop rule looks for (said LOOP_REPEATS times in a row):
#: tiny.en said "the same as the other" thirteen times on a long English stream.
LOOP_LONGEST = 10
#: Width of the median filter over frames (whisper.timing's, which SimulStreaming uses).
MEDIAN_WIDTH = 7
#: Tokens a decode keeps free for new text when the context is trimmed (SimulStreaming's).
NEW_TOKEN_ROOM = 20
#: Restarts of the buffer after a loop (see AlignAtt._decode_buffer) in one pass, at most.
LOOP_RESTARTS_PER_PASS = 2
#: With ``vad``: seconds of the pause after an utterance that its last decode hears.
UTTERANCE_END_PAD = 0.2
#: With ``decode_afresh``: the newest committed words a decode is compared with once none
#: is left in the buffer (the committed tail it may repeat is at most 5 words).
REHEARD_WORDS = 8
#: The markers that open Whisper's annotations of sound that is not speech, and the one
#: that closes each: "[MÚSICA DE FUNDO]" (Portuguese FLEURS, base), "* Musik *" (German),
#: "(speaking in foreign language)" (English, tiny.en), "♪ music ♪". Whisper's offline
#: decode suppresses all of these marks, so they are never in its text either.
ANNOTATION_MARKERS = {"[": "]", "*": "*", "(": ")", "♪": "♪"}
#: With ``onset_logprob``: the stream's (an utterance's) first words wait for a confident
#: decode while the buffer holds less than this many seconds.
ONSET_WAIT_LONGEST = 6.0
#: A word chosen looking this many seconds before the furthest audio a last decode had read
#: is said again: the decode stops before it (:meth:`AlignAtt._reread`).
REREAD_SECONDS = 1.0
#: An annotation not closed within this many words was text after all: its words go out.
ANNOTATION_LONGEST = 6


@dataclass
class _Decode:
    """One decode's new tokens, the frame each was chosen looking at, why it stopped, and
    where the buffer restarts when it stopped on a loop begun in the forced words."""

    tokens: list[int]
    attended: list[int]
    stop: str
    restart_at: float | None = None
    #: Each new token's log-probability (a greedy decode records them with
    #: ``onset_logprob`` only, else this is empty; a beam search always does).
    log_probs: list[float] = field(default_factory=list)


@dataclass
class _Hypothesis:
    """One hypothesis of a beam search: its new tokens, the frame each was chosen looking
    at, the sum of their log-probabilities, its attention so far, the decoder's scores
    for its next token, and each token's log-probability."""

    tokens: list[int]
    attended: list[int]
    score: float
    tracker: AttentionTracker
    decoded: Decoded
    log_probs: list[float] = field(default_factory=list)


@dataclass
class _Emitted:
    """A word emitted for the buffer: its tokens and its times in the stream."""

    text: str
    tokens: list[int]
    start: float
    end: float
    joins: bool = False  #: the rest of the word committed before it (``Word``'s ``joins``)


class AttentionTracker:
    """Where the model looks, token by token, during one decode: SimulStreaming's rule.

    The attention rows of every token fed so far are normalised per head and frame over
    the tokens (mean 0, deviation 1), the newest row is median-filtered over frames and
    averaged over heads, and its highest frame is the one attended."""

    def __init__(self, first: np.ndarray) -> None:
        heads, _, frames = first.shape
        self._sum = np.zeros((heads, frames))
        self._squares = np.zeros((heads, frames))
        self._rows = 0
        self._last = first[:, -1, :]
        self.add(first)

    def copy(self) -> AttentionTracker:
        """Another tracker where this one is (a beam search's hypothesis continued twice)."""
        other = object.__new__(AttentionTracker)
        other._sum, other._squares = self._sum.copy(), self._squares.copy()
        other._rows, other._last = self._rows, self._last
        return other

    def add(self, attention: np.ndarray) -> None:
        """Rows ``[heads, tokens, frames]`` of the tokens just fed."""
        rows = np.asarray(attention, np.float64)
        self._sum += rows.sum(axis=1)
        self._squares += (rows**2).sum(axis=1)
        self._rows += rows.shape[1]
        self._last = rows[:, -1, :]

    def attended_frame(self) -> int:
        """The frame the newest row attends most."""
        mean = self._sum / self._rows
        deviation = np.sqrt(np.maximum(self._squares / self._rows - mean**2, 0.0))
        normalised = (self._last - mean) / np.maximum(deviation, 1e-8)
        return int(np.argmax(median_filter(normalised, MEDIAN_WIDTH).mean(axis=0)))


def median_filter(rows: np.ndarray, width: int) -> np.ndarray:
    """Each row of ``rows`` (``[..., frames]``) median-filtered over ``width`` frames, its
    edges reflected (as whisper.timing.median_filter); rows shorter than that unchanged."""
    pad = width // 2
    if rows.shape[-1] <= pad:
        return rows
    padded = np.pad(rows, [(0, 0)] * (rows.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    if width % 2:  # the middle value: what np.median gives, without its sort of every window
        return np.partition(windows, pad, axis=-1)[..., pad]
    return np.median(windows, axis=-1)


class AlignAtt(Policy):
    """Decode each chunk once; stop where the cross-attention reaches the end of the audio."""

    name = "alignatt"
    description = (
        "AlignAtt (Simul-Whisper, SimulStreaming): one decode per chunk, stopped where "
        "the cross-attention reaches the end of the audio; commits at once"
    )
    requires = (INCREMENTAL_DECODING,)

    def __init__(
        self,
        backend: Backend,
        *,
        language: str | None = None,
        min_chunk: float = 1.2,
        frame_threshold: int = 25,
        audio_max_len: float = 30.0,
        audio_min_len: float = 0.0,
        max_context_tokens: int | None = None,
        init_prompt: str | None = None,
        static_init_prompt: str | None = None,
        never_fire: bool = False,
        onset_agreement: bool = False,
        onset_logprob: float | None = None,
        agreement: bool = False,
        decode_afresh: bool = False,
        vad: bool = False,
        vad_silence_ms: float = 500,
    ) -> None:
        super().__init__(backend, language=language)
        prefix = "policy 'alignatt':"
        if not is_finite_number(min_chunk) or min_chunk <= 0:
            raise InvalidOption(f"{prefix} min_chunk must be a number of seconds above 0, not {min_chunk!r}")
        if not is_whole_number(frame_threshold) or frame_threshold < 0:
            raise InvalidOption(f"{prefix} frame_threshold must be a whole number of frames >= 0, not {frame_threshold!r}")
        if not is_finite_number(audio_max_len) or audio_max_len <= min_chunk:
            raise InvalidOption(
                f"{prefix} audio_max_len must be a number of seconds above min_chunk ({min_chunk!r}), "
                f"not {audio_max_len!r}"
            )
        if not is_number(audio_min_len) or not 0 <= audio_min_len < audio_max_len:
            raise InvalidOption(
                f"{prefix} audio_min_len must be a number of seconds from 0 to below audio_max_len "
                f"({audio_max_len!r}), not {audio_min_len!r}"
            )
        if max_context_tokens is not None and (
            not is_whole_number(max_context_tokens) or max_context_tokens < 0
        ):
            raise InvalidOption(
                f"{prefix} max_context_tokens must be a whole number >= 0 (or unset: as many as fit), "
                f"not {max_context_tokens!r}"
            )
        for option, value in (("init_prompt", init_prompt), ("static_init_prompt", static_init_prompt)):
            if value is not None and not isinstance(value, str):
                raise InvalidOption(f"{prefix} {option} must be text, not {value!r}")
        if not isinstance(never_fire, bool):
            raise InvalidOption(f"{prefix} never_fire must be true or false, not {never_fire!r}")
        if not isinstance(onset_agreement, bool):
            raise InvalidOption(f"{prefix} onset_agreement must be true or false, not {onset_agreement!r}")
        if onset_logprob is not None and (not is_finite_number(onset_logprob) or onset_logprob > 0):
            raise InvalidOption(
                f"{prefix} onset_logprob must be a log-probability (a number <= 0; Whisper's threshold is -1), "
                f"or unset, not {onset_logprob!r}"
            )
        if not isinstance(agreement, bool):
            raise InvalidOption(f"{prefix} agreement must be true or false, not {agreement!r}")
        if not isinstance(decode_afresh, bool):
            raise InvalidOption(f"{prefix} decode_afresh must be true or false, not {decode_afresh!r}")
        self.vac = controller(self.name, vad, vad_silence_ms)
        from ..registry import capability_refusal

        refusal = capability_refusal(self, backend)  # also refused by the registry, before __init__
        if refusal is not None:
            raise refusal
        self.min_chunk = float(min_chunk)
        self.frame_threshold = frame_threshold
        self.audio_max_len = float(audio_max_len)
        self.audio_min_len = float(audio_min_len)
        self.never_fire = never_fire
        self.onset_agreement = onset_agreement
        self.onset_logprob = None if onset_logprob is None else float(onset_logprob)
        #: With ``onset_logprob``: nothing committed yet (in the stream; with ``vad``, in the
        #: utterance).
        self._opening = True
        self.agreement = agreement
        self.decode_afresh = decode_afresh
        #: With ``agreement``, and with ``onset_agreement`` until the stream's first word is
        #: committed: the new words of the last decode not committed, waiting for the next
        #: decode (after the same committed words) to agree.
        self._pending: list[str] | None = [] if onset_agreement or agreement else None
        self.decoder: IncrementalDecoder = backend.incremental_decoder(language=language)
        #: Hypotheses of each decode's beam search: the backend's ``beam_size`` (1: greedy).
        self.beam_size = int(getattr(self.decoder, "beam_size", 1))
        if self.beam_size > 1 and not getattr(self.decoder, "beam_search", False):
            raise InvalidOption(
                f"{prefix} backend {backend.name!r} has beam_size={self.beam_size}, but its incremental decoder "
                "cannot search beams; use beam_size=1"
            )
        if self.onset_logprob is not None and not (
            getattr(self.decoder, "beam_search", False) or getattr(self.decoder, "scores", False)
        ):
            raise InvalidOption(
                f"{prefix} onset_logprob needs the tokens' probabilities, and backend {backend.name!r}'s "
                "incremental decoder gives none; leave onset_logprob unset"
            )
        window = getattr(self.decoder, "window_seconds", None)
        if window is not None and self.audio_max_len > window:
            raise InvalidOption(
                f"{prefix} audio_max_len must be at most the encoder window of backend "
                f"{backend.name!r}, {window:g} s, not {audio_max_len!r}"
            )
        self.max_context_tokens = self.decoder.max_tokens if max_context_tokens is None else max_context_tokens
        self.static_context = self.decoder.text_tokens(static_init_prompt) if static_init_prompt else []
        self.context_words: list[list[int]] = (
            [tokens for _, tokens in self.decoder.words(self.decoder.text_tokens(init_prompt))] if init_prompt else []
        )
        self.audio = np.zeros(0, dtype=np.float32)
        self.buffer_offset = 0.0  # stream time of self.audio[0]
        self.emitted: list[_Emitted] = []  # words emitted for the audio in the buffer
        self._last_end = 0.0
        #: The newest words committed (at most REHEARD_WORDS), in stream time, also after
        #: they left the buffer: with ``decode_afresh``, what a decode may hear again.
        self._said: list[Word] = []
        self._init_context = list(self.context_words)
        #: Decodes stopped by the attention rule, by the end of text, by the token budget, by
        #: a loop.
        self.stops = {"attention": 0, "end_of_text": 0, "budget": 0, "loop": 0}
        self.rereads = 0  # decodes cut where the model went back to audio it had read
        self.loop_restarts = 0  # loops that went on from the forced words: buffer restarted
        self.skipped_passes = 0  # passes the voice-activity controller skipped over silence
        self.annotations = Annotations()  # what is kept out of the committed words

    # -- audio ---------------------------------------------------------------------------

    @property
    def buffered_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def insert_audio(self, pcm: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, np.asarray(pcm, dtype=np.float32)])
        if self.vac is not None:
            self.vac.insert(pcm)

    def _cut_at(self, cut: float) -> None:
        """Drop the buffer's audio before stream time ``cut``."""
        samples = min(len(self.audio), max(0, int(round((cut - self.buffer_offset) * SAMPLE_RATE))))
        self.audio = self.audio[samples:]
        self.buffer_offset += samples / SAMPLE_RATE
        if self.vac is not None:
            self.vac.forget_before(self.buffer_offset)

    def _trim_buffer(self) -> None:
        """Past ``audio_max_len``, the oldest audio leaves the buffer, cut before the first
        emitted word that starts late enough (midway from the word before it), or after
        the last emitted word where they all leave, and the words before the cut become
        context."""
        excess = len(self.audio) / SAMPLE_RATE - self.audio_max_len
        if excess <= 0:
            return
        needed = self.buffer_offset + excess
        leaving = 0
        while leaving < len(self.emitted) and self.emitted[leaving].start < needed:
            leaving += 1
        cut = needed
        if 0 < leaving < len(self.emitted):
            cut = max(needed, (self.emitted[leaving - 1].end + self.emitted[leaving].start) / 2)
        elif leaving:  # every emitted word leaves: not inside the last (its rest heard as a word)
            cut = max(needed, self.emitted[-1].end)
        self.context_words += [word.tokens for word in self.emitted[:leaving]]
        del self.emitted[:leaving]
        self._cut_at(cut)

    # -- context -------------------------------------------------------------------------

    def context(self, forced: int = 0) -> list[int]:
        """The decoder's context for a decode after ``forced`` tokens of the buffer: the
        static prompt, then the newest words of the rest that fit (the oldest are
        dropped for good)."""
        room = self.decoder.max_tokens - NEW_TOKEN_ROOM
        size = len(self.static_context) + sum(len(w) for w in self.context_words)
        while self.context_words and (size > self.max_context_tokens or size + forced > room):
            size -= len(self.context_words.pop(0))
        return self.static_context + [t for word in self.context_words for t in word]

    # -- passes --------------------------------------------------------------------------

    def process_iter(self) -> Step:
        if self.vac is not None and (step := self.vac.before_pass(self)) is not None:
            return step
        return self._pass(final=False)

    def finish(self) -> Step:
        """The last decode: to the end of text, every word kept."""
        if self.vac is not None:
            self.vac.update()  # the last audio too
            if not self.vac.in_utterance and not self.emitted:
                return Step()  # the last utterance was ended (or nobody spoke): nothing to add
            if self.vac.speech_end is not None:  # the model hears no more of the silence after it
                self._hear_until(self.vac.speech_end + UTTERANCE_END_PAD)
        ended = getattr(self.decoder, "end_of_audio", None)  # optional: nothing follows the buffer's audio
        if ended is not None:
            ended()
        return self._pass(final=True)

    def _hear_until(self, seconds: float) -> None:
        """Drop the buffer's audio after stream time ``seconds``."""
        self.audio = self.audio[: max(0, int(round((seconds - self.buffer_offset) * SAMPLE_RATE)))]

    def end_utterance(self, pause: Pause) -> Step:
        """Voice activity: an utterance ended. Its last decode, on the buffer up to
        ``UTTERANCE_END_PAD`` seconds into the pause (the model hears no more of the
        silence, where Whisper hears words), runs to the end of text and keeps every word
        heard in speech; then the next utterance starts afresh, as in SimulStreaming's
        controller: the buffer cut in the pause (keeping ``KEEP_SILENCE`` seconds of it),
        no words emitted for it, the context back to ``init_prompt`` (Whisper's previous
        text is another utterance's)."""
        audio, offset = self.audio, self.buffer_offset
        self._hear_until(pause.start + UTTERANCE_END_PAD)
        step = self._pass(final=True)
        self.audio, self.buffer_offset = audio, offset  # the whole buffer again, to cut in the pause
        self._start_afresh(max(pause.start, pause.end - KEEP_SILENCE))
        return step

    def _start_afresh(self, cut: float) -> None:
        """The buffer starts at stream time ``cut`` as a stream starts: no words emitted for
        it, the context back to ``init_prompt``, the agreement rules armed again."""
        self.emitted = []
        self.context_words = list(self._init_context)
        if self.onset_agreement or self.agreement:
            self._pending = []
        self._opening = True
        self._cut_at(cut)

    def start_utterance(self, onset: float) -> None:
        """Voice activity: speech starts an utterance at stream time ``onset``. No word was
        emitted for the buffer (it started afresh, or the stream did): it keeps
        ``ONSET_LEAD`` seconds of the silence before the speech."""
        if not self.emitted:
            self._cut_at(onset - ONSET_LEAD)

    def skip_silence(self) -> Step:
        """Voice activity: nobody spoke since the last pass, and the last utterance was
        ended. No decode; the buffer keeps only its last ``KEEP_SILENCE`` seconds."""
        self.skipped_passes += 1
        self._cut_at(self.buffer_offset + self.buffered_seconds - KEEP_SILENCE)
        return Step()

    def _pass(self, final: bool) -> Step:
        # Between passes a session holds its audio and tokens, not the encoder output and
        # cache of its last decode (megabytes per session): the next decode rebuilds them.
        try:
            step = self._decode_buffer(final)
        finally:
            self.decoder.close()
        return self.annotations.step(step, final)

    def _decode_buffer(self, final: bool, restarts: int = 0) -> Step:
        self._trim_buffer()
        if len(self.audio) == 0 or (not final and self.buffered_seconds < self.audio_min_len):
            return Step()  # (too little audio yet to decode: no encoder run)
        frames = self.decoder.encode(self.audio)
        if frames <= 0:
            return Step()
        forced = [] if self.decode_afresh else [t for word in self.emitted for t in word.tokens]
        context = self.context(len(forced))
        # The decode's tokens for the buffer (those forced and its new ones; the stream's last
        # decode: its new ones): a decoder that loops instead of ending stops there.
        budget = token_budget(MAX_TOKENS_PER_SECOND, self.buffered_seconds)
        if final:
            decode = self._decode(context, forced, frames, threshold=None, budget=budget)
        else:
            budget = max(0, budget - len(forced))
            decode = self._decode(context, forced, frames, threshold=self.frame_threshold, budget=budget)
        if decode.restart_at is not None and restarts < LOOP_RESTARTS_PER_PASS:
            # The decoder, forced with a loop's words, went on with the loop: the words
            # already committed stay, the audio after the loop's first occurrence is
            # decoded again with nothing forced.
            return self._restart(decode.restart_at, final, restarts)
        tokens, attended = decode.tokens, decode.attended
        words = self.decoder.words(tokens)
        joins = False
        if self.decode_afresh:
            words, attended, joins = self._not_heard_before(words, attended)
        skipped = len(decode.attended) - len(attended)  # tokens said before the new words
        reread = self._reread(words, attended) if final else len(words)
        went_back = reread < len(words)
        if went_back:
            # The model went back to audio it had read: what it says there is said again.
            self.rereads += 1
            attended = attended[: sum(len(group) for _, group in words[:reread])]
            words = words[:reread]
        # The chunk may end inside its last word, which waits; not where a loop stopped the
        # decode (the decoder was saying again what it had heard before), nor a word that
        # closes an annotation an earlier word opened: its marker ends it. (Held, "FUNDO]"
        # after a committed "[MÚSICA DE" was all that each decode forced with them said,
        # and the speech after it waited for the stream's end.) A whole annotation in one
        # word waits as any: committed, a lone "[Música]" over the silence before a
        # Spanish clip was forced into the next decodes, which said it again over the speech.
        ends = decode.stop == "loop" or went_back or self._closes_annotation(words)
        held = words[-1:] if words and not final and not self.never_fire and not ends else []
        if self._pending is not None and not final:
            # Committed once two decodes after the same committed words agree on them.
            agreed = agreed_prefix(self._pending, [text for text, _ in words])
            self._pending = [text for text, _ in words]
            held = words[min(agreed, len(words) - len(held)) :]
        if self._unsure_opening(words[: len(words) - len(held)], decode, skipped, final):
            held = words
        kept = self._timed(words[: len(words) - len(held)], attended)
        partial = self._timed(held, attended[sum(len(w.tokens) for w in kept) :])
        if joins and (kept or partial):
            (kept or partial)[0].joins = True
        loop_end = kept[-1].end if kept and decode.stop == "loop" else None
        if final and self.vac is not None:  # nothing decodes after these: words can go
            said = self.vac.words_in_speech([(w.start, w.end) for w in kept])
            kept = [word for word, spoken in zip(kept, said) if spoken]
        self.emitted += kept
        if kept:
            self._opening = False
            self._last_end = kept[-1].end
            self._said = (self._said + _as_words(kept))[-REHEARD_WORDS:]
            self._pending = self._pending[len(kept) :] if self.agreement else None  # (a list while agreement is on)
        step = Step(committed=_as_words(kept), partial=_as_words(partial))
        if final and loop_end is not None and loop_end > self.buffer_offset and restarts < LOOP_RESTARTS_PER_PASS:
            # No decode follows the last one: the audio after the loop's first occurrence
            # is decoded now, afresh.
            rest = self._restart(loop_end, final, restarts)
            step = Step(committed=step.committed + rest.committed, partial=rest.partial)
        return step

    def _unsure_opening(self, words: list[tuple[str, list[int]]], decode: _Decode, skipped: int, final: bool) -> bool:
        """With ``onset_logprob``: whether the first ``words`` a decode would commit (the
        stream's; with ``vad``, an utterance's) wait, their tokens' mean log-probability
        below it. ``skipped``: the decode's tokens before ``words``."""
        if self.onset_logprob is None or final or not self._opening or not words:
            return False
        if self.buffered_seconds >= ONSET_WAIT_LONGEST:
            return False
        count = sum(len(tokens) for _, tokens in words)
        scores = decode.log_probs[skipped : skipped + count]
        return bool(scores) and sum(scores) / len(scores) < self.onset_logprob

    def _reread(self, words: list[tuple[str, list[int]]], attended: list[int]) -> int:
        """The index of the first of a decode's new ``words`` chosen looking more than
        :data:`REREAD_SECONDS` before the furthest audio read so far (by the words
        emitted before it and this decode's words before it): the model went back to
        audio it had transcribed and says it again ("... even in the middle of a
        sentence. Even in the middle of a sentence.", tiny.en at the end of an English
        clip). Annotations of sound that is not speech are not asked: Whisper looks at
        the start of the buffer to write them. ``len(words)`` where none went back."""
        per_frame = 1.0 / self.decoder.frames_per_second
        furthest = (self._last_end - self.buffer_offset) / per_frame if self.emitted else None
        back = REREAD_SECONDS / per_frame
        closer = self.annotations.closer
        index = 0
        for number, (text, group) in enumerate(words):
            frames = attended[index : index + len(group)]
            index += len(group)
            was, (closer, closed) = closer, _after_word(closer, text.strip())
            if was is not None or closer is not None or closed:
                continue  # inside an annotation, or one in one word
            if furthest is not None and frames[0] < furthest - back:
                return number
            furthest = max(frames[-1], furthest if furthest is not None else frames[-1])
        return len(words)

    def _closes_annotation(self, words: list[tuple[str, list[int]]]) -> bool:
        """Whether the last of a decode's ``words`` closes an annotation of sound that is
        not speech (:class:`Annotations`) that an earlier word opened, in this decode or
        committed before: "FUNDO]" after "[MÚSICA DE", not a whole "[Música]"."""
        closer, opened, closed = self.annotations.closer, None, False
        for text, _ in words:
            opened = closer
            closer, closed = _after_word(closer, text.strip())
        return closed and opened is not None

    def _restart(self, cut: float, final: bool, restarts: int) -> Step:
        """After a loop: the buffer starts afresh at stream time ``cut`` and is decoded
        again in this pass (its ``restarts``-th restart so far)."""
        self.loop_restarts += 1
        self._start_afresh(cut)
        return self._decode_buffer(final, restarts + 1)

    def _decode(
        self, context: list[int], forced: list[int], frames: int, *, threshold: int | None, budget: int | None = None
    ) -> _Decode:
        """Greedy tokens after ``forced``, and the frame each was chosen looking at, up to
        the first token chosen within ``threshold`` frames of the end of the audio (None:
        no such rule), the end of text, the token budget (what the decoder holds, or
        ``budget`` new tokens when less), or a loop."""
        room = self.decoder.max_tokens - len(context) - len(forced)
        budget = room if budget is None else min(budget, room)
        if self.beam_size > 1:
            return self._decode_beams(context, forced, frames, threshold=threshold, budget=budget)
        decoded: Decoded = self.decoder.begin(context, forced)
        tracker = AttentionTracker(decoded.attention)
        tokens: list[int] = []
        attended: list[int] = []
        log_probs: list[float] = []
        restart_at = None
        checked = 0  # new words the loop rule has seen (the last of them may have grown since)
        while True:
            frame = tracker.attended_frame()
            stop = self._stop_before(decoded.token, frame, len(tokens), frames, threshold, budget)
            if stop is not None:
                break
            tokens.append(decoded.token)
            attended.append(frame)
            if self.onset_logprob is not None:
                log_probs.append(float(decoded.log_probs()[decoded.token]))
            if len(tokens) % LOOP_CHECK_TOKENS == 0:
                kept, restart_at, checked = self._before_loop(tokens, checked)
                if kept < len(tokens):
                    stop = "loop"
                    del tokens[kept:], attended[kept:], log_probs[kept:]
                    break
            decoded = self.decoder.feed(decoded.token)
            tracker.add(decoded.attention)
        self.stops[stop] += 1
        return _Decode(tokens, attended, stop, restart_at, log_probs)

    def _stop_before(
        self, token: int, frame: int, held: int, frames: int, threshold: int | None, budget: int
    ) -> str | None:
        """Why a decode holding ``held`` new tokens stops before ``token``, chosen looking at
        ``frame``: the end of text, the attention within ``threshold`` frames of the end of
        the audio (``frames``), or the token ``budget``; None when it goes on (the loop rule
        is asked once the token is taken)."""
        if token == self.decoder.eot:
            return "end_of_text"
        if threshold is not None and frames - frame <= threshold:
            return "attention"
        if held >= budget:
            return "budget"
        return None

    def _decode_beams(
        self, context: list[int], forced: list[int], frames: int, *, threshold: int | None, budget: int
    ) -> _Decode:
        """:meth:`_decode` with beam search (the backend's ``beam_size`` hypotheses, at most
        ``budget`` new tokens): each step, every hypothesis's ``beam_size`` likeliest next
        tokens are candidates, ranked by the sum of their tokens' log-probabilities; the
        best candidate is the leading one, and the rules of the greedy decode are asked of
        it (:meth:`_stop_before`, where its hypothesis looks, then the loop rule): where one
        holds, the leading hypothesis's tokens are the decode's. Otherwise the best
        ``beam_size`` candidates that do not end the text are the next hypotheses, the
        leading one first. With one hypothesis this is the greedy decode (SimulStreaming's
        beam search stops on its best hypothesis too)."""
        width = self.beam_size
        decoder = self.decoder
        first = decoder.begin(context, forced)
        beams = [_Hypothesis([], [], 0.0, AttentionTracker(first.attention), first)]
        restart_at = None
        while True:
            attended = [beam.tracker.attended_frame() for beam in beams]
            candidates = []
            for index, beam in enumerate(beams):
                scores = beam.decoded.log_probs()
                best = np.argpartition(-scores, min(width, len(scores)) - 1)[:width]
                candidates += [(beam.score + float(scores[t]), index, int(t)) for t in best if np.isfinite(scores[t])]
            candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
            score, leading, token = candidates[0]
            beam, frame = beams[leading], attended[leading]
            stop = self._stop_before(token, frame, len(beam.tokens), frames, threshold, budget)
            if stop is not None:
                break
            tokens = beam.tokens + [token]
            if len(tokens) % LOOP_CHECK_TOKENS == 0:
                kept, restart_at, _ = self._before_loop(tokens)
                if kept < len(tokens):
                    stop = "loop"
                    beam = _Hypothesis(
                        tokens[:kept], (beam.attended + [frame])[:kept], 0.0, beam.tracker, beam.decoded,
                        (beam.log_probs + [score - beam.score])[:kept],
                    )  # fmt: skip
                    break
            chosen = [c for c in candidates if c[2] != decoder.eot][:width]
            decoded = decoder.feed_beams([t for _, _, t in chosen], [i for _, i, _ in chosen])
            following = []
            for (score, index, token), step in zip(chosen, decoded):
                source = beams[index]
                tracker = source.tracker.copy()
                tracker.add(step.attention)
                following.append(
                    _Hypothesis(
                        source.tokens + [token], source.attended + [attended[index]], score, tracker, step,
                        source.log_probs + [score - source.score],
                    )  # fmt: skip
                )
            beams = following
        self.stops[stop] += 1
        return _Decode(beam.tokens, beam.attended, stop, restart_at, beam.log_probs)

    def _not_heard_before(
        self, words: list[tuple[str, list[int]]], attended: list[int]
    ) -> tuple[list[tuple[str, list[int]]], list[int], bool]:
        """A decode from the start of the buffer (``decode_afresh``): its ``words`` after
        those committed before, the frames their tokens were chosen at, and whether the
        first of them is the rest of the last committed word (``joins``).

        The decode says the words committed from the buffer again first, not always alike.
        Its words are aligned with them by text (difflib on :func:`rtlab.words.key`): what
        comes after the last of them is new; where the decode ends the committed run with
        other words (a replaced run), those of them that start after the last commit ends
        are new. Times, as LocalAgreement-2 drops its committed words, are too loose here:
        a decode places a word where the attention peaked, and decodes from the start said
        committed words again, also with a rule that took any word heard 0.5 s after the
        last commit for new. Known failure: committed words the later decodes do not say
        again (a guess at the onset) can align with common words far into the decode,
        and what comes before them is dropped (a French clause, one stream in twenty;
        see docs/benchmarks/2026-12-03-alignatt-decode-afresh.md). With no committed
        word left in the buffer (all became context), LocalAgreement's rule
        (:func:`~rtlab.policies.reheard.after_committed`) on the newest committed words."""
        spans = self._spans(words, attended)
        joins = False
        if self.emitted:
            first = self._after_emitted([key(text) for text, _ in words], spans)
        else:
            heard: list[Word] = [
                {"text": text, "start": start, "end": end, "index": index}
                for index, ((text, _), (start, end)) in enumerate(zip(words, spans))
            ]  # fmt: skip
            new = after_committed(heard, self._said)
            first = new[0]["index"] if new else len(words)
            joins = bool(new and new[0].get("joins"))
            if joins:  # the rest of a compound heard over the last committed word
                words = [*words[:first], (new[0]["text"], words[first][1]), *words[first + 1 :]]
        return words[first:], attended[sum(len(tokens) for _, tokens in words[:first]) :], joins

    def _after_emitted(self, keys: list[str], spans: list[tuple[float, float]]) -> int:
        """The index of the first of a decode's words (``keys``, at ``spans``) that comes
        after the words emitted for the buffer, by a text alignment of the two."""
        emitted = [key(word.text) for word in self.emitted]
        first = len(keys)
        for tag, _, _, j1, j2 in reversed(difflib.SequenceMatcher(None, emitted, keys, autojunk=False).get_opcodes()):
            if tag == "insert":  # said after the emitted words: new
                first = j1
                continue
            if tag == "replace":  # the emitted words' end heard otherwise: new from where they end
                first = next((j for j in range(j1, j2) if spans[j][0] > self._last_end - START_SLACK), j2)
            else:  # "equal", or "delete": emitted words the decode did not say again
                first = j2
            break
        return first

    def _before_loop(self, tokens: list[int], checked: int = 0) -> tuple[int, float | None, int]:
        """How many of a decode's new ``tokens`` come before a loop (a run of one to
        ``LOOP_LONGEST`` words said ``LOOP_REPEATS`` times in a row: the first of them is
        kept), or all of them. The attention rule does not stop a loop: the model keeps
        looking at the same audio. A loop that began in the words emitted before (forced:
        "type de" committed, "type de type de" new) keeps no new token, and the stream
        time where its first occurrence ends comes with it (else None). Only runs ending
        after the first ``checked`` new words but one are looked for (those before were
        looked for at an earlier check); the new words seen come last."""
        # After the forced words, the loop can have begun in them; a decode afresh says them again.
        said = [] if self.decode_afresh else self.emitted[-LOOP_REPEATS * LOOP_LONGEST :]
        words = self.decoder.words(tokens)
        run = repetition(
            [(word.text,) for word in said] + [(text,) for text, _ in words],
            longest=LOOP_LONGEST, ending_after=len(said) + max(0, checked - 1),
        )  # fmt: skip
        if run is None:
            return len(tokens), None, len(words)
        first_end = run[0] + run[1]  # words up to the end of the loop's first occurrence
        if first_end <= len(said):
            return 0, said[first_end - 1].end, len(words)
        return sum(len(group) for _, group in words[: first_end - len(said)]), None, len(words)

    def _spans(self, words: list[tuple[str, list[int]]], attended: list[int]) -> list[tuple[float, float]]:
        """Each word's stream time: from the frame its first token was chosen at to the
        frame after its last one's."""
        spans = []
        index = 0
        per_frame = 1.0 / self.decoder.frames_per_second
        for _, tokens in words:
            frames = attended[index : index + len(tokens)]
            index += len(tokens)
            start = self.buffer_offset + frames[0] * per_frame
            spans.append((start, self.buffer_offset + (frames[-1] + 1) * per_frame))
        return spans

    def _timed(self, words: list[tuple[str, list[int]]], attended: list[int]) -> list[_Emitted]:
        """Words in stream time (:meth:`_spans`), never before the last committed word's end."""
        timed: list[_Emitted] = []
        last_end = self._last_end
        for (text, tokens), (start, end) in zip(words, self._spans(words, attended)):
            start = max(last_end, start)
            end = max(start, end)
            timed.append(_Emitted(text, list(tokens), round(start, 3), round(end, 3)))
            last_end = end
        return timed


class Annotations:
    """Keeps Whisper's annotations of sound that is not speech out of a stream's words.

    A committed word that begins with an opening marker (:data:`ANNOTATION_MARKERS`) is
    held, with the words after it, until one ends with the closing marker: then all of
    them are dropped (``dropped`` counts the annotations). Held words go out as they are
    when no closing marker comes within :data:`ANNOTATION_LONGEST` words, or at the end
    of the stream or of an utterance (``final``): text is never lost to an unclosed
    bracket. Partial words are shown up to an annotation's first word."""

    def __init__(self) -> None:
        self.closer: str | None = None  # the marker that closes the open annotation
        self.held: list[Word] = []
        self.dropped = 0

    def step(self, step: Step, final: bool) -> Step:
        committed = [out for word in step.committed for out in self._take(word)]
        if final and self.held:
            committed += self._release()
        partial = [] if self.closer is not None else _before_annotation(step.partial)
        return Step(committed=committed, partial=partial)

    def _take(self, word: Word) -> list[Word]:
        if self.closer is None and word["text"][:1] not in ANNOTATION_MARKERS:
            return [word]
        self.held.append(word)
        self.closer, closed = _after_word(self.closer, word["text"])
        if closed:
            self.held = []
            self.dropped += 1
            return []
        return self._release() if len(self.held) > ANNOTATION_LONGEST else []

    def _release(self) -> list[Word]:
        held, self.held, self.closer = self.held, [], None
        return held


def _after_word(closer: str | None, text: str) -> tuple[str | None, bool]:
    """After the word ``text``, the marker that closes the open annotation (None: none is
    open), given ``closer``, the one before it; and whether ``text`` closed one."""
    if closer is None:
        if text[:1] not in ANNOTATION_MARKERS:
            return None, False
        closer, text = ANNOTATION_MARKERS[text[:1]], text[1:]  # it may close it too: "[Musik]"
    if text.rstrip(".,;:!?…").endswith(closer):
        return None, True
    return closer, False


def _before_annotation(words: list[Word]) -> list[Word]:
    """``words`` up to the first that opens an annotation."""
    opens = next((index for index, word in enumerate(words) if word["text"][:1] in ANNOTATION_MARKERS), len(words))
    return words[:opens]


def _as_words(emitted: list[_Emitted]) -> list[Word]:
    return [
        {"text": w.text.strip(), "start": w.start, "end": w.end, **({"joins": True} if w.joins else {})}
        for w in emitted
        if w.text.strip()
    ]
