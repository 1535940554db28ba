"""One FFmpeg subprocess per session: encoded bytes on stdin, float32 PCM on stdout."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import shutil
import subprocess
import time

import numpy as np

from ..core.state import State
from ..errors import DecoderError, FFmpegNotFound, InvalidOption
from ..options import is_number, is_whole_number
from .base import Decoder

SAMPLE_RATE = 16_000
_READ_SIZE = 16_384  # bytes = 4096 samples = 256 ms: small enough to keep latency low


#: ``RTLAB_FFMPEG`` naming the FFmpeg binary inside the imageio-ffmpeg wheel: one build on
#: every x86-64 Linux machine with the same wheel version (``rtlab --kernels portable`` sets it).
IMAGEIO_FFMPEG = "imageio-ffmpeg"
#: Environment variable: FFmpeg's ``-cpuflags`` for every FFmpeg rtlab runs ("0": no SIMD).
CPUFLAGS_VARIABLE = "RTLAB_FFMPEG_CPUFLAGS"


def find_ffmpeg() -> str:
    """The FFmpeg binary: ``RTLAB_FFMPEG`` (a path, a name on PATH, or ``imageio-ffmpeg``
    for the wheel's), then ``ffmpeg`` on PATH, then imageio-ffmpeg's."""
    return _locate_ffmpeg()[0]


def _locate_ffmpeg() -> tuple[str, str]:
    """:func:`find_ffmpeg`'s binary and where it came from: ``RTLAB_FFMPEG``, ``PATH`` or
    ``imageio-ffmpeg``."""
    configured = os.environ.get("RTLAB_FFMPEG")
    if configured == IMAGEIO_FFMPEG:
        return _imageio_ffmpeg(f"RTLAB_FFMPEG={IMAGEIO_FFMPEG} names the imageio-ffmpeg wheel's FFmpeg, and "), IMAGEIO_FFMPEG
    if configured:
        # shutil.which accepts a name or a path and, unlike os.access, refuses directories.
        resolved = shutil.which(configured)
        if resolved:
            return resolved, "RTLAB_FFMPEG"
        raise FFmpegNotFound(
            f"RTLAB_FFMPEG={configured!r} is not an executable FFmpeg binary: point it at "
            f"one, or unset it to use the ffmpeg on PATH"
        )
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path, "PATH"
    return _imageio_ffmpeg("FFmpeg was not found: "), IMAGEIO_FFMPEG


def _imageio_ffmpeg(failure: str) -> str:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as error:  # ImportError, or the wheel has no binary for this platform
        raise FFmpegNotFound(
            f"{failure}install FFmpeg (apt-get install ffmpeg, conda install ffmpeg) "
            "or pip install imageio-ffmpeg, or set RTLAB_FFMPEG to its path"
        ) from error


def global_args() -> list[str]:
    """Options placed before every FFmpeg command's input: ``-cpuflags`` from
    ``RTLAB_FFMPEG_CPUFLAGS`` when it is set. FFmpeg's decoders and resampler pick SIMD code
    by CPU, and their float results differ in the last bits, which is enough to change a
    word Whisper hears; ``0`` (what ``rtlab --kernels portable`` sets) runs FFmpeg's C code
    on every CPU."""
    flags = os.environ.get(CPUFLAGS_VARIABLE)
    return ["-cpuflags", flags] if flags else []


def ffmpeg_description() -> dict[str, str | None] | None:
    """Which FFmpeg decodes here, for results: ``binary`` (``RTLAB_FFMPEG``, ``PATH`` or
    ``imageio-ffmpeg``), its ``version`` and the ``cpuflags`` set; None without FFmpeg."""
    try:
        path, binary = _locate_ffmpeg()
    except FFmpegNotFound:
        return None
    return {"binary": binary, "version": ffmpeg_version(path), "cpuflags": os.environ.get(CPUFLAGS_VARIABLE)}


@functools.lru_cache(maxsize=8)
def ffmpeg_version(path: str) -> str | None:
    """The version the FFmpeg at ``path`` prints first ("5.1.9-0+deb12u1"), or None."""
    try:
        done = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    words = done.stdout.split()
    return words[2] if len(words) > 2 and words[:2] == ["ffmpeg", "version"] else None


#: Give up looking for a WAV header's data chunk after this many bytes (FFmpeg then reads
#: the stream as it is, held bytes included).
_WAV_HEADER_LIMIT = 8192
#: Raw formats FFmpeg reads for (WAVE format tag, bits per sample).
_RAW_WAV_FORMATS = {(1, 8): "u8", (1, 16): "s16le", (1, 24): "s24le", (1, 32): "s32le",
                    (3, 32): "f32le", (3, 64): "f64le"}  # fmt: skip


def parse_wav_header(data: bytes) -> tuple[list[str], int] | None | bool:
    """FFmpeg input options for the PCM in a WAV stream that begins with ``data``, and
    the offset where its samples start; ``None`` while the header is incomplete; ``False``
    when it is not a plain PCM or float WAV (FFmpeg's own demuxer then reads it).

    Why: FFmpeg's wav demuxer reads 64 KiB before its first packet, to check for S/PDIF
    data. Streamed in real time that is 2 s of 16 kHz mono 16-bit audio before the first
    PCM; given the samples as raw PCM, FFmpeg starts at once."""
    if len(data) < 12:
        return None if b"RIFF".startswith(data[:4]) and b"WAVE".startswith(data[8:12]) else False
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    position, fmt = 12, None
    while True:
        if len(data) < position + 8:
            return None
        tag, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        body = position + 8
        if tag == b"data":
            if fmt is None:
                return False
            format_tag, channels, rate, bits = fmt
            raw = _RAW_WAV_FORMATS.get((format_tag, bits))
            if raw is None or channels < 1 or rate < 1:
                return False
            return ["-f", raw, "-ar", str(rate), "-ac", str(channels)], body
        if len(data) < body + size:
            return None
        if tag == b"fmt " and size >= 16:
            chunk = data[body : body + size]
            format_tag = int.from_bytes(chunk[0:2], "little")
            if format_tag == 0xFFFE and size >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format
                format_tag = int.from_bytes(chunk[24:26], "little")
            fmt = (format_tag, int.from_bytes(chunk[2:4], "little"),
                   int.from_bytes(chunk[4:8], "little"), int.from_bytes(chunk[14:16], "little"))  # fmt: skip
        position = body + size + (size & 1)  # chunks are padded to an even length


def one_line(stderr: str) -> str:
    """FFmpeg's stderr lines as one line (``" | "`` between them), for an error message that
    must stay one line (CLI errors, ``error`` events, ``transcription_failed``)."""
    return " | ".join(line.strip() for line in stderr.splitlines() if line.strip())


#: What FFmpeg says of an input without an audio stream ("Output file #0 does not contain
#: any stream": the video of a file without sound, with ``-vn``).
NO_AUDIO_STREAM = "does not contain any stream"
NO_AUDIO_STREAM_ADVICE = "it has no audio stream (a video without sound?); give a file or stream with audio"


#: The longest ``stop_timeout``: a stop may take three of them (close stdin, terminate, kill).
MAX_STOP_TIMEOUT = 60.0
#: The most stderr lines ``max_stderr_lines`` may keep.
MAX_STDERR_LINES = 10_000


class FFmpegDecoder(Decoder):
    """Decodes any stream FFmpeg can read from a pipe (webm/opus, ogg, wav, mp3, flac…).

    One FFmpeg process per decoder, started once. With ``input_format`` named (and not
    ``"wav"``), ``start()`` starts it. Otherwise the first bytes decide how: ``write()``
    holds them back until :func:`parse_wav_header` can tell whether they begin a plain
    PCM or float WAV, whose samples then reach FFmpeg as raw PCM; any other stream reaches
    it as it came (most are told apart by their first 12 bytes). An empty input starts no
    FFmpeg at all.

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
        super().__init__()
        for option, value in (("input_format", input_format), ("ffmpeg", ffmpeg)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidOption(f"decoder 'ffmpeg': {option} must be text (or unset), not {value!r}")
        if not is_number(stop_timeout) or not 0 < stop_timeout <= MAX_STOP_TIMEOUT:
            raise InvalidOption(
                f"decoder 'ffmpeg': stop_timeout must be a number of seconds above 0, at most "
                f"{MAX_STOP_TIMEOUT:g}, not {stop_timeout!r}"
            )
        if not is_whole_number(max_stderr_lines) or not 0 <= max_stderr_lines <= MAX_STDERR_LINES:
            raise InvalidOption(
                f"decoder 'ffmpeg': max_stderr_lines must be a whole number from 0 to {MAX_STDERR_LINES}, "
                f"not {max_stderr_lines!r}"
            )
        self.input_format = input_format
        self.ffmpeg = ffmpeg
        self.stop_timeout = float(stop_timeout)
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=max_stderr_lines)
        self.first_input_at: float | None = None
        self.first_output_at: float | None = None
        self._stderr_task: asyncio.Task | None = None
        # start(), stop() and the spawn in write() await; without this, two concurrent
        # start() calls spawn two FFmpeg processes (one leaks) and a stop() during a spawn
        # misses the process.
        self._lifecycle = asyncio.Lock()
        # Set once FFmpeg runs, or once it never will (empty input, stop, failed spawn):
        # read() waits for it.
        self._settled = asyncio.Event()
        self._spawn_failure: FFmpegNotFound | None = None
        self._remainder = b""
        self._input_closed = False
        self._bytes_in = 0
        self._samples_out = 0
        # The start of the stream, held back until it is known whether it is a plain WAV
        # (None once FFmpeg runs, or when input_format names another container).
        self._held: bytearray | None = None
        self._raw_input: list[str] | None = None

    def command(self) -> list[str]:
        """The FFmpeg command line; the flags keep probing and buffering minimal.

        ``-fflags nobuffer`` is deliberately absent: with piped mp3 and wav it drops
        up to a second of audio. A plain PCM or float WAV stream is handed over as raw
        PCM, with the format, rate and channels of its header (see :func:`parse_wav_header`).
        """
        binary = self.ffmpeg or find_ffmpeg()
        if self._raw_input is not None:
            input_args = self._raw_input
        else:
            input_args = ["-f", self.input_format] if self.input_format else []
        return [
            binary, "-hide_banner", "-loglevel", "error", *global_args(),
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
        if self.state is State.RUNNING:
            return True
        if self.state is State.STOPPED:
            raise DecoderError("this FFmpeg decoder was stopped; create a new one")
        self.process = self._stderr_task = self._spawn_failure = None
        self._settled.clear()
        self.stderr_lines.clear()
        self._remainder = b""
        self._input_closed = False
        self._bytes_in = self._samples_out = 0
        self.first_input_at = self.first_output_at = None
        self._raw_input = None
        if self.input_format in (None, "wav"):
            if self.ffmpeg is None:
                find_ffmpeg()  # a missing FFmpeg is reported now, not at the first write
            self._held = bytearray()
        else:
            self._held = None
            await self._spawn()
        self.state = State.RUNNING
        return True

    async def _spawn(self) -> None:
        """Start FFmpeg (the caller holds ``_lifecycle``) and wake a waiting ``read()``."""
        command = self.command()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # A group of its own: Ctrl-C at a terminal signals the whole foreground
                # group, and FFmpeg would quit at once (exit 255, a decoding error) while
                # the session ends the input itself and commits the tail. stop() ends it.
                process_group=0,
            )
        except OSError as error:
            self.state = State.STOPPED
            self._spawn_failure = FFmpegNotFound(f"could not start FFmpeg ({command[0]}): {error}")
            self._settled.set()
            raise self._spawn_failure from error
        self._stderr_task = asyncio.create_task(self._collect_stderr(self.process))
        self._settled.set()

    async def _spawn_for_held_bytes(self, raw_input: list[str] | None) -> None:
        """Start FFmpeg for a stream whose first bytes are held: with ``raw_input`` for
        the samples of a plain WAV, else with the usual input options."""
        async with self._lifecycle:
            if self.state is not State.RUNNING:
                raise DecoderError(f"cannot write to an FFmpeg decoder in state {self.state}")
            self._raw_input = raw_input
            await self._spawn()
            self._held = None

    async def _collect_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            self.stderr_lines.append(line.decode(errors="replace").rstrip())

    async def write(self, data: bytes) -> None:
        if self.state is not State.RUNNING or self._input_closed:
            raise DecoderError(f"cannot write to an FFmpeg decoder in state {self.state}")
        if not data:
            return
        if self.first_input_at is None:
            self.first_input_at = time.perf_counter()
        if self._held is not None:
            data = await self._past_wav_header(data)
            if not data:
                return
        await self._write_to_ffmpeg(data)

    async def _past_wav_header(self, data: bytes) -> bytes:
        """Hold ``data`` back until it is known whether the stream is a plain PCM or float
        WAV, then start FFmpeg; returns what to write to it now.

        FFmpeg's wav demuxer reads 64 KiB before its first packet, to check for S/PDIF
        data: at 16 kHz mono 16-bit, 2 s of audio streamed in real time before the first
        PCM. Given the samples as raw PCM (the header read here), FFmpeg starts at once.
        Anything else goes to FFmpeg as it came.
        """
        assert self._held is not None
        self._held += data
        parsed = parse_wav_header(bytes(self._held))
        if parsed is None and len(self._held) < _WAV_HEADER_LIMIT:
            return b""
        held = bytes(self._held)
        if not parsed:
            await self._spawn_for_held_bytes(None)
            return held
        args, offset = parsed
        await self._spawn_for_held_bytes(args)
        self._bytes_in += offset  # the header: read here, not by FFmpeg
        return held[offset:]

    async def _write_to_ffmpeg(self, data: bytes) -> None:
        stdin = self.process.stdin
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as error:
            await self._wait_exit(self.stop_timeout)
            raise DecoderError(self._failure_message("FFmpeg stopped reading its input")) from error
        self._bytes_in += len(data)

    async def end_input(self) -> None:
        if self.state is not State.RUNNING or self._input_closed:
            return
        self._input_closed = True
        if self._held is not None:
            held = bytes(self._held)
            if not held:  # nothing to decode: no FFmpeg, read() says the input was empty
                self._held = None
                self._settled.set()
                return
            # A stream shorter than a WAV header: FFmpeg judges it. A failure to decode
            # it is read()'s to report.
            try:
                await self._spawn_for_held_bytes(None)
            except DecoderError:
                return  # stopped meanwhile
            with contextlib.suppress(DecoderError):
                await self._write_to_ffmpeg(held)
        stdin = self.process.stdin
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()
            # Shielded: a caller cancelled here (a client that disconnects while its stream
            # is flushed) must not cancel asyncio's own wait for the pipe, which then fails
            # with InvalidStateError when the pipe closes.
            closing = asyncio.ensure_future(stdin.wait_closed())
            closing.add_done_callback(lambda task: task.cancelled() or task.exception())
            await asyncio.shield(closing)

    async def read(self) -> np.ndarray | None:
        if self.state is State.RUNNING:
            await self._settled.wait()
        if self._spawn_failure is not None:
            raise self._spawn_failure
        while self.state is State.RUNNING:
            if self.process is None:
                raise DecoderError("no audio was received: the input was empty")
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
        if self.state is not State.RUNNING:
            return None  # stopped on purpose while reading
        if returncode == 0 and self._samples_out == 0 and self._bytes_in > 0 and not self.stderr_lines:
            # A header and no audio after it (a WAV whose data chunk is empty, a FLAC
            # without frames): FFmpeg decodes nothing and ends without an error.
            raise DecoderError(
                "no audio was received: FFmpeg read the input to its end and found no samples in it "
                "(a header with no audio after it?); give a recording that holds audio"
            )
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
        detail = one_line(self.stderr) or "(FFmpeg printed nothing)"
        if NO_AUDIO_STREAM in detail:
            return f"could not decode the audio: {NO_AUDIO_STREAM_ADVICE}; FFmpeg said: {detail}"
        return (
            f"could not decode the audio: {summary}; is it a complete audio file or stream "
            f"FFmpeg can read from a pipe (webm/opus, ogg, wav, mp3, flac)? FFmpeg said: {detail}"
        )

    async def stop(self) -> None:
        async with self._lifecycle:
            await self._stop()

    async def _stop(self) -> None:
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        self._held = None
        self._settled.set()  # a read() waiting for FFmpeg returns None
        if self.process is not None:
            await self._end_process(self.process, self._stderr_task)

    async def _end_process(self, process: asyncio.subprocess.Process, stderr_task: asyncio.Task | None) -> None:
        """Close stdin, wait, then terminate, then kill; release the pipes."""
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
        if stderr_task is not None:
            stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stderr_task
        # Close our pipe ends so no file descriptors leak across many sessions.
        if transport is not None:
            transport.close()
