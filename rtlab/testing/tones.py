"""Tone-coded words: audio whose transcript is known exactly, the backend that reads it,
and the voice-activity detector that hears it.

Each word of :data:`VOCABULARY` is a sine burst at its own frequency; :func:`tone_words`
writes such audio and :class:`ToneBackend` (``"test"``) "recognises" it. The words survive
real FFmpeg and lossy codecs (opus, mp3), so the whole pipeline runs without Whisper
weights and gives exact, known transcripts. Silero VAD does not take a sine burst for
speech: within :func:`tone_vad`, :class:`ToneVAD` stands in for it.
"""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import time
import wave
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..backends import SAMPLE_RATE, Backend, Request, Word, batch_options

VOCABULARY = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
    "zero one two three four five six seven eight nine"
).split()

_BASE_HZ = 400.0
_STEP_HZ = 60.0
_FRAME = 320  # 20 ms


def tone_frequency(word: str) -> float:
    """The frequency that encodes ``word``; words outside the vocabulary are refused."""
    try:
        return _BASE_HZ + _STEP_HZ * VOCABULARY.index(word.lower())
    except ValueError:
        raise ValueError(f"{word!r} is not in the tone vocabulary: {' '.join(VOCABULARY)}") from None


def tone_words(
    text: str, *, word_seconds: float = 0.3, gap_seconds: float = 0.2, lead_seconds: float = 0.3
) -> tuple[np.ndarray, list[Word]]:
    """Tone-coded float32 audio for ``text`` and the true word timings."""
    pieces = [np.zeros(int(lead_seconds * SAMPLE_RATE), np.float32)]
    words: list[Word] = []
    t = lead_seconds
    ramp = np.hanning(int(0.02 * SAMPLE_RATE))
    for word in text.split():
        n = int(word_seconds * SAMPLE_RATE)
        tone = 0.5 * np.sin(2 * np.pi * tone_frequency(word) * np.arange(n) / SAMPLE_RATE)
        half = len(ramp) // 2
        tone[:half] *= ramp[:half]
        tone[-half:] *= ramp[half:]
        pieces += [tone.astype(np.float32), np.zeros(int(gap_seconds * SAMPLE_RATE), np.float32)]
        words.append({"text": word, "start": round(t, 3), "end": round(t + word_seconds, 3)})
        t += word_seconds + gap_seconds
    return np.concatenate(pieces), words


