"""Whole files decoded in one FFmpeg call: for offline passes, replays and long-form corpora.

Streams go through a session's own decoder; these functions are for audio that is already
complete on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from ..errors import DecoderError
from .ffmpeg import NO_AUDIO_STREAM, NO_AUDIO_STREAM_ADVICE, SAMPLE_RATE, find_ffmpeg, global_args, one_line

__all__ = ["count_samples", "decode_audio", "decode_file", "read_audio", "to_pcm16"]


def decode_file(path: str | os.PathLike[str], sample_format: str = "f32le") -> bytes:
    """The audio of ``path`` as 16 kHz mono samples in ``sample_format`` (``f32le`` or
    ``s16le``), decoded by one FFmpeg call.

    Raises ``FileNotFoundError`` for a missing file, :class:`~rtlab.errors.FFmpegNotFound`
    without FFmpeg, and :class:`~rtlab.errors.DecoderError` (with FFmpeg's message) for a
    file FFmpeg cannot decode.
    """
    source = _existing(path)
    proc = subprocess.run(_command(source, sample_format), capture_output=True, check=False)
    if proc.returncode != 0:
        raise _decode_error(source, proc.returncode, proc.stderr)
    return proc.stdout


async def count_samples(path: str | os.PathLike[str], *, stop: asyncio.Event | None = None) -> int | None:
    """How many 16 kHz mono samples FFmpeg decodes from ``path``, counted as they come:
    memory stays bounded whatever the file's length (an hour decoded whole is 230 MB of
    float32). None when ``stop`` is set first; then, or when the caller is cancelled
    (Ctrl-C), FFmpeg is killed rather than left to decode to the end. Raises as
    :func:`decode_file` does."""
    source = _existing(path)
    with tempfile.TemporaryFile() as errors:  # not a pipe: a long stderr cannot block FFmpeg
        spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(
            *_command(source, "s16le"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
            process_group=0,  # a terminal's Ctrl-C reaches rtlab, which stops or cancels this
        ))  # fmt: skip
        try:
            process = await asyncio.shield(spawning)
        except asyncio.CancelledError:  # cancelled while FFmpeg started: kill what started
            process = await spawning
            _kill(process)
            await process.wait()
            raise
        watcher = asyncio.ensure_future(_kill_when_set(stop, process)) if stop is not None else None
        try:
            count = 0
            while chunk := await process.stdout.read(1 << 20):
                count += len(chunk)
            returncode = await process.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
            if process.returncode is None:
                _kill(process)
                await process.wait()
        if stop is not None and stop.is_set():
            return None
        if returncode != 0:
            errors.seek(0)
            raise _decode_error(source, returncode, errors.read())
    return count // 2


async def _kill_when_set(stop: asyncio.Event, process: asyncio.subprocess.Process) -> None:
    await stop.wait()
    if process.returncode is None:
        _kill(process)


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill FFmpeg's process group: a wrapper script (``RTLAB_FFMPEG``) and what it runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _existing(path: str | os.PathLike[str]) -> Path:
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"audio file not found: {source}")
    return source


def _command(source: Path, sample_format: str) -> list[str]:
    return [
        find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", *global_args(),
        "-i", str(source), "-f", sample_format, "-ac", "1", "-ar", str(SAMPLE_RATE), "-",
    ]  # fmt: skip


def _decode_error(source: Path, returncode: int, stderr: bytes) -> DecoderError:
    detail = one_line(stderr.decode("utf-8", "replace"))[-500:]
    if NO_AUDIO_STREAM in detail:
        return DecoderError(f"FFmpeg could not decode {source}: {NO_AUDIO_STREAM_ADVICE}")
    return DecoderError(f"FFmpeg could not decode {source} (exit {returncode}): {detail}")


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
