"""Whole files decoded in one FFmpeg call: for offline passes, replays and long-form corpora.

Streams go through a session's own decoder; these functions are for audio that is already
complete on disk.
"""

from __future__ import annotations

import os
import subprocess
import wave
from pathlib import Path

import numpy as np

from ..errors import DecoderError
from .ffmpeg import NO_AUDIO_STREAM, NO_AUDIO_STREAM_ADVICE, SAMPLE_RATE, find_ffmpeg, global_args, one_line

__all__ = ["decode_audio", "decode_file", "read_audio", "to_pcm16"]


def decode_file(path: str | os.PathLike[str], sample_format: str = "f32le") -> bytes:
    """The audio of ``path`` as 16 kHz mono samples in ``sample_format`` (``f32le`` or
    ``s16le``), decoded by one FFmpeg call.

    Raises ``FileNotFoundError`` for a missing file, :class:`~rtlab.errors.FFmpegNotFound`
    without FFmpeg, and :class:`~rtlab.errors.DecoderError` (with FFmpeg's message) for a
    file FFmpeg cannot decode.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"audio file not found: {source}")
    cmd = [
        find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", *global_args(),
        "-i", str(source), "-f", sample_format, "-ac", "1", "-ar", str(SAMPLE_RATE), "-",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = one_line(proc.stderr.decode("utf-8", "replace"))[-500:]
        if NO_AUDIO_STREAM in detail:
            raise DecoderError(f"FFmpeg could not decode {source}: {NO_AUDIO_STREAM_ADVICE}")
        raise DecoderError(f"FFmpeg could not decode {source} (exit {proc.returncode}): {detail}")
    return proc.stdout


def decode_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """The audio of ``path`` as 16 kHz mono float32 samples (see :func:`decode_file`)."""
    return np.frombuffer(decode_file(path), dtype="<f4").astype(np.float32)


def read_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """:func:`decode_audio`, but a 16 kHz mono 16-bit WAV file is read directly, without
    FFmpeg (a machine without one, such as a GPU box, reads its corpus so)."""
    source = Path(path)
    if source.suffix.lower() == ".wav" and source.is_file():
        try:
            with wave.open(str(source), "rb") as wav:
                if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getcomptype()) == (
                    SAMPLE_RATE, 1, 2, "NONE"
                ):  # fmt: skip
                    return from_pcm16(wav.readframes(wav.getnframes()))
        except wave.Error:
            pass  # a WAV the module cannot read (float, extensible): FFmpeg's
    return decode_audio(source)


def to_pcm16(audio: np.ndarray) -> bytes:
    """Float32 samples as little-endian 16-bit PCM bytes (what the ``pcm_s16le`` decoder reads)."""
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """Little-endian 16-bit PCM bytes as float32 samples (what the ``pcm_s16le`` decoder gives)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
