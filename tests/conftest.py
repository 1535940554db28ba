"""Shared fixtures. Keep this small: fixtures used by one test file live in that file."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil
import pytest

DATA = Path(__file__).parent / "data"


def _pin_ctranslate2_kernels() -> None:
    """Make CTranslate2 compute with the same kernels on every x86-64 machine with AVX2.

    CTranslate2 picks its int8 kernels by CPU: Intel MKL on Intel, oneDNN elsewhere, each
    at the widest vector instructions the CPU has, and tiny.en's words on the synthetic
    clips change with them (one machine hears "the lazy nog", another "the lady nog"). The
    tests pin oneDNN at AVX2, which every CI machine of this kind has, so the words they
    assert are the ones heard everywhere; users' runs keep the fastest kernels. Subprocesses
    (servers, kernels, the CLI) inherit the pin. A variable already set is left as it is.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return
    if "avx2" not in flags:
        return
    for name, value in {"CT2_USE_MKL": "0", "CT2_FORCE_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}.items():
        os.environ.setdefault(name, value)


_pin_ctranslate2_kernels()

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
