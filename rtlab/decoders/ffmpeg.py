"""One FFmpeg subprocess per session: encoded bytes on stdin, float32 PCM on stdout."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import time

import numpy as np

from ..errors import DecoderError, FFmpegNotFound
from . import Decoder

SAMPLE_RATE = 16_000
_READ_SIZE = 16_384  # bytes = 4096 samples = 256 ms: small enough to keep latency low


def find_ffmpeg() -> str:
    """The FFmpeg binary: ``RTLAB_FFMPEG``, then ``ffmpeg`` on PATH, then imageio-ffmpeg's."""
    configured = os.environ.get("RTLAB_FFMPEG")
    if configured:
        # shutil.which accepts a name or a path and, unlike os.access, refuses directories.
        resolved = shutil.which(configured)
        if resolved:
            return resolved
        raise FFmpegNotFound(
            f"RTLAB_FFMPEG={configured!r} is not an executable FFmpeg binary: point it at "
            f"one, or unset it to use the ffmpeg on PATH"
        )
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as error:  # ImportError, or the wheel has no binary for this platform
        raise FFmpegNotFound(
            "FFmpeg was not found: install it (apt-get install ffmpeg, conda install ffmpeg) "
            "or pip install imageio-ffmpeg, or set RTLAB_FFMPEG to its path"
        ) from error


