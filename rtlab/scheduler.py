"""One inference queue per shared backend, so sessions take turns on the model.

Each session has at most one job in flight (its policy waits for the result before it
asks again), so the queue is bounded by the number of sessions; ``max_pending`` turns
away a burst beyond that with a clear error instead of letting latency grow.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .backends import Backend
from .errors import RtlabError


class SchedulerBusy(RtlabError):
    """Too many inference jobs are waiting for this backend."""

    code = "server_busy"


class Scheduler:
    """Runs blocking backend work on dedicated threads and measures compute time."""

    def __init__(self, backend: Backend, max_pending: int = 256) -> None:
        self.backend = backend
        self.max_pending = max_pending
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
