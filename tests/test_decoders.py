"""Decoders: a real FFmpeg per session, never left behind; raw PCM without a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys

import numpy as np
import psutil
import pytest

from rtlab.backends import accepted_options, check_options
from rtlab.core.state import State
from rtlab.decoders import Decoder, FFmpegDecoder, PCMDecoder, find_ffmpeg
from rtlab.decoders.ffmpeg import ffmpeg_description, parse_wav_header
from rtlab.decoders.files import decode_file
from rtlab.errors import DecoderError, FFmpegNotFound, InvalidOption

FOX_SECONDS = 6.13  # ffprobe: 6.129 s (wav, flac), 6.136 (ogg), 6.137 (webm), 6.228 (mp3)
FORMATS = ["wav", "ogg", "webm", "mp3", "flac"]
RAW_FOX = ["-f", "s16le", "-ar", "16000", "-ac", "1"]  # what fox.wav's header says


async def decode(decoder, data: bytes, chunk_size: int) -> np.ndarray:
    """Write ``data`` in ``chunk_size`` pieces while reading concurrently, as a session does."""
    chunks: list[np.ndarray] = []

    async def read_all() -> None:
        while (pcm := await decoder.read()) is not None:
            assert pcm.dtype == np.float32 and pcm.ndim == 1
            chunks.append(pcm)

    await decoder.start()
    reader = asyncio.create_task(read_all())
    try:
        for offset in range(0, len(data), chunk_size):
            await decoder.write(data[offset : offset + chunk_size])
        await decoder.end_input()
        await reader
    finally:
        reader.cancel()
        await decoder.stop()
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def fox(data_dir, ext: str) -> bytes:
    return (data_dir / f"fox.{ext}").read_bytes()


@pytest.fixture
def spawns(monkeypatch) -> list[list[str]]:
    """The command line of every process started through asyncio, in order."""
    started: list[list[str]] = []
    spawn = asyncio.create_subprocess_exec

    async def counted(*command, **kwargs):
        started.append([str(part) for part in command])
        return await spawn(*command, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", counted)
    return started


def input_options(command: list[str]) -> list[str]:
    """The options an FFmpeg command line gives for its input (after the probing flags)."""
    return command[command.index("-analyzeduration") + 2 : command.index("-i")]


# -- FFmpegDecoder lifecycle -----------------------------------------------------------


FORMAT_CHOICES = pytest.mark.parametrize("input_format", [None, "ogg"], ids=["auto", "named"])


@FORMAT_CHOICES
async def test_start_twice_returns_true_and_keeps_the_same_process(input_format, data_dir, spawns, no_ffmpeg_left, ffmpeg_children):
    decoder = FFmpegDecoder(input_format=input_format)
    assert decoder.state is State.IDLE
    try:
        assert await decoder.start() is True
        assert await decoder.start() is True
        await decoder.write(fox(data_dir, "ogg")[:4096])
        pid = decoder.pid
        assert await decoder.start() is True
        assert decoder.pid == pid
        assert decoder.state is State.RUNNING
        assert [p.pid for p in ffmpeg_children()] == [pid]
        assert len(spawns) == 1
    finally:
        await decoder.stop()


@FORMAT_CHOICES
async def test_concurrent_starts_spawn_one_process(input_format, data_dir, spawns, no_ffmpeg_left, ffmpeg_children):
    decoder = FFmpegDecoder(input_format=input_format)
    try:
        assert await asyncio.gather(decoder.start(), decoder.start()) == [True, True]
        await decoder.write(fox(data_dir, "ogg")[:4096])
        assert [p.pid for p in ffmpeg_children()] == [decoder.pid]
        assert len(spawns) == 1
    finally:
        await decoder.stop()


@FORMAT_CHOICES
async def test_concurrent_start_and_stop_leave_no_process(input_format, no_ffmpeg_left):
    decoder = FFmpegDecoder(input_format=input_format)
    await asyncio.gather(decoder.start(), decoder.stop())
    assert decoder.state is State.STOPPED
    assert decoder.process is None or decoder.process.returncode is not None


async def test_a_named_container_starts_ffmpeg_in_start(spawns, ffmpeg_children, no_ffmpeg_left):
    decoder = FFmpegDecoder(input_format="webm")
    try:
        await decoder.start()
        assert [p.pid for p in ffmpeg_children()] == [decoder.pid]
        assert [input_options(command) for command in spawns] == [["-f", "webm"]]
    finally:
        await decoder.stop()


async def test_no_ffmpeg_before_the_first_bytes_of_an_auto_stream(data_dir, spawns, ffmpeg_children, no_ffmpeg_left):
    decoder = FFmpegDecoder()
    try:
        await decoder.start()
        assert decoder.state is State.RUNNING
        assert (decoder.pid, spawns, ffmpeg_children()) == (None, [], [])
        await decoder.write(fox(data_dir, "ogg")[:12])  # enough to tell it is not a WAV
        assert [p.pid for p in ffmpeg_children()] == [decoder.pid]
        assert [input_options(command) for command in spawns] == [[]]  # FFmpeg probes it
    finally:
        await decoder.stop()


async def test_stop_twice_is_a_noop(data_dir, no_ffmpeg_left):
    decoder = FFmpegDecoder()
    await decoder.start()
    await decoder.write(fox(data_dir, "ogg")[:4096])
    process = decoder.process
    await decoder.stop()
    assert decoder.state is State.STOPPED
    assert process.returncode is not None
    await decoder.stop()
    assert decoder.state is State.STOPPED


async def test_a_stopped_decoder_is_not_started_again(data_dir, spawns, no_ffmpeg_left):
    decoder = FFmpegDecoder(input_format="ogg")
    await decoder.start()
    await decoder.stop()
    with pytest.raises(DecoderError, match="stopped; create a new one"):
        await decoder.start()
    assert decoder.state is State.STOPPED and len(spawns) == 1


async def test_stop_before_start_is_a_noop():
    decoder = FFmpegDecoder()
    await decoder.stop()
    await decoder.stop()
    assert decoder.state is State.STOPPED
    assert decoder.process is None


async def test_stop_before_any_bytes_wakes_a_waiting_read(spawns, no_ffmpeg_left):
    decoder = FFmpegDecoder()
    await decoder.start()
    reader = asyncio.create_task(decoder.read())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not reader.done()  # waits for FFmpeg, which waits for bytes
    await decoder.stop()
    assert await asyncio.wait_for(reader, 5) is None
    assert decoder.state is State.STOPPED
    assert (decoder.process, spawns) == (None, [])


async def test_stop_while_a_wav_header_is_held_leaves_no_process(data_dir, spawns, no_ffmpeg_left):
    decoder = FFmpegDecoder()
    await decoder.start()
    reader = asyncio.create_task(decoder.read())
    await decoder.write(fox(data_dir, "wav")[:20])  # RIFF, WAVE, half a fmt chunk
    await decoder.stop()
    assert await asyncio.wait_for(reader, 5) is None
    assert (decoder.process, spawns) == (None, [])
    with pytest.raises(DecoderError, match="STOPPED"):
        await decoder.write(fox(data_dir, "wav")[20:4096])
    assert spawns == []


async def test_stop_while_ffmpeg_is_being_spawned_leaves_no_process(monkeypatch, data_dir, no_ffmpeg_left):
    gate = asyncio.Event()
    spawn = asyncio.create_subprocess_exec

    async def held_spawn(*command, **kwargs):
        await gate.wait()
        return await spawn(*command, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", held_spawn)
    decoder = FFmpegDecoder()
    await decoder.start()
    reader = asyncio.create_task(decoder.read())
    writer = asyncio.create_task(decoder.write(fox(data_dir, "ogg")[:4096]))
    stopper = asyncio.create_task(decoder.stop())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not (reader.done() or writer.done() or stopper.done())  # all wait for the spawn
    gate.set()
    await asyncio.wait_for(stopper, 30)
    assert await asyncio.wait_for(reader, 5) is None
    with contextlib.suppress(DecoderError):  # its bytes may meet a closed pipe
        await asyncio.wait_for(writer, 5)
    assert decoder.state is State.STOPPED
    assert decoder.process.returncode is not None


async def test_a_failed_spawn_at_the_first_bytes_is_reported_and_leaves_nothing(data_dir, no_ffmpeg_left):
    decoder = FFmpegDecoder(ffmpeg="/nonexistent/ffmpeg")
    await decoder.start()
    reader = asyncio.create_task(decoder.read())
    with pytest.raises(FFmpegNotFound, match="/nonexistent/ffmpeg"):
        await decoder.write(fox(data_dir, "ogg")[:4096])
    with pytest.raises(FFmpegNotFound):  # the reader hears of it too, instead of waiting
        await asyncio.wait_for(reader, 5)
    assert decoder.state is State.STOPPED and decoder.process is None
    await decoder.stop()


async def test_stop_does_not_wait_for_output_nobody_reads(no_ffmpeg_left, data_dir):
    # FFmpeg blocks writing to a full stdout pipe; stop() must not need terminate or kill.
    decoder = FFmpegDecoder(stop_timeout=30)
    await decoder.start()
    await decoder.write(fox(data_dir, "wav"))
    process = decoder.process
    await decoder.stop()
    assert process.returncode is not None
    assert process.returncode not in (-signal.SIGTERM, -signal.SIGKILL)


async def test_stop_kills_a_process_that_ignores_stdin_close_and_sigterm(monkeypatch):
    decoder = FFmpegDecoder(stop_timeout=0.2)
    stubborn = ["sh", "-c", 'trap "" TERM; exec sleep 60']
    monkeypatch.setattr(decoder, "command", lambda: stubborn)
    await decoder.start()
    await decoder.write(b"not a WAV header")
    process, pid = decoder.process, decoder.pid
    while psutil.Process(pid).name() != "sleep":  # the trap is set once sh has exec'd sleep
        await asyncio.sleep(0.01)
    await decoder.stop()
    assert process.returncode == -signal.SIGKILL
    assert not psutil.pid_exists(pid)


async def test_stop_terminates_a_process_that_ignores_stdin_close(monkeypatch):
    decoder = FFmpegDecoder(stop_timeout=0.2)
    monkeypatch.setattr(decoder, "command", lambda: ["sleep", "60"])
    await decoder.start()
    await decoder.write(b"not a WAV header")
    process = decoder.process
    await decoder.stop()
    assert process.returncode == -signal.SIGTERM


async def test_no_ffmpeg_left_after_200_start_stop_cycles(ffmpeg_children, data_dir):
    header = fox(data_dir, "wav")[:4096]
    before = {p.pid for p in ffmpeg_children()}
    fds_before = psutil.Process().num_fds()

    async def cycle(written: int) -> None:
        decoder = FFmpegDecoder()
        await decoder.start()
        if written:
            # 20 bytes: held, no FFmpeg yet; 4096: stop with output waiting in the pipe.
            await decoder.write(header[:written])
        await decoder.stop()
        assert decoder.state is State.STOPPED

    # 200 cycles, four sessions at a time (a server's pattern, and half the run time).
    for _ in range(50):
        await asyncio.gather(cycle(0), cycle(4096), cycle(20), cycle(4096))
    assert [p.pid for p in ffmpeg_children() if p.pid not in before] == []
    # Each cycle opens three pipes; none may stay open.
    assert psutil.Process().num_fds() <= fds_before + 3


async def test_write_before_start_or_after_end_input_is_refused(no_ffmpeg_left):
    decoder = FFmpegDecoder()
    with pytest.raises(DecoderError, match="IDLE"):
        await decoder.write(b"data")
    await decoder.start()
    try:
        await decoder.end_input()
        await decoder.end_input()  # idempotent
        with pytest.raises(DecoderError):
            await decoder.write(b"data")
    finally:
        await decoder.stop()


# -- FFmpegDecoder output ----------------------------------------------------------------


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("chunk_size", [333, None], ids=["333-byte-chunks", "whole-file"])
async def test_decodes_each_format_to_16khz_mono_float32(ext, chunk_size, data_dir, spawns, no_ffmpeg_left):
    data = fox(data_dir, ext)
    pcm = await decode(FFmpegDecoder(), data, chunk_size or len(data))
    # One FFmpeg per stream: a plain WAV's samples as raw PCM, the rest probed by FFmpeg.
    assert [input_options(command) for command in spawns] == [RAW_FOX if ext == "wav" else []]
    seconds = len(pcm) / 16_000
    # mp3 carries encoder padding (ffprobe says 6.228 s); the others are within a few ms.
    assert FOX_SECONDS - 0.05 < seconds < FOX_SECONDS + 0.1
    assert pcm.dtype == np.float32
    assert np.abs(pcm).max() <= 1.0
    assert np.sqrt(np.mean(pcm**2)) > 0.01  # speech, not silence


@pytest.mark.parametrize("ext", ["ogg", "webm", "mp3"])
async def test_decodes_streaming_formats_written_one_byte_at_a_time(ext, data_dir):
    data = fox(data_dir, ext)
    one_byte = await decode(FFmpegDecoder(), data, 1)
    whole = await decode(FFmpegDecoder(), data, len(data))
    np.testing.assert_array_equal(one_byte, whole)


async def test_lossless_formats_decode_to_the_same_samples(data_dir):
    wav = await decode(FFmpegDecoder(), fox(data_dir, "wav"), 4096)
    flac = await decode(FFmpegDecoder(), fox(data_dir, "flac"), 4096)
    np.testing.assert_array_equal(wav, flac)


async def test_first_pcm_latency_is_measured(data_dir):
    decoder = FFmpegDecoder()
    assert decoder.first_pcm_latency is None
    await decode(decoder, fox(data_dir, "ogg"), 1024)
    assert decoder.first_pcm_latency is not None and decoder.first_pcm_latency >= 0


# -- WAV streams reach FFmpeg as raw PCM ---------------------------------------------------


def wav_header(format_tag: int, channels: int, rate: int, bits: int, extra_chunks: bytes = b"", extensible_of: int | None = None) -> bytes:
    if extensible_of is None:
        fmt = format_tag.to_bytes(2, "little")
        tail = b""
    else:  # WAVE_FORMAT_EXTENSIBLE: cbSize 22, valid bits, channel mask, sub-format GUID
        fmt = (0xFFFE).to_bytes(2, "little")
        tail = (22).to_bytes(2, "little") + bits.to_bytes(2, "little") + (0).to_bytes(4, "little")
        tail += extensible_of.to_bytes(2, "little") + bytes(14)
    block = channels * bits // 8
    fmt += channels.to_bytes(2, "little") + rate.to_bytes(4, "little") + (rate * block).to_bytes(4, "little")
    fmt += block.to_bytes(2, "little") + bits.to_bytes(2, "little") + tail
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + extra_chunks + b"data" + (0).to_bytes(4, "little")
    return b"RIFF" + (len(body)).to_bytes(4, "little") + body


def test_wav_headers_are_read_for_the_raw_format_of_their_samples(data_dir):
    data = fox(data_dir, "wav")  # ffmpeg's: a LIST chunk between fmt and data
    args, offset = parse_wav_header(data)
    assert args == ["-f", "s16le", "-ar", "16000", "-ac", "1"]
    assert data[offset - 8 : offset - 4] == b"data"
    assert parse_wav_header(data[: offset - 1]) is None  # not all there yet
    assert parse_wav_header(b"RIF") is None
    assert parse_wav_header(fox(data_dir, "ogg")) is False
    odd_chunk = b"junk" + (3).to_bytes(4, "little") + b"abc\x00"  # odd sizes are padded
    header = wav_header(1, 2, 44100, 24, extra_chunks=odd_chunk)
    assert parse_wav_header(header) == (["-f", "s24le", "-ar", "44100", "-ac", "2"], len(header))
    assert parse_wav_header(wav_header(3, 1, 48000, 32))[0][:2] == ["-f", "f32le"]
    assert parse_wav_header(wav_header(0, 6, 48000, 16, extensible_of=1))[0] == ["-f", "s16le", "-ar", "48000", "-ac", "6"]
    assert parse_wav_header(wav_header(7, 1, 8000, 8)) is False  # mu-law: FFmpeg's demuxer reads it
    no_fmt = b"RIFF" + bytes(4) + b"WAVE" + b"data" + bytes(4)
    assert parse_wav_header(no_fmt) is False


@pytest.mark.parametrize("input_format", [None, "wav"], ids=["auto", "named"])
async def test_a_pcm_wav_stream_reaches_ffmpeg_as_raw_samples(input_format, data_dir, spawns, ffmpeg_children, no_ffmpeg_left):
    """FFmpeg's wav demuxer reads 64 KiB before its first packet (2 s of 16 kHz mono
    streamed in real time): the decoder hands it the samples as raw PCM instead."""
    from rtlab.decoders.files import decode_audio

    data = fox(data_dir, "wav")
    _, offset = parse_wav_header(data)
    decoder = FFmpegDecoder(input_format=input_format)
    await decoder.start()
    chunks: list[np.ndarray] = []

    async def read_all() -> None:
        while (pcm := await decoder.read()) is not None:
            chunks.append(pcm)

    reader = asyncio.create_task(read_all())
    try:
        for start in range(0, offset - 10, 10):  # the header in small pieces
            await decoder.write(data[start : start + 10])
        assert spawns == []  # not all of the header yet
        for start in range(start + 10, offset + 100, 10):
            await decoder.write(data[start : start + 10])
        assert [input_options(command) for command in spawns] == [RAW_FOX]  # started once
        assert [p.pid for p in ffmpeg_children()] == [decoder.pid]
        await decoder.write(data[start + 10 :])
        await decoder.end_input()
        await reader
    finally:
        reader.cancel()
        await decoder.stop()
    np.testing.assert_array_equal(np.concatenate(chunks), decode_audio(data_dir / "fox.wav"))
    assert decoder.first_pcm_latency is not None


async def test_other_wav_streams_go_to_ffmpeg_as_they_came(tmp_path, data_dir, spawns, no_ffmpeg_left):
    mulaw = tmp_path / "fox-mulaw.wav"
    import subprocess

    subprocess.run([find_ffmpeg(), "-loglevel", "error", "-i", str(data_dir / "fox.wav"), "-c:a", "pcm_mulaw", str(mulaw)], check=True)
    pcm = await decode(FFmpegDecoder(), mulaw.read_bytes(), 333)
    assert [input_options(command) for command in spawns] == [[]]
    assert len(pcm) / 16_000 == pytest.approx(FOX_SECONDS, abs=0.05)


# -- FFmpegDecoder bad input ---------------------------------------------------------------


async def assert_decoder_error(data: bytes, ffmpeg_says: str) -> DecoderError:
    decoder = FFmpegDecoder()
    with pytest.raises(DecoderError) as raised:
        await decode(decoder, data, 4096)
    assert ffmpeg_says in str(raised.value)  # FFmpeg's own stderr is quoted
    assert ffmpeg_says in decoder.stderr
    assert decoder.state is State.STOPPED
    assert decoder.process.returncode is not None
    return raised.value


async def test_garbage_bytes_raise_decoder_error_with_ffmpeg_stderr(no_ffmpeg_left):
    error = await assert_decoder_error(b"this is not audio " * 2000, "Invalid data found")
    assert error.code == "decode_failed"
    assert "FFmpeg said" in str(error)


async def test_ffmpegs_lines_are_quoted_in_one_line(no_ffmpeg_left):
    # A damaged Ogg page: FFmpeg prints "CRC mismatch!" and "End of file" on two lines.
    error = await assert_decoder_error(b"OggS" + bytes(range(256)) * 40, "End of file")
    assert "\n" not in str(error) and " | " in str(error)


async def test_random_bytes_raise_decoder_error(no_ffmpeg_left):
    await assert_decoder_error(np.random.default_rng(0).bytes(50_000), "Invalid data found")


async def test_empty_input_raises_a_clear_error_and_starts_no_ffmpeg(spawns, no_ffmpeg_left):
    decoder = FFmpegDecoder()
    with pytest.raises(DecoderError, match="no audio was received: the input was empty") as raised:
        await decode(decoder, b"", 4096)
    assert raised.value.code == "decode_failed"
    assert (decoder.process, spawns) == (None, [])
    assert decoder.state is State.STOPPED


@pytest.mark.parametrize("container", ["wav", "flac"])
async def test_a_header_with_no_samples_after_it_says_there_is_no_audio(container, tmp_path, no_ffmpeg_left):
    # FFmpeg decodes nothing and exits 0 without a word: the error read "FFmpeg exited with
    # code 0 ... FFmpeg said: (FFmpeg printed nothing)".
    if container == "wav":
        data = wav_header(3, 5, 16000, 32)  # float samples, 5 channels, an empty data chunk
    else:
        path = tmp_path / "empty.flac"
        subprocess.run([find_ffmpeg(), "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc", "-t", "0", str(path)], check=True)
        data = path.read_bytes()
    decoder = FFmpegDecoder()
    with pytest.raises(DecoderError, match="no audio was received: FFmpeg read the input to its end and found no "
                                           "samples in it") as raised:  # fmt: skip
        await decode(decoder, data, 4096)
    assert "exited with code" not in str(raised.value) and "printed nothing" not in str(raised.value)
    assert raised.value.code == "decode_failed"
    assert decoder.state is State.STOPPED


async def test_a_video_without_sound_is_said_to_have_no_audio_stream(tmp_path, no_ffmpeg_left):
    # The error asked whether it was "a complete audio file", and quoted only FFmpeg's
    # "Output file #0 does not contain any stream".
    video = tmp_path / "silent film.mkv"
    subprocess.run([find_ffmpeg(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=d=1:s=32x32:r=5",
                    "-c:v", "mjpeg", str(video)], check=True)  # fmt: skip
    for decoding in (decode(FFmpegDecoder(), video.read_bytes(), 4096), asyncio.to_thread(decode_file, video)):
        with pytest.raises(DecoderError, match=r"it has no audio stream \(a video without sound\?\); give a file"):
            await decoding


async def test_file_cut_inside_its_header_raises_decoder_error(no_ffmpeg_left, data_dir):
    await assert_decoder_error(fox(data_dir, "wav")[:50], "no 'data' tag found")


@pytest.mark.parametrize("data", [b"RIFF", b"Og"], ids=["wav-like", "other"])
async def test_a_stream_shorter_than_a_wav_header_is_judged_by_ffmpeg(data, spawns, no_ffmpeg_left):
    await assert_decoder_error(data, "Invalid data found")
    assert [input_options(command) for command in spawns] == [[]]  # once, as it came


@pytest.mark.parametrize("ext", FORMATS)
async def test_truncated_file_decodes_the_part_that_arrived(ext, data_dir, no_ffmpeg_left):
    data = fox(data_dir, ext)
    pcm = await decode(FFmpegDecoder(), data[: len(data) // 2], 4096)
    # FFmpeg ends cleanly at a cut inside the audio: what arrived is decoded, no error.
    assert 1.0 < len(pcm) / 16_000 < FOX_SECONDS - 1.0


# -- finding the binary ---------------------------------------------------------------------


@pytest.fixture
def empty_path(monkeypatch, tmp_path):
    """No ffmpeg on PATH and no RTLAB_FFMPEG."""
    monkeypatch.delenv("RTLAB_FFMPEG", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def fake_ffmpeg(directory) -> str:
    directory.mkdir(exist_ok=True)
    path = directory / "ffmpeg"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_find_ffmpeg_prefers_rtlab_ffmpeg_over_path(monkeypatch, tmp_path):
    on_path = fake_ffmpeg(tmp_path / "bin")
    configured = fake_ffmpeg(tmp_path / "configured")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("RTLAB_FFMPEG", configured)
    assert find_ffmpeg() == configured
    monkeypatch.delenv("RTLAB_FFMPEG")
    assert find_ffmpeg() == on_path


def test_find_ffmpeg_falls_back_to_imageio_ffmpeg(empty_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()


def test_find_ffmpeg_without_any_binary_says_how_to_install(empty_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    with pytest.raises(FFmpegNotFound, match="install"):
        find_ffmpeg()


@pytest.mark.parametrize("bad", ["/nonexistent/ffmpeg", "directory"])
def test_bad_rtlab_ffmpeg_is_refused_with_a_clear_error(bad, monkeypatch, tmp_path):
    value = str(tmp_path) if bad == "directory" else bad
    monkeypatch.setenv("RTLAB_FFMPEG", value)
    with pytest.raises(FFmpegNotFound, match="RTLAB_FFMPEG") as raised:
        find_ffmpeg()
    assert value in str(raised.value)


async def test_start_with_a_bad_rtlab_ffmpeg_raises_and_starts_nothing(monkeypatch, no_ffmpeg_left):
    monkeypatch.setenv("RTLAB_FFMPEG", "/nonexistent/ffmpeg")
    decoder = FFmpegDecoder()
    with pytest.raises(FFmpegNotFound):
        await decoder.start()
    assert decoder.process is None
    await decoder.stop()


async def test_imageio_ffmpeg_binary_decodes_too(monkeypatch, data_dir):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    monkeypatch.setenv("RTLAB_FFMPEG", imageio_ffmpeg.get_ffmpeg_exe())
    decoder = FFmpegDecoder()
    pcm = await decode(decoder, fox(data_dir, "ogg"), 4096)
    assert abs(len(pcm) / 16_000 - FOX_SECONDS) < 0.05


def test_rtlab_ffmpeg_imageio_ffmpeg_names_the_wheels_binary(monkeypatch, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    monkeypatch.setenv("PATH", str(tmp_path))  # not PATH's, even where PATH has one
    monkeypatch.setenv("RTLAB_FFMPEG", "imageio-ffmpeg")
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # the wheel is missing
    with pytest.raises(FFmpegNotFound, match="RTLAB_FFMPEG=imageio-ffmpeg names the imageio-ffmpeg wheel's FFmpeg, and install"):
        find_ffmpeg()


def _ffmpeg_pcm(path, *global_options: str) -> bytes:
    """``path`` as 16 kHz float32, from FFmpeg called directly."""
    command = [find_ffmpeg(), "-nostdin", "-loglevel", "error", *global_options, "-i", str(path),
               "-vn", "-ac", "1", "-ar", "16000", "-f", "f32le", "-"]  # fmt: skip
    return subprocess.run(command, capture_output=True, check=True).stdout


@pytest.mark.parametrize("flags", [None, "0"])
async def test_rtlab_ffmpeg_cpuflags_reaches_the_stream_and_file_decoders(monkeypatch, data_dir, spawns, flags):
    """FFmpeg's SIMD code changes the last bits of the PCM (enough to change a word);
    RTLAB_FFMPEG_CPUFLAGS=0 (the portable kernels') decodes with its C code everywhere."""
    if flags is None:
        monkeypatch.delenv("RTLAB_FFMPEG_CPUFLAGS", raising=False)
        expected = _ffmpeg_pcm(data_dir / "fox.ogg")
    else:
        monkeypatch.setenv("RTLAB_FFMPEG_CPUFLAGS", flags)
        expected = _ffmpeg_pcm(data_dir / "fox.ogg", "-cpuflags", flags)
    assert decode_file(data_dir / "fox.ogg") == expected
    streamed = await decode(FFmpegDecoder(), fox(data_dir, "ogg"), 4096)
    assert streamed.tobytes() == expected
    assert ("-cpuflags" in spawns[-1]) == (flags is not None), spawns[-1]


async def test_a_bad_rtlab_ffmpeg_cpuflags_is_ffmpegs_one_line_error(monkeypatch, data_dir):
    monkeypatch.setenv("RTLAB_FFMPEG_CPUFLAGS", "nonsense")
    with pytest.raises(DecoderError, match="could not decode .*fox.ogg .*cpuflags") as raised:
        decode_file(data_dir / "fox.ogg")
    assert "\n" not in str(raised.value)


def test_ffmpeg_description_names_the_binary_its_version_and_flags(monkeypatch, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    monkeypatch.setenv("RTLAB_FFMPEG", "imageio-ffmpeg")
    monkeypatch.setenv("RTLAB_FFMPEG_CPUFLAGS", "0")
    first_line = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout
    described = ffmpeg_description()
    assert described == {"binary": "imageio-ffmpeg", "version": first_line.split()[2], "cpuflags": "0"}
    assert first_line.startswith(f"ffmpeg version {described['version']} ")
    monkeypatch.setenv("RTLAB_FFMPEG", fake_ffmpeg(tmp_path / "bin"))  # prints no version
    assert ffmpeg_description() == {"binary": "RTLAB_FFMPEG", "version": None, "cpuflags": "0"}
    monkeypatch.setenv("RTLAB_FFMPEG", "/nonexistent/ffmpeg")
    assert ffmpeg_description() is None


# -- PCMDecoder -------------------------------------------------------------------------------

SAMPLES = np.array([0, 1, -1, 16384, -16384, 32767, -32768, 1234], dtype="<i2")


async def read_until_end(decoder) -> np.ndarray:
    chunks = []
    while (pcm := await asyncio.wait_for(decoder.read(), 5)) is not None:
        chunks.append(pcm)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 16])
