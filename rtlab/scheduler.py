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
While sessions run, numpy's BLAS uses one thread (see :data:`blas_threads`).

Waiting jobs are served in order of *priority* (lowest first), then of arrival. Sessions
on a server all ask with the same priority: first come, first served. A simulated replay
gives each pass the audio time it has reached, so that the configuration furthest behind
goes first: every configuration then moves through the audio at about the same pace and
the cores stay busy to the end, instead of the one with the most passes (the smallest
``min_chunk``) finishing alone on one core while the other idles. On the simulated
clock the order changes nothing but wall time: a wait is not compute.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
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
    """A count of the CPU cores in use by inference jobs, handed out in order.

    ``hold(n, priority)`` waits until ``n`` slots are free *and* every waiter before it
    has been served: waiters are ordered by ``priority`` (lowest first; ``None`` counts as
    0), then by arrival. A job that needs two cores is therefore not starved by a stream
    of one-core jobs behind it.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"CPU slots must be >= 1, got {total}")
        self.total = total
        self._free = total
        self._queue: list[tuple[float, int]] = []  # (priority, arrival), sorted
        self._arrivals = itertools.count()
        self._condition = threading.Condition()

    @property
    def in_use(self) -> int:
        return self.total - self._free

    @contextlib.contextmanager
    def hold(self, count: int, priority: float | None = None) -> Iterator[None]:
        count = min(max(0, int(count)), self.total)
        if count == 0:
            yield
            return
        ticket = (0.0 if priority is None else float(priority), next(self._arrivals))
        with self._condition:
            bisect.insort(self._queue, ticket)
            try:
                self._condition.wait_for(lambda: self._queue[0] == ticket and self._free >= count)
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


class OneBlasThread(threading.local):
    """While anything holds it, numpy's BLAS (OpenBLAS, MKL, ...) runs one thread.

    A pass that holds one CPU slot must not use more. numpy's BLAS starts a thread per
    core for each matrix product, such as the mel filterbank of faster-whisper's
    features, and those threads spin on after it: on 2 cores, five configurations
    replayed together measured 35% more compute in their CTranslate2 calls (encoder,
    decoder, alignment) than one at a time, and with one BLAS thread the same as alone
    (the features themselves took 0.9 s instead of 1.6 s).

    Each :class:`~rtlab.processor.AudioProcessor` holds it from start to cleanup. The
    setting is process-wide, so numpy elsewhere in the process runs one thread meanwhile;
    the original is restored when the last holder lets go. The count is kept per thread
    (threadpoolctl lets only the thread that set OpenBLAS's limit change it back), and
    processors start and stop on their event loop's thread.
    """

    holders = 0
    limiter: Any = None

    def acquire(self) -> None:
        self.holders += 1
        if self.holders == 1:
            self.limiter = _limit_blas_threads()

    def release(self) -> None:
        if self.holders <= 0:
            return
        self.holders -= 1
        if self.holders == 0 and self.limiter is not None:
            limiter, self.limiter = self.limiter, None
            limiter.__exit__(None, None, None)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def _limit_blas_threads() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a declared dependency; without it BLAS keeps its threads
        return None
    return threadpool_limits(limits=1, user_api="blas").__enter__()


#: The process's :class:`OneBlasThread`; ``with blas_threads(): ...`` for work of your own.
blas_threads = OneBlasThread()


class PriorityWorkers:
    """``workers`` threads that run submitted calls, lowest priority first, then in order
    of submission (a ``ThreadPoolExecutor`` whose queue is ordered). Threads start on
    first use and live as long as the process, like the scheduler that owns them."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = max(1, workers)
        self.name = name
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any], priority: float | None = None) -> Future:
        """Queue ``fn``; its future can be cancelled until a worker takes it."""
        future: Future = Future()
        self._queue.put((0.0 if priority is None else float(priority), next(self._arrivals), future, fn))
        with self._lock:
            if len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            _, _, future, fn = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it queued
            try:
                result = fn()
            except BaseException as error:  # handed to the caller, as an executor does
                future.set_exception(error)
            else:
                future.set_result(result)


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
        self._workers = PriorityWorkers(backend.max_concurrency, f"rtlab-{backend.name}")
        self._pending = 0
        self._lock = threading.Lock()

    async def submit(
        self, fn: Callable[..., Any], *args: Any, priority: float | None = None
    ) -> tuple[Any, float]:
        """Run ``fn(*args)`` on a backend thread; returns (result, compute seconds).

        Jobs wait for a thread and then for CPU slots in order of ``priority`` (lowest
        first, ``None`` counts as 0), then of arrival."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise SchedulerBusy(
                    f"{self._pending} inference jobs already wait for backend "
                    f"{self.backend.name!r}; try again later or add capacity"
                )
            self._pending += 1

        def timed() -> tuple[Any, float]:
            with self.slots.hold(self.backend.cores_per_call, priority):
                started = time.perf_counter()
                result = fn(*args)
                return result, time.perf_counter() - started

        def done(_: Future) -> None:
            with self._lock:
                self._pending -= 1

        # The count drops when the job is over, not when its caller stops waiting: a job
        # whose caller was cancelled while it ran still holds its thread until it ends.
        future = self._workers.submit(timed, priority)
        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

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
