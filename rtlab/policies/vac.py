"""The voice-activity controller: what a policy learns from voice activity between passes.

A policy with the controller (``vad=True`` on LocalAgreement and on AlignAtt) hands it
every piece of audio it receives (:meth:`VoiceActivityController.insert`, cheap, on the
event loop) and asks it at the start of each pass, on the pass's thread, where the VAD
runs (:meth:`~VoiceActivityController.before_pass`):

* did anyone speak since the last pass? A pass over nothing but silence is skipped: no
  model call, and no words "heard" in the silence;
* did speech start an utterance? The policy's buffer keeps only ``ONSET_LEAD`` seconds
  of the silence before it (``policy.start_utterance``);
* did an utterance end (a pause of ``min_silence_ms`` after speech)? The policy then
  commits what it heard up to the pause without waiting for two passes to agree, and cuts
  its buffer there;
* was a word the model heard said where there was speech (:meth:`~VoiceActivityController.heard_in_speech`)?
  Whisper hears words in silence and in noise ("Thank you.", a phrase of its prompt
  again), and the VAD tells those apart from speech better than audio levels do.

This is what whisper_streaming and WhisperLiveKit call VAC; the detection is
:mod:`rtlab.vad` (Silero VAD).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..backends import SAMPLE_RATE
from ..errors import InvalidOption
from ..options import is_number
from ..vad import FRAME, Pause, VoiceActivity

if TYPE_CHECKING:
    from . import Step

#: Seconds between a word and the next at most, for a word before speech to lead into it.
LEAD_GAP = 0.3
#: Seconds of silence a policy's buffer keeps while nobody speaks (a pass cannot know where
#: speech will start): Silero can be late to flag a soft start after a pause (1.3 s on the
#: "L'accident" that opens a French clip, with the state it carried from louder speech),
#: and audio cut before it is never heard.
KEEP_SILENCE = 2.0
#: Seconds of silence a policy's buffer keeps before the first frame Silero flags as speech
#: in an utterance, once it flags one: the rest of what ``KEEP_SILENCE`` kept is dropped
#: before the utterance's first pass. Whisper reads speech after more than a second of
#: silence worse, and the skipped passes could leave two to three seconds of it; Silero
#: flags a soft start up to about a second after Whisper's first word begins (with a
#: fresh state, on the shared clips of five languages). Measured on
#: docs/benchmarks/2026-12-06-controller-onset-lead.md.
ONSET_LEAD = 1.2


class VoiceControlled(Protocol):
    """What a policy with the controller provides for :meth:`VoiceActivityController.before_pass`."""

    def end_utterance(self, pause: Pause) -> Step: ...

    def skip_silence(self) -> Step: ...

    def start_utterance(self, onset: float) -> None: ...


def controller(policy: str, vad: object, vad_silence_ms: object) -> VoiceActivityController | None:
    """A policy's ``vad`` and ``vad_silence_ms`` options, checked: its controller, or None
    when ``vad`` is false."""
    if not isinstance(vad, bool):
        raise InvalidOption(f"policy {policy!r}: vad must be true or false, not {vad!r}")
    if not is_number(vad_silence_ms) or not 100 <= vad_silence_ms <= 5000:
        raise InvalidOption(
            f"policy {policy!r}: vad_silence_ms must be a number of milliseconds from 100 to 5000, not {vad_silence_ms!r}"
        )
    return VoiceActivityController(min_silence_ms=vad_silence_ms) if vad else None


class VoiceActivityController:
    """Voice activity of one stream, as a policy asks about it pass by pass.

    :param min_silence_ms: a pause this long after speech ends an utterance.
    :param threshold: Silero's speech probability at which speech starts.
    """

    def __init__(self, *, min_silence_ms: float = 500, threshold: float = 0.5) -> None:
        self.activity = VoiceActivity(threshold=threshold, min_silence_ms=min_silence_ms)
        self._pending: list[np.ndarray] = []
        self._speech_frames_seen = 0
        self._handled_pause_end: float = -1.0

    def insert(self, pcm: np.ndarray) -> None:
        """Audio the policy received (the VAD runs on it at the next :meth:`update`)."""
        self._pending.append(np.asarray(pcm, np.float32))

    def update(self) -> bool:
        """Run the VAD over the audio received since the last update; whether any speech
        was heard in it (or is still going on)."""
        for pcm in self._pending:
            self.activity.process(pcm)
        self._pending = []
        heard = self.activity.speech_frames > self._speech_frames_seen or self.activity.speaking
        self._speech_frames_seen = self.activity.speech_frames
        return heard

    def before_pass(self, policy: VoiceControlled) -> Step | None:
        """At the start of a pass: :meth:`update`, then the policy's step when voice
        activity decides it (an utterance ended: ``policy.end_utterance(pause)``; nobody
        spoke since the last pass, nor since the last utterance ended:
        ``policy.skip_silence()``), or None: the policy decodes as usual. When speech
        starts an utterance since the last pass, the policy hears of it first
        (``policy.start_utterance(onset)``, stream seconds where the speech began)."""
        was_in_utterance = self.in_utterance
        heard = self.update()
        if not was_in_utterance and self.in_utterance:
            policy.start_utterance(self.utterance_onset())
        pause = self.utterance_end()
        if pause is not None:
            return policy.end_utterance(pause)
        if not heard and not self.in_utterance:
            return policy.skip_silence()
        return None

    def utterance_end(self) -> Pause | None:
        """The pause that ended the last utterance, once, when it was not handled yet."""
        pause = self.activity.utterance_ended()
        if pause is None or pause.start <= self._handled_pause_end:
            return None
        self._handled_pause_end = pause.start
        return pause

    def utterance_onset(self) -> float:
        """Stream seconds where the speech of the utterance going on began (where the last
        one ended when its flags were forgotten, which a policy's buffer never asks)."""
        after = max(0.0, self._handled_pause_end)
        onset = self.activity.first_speech_after(after)
        return after if onset is None else onset

    def heard_in_speech(self, start: float, end: float, margin: float = 0.2) -> bool:
        """Whether the VAD found speech within ``margin`` seconds of a word heard from
        ``start`` to ``end`` (seconds of the stream; Whisper's word times are loose). A
        span the VAD has not seen yet counts as speech."""
        found = self.activity.speech_in(max(0.0, start - margin), end + margin)
        return found is None or found

    def words_in_speech(self, spans: list[tuple[float, float]], lead_gap: float = LEAD_GAP) -> list[bool]:
        """Which of a pass's words (their ``(start, end)`` in stream seconds, in order) were
        said: heard in speech (:meth:`heard_in_speech`), or leading into such a word with
        no more than ``lead_gap`` seconds between one and the next.

        Silero is slow to trust a soft start after a pause: on the shared English speech
        it flagged "To the north" as speech 0.8 s after the words began, while Whisper put
        them right at the buffer's start. Words the model heard *before* speech it is sure
        of, and joined to it, are the utterance's first words; words in the silence
        *after* speech, or apart from it, are still dropped."""
        said = [self.heard_in_speech(start, end) for start, end in spans]
        for index in range(len(spans) - 2, -1, -1):
            if not said[index] and said[index + 1] and spans[index + 1][0] - spans[index][1] <= lead_gap:
                said[index] = True
        return said

    def forget_before(self, seconds: float) -> None:
        """The policy will not ask about audio before ``seconds`` again."""
        self.activity.forget_before(seconds)

    @property
    def speech_end(self) -> float | None:
        """Stream seconds where the last speech heard ended (None before any)."""
        end = self.activity.last_speech_end
        return None if end is None else end * FRAME / SAMPLE_RATE

    @property
    def in_utterance(self) -> bool:
        """Whether speech was heard since the last utterance ended (or the stream began)."""
        end = self.activity.last_speech_end
        return end is not None and end * FRAME / SAMPLE_RATE > self._handled_pause_end
