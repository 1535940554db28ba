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
    silence, whose levels are exactly zero.
    """
    frames = frame_rms(audio)
    if len(frames) == 0:
        return None
    background, speech = np.percentile(frames, [10, 90])
    return min(max(factor * float(background), 1e-4), max(0.1 * float(speech), 1e-4))
