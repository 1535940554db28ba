"""Shared fixtures. Keep this small: fixtures used by one test file live in that file."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

DATA = Path(__file__).parent / "data"


def _pin_portable_kernels() -> None:
    """Compute with the same kernels on every x86-64 machine with AVX2.

    CTranslate2 and PyTorch pick their kernels by CPU, and tiny.en's words on the synthetic
    clips change with them (one machine hears "the lazy nog", another "the lady nog"), as
    they do with the FFmpeg that decodes the clips. The tests pin rtlab's portable kernels
    (the imageio-ffmpeg wheel's FFmpeg with its C code among them), so the words they assert are the ones heard
    everywhere; subprocesses (servers, kernels, the CLI) inherit them. A variable already
    set is left as it is (to run the suite on other kernels); on a CPU without AVX2 the
    libraries choose.
    """
    from rtlab.kernels import KernelsError, pin_kernels

    try:
        pin_kernels("portable")
    except KernelsError:
        pass


_pin_portable_kernels()

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