def wav_bytes(audio: np.ndarray, *, float32: bool = False) -> bytes:
    """16-bit 16 kHz mono WAV file contents for float32 ``audio``; with ``float32``, a
    32-bit float WAV instead, which decodes to exactly the samples given."""
    if float32:
        data = np.asarray(audio, dtype="<f4").tobytes()
        fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 32)
        fact = struct.pack("<I", len(data) // 4)  # non-PCM WAV files carry their sample count
        chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
        chunks += b"data" + struct.pack("<I", len(data)) + data
        return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


#: A small tone-coded corpus: clip name -> its words (see :func:`write_tone_corpus`).
TONE_CLIPS = {
    "a": "alpha bravo charlie delta",
    "b": "echo foxtrot golf hotel india juliett",
    "c": "one two three",
}


def write_tone_corpus(folder: Path, clips: dict[str, str] = TONE_CLIPS) -> Path:
    """A folder corpus at ``folder``: one tone-coded ``NAME.wav`` per clip with its
    ``NAME.txt`` reference; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in clips.items():
        audio, _ = tone_words(text)
        (folder / f"{name}.wav").write_bytes(wav_bytes(audio))
        (folder / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


class ToneBackend(Backend):
    """Decodes tone-coded words (see :func:`tone_words`); deterministic and fast.

    :param compute_rtf: sleep this many seconds per second of audio, to act like a model
        of that speed (for clock and overload tests).
    :param fail_after: raise RuntimeError on the n-th call (for fault tests).
    :param max_batch: passes of concurrent sessions one call may take (see
        :mod:`rtlab.core.batching`); a batch sleeps once, for its longest audio, as a model
        that batches would compute once.
    :param batch_wait_ms: how long a batch waits for more passes.
    """

    name = "test"
    description = "deterministic tone-word backend for tests and platform benchmarks"
    # A pass is milliseconds of numpy, or a sleep standing in for a model: it takes no CPU
    # slot, so a test that holds a pass open never holds up another backend.
    cores_per_call = 0

    def __init__(
        self,
        *,
        compute_rtf: float = 0.0,
        fail_after: int | None = None,
        model: str = "tones",
        max_batch: int = 1,
        batch_wait_ms: float = 0.0,
    ) -> None:
        self.compute_rtf = compute_rtf
        self.fail_after = fail_after
        self.model = model
        self.max_batch, self.batch_wait_ms = batch_options("test", max_batch, batch_wait_ms)
        self.calls = 0

    def default_language(self) -> str | None:
        return "en"

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "compute_rtf": self.compute_rtf}

    def transcribe_batch(self, requests: list[Request]) -> list[list[Word]]:
        if self.compute_rtf:
            time.sleep(self.compute_rtf * max(len(r.audio) for r in requests) / SAMPLE_RATE)
        return [self._decode(r.audio) for r in requests]

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        if self.compute_rtf:
            time.sleep(self.compute_rtf * len(audio) / SAMPLE_RATE)
        return self._decode(audio)

    def _decode(self, audio: np.ndarray) -> list[Word]:
        self.calls += 1
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError(f"test backend failing on call {self.calls}, as configured")
        frames = len(audio) // _FRAME
        if frames == 0:
            return []
        energy = np.sqrt(np.mean(audio[: frames * _FRAME].reshape(frames, _FRAME) ** 2, axis=1))
        voiced = energy > 0.05
        words: list[Word] = []
        start = None
        for index, is_voiced in enumerate(np.append(voiced, False)):
            if is_voiced and start is None:
                start = index
            elif not is_voiced and start is not None:
                # A burst still sounding at the end of the buffer is not a word yet.
                if index < frames and index - start >= 4:
                    words.append(self._word(audio[start * _FRAME : index * _FRAME], start, index))
                start = None
        return words

    def _word(self, burst: np.ndarray, first_frame: int, end_frame: int) -> Word:
        spectrum = np.abs(np.fft.rfft(burst * np.hanning(len(burst))))
        peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(burst)
        index = int(round((peak_hz - _BASE_HZ) / _STEP_HZ))
        text = VOCABULARY[min(max(index, 0), len(VOCABULARY) - 1)]
        return {
            "text": text,
            "start": first_frame * _FRAME / SAMPLE_RATE,
            "end": end_frame * _FRAME / SAMPLE_RATE,
            "probability": 1.0,
        }


#: RMS of a VAD frame that holds tone (a burst is 0.5 in amplitude, about 0.35 RMS).
TONE_LEVEL = 0.05


class ToneVAD:
    """Silero VAD's interface (:class:`rtlab.vad.SileroVAD`) for tone-coded audio: the
    probability of each whole 32 ms frame is 1 where it holds tone (RMS above
    :data:`TONE_LEVEL`), 0 elsewhere; a partial frame waits for the next call. ``frames``
    counts the frames it was asked about."""

    def __init__(self, path: Any = None) -> None:
        self.frames = 0
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next audio starts a new one."""
        self._rest = np.zeros(0, np.float32)

    def reset_state(self) -> None:
        """Silero's state reset: a tone detector has none."""

    @property
    def pending(self) -> int:
        """Samples received that do not make a whole frame yet."""
        return len(self._rest)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """The probabilities of the whole frames completed by ``pcm`` (16 kHz float32)."""
        from ..vad import FRAME

        audio = np.concatenate([self._rest, np.asarray(pcm, np.float32)])
        whole = len(audio) // FRAME * FRAME
        self._rest = audio[whole:]
        levels = np.sqrt(np.mean(audio[:whole].reshape(-1, FRAME) ** 2, axis=1)) if whole else np.zeros(0)
        self.frames += len(levels)
        return (levels > TONE_LEVEL).astype(np.float32)


class ToneVADs(list):
    """The :class:`ToneVAD` instances made within one :func:`tone_vad`."""

    @property
    def frames(self) -> int:
        """Frames all of them were asked about so far."""
        return sum(vad.frames for vad in list(self))


@contextlib.contextmanager
def tone_vad() -> Iterator[ToneVADs]:
    """Within the block, every Silero VAD that rtlab makes (:class:`rtlab.vad.VoiceActivity`
    makes one per stream, for a policy's ``vad=true``) is a :class:`ToneVAD`, which hears
    tone-coded words as speech; yields the ones made. For tests: it holds for the whole
    process, every thread, until the block ends."""
    from .. import vad

    made = ToneVADs()
    lock = threading.Lock()

    def make(path: Any = None) -> ToneVAD:
        detector = ToneVAD(path)
        with lock:
            made.append(detector)
        return detector

    silero, vad.SileroVAD = vad.SileroVAD, make
    try:
        yield made
    finally:
        vad.SileroVAD = silero
