"""Shared fixtures. Keep this small: fixtures used by one test file live in that file."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

DATA = Path(__file__).parent / "data"

# The server tests' fixtures (make_server, server, clip, ...) and helpers.
pytest_plugins = ["server_support"]


def _ffmpeg_children() -> list[psutil.Process]:
    """FFmpeg processes descended from this test process (zombies included: not reaped = left)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ffmpeg" in child.name():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def ffmpeg_children():
    """A function returning the FFmpeg processes descended from this test process."""
    return _ffmpeg_children


@pytest.fixture
def no_ffmpeg_left():
    """Fails the test if it leaves an FFmpeg child process behind."""
    before = {p.pid for p in _ffmpeg_children()}
    yield
    left = [p for p in _ffmpeg_children() if p.pid not in before]
    assert not left, f"FFmpeg processes left behind: {[p.pid for p in left]}"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: the fox clips (wav, ogg, webm, mp3, flac) and their transcript."""
    return DATA


@pytest.fixture()
def tone_corpus(tmp_path: Path) -> Path:
    """A folder corpus of tone-coded clips (``rtlab.testing.TONE_CLIPS``) with same-name
    .txt references, for the test backend (test_bench, test_benchmarks)."""
    from rtlab.testing import write_tone_corpus

    return write_tone_corpus(tmp_path / "corpus")
