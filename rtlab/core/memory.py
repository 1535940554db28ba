"""Giving memory that was freed back to the system, so that a long session's resident set
stays flat.

glibc's ``malloc`` keeps what a program frees in its arenas, for reuse; it returns only
the free space at an arena's top. A backend pass allocates working buffers of sizes that
change with the audio and the text (CTranslate2's, PyTorch's on CPU), from the threads
that run passes, each with an arena of its own. What it frees between live blocks stays
resident: on a long stream glibc holds a large part of the resident set free, and the
resident set creeps up while nothing in use grows (measured in
``docs/benchmarks/2026-12-02-long-form-memory.md``).

:func:`release_freed_memory` asks glibc to hand whole free pages back (``malloc_trim``),
at most once every :data:`interval` seconds in the process; the scheduler calls it after
every backend pass, outside the pass's measured compute. The interval is
``RTLAB_TRIM_SECONDS`` (default 1, about once a pass; ``0`` turns it off). With another
C library it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["interval", "malloc_usage", "release_freed_memory", "resident_bytes"]

#: Seconds between two trims: ``RTLAB_TRIM_SECONDS``, default 1; 0: never. Between trims
#: further apart the resident set rises towards its peak again (measured in
#: ``docs/benchmarks/2026-12-02-trim-interval.md``, with what a trim costs).
DEFAULT_INTERVAL = 1.0


def _interval_from_environment() -> float:
    text = os.environ.get("RTLAB_TRIM_SECONDS", "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"RTLAB_TRIM_SECONDS must be a number of seconds (0: never), not {text!r}") from None
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"RTLAB_TRIM_SECONDS must be 0 or more, not {text!r}")
    return seconds


class _MallInfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (2.33 and later), every field a size_t.
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _glibc_function(name: str) -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    info = _glibc_function("mallinfo2")
    if info is not None:
        info.argtypes = []
        info.restype = _MallInfo2
    return info


interval = _interval_from_environment()
_trim = _malloc_trim()
_info = _mallinfo2()
_lock = threading.Lock()
_last = float("-inf")
#: How many times the process has trimmed.
trims = 0


def release_freed_memory(force: bool = False) -> bool:
    """Hand the pages glibc holds free back to the system, unless the process did so less
    than :data:`interval` seconds ago (``force``: whatever the interval, unless it is 0) or
    another thread is doing it now. Returns whether it trimmed."""
    global _last, trims
    if _trim is None or interval <= 0:
        return False
    now = time.monotonic()
    if (not force and now - _last < interval) or not _lock.acquire(blocking=False):
        return False
    try:
        _trim(0)
        _last = time.monotonic()
        trims += 1
        return True
    finally:
        _lock.release()


def malloc_usage() -> dict[str, float] | None:
    """glibc's own account of the process's ``malloc`` memory, in MiB: ``in_use``
    (allocated blocks, mmapped ones included) and ``free`` (held in its arenas for reuse,
    resident unless trimmed); None with another C library or before glibc 2.33."""
    if _info is None:
        return None
    info = _info()
    return {"in_use": (info.uordblks + info.hblkhd) / 2**20, "free": info.fordblks / 2**20}


def resident_bytes() -> int | None:
    """The process's resident set in bytes (from ``/proc``), or None where there is none."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