async def test_pcm_decoder_accepts_chunks_of_any_size(chunk_size):
    decoder = PCMDecoder()
    await decoder.start()
    data = SAMPLES.tobytes()
    for offset in range(0, len(data), chunk_size):
        await decoder.write(data[offset : offset + chunk_size])
    await decoder.end_input()
    pcm = await read_until_end(decoder)
    assert pcm.dtype == np.float32
    np.testing.assert_array_equal(pcm, SAMPLES.astype(np.float32) / 32768.0)
    assert pcm.min() == -1.0 and pcm.max() < 1.0


async def test_pcm_decoder_read_keeps_returning_none_after_the_end():
    decoder = PCMDecoder()
    await decoder.start()
    await decoder.write(SAMPLES.tobytes())
    await decoder.end_input()
    assert len(await read_until_end(decoder)) == len(SAMPLES)
    assert await asyncio.wait_for(decoder.read(), 5) is None
    await decoder.stop()
    assert await asyncio.wait_for(decoder.read(), 5) is None


async def test_pcm_decoder_drops_an_odd_trailing_byte_at_the_end():
    decoder = PCMDecoder()
    await decoder.start()
    await decoder.write(SAMPLES.tobytes() + b"\x01")
    await decoder.end_input()
    assert len(await read_until_end(decoder)) == len(SAMPLES)


