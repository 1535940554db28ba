"""LocalAgreement-2, the policy of whisper_streaming (Macháček et al., 2023).

The growing audio buffer is re-transcribed every ``min_chunk`` seconds; a word is
committed once two consecutive hypotheses agree on it (their longest common prefix).
Committed text that scrolled out of the buffer becomes the prompt for the next pass.
Once the buffer is longer than ``buffer_trimming_sec`` (``overload_trimming_sec`` while
the processor reports the stream ``behind`` real time) it is cut in a pause after a
committed word (the last one's too, once the audio after it is quiet), preferably one
that ends a sentence. With no such pause it waits for one:
a cut at a word's end inside running speech opens the next buffer mid-sentence, and the
model, prompted with the text before the cut, can lose the rest of the sentence. Only
behind real time, where a longer buffer would put the stream further behind, is it cut at
the last committed word past ``buffer_trimming_sec``. It never grows past
``max_buffer_sec``: beyond that the oldest hypothesis words are committed without
agreement and the buffer is cut, so compute per pass stays bounded.

``deadline_sec`` (off by default, so that the policy is whisper_streaming's) bounds the
wait for agreement: a word that ends at least that long before the end of the buffer is
committed as the newest pass heard it when the pass before heard it too, in any position
(a single word heard differently between two agreeing ones counts as heard). Two passes
can go on disagreeing about a word for several seconds ("world" / "world's"), and
everything after it waits; with a deadline, commit latency stays below about
``deadline_sec`` plus one pass interval and one pass, except where one pass heard words
the other did not. The newest pass is the one that heard the most audio after the word.

``lookahead_sec`` (0, off, by default) commits an agreed word only once the newest pass
heard at least that much audio after it; the words after it wait too. Two passes that
both ended in the middle of a word can agree on the same wrong guess at it. As passes
come ``min_chunk`` apart and the older pass must have heard the word, a lookahead of at
most ``min_chunk`` changes little.

``onset_lookahead_sec`` (0, off, by default) is that wait for a buffer's first words only,
until a word of it is committed: two passes over the first second or two of an
utterance can agree on a guess the model would not make with more of it ("The library
opens at" as "But I really open that to"), and the words after the first commit have the
committed ones before them.

A pass whose model stopped short of the buffer's speech is no second opinion: when its text
ends in a word the alignment squeezed to nothing, ``STOPPED_EARLY_SEC`` or more before the
buffer ends, with sound after it, nothing is committed from it and the pass before stays
the one the next is compared with (two such passes in a row at most). Two passes a second
apart can stop alike on a name the model cannot read, and agree on what they made of it.

Words heard in silence are dropped before agreement: Whisper "hears" words such as
"Thank you." or "That's it." in pauses and trailing silence, and two passes agree on them
as readily as on real speech. A word is silent when no 20 ms frame of its span (widened by
a quarter second on each side, as Whisper's word times are loose) is louder than
``silence_factor`` times the buffer's background level (its 10th-percentile frame) and
than a tenth of its speech level (90th percentile). The reference is mainly the
background: a quiet speaker after a loud one is still louder than the pauses around them,
and a steady sound with no pauses is never taken for silence. ``silence_factor=0`` turns
the check off.

A stream started without a language, on a backend that can detect one
(``detect_language(audio) -> (language, probability)``, as rtlab-faster-whisper's
multilingual models do), has it detected on its buffer once a pass heard words, and
keeps the first language found with a probability of at least ``DETECT_PROBABILITY``
(else, at the end, the most probable one found): every pass after that is transcribed in
it, and the summary reports it. Whisper detects a language on every call given none, and
on the first second or two of speech it often says English: a pass in another language
than the one before would never agree with it.

``prompt_pause_sec`` (0.5 s by default; ``None``: off) keeps the prompt within an
utterance: committed text before a pause at least that long is left out of it once a pass
hears speech after the pause. Across unrelated utterances a prompt carries their words
into the next one ("as dinosaurs" read "as foreigners", a word two clips back, in a long
stream of clips).

A backend's words are taken in the order it said them, and their times made to follow
that order (:func:`in_time_order`): a word out of time order, one that starts before the
word before it (committed or not) starts or ends before it ends, is moved to start where
that word ends. A backend can return "c" at 1.2 s, then "b" at 0.5 s; committed as they
came, the transcript went back in time, and once a later pass heard "b" where it was, the
rule that drops the words committed before (by their times) took the "c" after it for new
and committed it again. The text's order wins because a model's word times come from
aligning the text it decoded, after the fact. Words that follow one another, overlapping
by a little as word times do, are left as they are.

``lead_silence_sec`` (1 s by default; ``None``: off) bounds the quiet at the head of the
buffer: when no word of the buffer comes before its first sound (none committed in it,
none waiting to be), the buffer keeps at most that much of the quiet before the sound
and before the first word waiting to be committed; a buffer with no sound in it keeps its
last ``lead_silence_sec``. Once words are committed, quiet is what the buffer was cut in
(no frame above ``QUIET_FRACTION`` of its speech level), room noise included, and the end
of the word a buffer was cut right behind is no sound. Whisper reads speech after
more than a second of silence worse (measured on docs/benchmarks/2026-12-06-long-form-clip-placements.md),
and a buffer cut in the middle of a pause between utterances, or a stream that opens with
silence, starts with seconds of it. With the voice-activity controller the buffer's head
follows Silero's onset instead.

``vad=True`` adds the voice-activity controller (:mod:`rtlab.policies.vac`, Silero VAD):
passes over silence are skipped, words heard where the VAD found no speech are dropped
like silent ones, and when a pause of ``vad_silence_ms`` ends an utterance, what the
buffer holds is committed at once and the buffer is cut in the pause.
"""

