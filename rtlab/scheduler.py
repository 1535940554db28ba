"""One inference queue per shared backend, so sessions take turns on the model.

Each session has at most one job in flight (its policy waits for the result before it
asks again), so the queue is bounded by the number of sessions; ``max_pending`` turns
away a burst beyond that with a clear error instead of letting latency grow.

Every job also holds, while it runs, as many of the process's CPU slots (one per core,
see :data:`cpu_slots`) as its backend says one call keeps busy
(:attr:`~rtlab.backends.Backend.cores_per_call`). Backends that share the machine, such as
several models in one replay or one server, then never run more threads than there are
cores: oversubscribed, every pass would slow down, and in the simulated clock its
measured compute, which is its latency, would grow with the number of configurations.
The wait for a slot is queueing, not compute; it is not counted in the seconds returned.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .backends import Backend
from .errors import RtlabError


class SchedulerBusy(RtlabError):
    """Too many inference jobs are waiting for this backend."""

    code = "server_busy"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class CpuSlots:
    """A first-come, first-served count of the CPU cores in use by inference jobs.

    ``hold(n)`` waits until ``n`` slots are free *and* every earlier waiter has been
    served (so a job that needs two cores is not starved by a stream of one-core jobs).
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"CPU slots must be >= 1, got {total}")
        self.total = total
        self._free = total
        self._queue: collections.deque[object] = collections.deque()
        self._condition = threading.Condition()

    @property
    def in_use(self) -> int:
        return self.total - self._free

    @contextlib.contextmanager
    def hold(self, count: int) -> Iterator[None]:
        count = min(max(0, int(count)), self.total)
        if count == 0:
            yield
            return
        ticket = object()
        with self._condition:
            self._queue.append(ticket)
            try:
                self._condition.wait_for(lambda: self._queue[0] is ticket and self._free >= count)
            finally:
                self._queue.remove(ticket)
                self._condition.notify_all()
            self._free -= count
        try:
            yield
        finally:
            with self._condition:
                self._free += count
                self._condition.notify_all()


def _slots_from_environment() -> int:
    text = os.environ.get("RTLAB_CPU_SLOTS", "").strip()
    if not text:
        return available_cores()
    try:
        return max(1, int(text))
    except ValueError:
        raise ValueError(f"RTLAB_CPU_SLOTS must be a whole number of cores, not {text!r}") from None


#: The process-wide CPU slots: one per core, or ``RTLAB_CPU_SLOTS``.
cpu_slots = CpuSlots(_slots_from_environment())


class Scheduler:
    """Runs blocking backend work on dedicated threads and measures compute time."""

    def __init__(self, backend: Backend, max_pending: int = 256, slots: CpuSlots | None = None) -> None:
        self.backend = backend
        self.max_pending = max_pending
        self.slots = cpu_slots if slots is None else slots
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, backend.max_concurrency),
            thread_name_prefix=f"rtlab-{backend.name}",
        )
        self._pending = 0
        self._lock = threading.Lock()

    async def submit(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        """Run ``fn(*args)`` on the backend's thread; returns (result, compute seconds)."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise SchedulerBusy(
                    f"{self._pending} inference jobs already wait for backend "
                    f"{self.backend.name!r}; try again later or add capacity"
                )
            self._pending += 1

        def timed() -> tuple[Any, float]:
            with self.slots.hold(self.backend.cores_per_call):
                started = time.perf_counter()
                result = fn(*args)
                return result, time.perf_counter() - started

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        finally:
            with self._lock:
                self._pending -= 1

    @property
    def pending(self) -> int:
        """Jobs queued or running now."""
        return self._pending


_schedulers: dict[int, Scheduler] = {}
_schedulers_lock = threading.Lock()


def scheduler_for(backend: Backend) -> Scheduler:
    """The one scheduler shared by every session using ``backend``."""
    with _schedulers_lock:
        scheduler = _schedulers.get(id(backend))
        if scheduler is None or scheduler.backend is not backend:
            scheduler = _schedulers[id(backend)] = Scheduler(backend)
        return scheduler
