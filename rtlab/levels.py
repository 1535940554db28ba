"""Audio levels on 20 ms frames: the one rule for "this is silence" that policies and
backends share.

Whisper hears words in silence ("Thank you.", "That's it."), so a policy drops words heard
there and a backend skips decoding audio that holds nothing else. Both ask the same
question of the same buffer, and answer it here.
"""

from __future__ import annotations

import numpy as np

from .backends import SAMPLE_RATE

FRAME = SAMPLE_RATE // 50  # 20 ms
#: A frame this quiet holds no signal: exact zeros, or below a 16-bit sample's last bit.
DIGITAL_SILENCE = 1e-5


def frame_rms(audio: np.ndarray) -> np.ndarray:
    """RMS energy of each whole 20 ms frame of ``audio`` (16 kHz)."""
    count = len(audio) // FRAME
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    return np.sqrt(np.mean(audio[: count * FRAME].reshape(count, FRAME) ** 2, axis=1))


def silence_level(audio: np.ndarray, factor: float = 2.0) -> float | None:
    """RMS at or below which a 20 ms frame of ``audio`` is silence; None for audio shorter
    than a frame.

    Silence is near the background (``factor`` times the 10th-percentile frame) *and* far
    below the speech (a tenth of the 90th percentile): a steady tone or babble, whose
    background is close to its speech, is never silence. The floor covers digital
    silence, whose levels are exactly zero. The percentiles are of the frames that carry
    any signal: digital silence beside a recording (a pause spliced in, a muted
    microphone) is not its background, and taken for one it would make the recording's
    own room noise count as sound.
    """
    frames = frame_rms(audio)
    if len(frames) == 0:
        return None
    frames = signal_frames(frames)
    if len(frames) == 0:
        return 1e-4
    background, speech = np.percentile(frames, [10, 90])
    return min(max(factor * float(background), 1e-4), max(0.1 * float(speech), 1e-4))


def signal_frames(frames: np.ndarray) -> np.ndarray:
    """The frames of ``frames`` (RMS levels) that are not digital silence."""
    return frames[frames > DIGITAL_SILENCE]


def speech_level(audio: np.ndarray) -> float:
    """The level of speech in ``audio``: its 90th-percentile 20 ms frame, of the frames
    that are not digital silence (0 when none is)."""
    frames = signal_frames(frame_rms(audio))
    return float(np.percentile(frames, 90)) if len(frames) else 0.0