from __future__ import annotations

import difflib
from typing import Iterator

import numpy as np

from ..backends import SAMPLE_RATE, Backend, Word
from ..errors import InvalidOption
from ..levels import FRAME, frame_rms, silence_level, speech_level
from ..options import is_finite_number, is_number, is_whole_number
from ..vad import Pause
from ..words import MIN_WORD_SECONDS, agreed_prefix, key, sound_start
from . import Policy, Step
from .reheard import after_committed
from .vac import KEEP_SILENCE, ONSET_LEAD, controller

_WORD_MARGIN = 0.25  # seconds
PAUSE_SECONDS = 0.15  # a gap between two words this long is a place to cut the buffer
# A pause to cut in is quiet: no 20 ms frame above this fraction of the buffer's speech level
# (its 90th-percentile frame), for at least _MIN_QUIET_FRAMES frames in a row, starting
# within _END_SLACK seconds of the word's end.
QUIET_FRACTION = 0.1
_MIN_QUIET_FRAMES = 2
_END_SLACK = 0.1
# After a sentence's last word, Whisper's end time can be early by a few tenths of a second
# and a breath can follow: in a gap of at least SENTENCE_GAP seconds before the next word,
# a quiet stretch of at least _SENTENCE_QUIET_FRAMES frames anywhere in it is a pause too,
# and the longest one is where to cut when sound follows the quiet at the word's end.
SENTENCE_GAP = 1.0
_SENTENCE_QUIET_FRAMES = 10
# A pass whose text ends in a word the alignment squeezed to nothing, at least
# STOPPED_EARLY_SEC before the end of its buffer with sound after it, stopped early: it is
# no second opinion for agreement, at most _EARLY_PASSES times in a row.
STOPPED_EARLY_SEC = 0.5
_EARLY_PASSES = 2
# The head of a buffer cut right behind a committed word can hold that word's end (Whisper
# ends words early by up to a few tenths of a second): the lead rule looks for sound after it.
HEAD_TAIL_SEC = 0.5
#: A detected language this probable is kept for the rest of the stream.
DETECT_PROBABILITY = 0.8
#: The longest prompt a stream may ask for: Whisper reads at most 223 prompt tokens (about a
#: thousand characters), and every pass scans the committed words the prompt may need.
MAX_PROMPT_CHARS = 10_000


def _quiet_runs(frames: np.ndarray, quiet: float, first: int, last: int) -> Iterator[tuple[int, int]]:
    """Runs of frames no louder than ``quiet`` among ``frames[first:last]``, in order, as
    ``(start, stop)`` indices (``stop`` past the run's last frame)."""
    index = first
    while index < last:
        if frames[index] > quiet:
            index += 1
            continue
        stop = index
        while stop < last and frames[stop] <= quiet:
            stop += 1
        yield index, stop
        index = stop


def _heard_in(words: list[Word], other: list[Word]) -> list[bool]:
    """For each of ``words``, whether the aligned word sequence ``other`` has it too."""
    keys, other_keys = [key(w["text"]) for w in words], [key(w["text"]) for w in other]
    matcher = difflib.SequenceMatcher(None, keys, other_keys, autojunk=False)
    matched = [False] * len(words)
    for block in matcher.get_matching_blocks():
        for index in range(block.a, block.a + block.size):
            matched[index] = True
    return matched


def in_time_order(words: list[Word], after: Word | None = None) -> list[Word]:
    """``words`` in the order given, in time order after ``after`` (if given): a word that
    starts before the word before it starts, or ends before it ends, is moved to start
    where that word ends (and to end no earlier); the others are returned as they are."""
    ordered: list[Word] = []
    last = after
    for word in words:
        if last is not None and (word["start"] < last["start"] or word["end"] < last["end"]):
            word = {**word, "start": last["end"], "end": max(word["end"], last["end"])}
        ordered.append(word)
        last = word
    return ordered


