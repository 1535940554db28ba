"""Fixtures and helpers shared by the server tests (a pytest plugin: see tests/conftest.py).

Servers run in the test's own event loop on 127.0.0.1, on a free port, with the
deterministic tone backend and real FFmpeg.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from dataclasses import dataclass

import pytest

from rtlab.config import StreamConfig
from rtlab.decoders import find_ffmpeg
from rtlab.server import RunningServer, ServerConfig, start_server
from rtlab.testing import tone_words, wav_bytes

TONE_TEXT = "alpha bravo charlie delta echo foxtrot"


@dataclass(frozen=True)
class Clip:
    """One tone-coded utterance in the encodings clients send."""

    text: str
    words: list[dict]
    webm: bytes
    pcm: bytes
    seconds: float


def make_clip(text: str) -> Clip:
    """Tone audio for ``text``, as webm/opus (through real FFmpeg) and raw s16le PCM."""
    audio, words = tone_words(text)
    wav = wav_bytes(audio)
    webm = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "wav", "-i", "pipe:0",
         "-c:a", "libopus", "-b:a", "32k", "-f", "webm", "pipe:1"],
        input=wav, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return Clip(text, words, webm, wav[44:], len(audio) / 16000)


@pytest.fixture(scope="session")
def clip() -> Clip:
    return make_clip(TONE_TEXT)


@pytest.fixture(scope="session")
def second_clip() -> Clip:
    return make_clip("golf hotel india juliett")


@pytest.fixture
async def make_server():
    """A factory: ``await make_server(**settings)`` starts a server, stopped at teardown.

    ``settings`` are ServerConfig fields, or StreamConfig fields of the server's default
    stream (the tone backend unless they name another).
    """
    started: list[RunningServer] = []
    stream_fields = {f.name for f in dataclasses.fields(StreamConfig)}

    async def make(**settings) -> RunningServer:
        stream = {"backend": "test", **{k: v for k, v in settings.items() if k in stream_fields}}
        server_settings = {k: v for k, v in settings.items() if k not in stream_fields}
        running = await start_server(ServerConfig(port=0, stream=StreamConfig(**stream), **server_settings))
        started.append(running)
        return running

    yield make
    for running in started:
        await running.stop()


@pytest.fixture
async def server(make_server) -> RunningServer:
    """A server with the default limits and the tone backend."""
    return await make_server()


def split(data: bytes, pieces: int = 8) -> list[bytes]:
    """``data`` in about ``pieces`` chunks (how a recorder would send it)."""
    size = max(1, len(data) // pieces)
    return [data[i : i + size] for i in range(0, len(data), size)]


async def settle(running: RunningServer, ffmpeg_children, timeout: float = 10.0) -> list:
    """Wait until closed sessions are released and no FFmpeg child is left (or timeout).

    Returns the FFmpeg processes still there.
    """
    deadline = time.monotonic() + timeout
    while True:
        await running.server.wait_closed()
        left = ffmpeg_children()
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


async def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
