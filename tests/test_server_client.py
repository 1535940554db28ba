"""rtlab.server.client.stream_file streaming a file from disk to a real server on 127.0.0.1
(tone backend, real FFmpeg)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rtlab.server.client import PCM_BYTES_PER_SECOND, TranscriptionClient, stream_file
from rtlab.testing import tone_words, wav_bytes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def wav_file(clip, tmp_path) -> Path:
    """The tone clip as a 16 kHz 16-bit WAV file: 32,000 bytes a second of audio."""
    audio, _ = tone_words(clip.text)
    path = tmp_path / "clip.wav"
    path.write_bytes(wav_bytes(audio))
    return path


@pytest.fixture
def observed(monkeypatch, wav_file):
    """Every read of ``wav_file`` and every audio frame sent, in the order they happen:
    ``("read", bytes returned)`` and ``("sent", bytes)``."""
    events: list[tuple[str, int]] = []
    open_path = Path.open

    class ObservedFile:
        def __init__(self, file) -> None:
            self.file = file

        def read(self, size: int = -1) -> bytes:
            data = self.file.read(size)
            events.append(("read", len(data)))
            return data

        def __getattr__(self, name: str):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

    def observing_open(self, *args, **kwargs):
        file = open_path(self, *args, **kwargs)
        return ObservedFile(file) if self == wav_file else file

    send_audio = TranscriptionClient.send_audio

    async def observing_send(self, data: bytes) -> None:
        events.append(("sent", len(data)))
        await send_audio(self, data)

    monkeypatch.setattr(Path, "open", observing_open)
    monkeypatch.setattr(TranscriptionClient, "send_audio", observing_send)
    return events


async def test_stream_file_reads_a_file_a_chunk_at_a_time_as_it_sends(server, clip, wav_file, observed):
    """Bounded memory: no more than about one chunk (0.25 s of audio here) is read ahead of
    what was sent. Before, the whole file was read at once (a two-hour WAV is over a
    gigabyte) before the first byte went out."""
    result = await stream_file(server.ws_url, wav_file, speed=0, chunk_seconds=0.25)
    assert result.error is None and result.text == clip.text  # every byte, in order

    size = wav_file.stat().st_size
    reads = [n for kind, n in observed if kind == "read"]
    assert sum(reads) == size and sum(n for kind, n in observed if kind == "sent") == size
    chunk = 0.25 * PCM_BYTES_PER_SECOND
    assert len(reads) >= size // (2 * chunk) and max(reads) <= 1.1 * chunk, reads
    read_ahead, ahead = 0, 0
    for kind, n in observed:
        ahead += n if kind == "read" else -n
        read_ahead = max(read_ahead, ahead)
    assert read_ahead <= 1.1 * chunk, observed


async def test_stream_file_from_disk_sends_each_chunk_once_its_audio_has_played(
    server, clip, wav_file, observed, monkeypatch
):
    """Pacing kept: at speed 4, chunk k (of 0.25 s) goes out no earlier than k x 0.25 / 4 s
    after the stream started, as a microphone would deliver it."""
    speed, chunk_seconds = 4.0, 0.25
    sent_at: list[float] = []
    send_audio = TranscriptionClient.send_audio

    async def timed_send(self, data: bytes) -> None:
        sent_at.append(time.monotonic() - self.first_audio_at)
        await send_audio(self, data)

    monkeypatch.setattr(TranscriptionClient, "send_audio", timed_send)
    result = await stream_file(server.ws_url, wav_file, speed=speed, chunk_seconds=chunk_seconds)
    assert result.error is None and result.text == clip.text
    assert len(sent_at) == sum(1 for kind, _ in observed if kind == "sent") >= 10
    early = [(k, at) for k, at in enumerate(sent_at, 1) if at < k * chunk_seconds / speed - 0.005]
    assert early == []


async def test_a_raw_pcm_file_is_paced_by_its_size_without_ffmpeg(server, clip, tmp_path, monkeypatch):
    """Headerless PCM knows its duration from its size, a file as well as bytes: before, a
    path was measured by FFmpeg, which cannot read headerless audio without being told."""
    import rtlab.core.feeding as feeding

    audio, _ = tone_words(clip.text)
    path = tmp_path / "clip.pcm"
    path.write_bytes((audio.clip(-1, 1) * 32767).astype("<i2").tobytes())

    async def no_measuring(*args, **kwargs):
        raise AssertionError("raw PCM was measured by FFmpeg")

    monkeypatch.setattr(feeding, "measure_duration", no_measuring)
    result = await stream_file(server.ws_url, path, speed=8, format="pcm_s16le", chunk_seconds=0.25)
    assert result.error is None and result.text == clip.text
    assert result.audio_seconds == pytest.approx(path.stat().st_size / PCM_BYTES_PER_SECOND)