def _seconds(name: str, value: object, low: float, high: float, *, unset: bool = False) -> float | None:
    """Option ``name``'s ``value`` as seconds from ``low`` to ``high`` (None, if ``unset``
    allows it, stays None); anything else is refused with a message naming the option."""
    if value is None and unset:
        return None
    if not is_number(value) or not low <= value <= high:
        raise InvalidOption(
            f"policy 'local-agreement': {name} must be a number of seconds from {low} to {high}"
            f"{' (or unset)' if unset else ''}, not {value!r}"
        )
    return float(value)


class LocalAgreement(Policy):
    """Commit the longest common prefix of the last two hypotheses."""

    name = "local-agreement"
    description = "LocalAgreement-2 (whisper_streaming): commit what two consecutive passes agree on"

    def __init__(
        self,
        backend: Backend,
        *,
        language: str | None = None,
        min_chunk: float = 1.0,
        buffer_trimming_sec: float = 15.0,
        max_buffer_sec: float = 30.0,
        prompt_chars: int = 200,
        silence_factor: float = 2.0,
        overload_trimming_sec: float = 5.0,
        deadline_sec: float | None = None,
        vad: bool = False,
        vad_silence_ms: float = 500,
        sentence_pause_sec: float | None = None,
        lookahead_sec: float = 0.0,
        onset_lookahead_sec: float = 0.0,
        prompt_pause_sec: float | None = 0.5,
        lead_silence_sec: float | None = 1.0,
    ) -> None:
        super().__init__(backend, language=language)
        for option, value in (("min_chunk", min_chunk), ("buffer_trimming_sec", buffer_trimming_sec),
                              ("max_buffer_sec", max_buffer_sec), ("overload_trimming_sec", overload_trimming_sec)):  # fmt: skip
            if not is_finite_number(value) or value <= 0:
                raise InvalidOption(
                    f"policy 'local-agreement' needs {option} > 0 (a number of seconds), not {value!r}"
                )
        if max_buffer_sec < buffer_trimming_sec:
            raise InvalidOption(
                f"policy 'local-agreement' needs buffer_trimming_sec <= max_buffer_sec; got "
                f"buffer_trimming_sec={buffer_trimming_sec}, max_buffer_sec={max_buffer_sec}"
            )
        if not is_whole_number(prompt_chars) or not 0 <= prompt_chars <= MAX_PROMPT_CHARS:
            raise InvalidOption(
                f"policy 'local-agreement': prompt_chars must be a whole number from 0 (no prompt) to "
                f"{MAX_PROMPT_CHARS}, not {prompt_chars!r}"
            )
        if not is_finite_number(silence_factor) or silence_factor < 0:
            raise InvalidOption(
                f"policy 'local-agreement': silence_factor must be a number >= 0 (0: off), not {silence_factor!r}"
            )
        if deadline_sec is not None and (
            not is_finite_number(deadline_sec) or deadline_sec <= 0
        ):
            raise InvalidOption(
                f"policy 'local-agreement': deadline_sec must be a number of seconds > 0 "
                f"(or unset, for no deadline), not {deadline_sec!r}"
            )
        self.min_chunk = float(min_chunk)
        self.buffer_trimming_sec = float(buffer_trimming_sec)
        self.max_buffer_sec = float(max_buffer_sec)
        self.prompt_chars = prompt_chars
        self.silence_factor = float(silence_factor)
        self.overload_trimming_sec = float(overload_trimming_sec)
        self.deadline_sec = None if deadline_sec is None else float(deadline_sec)
        self.sentence_pause_sec = _seconds("sentence_pause_sec", sentence_pause_sec, PAUSE_SECONDS, 10, unset=True)
        self.lookahead_sec = _seconds("lookahead_sec", lookahead_sec, 0, 5) or 0.0
        self.onset_lookahead_sec = _seconds("onset_lookahead_sec", onset_lookahead_sec, 0, 5) or 0.0
        self.prompt_pause_sec = _seconds("prompt_pause_sec", prompt_pause_sec, PAUSE_SECONDS, 10, unset=True)
        self.lead_silence_sec = _seconds("lead_silence_sec", lead_silence_sec, 0.1, 10, unset=True)
        self.vac = controller(self.name, vad, vad_silence_ms)
        self.skipped_passes = 0  # passes the voice-activity controller skipped over silence
        self.dropped_silent_words = 0
        self.deadline_commits = 0  # words committed by the deadline, without agreement
        self.stopped_early_passes = 0  # passes set aside as no second opinion (_stopped_early)
        self._early_in_row = 0
        self.audio = np.zeros(0, dtype=np.float32)
        self.buffer_offset = 0.0  # stream time of self.audio[0]
        self.committed: list[Word] = []  # in the buffer, and the last ones before it (the prompt)
        self.previous: list[Word] = []  # last hypothesis, minus what has been committed
        # Language detection, when no language was given: the best (language, probability)
        # found so far, and whether a pass heard words yet (detection waits for speech).
        self._detector = getattr(backend, "detect_language", None) if language is None else None
        self.detected: tuple[str, float] | None = None
        self._heard_words = False

    @property
    def buffered_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def last_committed_end(self) -> float:
        return self.committed[-1]["end"] if self.committed else 0.0

    def insert_audio(self, pcm: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, np.asarray(pcm, dtype=np.float32)])
        if self.vac is not None:
            self.vac.insert(pcm)

    def _is_silent(self, word: Word, threshold: float) -> bool:
        """Whether no frame of the buffer audio around ``word`` (buffer-relative times)
        exceeds ``threshold`` RMS."""
        # Whisper's word times are loose (a word can be squeezed into 40 ms of a pause next
        # to where it was said): look a quarter second around the word.
        first = max(0, int((word["start"] - _WORD_MARGIN) * SAMPLE_RATE))
        last = min(len(self.audio), int((word["end"] + _WORD_MARGIN) * SAMPLE_RATE))
        frames = frame_rms(self.audio[first:last])
        return len(frames) > 0 and float(frames.max()) <= threshold

    def _silence_threshold(self) -> float | None:
        """RMS at or below which a word counts as silence; None when the check is off."""
        if self.silence_factor <= 0:
            return None
        return silence_level(self.audio, self.silence_factor)

    def prompt(self) -> str:
        """Committed words that have left the buffer: the last ones, at most ``prompt_chars``
        characters in all. Whole words only: a cut word would prompt the model with a
        fragment it never heard. With ``prompt_pause_sec``, only the words after the last
        pause at least that long: the words before it belong to another utterance."""
        outside = [w for w in self.committed if w["end"] <= self.buffer_offset]
        if self.prompt_pause_sec is not None:
            outside = outside[self._since_last_pause(outside, self.prompt_pause_sec) :]
        kept: list[str] = []
        length = -1
        for word in reversed([w["text"].strip() for w in outside]):
            length += len(word) + 1
            if length > self.prompt_chars:
                break
            kept.append(word)
        return " ".join(reversed(kept))

    def _since_last_pause(self, outside: list[Word], pause: float) -> int:
        """Index of the first of ``outside`` (committed words that left the buffer, the
        first of ``self.committed``) after the last pause of at least ``pause`` seconds.
        Speech after them resumes at the next word heard: committed in the buffer, or the
        last pass's first word. With none heard yet, the pause has not ended and the prompt
        stays whole: given its prompt, Whisper hears nothing in the noise after a sentence
        more often than without it."""
        heard = self.committed[len(outside) : len(outside) + 1] or self.previous[:1]
        if not heard:
            return 0
        resumes = heard[0]["start"]
        first = len(outside)
        while first > 0 and resumes - outside[first - 1]["end"] < pause:
            first -= 1
            resumes = outside[first]["start"]
        return first

    def _detect_language(self, final: bool = False) -> None:
        """Detect the stream's language on the buffer (see the module docstring); at the
        end (``final``), settle for the most probable language found."""
        if self._detector is None or self.language is not None:
            return
        if self._heard_words and len(self.audio):
            found = self._detector(self.audio)
            if found is not None and (self.detected is None or found[1] >= self.detected[1]):
                self.detected = (str(found[0]), float(found[1]))
        if self.detected is not None and (final or self.detected[1] >= DETECT_PROBABILITY):
            self.language = self.detected[0]

    def transcribe_buffer(self, final: bool = False) -> list[Word]:
        """The backend's hypothesis for the buffer, in stream time, minus committed words,
        in time order after them (:func:`in_time_order`; words heard in silence are judged
        by the times the backend gave)."""
        self._detect_language(final)
        words = self.backend.transcribe(self.audio, prompt=self.prompt(), language=self.language)
        self._heard_words = self._heard_words or any(w["text"].strip() for w in words)
        threshold = self._silence_threshold()
        heard = [
            w for w in words
            if w["text"].strip() and (threshold is None or not self._is_silent(w, threshold))
        ]  # fmt: skip
        shifted = [
            {**w, "start": w["start"] + self.buffer_offset, "end": w["end"] + self.buffer_offset}
            for w in heard
        ]
        if self.vac is not None:
            said = self.vac.words_in_speech([(w["start"], w["end"]) for w in shifted])
            shifted = [w for w, keep in zip(shifted, said) if keep]
        self.dropped_silent_words += sum(1 for w in words if w["text"].strip()) - len(shifted)
        # In order within the pass before the committed words are found in it (by their
        # times), and after the last of them once they are dropped.
        new = after_committed(in_time_order(shifted), self.committed)
        return in_time_order(new, after=self.committed[-1] if self.committed else None)

    def process_iter(self) -> Step:
        if self.vac is not None and (step := self.vac.before_pass(self)) is not None:
            return step
        self._trim_lead()
        hypothesis = self.transcribe_buffer()
        if self._stopped_early(hypothesis):
            self.stopped_early_passes += 1
            self._early_in_row += 1
            committed = []
        else:
            self._early_in_row = 0
            committed = self._agreed(hypothesis)
        if self.buffered_seconds > self.max_buffer_sec:
            committed += self._force_commit()
        self.committed.extend(committed)
        self._trim()
        return Step(committed=committed, partial=list(self.previous))

    def _trim_lead(self) -> None:
        """Keep at most ``lead_silence_sec`` of the quiet before the buffer's first sound and
        first waiting word, when no word of the buffer comes before them (see the module
        docstring); the voice-activity controller, when on, does this instead."""
        if self.lead_silence_sec is None or self.vac is not None:
            return
        if self.last_committed_end > self.buffer_offset:  # committed words end in time order
            return
        head = self.previous[0]["start"] - self.buffer_offset if self.previous else self.buffered_seconds
        if head <= self.lead_silence_sec:  # the waiting word bounds it already: no need to look for sound
            return
        onset = self._head_sound()
        if onset is not None:
            head = min(head, onset)
        if head > self.lead_silence_sec:
            self._cut_at(self.buffer_offset + head - self.lead_silence_sec)

    def _head_sound(self) -> float | None:
        """Where the buffer's first sound starts (seconds into it), for the lead rule; None
        when it holds none. Before anything is committed, sound is louder than the silence
        level (:func:`rtlab.words.sound_start`). In a buffer cut behind committed words it
        is louder than the quiet the buffer was cut in (``QUIET_FRACTION`` of its speech
        level, :func:`rtlab.levels.speech_level`, or its silence level where that is
        higher; the speech level leaves digital silence out, where :meth:`_cut_points`'
        percentile counts it, so with a long spliced pause in the buffer this level is the
        higher of the two), for ``ONSET_FRAMES`` frames in a row; and a loud stretch of at most
        ``HEAD_TAIL_SEC`` at its head, when the cut came right behind a word, is that
        word's end, not sound before the next one.

        A pause between two recordings can hold the first one's room noise, louder than the
        second's (FLEURS speakers' rooms differ): judged by the silence level it was sound,
        so the buffer kept seconds of it and of the pause before the next utterance, where
        the cut rule had taken it for quiet."""
        if not self.committed:
            return sound_start(self.audio, 0.0)
        quiet = max(silence_level(self.audio) or 0.0, QUIET_FRACTION * speech_level(self.audio))
        start = 0.0
        if self.buffer_offset - self.last_committed_end < HEAD_TAIL_SEC:
            frames = frame_rms(self.audio[: int(HEAD_TAIL_SEC * SAMPLE_RATE)])
            still = np.flatnonzero(frames <= quiet)
            if len(still) == 0:
                return 0.0
            start = float(still[0]) * FRAME / SAMPLE_RATE
        return sound_start(self.audio, start, level=quiet)

    def _agreed(self, hypothesis: list[Word]) -> list[Word]:
        """What ``hypothesis`` and the pass before agree on (and, with ``deadline_sec``, the
        overdue words both heard), to commit; the rest of ``hypothesis`` becomes
        ``previous``."""
        agreed = agreed_prefix([w["text"] for w in self.previous], [w["text"] for w in hypothesis])
        lookahead = self.lookahead_sec
        if self.onset_lookahead_sec and self.last_committed_end <= self.buffer_offset:  # none committed in it yet
            lookahead = max(lookahead, self.onset_lookahead_sec)
        if lookahead:
            # Agreement on a word the newest pass heard no audio after is agreement between
            # two guesses made without right context.
            heard_after = self.buffer_offset + self.buffered_seconds - lookahead
            agreed = next((i for i, w in enumerate(hypothesis[:agreed]) if w["end"] > heard_after), agreed)
        heard_before = self.previous[agreed:]
        committed = hypothesis[:agreed]
        self.previous = hypothesis[agreed:]
        if self.deadline_sec is not None:
            committed += self._overdue(heard_before)
        return committed

    def _stopped_early(self, hypothesis: list[Word]) -> bool:
        """Whether the model stopped short of the buffer's speech in this pass: its last word
        has no length (the alignment found no sound for it), ends ``STOPPED_EARLY_SEC`` or
        more before the buffer does, and sound follows it there (:func:`rtlab.words.sound_start`,
        from a quarter second after the word).

        Whisper given a name it cannot read ends its text early: over "town of Sintra and
        which was made famous", a buffer that ended 2.6 s into it was "town of the town of
        the west." with "the west." squeezed to nothing at 84.45 s and speech on to 86 s;
        the pass a second before said the same, and the two agreed on it. Such a pass is
        no second opinion: nothing is committed from it and the pass before stays the one
        the next is compared with. At most ``_EARLY_PASSES`` in a row are set aside, so a
        stream whose model keeps stopping early still commits."""
        if not hypothesis or self._early_in_row >= _EARLY_PASSES:
            return False
        last = hypothesis[-1]
        end = last["end"] - self.buffer_offset
        if last["end"] - last["start"] >= MIN_WORD_SECONDS or self.buffered_seconds - end < STOPPED_EARLY_SEC:
            return False
        return sound_start(self.audio, end + _WORD_MARGIN) is not None

    def _overdue(self, heard_before: list[Word]) -> list[Word]:
        """The unagreed words, oldest first, that end ``deadline_sec`` or more before the end
        of the buffer and that the pass before also heard; removed from ``previous``.

        "Also heard" is agreement without the prefix rule: the two passes' words are
        aligned, and a word the pass before heard differently ("world" / "world's") is
        taken as this pass heard it when the word after it agrees. Two disagreeing words
        in a row end the commit: that is where one pass heard something the other did not
        (a phrase one pass inserted), and LocalAgreement waits for two passes to agree
        again."""
        due = self.buffer_offset + self.buffered_seconds - self.deadline_sec
        count = 0
        while count < len(self.previous) and self.previous[count]["end"] <= due:
            count += 1
        matched = _heard_in(self.previous[:count], heard_before)
        kept = 0
        for index in range(count):
            if matched[index]:
                kept = index + 1
            elif not (index + 1 < count and matched[index + 1]):
                break
        overdue, self.previous = self.previous[:kept], self.previous[kept:]
        self.deadline_commits += kept
        return overdue

    def _force_commit(self) -> list[Word]:
        """Overload guard: commit, without agreement, the unagreed words that end before the
        last ``buffer_trimming_sec`` of the buffer (at least one), so trimming can happen."""
        keep_from = self.buffer_offset + self.buffered_seconds - self.buffer_trimming_sec
        # A word straddling the cut is committed too: _trim cuts the audio through it.
        forced = [w for w in self.previous if w["start"] < keep_from] or self.previous[:1]
        self.previous = self.previous[len(forced) :]
        return forced

    def _cut_points(self, trailing: bool = False) -> list[tuple[float, bool, float]]:
        """Where the buffer may be cut, in stream time, oldest first: in a pause of at least
        ``PAUSE_SECONDS`` after a committed word that the audio confirms (see
        :meth:`_pause_cut`), ``(time, sentence, gap)`` where ``sentence`` says the word ends
        a sentence and ``gap`` is the time from its end to the next word's start.

        With ``trailing``, the last committed word's pause counts too when no word after it
        is heard yet (none committed, none waiting to be): ``gap`` is then how long the
        audio after it has been quiet (to the buffer's end, or to where a sound begins that
        no pass has heard as a word yet), and the cut falls in that quiet stretch.

        A cut right at a word's end inside running speech leaves the next pass a buffer
        that opens mid-syllable: tiny.en then hears "it's been" for "by", two passes cannot
        agree on the first word, and nothing commits until the buffer is cut again. A full
        stop alone is no proof of a sentence end: Whisper ends a buffer that stops
        mid-sentence with one ("keep it." for "keep it still")."""
        inside = [w for w in self.committed if w["end"] > self.buffer_offset]
        following = inside[1:] + self.previous[:1]
        frames = frame_rms(self.audio)
        quiet = QUIET_FRACTION * float(np.percentile(frames, 90)) if len(frames) else 0.0
        buffer_end = self.buffer_offset + self.buffered_seconds
        points = []
        for index, word in enumerate(inside):
            heard_after = index < len(following)  # a word (committed or not) follows it
            after = following[index]["start"] if heard_after else buffer_end if trailing else None
            if after is None or after - word["end"] < PAUSE_SECONDS:
                continue
            sentence = word["text"].rstrip()[-1:] in ".?!"
            found = self._pause_cut(word["end"], after, frames, quiet, sentence=sentence)
            if found is not None:
                cut, quiet_end = found
                gap = (after if heard_after else quiet_end) - word["end"]
                points.append((cut, sentence, gap))
        return points

    def _pause_cut(
        self, end: float, after: float, frames: np.ndarray, quiet: float, *, sentence: bool = False
    ) -> tuple[float, float] | None:
        """Where to cut in the gap between a word that ends at ``end`` and the next word,
        which starts at ``after`` (stream times): in the middle of the gap, as Whisper's
        word times are loose, but only where the audio is quiet (no 20 ms frame above
        ``quiet``) from the word's end to there; None when it is not quiet right after
        the word. ``(cut, quiet_end)``: the cut, and where the quiet stretch ends (at
        ``after`` at the latest).

        A gap between two words of a hypothesis is not always a pause: a pass whose model
        stopped early, or whose text the alignment could not place, leaves out words it
        never transcribed, and a cut in that gap would throw away the speech under it for
        good. The word's end itself may be late or early by a frame or two: the quiet
        stretch is looked for from ``_END_SLACK`` before it on, and must start within
        ``_END_SLACK`` after it.

        After a word that ends a ``sentence``, with at least ``SENTENCE_GAP`` seconds to
        the next word, the cut goes in the gap's longest quiet stretch of
        ``_SENTENCE_QUIET_FRAMES`` frames or more (see :meth:`_sentence_pause`) when no
        quiet starts at the word's end, or when sound follows that quiet before the
        stretch: a cut in two quiet frames right behind the word left the sound after
        them at the head of every pass over the next sentence (in the long English
        stream, a second of the end of one recording, fifty times as loud as the next
        recording's speech), and tiny.en heard "town of and which" for "town of Sintra
        and which" there in nine of ten repetitions."""
        first = int((end - self.buffer_offset - _END_SLACK) * SAMPLE_RATE) // FRAME
        last = int((after - self.buffer_offset) * SAMPLE_RATE) // FRAME
        first, last = max(0, first), min(len(frames), last)
        found = self._quiet_after(end, after, frames, quiet, first, last)
        if sentence and after - end >= SENTENCE_GAP:
            longest = self._sentence_pause(end, after, frames, quiet, first, last)
            if longest is not None and (found is None or longest[0] > found[1]):
                found = longest
        return found

    def _quiet_after(
        self, end: float, after: float, frames: np.ndarray, quiet: float, first: int, last: int
    ) -> tuple[float, float] | None:
        """:meth:`_pause_cut`'s quiet stretch that starts at the word's end."""
        run = next(_quiet_runs(frames, quiet, first, last), None)
        if run is None or run[0] * FRAME / SAMPLE_RATE + self.buffer_offset > end + _END_SLACK:
            return None
        if run[1] - run[0] < _MIN_QUIET_FRAMES:
            return None
        quiet_start, quiet_end = self._run_times(end, after, run, last)
        return max(end, min(end + (after - end) / 2, (quiet_start + quiet_end) / 2)), quiet_end

    def _sentence_pause(
        self, end: float, after: float, frames: np.ndarray, quiet: float, first: int, last: int
    ) -> tuple[float, float] | None:
        """The longest quiet stretch of at least ``_SENTENCE_QUIET_FRAMES`` frames between a
        sentence's end and the next word: ``(cut, quiet_end)``, the cut in the stretch (its
        middle, or earlier down to its start when the middle is past the gap's middle).
        The sound between the word's end and the stretch is the end of the word (Whisper
        ends the last word of a sentence early, by up to a few tenths of a second on FLEURS
        English) or a breath: no pass heard a word there, and the model had ended its
        sentence. None when the gap holds no such stretch."""
        runs = [run for run in _quiet_runs(frames, quiet, first, last) if run[1] - run[0] >= _SENTENCE_QUIET_FRAMES]
        if not runs:
            return None
        quiet_start, quiet_end = self._run_times(end, after, max(runs, key=lambda run: run[1] - run[0]), last)
        return max(quiet_start, min(end + (after - end) / 2, (quiet_start + quiet_end) / 2)), quiet_end

    def _run_times(self, end: float, after: float, run: tuple[int, int], last: int) -> tuple[float, float]:
        """Stream times of a quiet ``run`` of frames (``[start, stop)`` in the buffer) in the
        gap from ``end`` to ``after``, whose last frame is ``last``: from the word's end at
        the earliest, to ``after`` when the run reaches the gap's end."""
        start, stop = run
        quiet_end = after if stop >= last else stop * FRAME / SAMPLE_RATE + self.buffer_offset
        return max(end, start * FRAME / SAMPLE_RATE + self.buffer_offset), quiet_end

    def _trim(self) -> None:
        # Behind real time, a pass over a long buffer costs more (Whisper decodes every word
        # in it), which puts the stream further behind: trim sooner so the lag cannot grow.
        limit = self.buffer_trimming_sec
        if self.behind:
            limit = min(limit, self.overload_trimming_sec)
        points = None  # the cut points of the buffer as it is now; None until found, or once cut
        if self.sentence_pause_sec is not None:
            # A finished sentence and a long pause: what comes next is heard from the pause
            # on, as if it began the stream (with what was said before as the prompt).
            # The pause after the last committed word counts as soon as it is long enough,
            # before the next utterance is heard: a pass over the next utterance's first
            # words that still holds the sentence before guesses them worse.
            points = self._cut_points(trailing=True)
            ends = [time for time, sentence, gap in points if sentence and gap >= self.sentence_pause_sec]
            if ends:
                self._cut_at(ends[-1])
                points = None
        if self.buffered_seconds <= limit:
            return
        # Prefer the end of the last committed sentence, which keeps the sentence being spoken
        # whole for the model, unless that leaves more than the limit; else the last pause
        # after a committed word, the pause after the last one included when nothing after it
        # is heard yet: a buffer that keeps the silence after the speech until the next
        # utterance begins, ten seconds or more of it, has tiny.en hear that speech again as
        # other words, and one of them, past the committed word's end, taken for new ("and
        # comply." committed, "and pink on." heard later: "on." committed after it). With
        # neither, wait for a pause (see the module docstring):
        # the last committed word only behind real time past buffer_trimming_sec, or past
        # max_buffer_sec.
        buffer_end = self.buffer_offset + self.buffered_seconds
        if points is None:
            points = self._cut_points(trailing=True)
        sentences = [time for time, sentence, _ in points if sentence]
        if sentences and buffer_end - sentences[-1] <= limit:
            cut = sentences[-1]
        elif points:
            cut = points[-1][0]
        elif self.buffered_seconds > (self.buffer_trimming_sec if self.behind else self.max_buffer_sec):
            cut = self.last_committed_end
        else:
            return
        if self.buffered_seconds > self.max_buffer_sec:
            # Nothing (or too little) committed to cut at, e.g. long noise: drop the oldest audio.
            cut = max(cut, self.buffer_offset + self.buffered_seconds - self.buffer_trimming_sec)
        self._cut_at(cut)

    def _cut_at(self, cut: float) -> None:
        """Drop the buffer's audio before stream time ``cut``."""
        if cut <= self.buffer_offset:
            return
        samples = min(len(self.audio), int(round((cut - self.buffer_offset) * SAMPLE_RATE)))
        self.audio = self.audio[samples:]
        self.buffer_offset += samples / SAMPLE_RATE
        if self.vac is not None:
            self.vac.forget_before(self.buffer_offset)
        # Committed words that left the buffer serve only the prompt (at most prompt_chars
        # characters, so at most that many words): forget older ones, or a long stream's
        # policy would grow with its transcript and every pass would scan all of it.
        outside = sum(1 for w in self.committed if w["end"] <= self.buffer_offset)
        del self.committed[: max(0, outside - self.prompt_chars - 1)]

    def end_utterance(self, pause: Pause) -> Step:
        """Voice activity: an utterance ended. One pass over the buffer, and every word it
        heard is committed without waiting for another pass to agree: only silence follows
        (words heard in it are dropped as usual). The buffer is cut in the pause, keeping
        ``KEEP_SILENCE`` seconds of it before whatever comes next."""
        tail = self.transcribe_buffer()
        self.previous = []
        self.committed.extend(tail)
        self._cut_at(max(pause.start, pause.end - KEEP_SILENCE))
        return Step(committed=tail, partial=[])

    def start_utterance(self, onset: float) -> None:
        """Voice activity: speech starts an utterance at stream time ``onset``. Nothing
        waits to be committed (the last utterance was ended, or nobody spoke yet): the
        buffer keeps ``ONSET_LEAD`` seconds of the silence before it."""
        if not self.previous:
            self._cut_at(onset - ONSET_LEAD)

    def skip_silence(self) -> Step:
        """Voice activity: nobody spoke since the last pass, and nothing waits to be
        committed. No pass (no model call, no words heard in the silence); the buffer keeps
        only its last ``KEEP_SILENCE`` seconds, so that speech starts a short buffer."""
        self.skipped_passes += 1
        self._cut_at(self.buffer_offset + self.buffered_seconds - KEEP_SILENCE)
        return Step(committed=[], partial=list(self.previous))

    def finish(self) -> Step:
        """One last pass over the whole buffer, then commit every word in it."""
        if self.vac is not None:
            self.vac.update()  # the last audio too: words heard in its silence are dropped
        self._trim_lead()
        if len(self.audio) == 0:
            self._detect_language(final=True)
        tail = self.previous if len(self.audio) == 0 else self.transcribe_buffer(final=True)
        self.previous = []
        self.committed.extend(tail)
        return Step(committed=tail, partial=[])
