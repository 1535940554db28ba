"""Voice activity: which stretches of a stream hold speech, frame by frame, as audio arrives.

:class:`SileroVAD` runs Silero VAD (v6, an ONNX model that ships inside faster-whisper's
wheel and runs on onnxruntime, which faster-whisper installs; nothing is downloaded) on
32 ms frames, carrying the model's state from one call to the next, so that feeding a
stream in pieces gives the same probabilities as feeding it whole.
:class:`VoiceActivity` turns the probabilities into speech and silence with hysteresis
(speech starts at ``threshold``, ends below ``threshold - 0.15``), resets the model's state
after a second of silence, and tells a policy where the last pause long enough to end an
utterance is.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import SAMPLE_RATE
from .errors import BackendUnavailable

#: Samples per VAD frame (32 ms at 16 kHz), and the context each frame carries.
FRAME = 512
_CONTEXT = 64
#: The model file's name in faster-whisper's assets.
MODEL_FILE = "silero_vad_v6.onnx"


def vad_model_path() -> Path:
    """Silero VAD's ONNX model: ``RTLAB_VAD_MODEL``, else the one in faster-whisper's wheel."""
    configured = os.environ.get("RTLAB_VAD_MODEL")
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise BackendUnavailable(f"RTLAB_VAD_MODEL={configured!r} is not a file: point it at {MODEL_FILE}")
        return path
    try:
        from faster_whisper.vad import get_assets_path
    except ImportError:
        raise BackendUnavailable(
            "voice-activity detection needs Silero VAD's model, which ships with faster-whisper: "
            "pip install -e plugins/rtlab-faster-whisper (or set RTLAB_VAD_MODEL to silero_vad_v6.onnx)"
        ) from None
    path = Path(get_assets_path()) / MODEL_FILE
    if not path.is_file():
        raise BackendUnavailable(f"faster-whisper's wheel has no {MODEL_FILE}: set RTLAB_VAD_MODEL to the model file")
    return path


_sessions: dict[str, object] = {}
_sessions_lock = threading.Lock()


def _session(path: Path):
    """One onnxruntime session per model file, shared (a session is safe across threads;
    each stream keeps its own state)."""
    with _sessions_lock:
        session = _sessions.get(str(path))
        if session is None:
            try:
                import onnxruntime
            except ImportError:
                raise BackendUnavailable("voice-activity detection needs onnxruntime: pip install onnxruntime") from None
            options = onnxruntime.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            options.log_severity_level = 4
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"], sess_options=options)
            _sessions[str(path)] = session
        return session


class SileroVAD:
    """Speech probability of each 32 ms frame of one stream, computed as audio arrives."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._session = _session(Path(path) if path else vad_model_path())
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next audio starts a new one."""
        self.reset_state()
        self._context = np.zeros(_CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)

    def reset_state(self) -> None:
        """Forget what the model learned from the audio so far (its recurrent state), not
        where the stream is: the audio before the next frame stays its context."""
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)

    @property
    def pending(self) -> int:
        """Samples received that do not make a whole frame yet."""
        return len(self._rest)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """The probabilities of the whole frames completed by ``pcm`` (16 kHz float32); a
        partial frame waits for the next call."""
        audio = np.concatenate([self._rest, np.asarray(pcm, np.float32)])
        whole = len(audio) // FRAME * FRAME
        self._rest = audio[whole:]
        if whole == 0:
            return np.zeros(0, np.float32)
        frames = audio[:whole].reshape(-1, FRAME)
        contexts = np.concatenate([self._context[None, :], frames[:-1, -_CONTEXT:]], 0)
        batch = np.concatenate([contexts, frames], 1)
        probabilities, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = frames[-1, -_CONTEXT:].copy()
        return np.asarray(probabilities, np.float32).reshape(-1)


@dataclass
class Pause:
    """A pause in the speech: seconds from the start of the stream."""

    start: float
    end: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


#: Seconds of silence after which the model's state is reset (:meth:`SileroVAD.reset_state`).
RESET_AFTER_SILENCE = 1.0


class VoiceActivity:
    """Speech and pauses of one stream, from :class:`SileroVAD` probabilities.

    After :data:`RESET_AFTER_SILENCE` seconds of silence the model's state is reset, so
    that each utterance after a pause is heard as a fresh start. Silero's state carries
    what it heard before: after a loud speaker, a quiet one went unheard (a quiet French
    clip after a louder one in a long stream, 0.1 to 0.4 where a fresh state gave 0.8 to
    1.0, and its first words were never transcribed).

    :param threshold: a frame with this probability or more starts speech.
    :param min_silence_ms: a pause at least this long after speech ends an utterance.
    """

    def __init__(self, vad: SileroVAD | None = None, *, threshold: float = 0.5, min_silence_ms: float = 500) -> None:
        self.vad = vad or SileroVAD()
        self.threshold = threshold
        self.off_threshold = max(0.0, threshold - 0.15)
        self.min_silence_frames = max(1, int(round(min_silence_ms / 1000 * SAMPLE_RATE / FRAME)))
        self.frames = 0
        self.speaking = False
        self.speech_frames = 0
        self.last_speech_end: int | None = None  # frame index just after the last speech frame
        self._silent_run = 0
        self.reset_frames = max(1, int(round(RESET_AFTER_SILENCE * SAMPLE_RATE / FRAME)))
        self._fresh = True  # no speech since the model's state was new or reset
        self.resets = 0
        # Speech (1) or not (0) for each frame from frame ``_first_flag`` on; the policy
        # forgets the frames before its buffer (forget_before), so this stays bounded.
        self._flags = bytearray()
        self._first_flag = 0

    def process(self, pcm: np.ndarray) -> None:
        """Account for ``pcm``, the stream's next audio. It goes to the model in pieces
        that end where a reset may be due, so that the probabilities do not depend on how
        the stream was cut into calls."""
        pcm = np.asarray(pcm, np.float32)
        while len(pcm):
            # A reset is due after reset_frames silent frames that follow speech: at the
            # earliest that many frames on (fewer when the silence has begun).
            silent = 0 if self._fresh else self._silent_run
            take = min(len(pcm), max(1, (self.reset_frames - silent) * FRAME - self.vad.pending))
            self._account(self.vad.process(pcm[:take]))
            pcm = pcm[take:]

    def _account(self, probabilities: np.ndarray) -> None:
        for probability in probabilities:
            if probability >= self.threshold or (self.speaking and probability >= self.off_threshold):
                self.speaking = True
                self.speech_frames += 1
                self._silent_run = 0
                self._fresh = False
                self.last_speech_end = self.frames + 1
            else:
                self.speaking = False
                self._silent_run += 1
            self._flags.append(1 if self.speaking else 0)
            self.frames += 1
        if not self._fresh and self._silent_run >= self.reset_frames:
            self.vad.reset_state()
            self._fresh = True
            self.resets += 1

    @property
    def seconds(self) -> float:
        """Seconds of audio accounted for (whole frames)."""
        return self.frames * FRAME / SAMPLE_RATE

    @property
    def heard_speech(self) -> bool:
        """Whether any speech was heard so far."""
        return self.speech_frames > 0

    def silent_since(self) -> float | None:
        """Seconds of silence at the end of the stream so far (None before any speech)."""
        if self.last_speech_end is None:
            return None
        return (self.frames - self.last_speech_end) * FRAME / SAMPLE_RATE

    def utterance_ended(self) -> Pause | None:
        """The pause after the last speech, when it is long enough to end an utterance."""
        if self.last_speech_end is None or self.speaking or self._silent_run < self.min_silence_frames:
            return None
        return Pause(self.last_speech_end * FRAME / SAMPLE_RATE, self.seconds)

    def speech_in(self, start: float, end: float) -> bool | None:
        """Whether any frame between ``start`` and ``end`` (seconds of the stream) was
        speech; None when none of that span has been accounted for (or it was forgotten)."""
        first = max(int(start * SAMPLE_RATE) // FRAME, self._first_flag)
        last = min(int(np.ceil(end * SAMPLE_RATE / FRAME)), self.frames)
        if last <= first:
            return None
        return any(self._flags[first - self._first_flag : last - self._first_flag])

    def first_speech_after(self, seconds: float) -> float | None:
        """Stream seconds where the first frame of speech after ``seconds`` starts (None
        when none was heard since, or that span was forgotten)."""
        first = max(int(np.ceil(seconds * SAMPLE_RATE / FRAME)), self._first_flag)
        found = self._flags.find(1, first - self._first_flag)
        return None if found < 0 else (found + self._first_flag) * FRAME / SAMPLE_RATE

    def forget_before(self, seconds: float) -> None:
        """Drop the speech flags of the frames before ``seconds`` (no longer asked about)."""
        frame = min(int(seconds * SAMPLE_RATE) // FRAME, self.frames)
        if frame > self._first_flag:
            del self._flags[: frame - self._first_flag]
            self._first_flag = frame
