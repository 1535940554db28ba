"""Memory freed by passes goes back to the system (rtlab.core.memory): glibc keeps what
a program frees between live blocks resident until it is asked to trim."""

from __future__ import annotations

import time

import pytest

from rtlab.backends import Backend
from rtlab.core import memory
from rtlab.core import scheduler as scheduler_module
from rtlab.core.scheduler import CpuSlots, Scheduler

pytestmark = pytest.mark.timeout(60)


class OneReplica(Backend):
    name = "one-replica"
    cores_per_call = 1
    max_concurrency = 1


def resident_mib() -> float:
    resident = memory.resident_bytes()
    assert resident is not None, "glibc runs on Linux, which has /proc"
    return resident / 2**20


@pytest.mark.skipif(memory._trim is None, reason="malloc_trim is glibc's; this C library keeps its own ways")
def test_memory_freed_between_live_blocks_goes_back_to_the_system(monkeypatch):
    monkeypatch.setattr(memory, "interval", 10.0)
    # 200 MiB in blocks below glibc's mmap threshold, so they come from the heap; every
    # tenth stays alive, so the freed ones lie between live blocks, not at the heap's top.
    blocks = [bytearray(64 * 1024) for _ in range(3200)]
    kept = blocks[::10]
    del blocks
    before = resident_mib()
    assert memory.release_freed_memory(force=True)
    after = resident_mib()
    assert before - after > 100, f"resident {before:.0f} MiB before the trim, {after:.0f} MiB after"
    assert len(kept) == 320


def test_the_process_trims_at_most_once_per_interval(monkeypatch):
    monkeypatch.setattr(memory, "_trim", lambda pad: 0)
    monkeypatch.setattr(memory, "_last", float("-inf"))
    monkeypatch.setattr(memory, "interval", 3600.0)
    assert memory.release_freed_memory()
    assert not memory.release_freed_memory()  # within the hour
    assert memory.release_freed_memory(force=True)
    monkeypatch.setattr(memory, "interval", 0.0)
    assert not memory.release_freed_memory(force=True)  # 0: never
    monkeypatch.setattr(memory, "interval", 10.0)
    monkeypatch.setattr(memory, "_trim", None)  # not glibc
    assert not memory.release_freed_memory(force=True)


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("RTLAB_TRIM_SECONDS", raising=False)
    assert memory._interval_from_environment() == memory.DEFAULT_INTERVAL
    monkeypatch.setenv("RTLAB_TRIM_SECONDS", "0")
    assert memory._interval_from_environment() == 0
    monkeypatch.setenv("RTLAB_TRIM_SECONDS", "2.5")
    assert memory._interval_from_environment() == 2.5
    for bad in ("often", "-1", "nan"):
        monkeypatch.setenv("RTLAB_TRIM_SECONDS", bad)
        with pytest.raises(ValueError, match="RTLAB_TRIM_SECONDS"):
            memory._interval_from_environment()


async def test_every_pass_is_followed_by_a_trim_outside_its_measured_compute(monkeypatch):
    calls = []

    def slow_trim() -> bool:
        calls.append(time.perf_counter())
        time.sleep(0.5)
        return True

    monkeypatch.setattr(scheduler_module, "release_freed_memory", slow_trim)
    scheduler = Scheduler(OneReplica(), slots=CpuSlots(1))
    result, seconds = await scheduler.submit(lambda: "words")
    assert result == "words" and len(calls) == 1
    assert seconds < 0.5  # the trim's half second is not the pass's compute
    with pytest.raises(ZeroDivisionError):
        await scheduler.submit(lambda: 1 / 0)
    assert len(calls) == 2  # a failed pass freed its buffers too