class FFmpegDecoder(Decoder):
    """Decodes any stream FFmpeg can read from a pipe (webm/opus, ogg, wav, mp3, flac…).

    ``stop()`` closes stdin, waits ``stop_timeout`` seconds, then terminates, then kills:
    no FFmpeg process outlives its decoder. FFmpeg's stderr is kept (last lines) and
    quoted in :class:`~rtlab.errors.DecoderError`.
    """

    name = "ffmpeg"

    def __init__(
        self,
        *,
        input_format: str | None = None,
        ffmpeg: str | None = None,
        stop_timeout: float = 2.0,
        max_stderr_lines: int = 40,
    ) -> None:
        self.state = "IDLE"
        self.input_format = input_format
        self.ffmpeg = ffmpeg
        self.stop_timeout = stop_timeout
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=max_stderr_lines)
        self.first_input_at: float | None = None
        self.first_output_at: float | None = None
        self._stderr_task: asyncio.Task | None = None
        # start() and stop() await; without this, two concurrent start() calls spawn two
        # FFmpeg processes (one leaks) and a stop() during start() misses the process.
        self._lifecycle = asyncio.Lock()
        self._remainder = b""
        self._input_closed = False
        self._bytes_in = 0
        self._samples_out = 0

    def command(self) -> list[str]:
        """The FFmpeg command line; the flags keep probing and buffering minimal.

        ``-fflags nobuffer`` is deliberately absent: with piped mp3 and wav it drops
        up to a second of audio.
        """
        binary = self.ffmpeg or find_ffmpeg()
        input_args = ["-f", self.input_format] if self.input_format else []
        return [
            binary, "-hide_banner", "-loglevel", "error",
            "-flags", "low_delay",
            "-probesize", "32", "-analyzeduration", "0",
            *input_args, "-i", "pipe:0",
            "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-flush_packets", "1",
            "pipe:1",
        ]

    @property
    def pid(self) -> int | None:
        """The FFmpeg process id while it runs."""
        return self.process.pid if self.process else None

    @property
    def first_pcm_latency(self) -> float | None:
        """Seconds from the first bytes written to the first PCM read (None before both)."""
        if self.first_input_at is None or self.first_output_at is None:
            return None
        return self.first_output_at - self.first_input_at

    @property
    def stderr(self) -> str:
        """FFmpeg's last stderr lines."""
        return "\n".join(self.stderr_lines)

    async def start(self) -> bool:
        async with self._lifecycle:
            return await self._start()

    async def _start(self) -> bool:
        if self.state == "RUNNING":
            return True
        command = self.command()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            self.state = "STOPPED"
            raise FFmpegNotFound(f"could not start FFmpeg ({command[0]}): {error}") from error
        self.stderr_lines.clear()
        self._remainder = b""
        self._input_closed = False
        self._bytes_in = self._samples_out = 0
        self.first_input_at = self.first_output_at = None
        self._stderr_task = asyncio.create_task(self._collect_stderr(self.process))
        self.state = "RUNNING"
        return True

    async def _collect_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            self.stderr_lines.append(line.decode(errors="replace").rstrip())

    async def write(self, data: bytes) -> None:
        if self.state != "RUNNING" or self._input_closed:
            raise DecoderError(f"cannot write to an FFmpeg decoder in state {self.state}")
        if not data:
            return
        if self.first_input_at is None:
            self.first_input_at = time.perf_counter()
        stdin = self.process.stdin
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as error:
            await self._wait_exit(self.stop_timeout)
            raise DecoderError(self._failure_message("FFmpeg stopped reading its input")) from error
        self._bytes_in += len(data)

    async def end_input(self) -> None:
        if self.state != "RUNNING" or self._input_closed:
            return
        self._input_closed = True
        stdin = self.process.stdin
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()
            await stdin.wait_closed()

    async def read(self) -> np.ndarray | None:
        while self.state == "RUNNING":
            chunk = await self.process.stdout.read(_READ_SIZE)
            if not chunk:
                return await self._at_end_of_output()
            data = self._remainder + chunk
            usable = len(data) - len(data) % 4
            self._remainder = data[usable:]
            if usable:
                if self.first_output_at is None:
                    self.first_output_at = time.perf_counter()
                samples = np.frombuffer(data[:usable], dtype="<f4").copy()
                self._samples_out += len(samples)
                return samples
        return None

    async def _at_end_of_output(self) -> None:
        returncode = await self._wait_exit(self.stop_timeout)
        if self.state != "RUNNING":
            return None  # stopped on purpose while reading
        if returncode not in (0, None) or (self._samples_out == 0 and self._bytes_in > 0):
            raise DecoderError(self._failure_message(f"FFmpeg exited with code {returncode}"))
        if self._bytes_in == 0:
            raise DecoderError("no audio was received: the input was empty")
        return None

    async def _wait_exit(self, timeout: float) -> int | None:
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout)
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(self.process.wait(), timeout)
        return None

    def _failure_message(self, summary: str) -> str:
        detail = self.stderr or "(FFmpeg printed nothing)"
        return (
            f"could not decode the audio: {summary}; is it a complete audio file or stream "
            f"FFmpeg can read from a pipe (webm/opus, ogg, wav, mp3, flac)? FFmpeg said: {detail}"
        )

    async def stop(self) -> None:
        async with self._lifecycle:
            await self._stop()

    async def _stop(self) -> None:
        if self.state == "STOPPED":
            return
        self.state = "STOPPED"
        process = self.process
        if process is None:
            return
        transport = getattr(process, "_transport", None)
        if process.returncode is None:
            if process.stdin is not None and not process.stdin.is_closing():
                with contextlib.suppress(Exception):
                    process.stdin.close()
            # The output is no longer wanted. Closing our end of stdout unblocks an FFmpeg
            # stuck writing to a full pipe (nobody reads it any more), and asyncio's wait()
            # only returns once every pipe is closed: without this, stopping a decoder
            # whose output was not read took three stop_timeouts and ended in a kill.
            stdout = transport.get_pipe_transport(1) if transport is not None else None
            if stdout is not None:
                stdout.close()
            for escalate in (None, process.terminate, process.kill):
                if escalate is not None:
                    with contextlib.suppress(ProcessLookupError):
                        escalate()
                try:
                    await asyncio.wait_for(process.wait(), self.stop_timeout)
                    break
                except asyncio.TimeoutError:
                    continue
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
        # Close our pipe ends so no file descriptors leak across many sessions.
        if transport is not None:
            transport.close()