async def test_pcm_decoder_start_and_stop_are_idempotent():
    decoder = PCMDecoder()
    assert await decoder.start() is True
    assert await decoder.start() is True
    await decoder.stop()
    await decoder.stop()
    assert decoder.state is State.STOPPED
    with pytest.raises(DecoderError, match="create a new one"):
        await decoder.start()


async def test_pcm_decoder_refuses_writes_before_start_and_after_end():
    decoder = PCMDecoder()
    with pytest.raises(DecoderError):
        await decoder.write(b"\x00\x00")
    await decoder.start()
    await decoder.end_input()
    with pytest.raises(DecoderError):
        await decoder.write(b"\x00\x00")


async def test_pcm_decoder_stop_wakes_a_blocked_reader():
    decoder = PCMDecoder()
    await decoder.start()
    reader = asyncio.create_task(decoder.read())
    await asyncio.sleep(0)
    assert not reader.done()
    await decoder.stop()
    assert await asyncio.wait_for(reader, 5) is None


async def test_pcm_decoder_write_waits_when_full():
    decoder = PCMDecoder(max_chunks=2)
    await decoder.start()
    await decoder.write(b"\x00\x00")
    await decoder.write(b"\x00\x00")
    writer = asyncio.create_task(decoder.write(b"\x00\x00"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not writer.done()  # bounded: the third chunk waits for a reader
    await decoder.read()
    await asyncio.wait_for(writer, 5)
    await decoder.stop()


async def test_pcm_decoder_bounds_audio_not_frames():
    # One huge frame (10 s) must not sit in the queue whole: memory is bounded in seconds.
    decoder = PCMDecoder(max_chunks=2)
    await decoder.start()
    writer = asyncio.create_task(decoder.write(b"\x01\x00" * 160_000))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not writer.done()
    assert decoder._queue.qsize() == 2
    chunks = [await decoder.read() for _ in range(10)]
    await asyncio.wait_for(writer, 5)
    assert [len(c) for c in chunks] == [16_000] * 10
    await decoder.stop()


def test_both_decoders_are_registered_as_plugins():
    from rtlab.registry import get_registry

    registry = get_registry()
    assert registry.get("decoder", "ffmpeg") is FFmpegDecoder
    assert registry.get("decoder", "pcm_s16le") is PCMDecoder
    assert registry.entries["decoder"]["ffmpeg"].plugin == "rtlab.decoders.plugin"


def test_a_decoder_without_its_own_init_accepts_no_options():
    class Silent(Decoder):
        name = "silent"

    assert Silent().state is State.IDLE
    assert accepted_options(Silent) == {}
    with pytest.raises(InvalidOption, match="does not accept option 'rate'"):
        check_options(Silent, "decoder", {"rate": 8000})
    assert FFmpegDecoder().state is PCMDecoder().state is State.IDLE


async def test_end_input_cancelled_while_stdin_closes_leaves_asyncio_no_error(data_dir, no_ffmpeg_left):
    """A caller cancelled in end_input() (a client gone while its stream flushes) must not
    cancel asyncio's own wait for the pipe to close (it then fails with InvalidStateError)."""
    errors = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        for _ in range(20):
            decoder = FFmpegDecoder(input_format="ogg")
            await decoder.start()
            await decoder.write(fox(data_dir, "ogg"))
            ending = asyncio.ensure_future(decoder.end_input())
            await asyncio.sleep(0)
            ending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ending
            await decoder.stop()
        await asyncio.sleep(0.2)
    finally:
        loop.set_exception_handler(None)
    assert errors == []


@pytest.mark.parametrize("ext", ["ogg", "mp3", "wav"])
async def test_counting_samples_gives_what_decoding_gives(ext, data_dir, no_ffmpeg_left):
    from rtlab.decoders.files import count_samples

    assert await count_samples(data_dir / f"fox.{ext}") == len(decode_file(data_dir / f"fox.{ext}")) // 4


async def test_counting_samples_stops_ffmpeg_when_asked_or_cancelled(tmp_path, monkeypatch, data_dir, no_ffmpeg_left):
    """A wall-clock stream measures its file before sending it: Ctrl-C then (the stop
    event), or a cancelled task, kills FFmpeg and whatever wraps it, at once. Before, the
    measuring FFmpeg decoded on to the end in a thread nobody could stop."""
    from rtlab.decoders.files import count_samples

    started = tmp_path / "started"
    slow = tmp_path / "ffmpeg"  # an FFmpeg wrapper that never ends by itself
    slow.write_text(f'#!/bin/sh\necho $$ > "{started}.tmp" && mv "{started}.tmp" "{started}"\nsleep 60\n')
    slow.chmod(0o755)
    monkeypatch.setenv("RTLAB_FFMPEG", str(slow))

    groups = []

    async def until_started() -> None:
        while not started.exists():
            await asyncio.sleep(0.02)
        groups.append(int(started.read_text()))  # the wrapper leads its process group
        started.unlink()

    def alive(group: int) -> list[psutil.Process]:
        def in_group(process: psutil.Process) -> bool:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                return os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE
            return False

        return [p for p in psutil.process_iter() if in_group(p)]

    stop = asyncio.Event()
    counting = asyncio.ensure_future(count_samples(data_dir / "fox.ogg", stop=stop))
    await asyncio.wait_for(until_started(), 30)
    stop.set()
    assert await asyncio.wait_for(counting, 30) is None
    counting = asyncio.ensure_future(count_samples(data_dir / "fox.ogg"))
    await asyncio.wait_for(until_started(), 30)
    counting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(counting, 30)
    assert len(groups) == 2 and not alive(groups[0]) and not alive(groups[1])  # the sleep too
    # Cancelled while FFmpeg is being started (its pipes not yet connected).
    counting = asyncio.ensure_future(count_samples(data_dir / "fox.ogg"))
    await asyncio.sleep(0)
    counting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(counting, 30)
    await asyncio.sleep(0.2)  # a wrapper that was not killed has written its group by now
    assert not started.exists() or not alive(int(started.read_text()))
