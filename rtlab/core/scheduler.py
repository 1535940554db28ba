"""One inference queue per shared backend, so sessions take turns on the model.

Each session has at most one job in flight (its policy waits for the result before it
asks again), so the queue is bounded by the number of sessions; ``max_pending`` turns
away a burst beyond that with a clear error instead of letting latency grow.

Every job also holds, while it runs, as many of the process's CPU slots (one per core,
see :data:`cpu_slots`) as its backend says one call keeps busy
(:attr:`~rtlab.backends.Backend.cores_per_call`), and one of its backend's model replicas
(:attr:`~rtlab.backends.Backend.max_concurrency`). Backends that share the machine, such as
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

A caller may bound how long it waits for one pass (:data:`pass_deadline`, set in its
context: the server sets it per session). A pass past its deadline is abandoned: the
caller gets :class:`BackendTimeout` at once, while a backend call that has started and
hangs keeps its thread, its cores and its replica until it returns (a thread cannot be
stopped from outside), counted in :attr:`Scheduler.abandoned` meanwhile.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import functools
import itertools
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from ..backends import Backend
from .batching import Batcher
from .memory import release_freed_memory
from ..errors import InvalidOption, RtlabError
from ..options import is_number


class SchedulerBusy(RtlabError):
    """Too many inference jobs are waiting for this backend."""

    code = "server_busy"


class BackendTimeout(RtlabError):
    """A pass took longer than its :data:`pass_deadline` (waiting for its turn included)
    and was abandoned."""

    code = "backend_timeout"


#: Seconds a caller waits for one pass, from :meth:`Scheduler.submit` to its result,
#: waiting for a turn included; None (the default): no limit. A context variable, so that
#: each server session sets its own without touching the processor or the shared
#: scheduler: tasks a session creates inherit it.
pass_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("rtlab_pass_deadline", default=None)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class Gate:
    """At most ``capacity`` jobs at once: a backend instance's model replicas."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self.in_use = 0  # changed only under the CpuSlots lock

    @property
    def free(self) -> int:
        return self.capacity - self.in_use


class JobCancelled(Exception):
    """The job never ran: its caller left while it waited, or declined it when admitted."""


@dataclass(eq=False)
class Ticket:
    """Slots and a replica handed out by :meth:`CpuSlots.acquire`."""

    count: int
    gate: Gate | None
    released: bool = False


@dataclass(eq=False)
class _Waiter:
    key: tuple[float, int]  # (priority, arrival)
    count: int
    gate: Gate | None
    cancelled: threading.Event | None

    def eligible(self) -> bool:
        return self.gate is None or self.gate.free > 0

    def blocks(self, other: _Waiter) -> bool:
        """Whether this waiter, ahead in the queue, must be served before ``other``: it
        could run now (its replica is free) and they want the same cores or replica."""
        if not self.eligible():
            return False
        same_gate = self.gate is not None and self.gate is other.gate
        return same_gate or (self.count > 0 and other.count > 0)


class CpuSlots:
    """The CPU cores in use by inference jobs (one slot per core), handed out in order.

    ``hold(n, priority, gate)`` waits until ``n`` slots are free, ``gate`` (the backend
    instance's replicas) has room, and no waiter ahead of it that could run wants the same
    cores or replica. Waiters are ordered by ``priority`` (lowest first; ``None`` counts
    as 0), then by arrival. A job that needs two cores is not starved by a stream of
    one-core jobs behind it; a job whose replicas are all busy does not hold up the jobs
    of another model behind it, and holds no core while it waits for a replica.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"CPU slots must be >= 1, got {total}")
        self.total = total
        self._free = total
        self._queue: list[_Waiter] = []  # sorted by key
        self._arrivals = itertools.count()
        self._condition = threading.Condition()

    @property
    def in_use(self) -> int:
        return self.total - self._free

    def wake(self) -> None:
        """Wake the waiters (a job was cancelled: its thread leaves the queue)."""
        with self._condition:
            self._condition.notify_all()

    def _may_go(self, waiter: _Waiter) -> bool:
        if waiter.cancelled is not None and waiter.cancelled.is_set():
            return True
        if not waiter.eligible() or self._free < waiter.count:
            return False
        for ahead in self._queue:
            if ahead is waiter:
                return True
            if ahead.blocks(waiter):
                return False
        return True

    def acquire(
        self,
        count: int,
        priority: float | None = None,
        gate: Gate | None = None,
        cancelled: threading.Event | None = None,
    ) -> Ticket:
        """Wait for ``count`` slots (and a place in ``gate``) and take them; blocking.
        Raises :class:`JobCancelled` when ``cancelled`` is set before they were handed
        out. Give them back with :meth:`release`."""
        count = min(max(0, int(count)), self.total)
        ticket = Ticket(count, gate)
        if count == 0 and gate is None:
            return ticket
        key = (0.0 if priority is None else float(priority), next(self._arrivals))
        waiter = _Waiter(key, count, gate, cancelled)
        with self._condition:
            bisect.insort(self._queue, waiter, key=lambda w: w.key)
            try:
                self._condition.wait_for(lambda: self._may_go(waiter))
            finally:
                self._queue.remove(waiter)
                self._condition.notify_all()
            if cancelled is not None and cancelled.is_set():
                raise JobCancelled()
            self._free -= count
            if gate is not None:
                gate.in_use += 1
        return ticket

    @contextlib.contextmanager
    def step_aside(self, ticket: Ticket, priority: float | None = None) -> Iterator[None]:
        """Lend ``ticket``'s slots and replica to other jobs for the ``with`` block (its job
        waits for something that is not compute), then take them back, in turn by
        ``priority`` like any waiter; the ticket stays the job's."""
        if ticket.released or (ticket.count == 0 and ticket.gate is None):
            yield
            return
        self._give_back(ticket)
        try:
            yield
        finally:
            back = self.acquire(ticket.count, priority, ticket.gate)
            back.released = True  # its slots are the ticket's again

    def release(self, ticket: Ticket) -> None:
        """Give back what :meth:`acquire` handed out (once per ticket)."""
        if ticket.released:
            return
        ticket.released = True
        if ticket.count == 0 and ticket.gate is None:
            return
        self._give_back(ticket)

    def _give_back(self, ticket: Ticket) -> None:
        with self._condition:
            self._free += ticket.count
            if ticket.gate is not None:
                ticket.gate.in_use -= 1
            self._condition.notify_all()

    @contextlib.contextmanager
    def hold(
        self,
        count: int,
        priority: float | None = None,
        gate: Gate | None = None,
        cancelled: threading.Event | None = None,
    ) -> Iterator[None]:
        """:meth:`acquire` for the ``with`` block, then :meth:`release`."""
        ticket = self.acquire(count, priority, gate, cancelled)
        try:
            yield
        finally:
            self.release(ticket)


class OneBlasThread(threading.local):
    """While anything holds it, numpy's BLAS (OpenBLAS, MKL, ...) runs one thread.

    A pass that holds one CPU slot must not use more. numpy's BLAS starts a thread per
    core for each matrix product, such as the mel filterbank of faster-whisper's
    features, and those threads spin on after it, taking cores from the passes that hold
    them: every pass then measures more compute among others than alone, and the
    simulated clock turns that into latency (see docs/benchmarks/ for what it cost).

    Each :class:`~rtlab.core.processor.AudioProcessor` holds it from start to cleanup. The
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
    """Runs blocking backend work on threads and measures its compute time.

    A job waits until :data:`cpu_slots` hands it its cores and a free model replica
    (``backend.max_concurrency``, the scheduler's :class:`Gate`), in order of priority
    across every backend in the process. It waits on a thread of its own (so no job waits
    for a thread behind another that waits for a core) and then runs on a thread of the
    scheduler's pool: one per replica, which the gate guarantees to be free, and more only
    while jobs step aside (:func:`stepping_aside`), so that the model is called from that
    many threads at most at once (each thread that calls CTranslate2 keeps buffers of its
    own)."""

    def __init__(self, backend: Backend, max_pending: int = 256, slots: CpuSlots | None = None) -> None:
        self.backend = backend
        self.max_pending = max_pending
        self.slots = cpu_slots if slots is None else slots
        self.batcher: Batcher | None = None
        self.cores_per_job = backend.cores_per_call
        self.gate = Gate(backend.max_concurrency)
        if backend.max_batch > 1:
            # A pass waits in the batcher for its batch, whose model call holds the cores:
            # enough passes run at once to fill a batch on every replica.
            self.batcher = Batcher(backend, self.slots)
            self.cores_per_job = 0
            self.gate = Gate(backend.max_concurrency * backend.max_batch)
        self._running = JobThreads(f"rtlab-{backend.name}", keep=self.gate.capacity)
        self._pending = 0
        #: Passes abandoned after their deadline whose backend call has not returned yet.
        self.abandoned = 0
        self._lock = threading.Lock()

    async def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        priority: float | None = None,
        before: Callable[[], bool | None] | None = None,
        hold_cores: bool = True,
    ) -> tuple[Any, float]:
        """Run ``fn(*args)`` on a backend thread; returns (result, compute seconds).

        Jobs wait for their cores and a replica in order of ``priority`` (lowest first,
        ``None`` counts as 0), then of arrival. Once admitted, ``before()`` runs on the
        caller's event loop, just before the job starts: a session takes the audio that
        arrived while its pass waited there. ``before`` returning False declines the job,
        and a job whose caller is cancelled while it waits never runs; both raise
        :class:`JobCancelled` to the caller. A job that started runs to its end and keeps
        its cores and replica until then, even if its caller stops waiting. With
        ``hold_cores`` False the job takes a replica and no CPU slot: its compute is not
        measured against the others' (a modeled or unaware clock).

        With a :data:`pass_deadline` in the caller's context, a job that has not returned
        that many seconds after this call is abandoned: :class:`BackendTimeout` is raised
        at once (see the module docstring for what happens to its thread)."""
        deadline = pass_deadline.get()
        if deadline is not None and not (is_number(deadline) and deadline > 0):  # (NaN is not > 0)
            # 0 or below would abandon every pass with "no turn within its 0 s deadline".
            raise InvalidOption(
                f"pass_deadline must be a number of seconds above 0 (or None: no limit), not {deadline!r}"
            )
        expires = None if deadline is None else time.monotonic() + deadline
        with self._lock:
            if self._pending >= self.max_pending:
                raise SchedulerBusy(
                    f"{self._pending} inference jobs already wait for backend "
                    f"{self.backend.name!r}; try again later or add capacity"
                )
            self._pending += 1
        cancelled = threading.Event()
        admission = _in_thread(
            f"rtlab-{self.backend.name}-wait",
            self.slots.acquire, self.cores_per_job if hold_cores else 0, priority, self.gate, cancelled,
        )  # fmt: skip
        try:
            ticket = await _until(asyncio.wrap_future(admission), expires)
        except (asyncio.CancelledError, asyncio.TimeoutError) as stopped:
            cancelled.set()
            self.slots.wake()
            admission.add_done_callback(self._abandon)
            if isinstance(stopped, asyncio.TimeoutError):
                raise BackendTimeout(
                    f"backend {self.backend.name!r} gave this pass no turn within its "
                    f"{deadline:g} s deadline; the pass was abandoned"
                ) from None
            raise
        except BaseException:
            self._job_done(None)
            raise
        try:
            if before is not None and before() is False:
                raise JobCancelled()
            job = self._running.submit(self._run, ticket, priority, fn, args)
        except BaseException:
            self._job_done(ticket)
            raise
        job.add_done_callback(lambda _: self._job_done(ticket))
        result = asyncio.wrap_future(job)
        if expires is None:
            return await result
        try:
            done, _ = await asyncio.wait([result], timeout=max(0.0, expires - time.monotonic()))
        except asyncio.CancelledError:
            result.cancel()  # as awaiting it would have
            raise
        if done:
            return result.result()
        self._abandon_running(job, result)
        raise BackendTimeout(
            f"backend {self.backend.name!r} did not finish a pass within its {deadline:g} s "
            "deadline; the pass was abandoned (its thread is counted as stuck until it returns)"
        )

    def _run(self, ticket: Ticket, priority: float | None, fn: Callable[..., Any], args: tuple) -> tuple[Any, float]:
        _job.aside = functools.partial(self.slots.step_aside, ticket, priority)
        try:
            return _timed(fn, args)
        finally:
            _job.aside = None
            # Outside the measured compute, on the pass's cores.
            release_freed_memory()

    def _abandon_running(self, job: Future, result: asyncio.Future) -> None:
        """A started job outlived its deadline: count it until its thread returns."""
        # Its outcome is nobody's any more: retrieve it, so that asyncio does not report
        # an exception that was never retrieved.
        result.add_done_callback(lambda f: f.cancelled() or f.exception())
        with self._lock:
            self.abandoned += 1

        def returned(_: Future) -> None:
            with self._lock:
                self.abandoned -= 1

        job.add_done_callback(returned)

    def _abandon(self, admission: Future) -> None:
        """The caller left while its job waited: give back what it was handed, if anything."""
        ticket = None if admission.cancelled() or admission.exception() else admission.result()
        self._job_done(ticket)

    def _job_done(self, ticket: Ticket | None) -> None:
        # The count drops when the job is over, not when its caller stops waiting.
        if ticket is not None:
            self.slots.release(ticket)
        with self._lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        """Jobs queued or running now."""
        return self._pending


async def _until(future: asyncio.Future, expires: float | None) -> Any:
    """``await future``, or ``asyncio.TimeoutError`` at ``expires`` (monotonic; None: never)."""
    if expires is None:
        return await future
    return await asyncio.wait_for(future, max(0.0, expires - time.monotonic()))


class JobThreads:
    """The threads that run a scheduler's admitted jobs.

    A job runs on an idle thread, or on a new one when none is idle. A thread is idle
    again before its job's outcome is handed over, so the job admitted in its place (the
    outcome frees its replica) finds it: as many threads as replicas, and more only for
    jobs admitted while others step aside (:func:`stepping_aside`), which keep theirs.
    Idle threads beyond ``keep`` end after ``linger`` seconds."""

    def __init__(self, name: str, keep: int, linger: float = 30.0) -> None:
        self.name = name
        self.keep = keep
        self.linger = linger
        self._idle: list[queue.SimpleQueue] = []
        self._count = 0
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Threads alive, idle or busy."""
        return self._count

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """``fn(*args)`` on an idle thread or a new one; its outcome as a Future."""
        future: Future = Future()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._count += 1
                name = f"{self.name}_{next(self._numbers)}"
        if inbox is None:
            inbox = queue.SimpleQueue()
            # A daemon: an idle thread must not keep the process from exiting.
            threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True).start()
        inbox.put((future, fn, args))
        return future

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            try:
                future, fn, args = inbox.get(timeout=None if self._count <= self.keep else self.linger)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle and self._count > self.keep:
                        self._idle.remove(inbox)
                        self._count -= 1
                        return
                continue
            if not future.set_running_or_notify_cancel():
                self._rest(inbox)
                continue
            try:
                result = fn(*args)
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits
                self._rest(inbox)
                future.set_exception(error)
            else:
                self._rest(inbox)
                future.set_result(result)
            del future, fn, args

    def _rest(self, inbox: queue.SimpleQueue) -> None:
        with self._lock:
            self._idle.append(inbox)


def _in_thread(name: str, fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` on a thread of its own, which ends with it (a pool would keep idle
    threads after a burst of waiting sessions); its outcome as a Future."""
    future: Future = Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits
            future.set_exception(error)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


_job = threading.local()  # the running job's step_aside, on its thread


def stepping_aside() -> contextlib.AbstractContextManager[None]:
    """In a scheduler job, for the ``with`` block: lend the job's cores and replica to
    other jobs while it waits for something that is not compute (a call another stream is
    running, see :mod:`rtlab.core.memo`), and take them back, in turn, after. Elsewhere,
    nothing."""
    aside = getattr(_job, "aside", None)
    return aside() if aside is not None else contextlib.nullcontext()


def _timed(fn: Callable[..., Any], args: tuple) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


_schedulers: dict[int, Scheduler] = {}
_schedulers_lock = threading.Lock()


def abandoned_passes() -> int:
    """Passes abandoned after their deadline whose backend call has not returned, in every
    scheduler of the process."""
    with _schedulers_lock:
        return sum(scheduler.abandoned for scheduler in _schedulers.values())


def scheduler_for(backend: Backend) -> Scheduler:
    """The one scheduler shared by every session using ``backend``, made on first use.

    Call it once the backend is loaded: a scheduler takes the backend's replicas, cores per
    call and batch size as they are when it is made, and a backend learns them as it loads
    (rtlab-faster-whisper's replicas). Code that only reports on a scheduler uses
    :func:`existing_scheduler`, which makes none."""
    with _schedulers_lock:
        scheduler = _made_for(backend)
        if scheduler is None:
            scheduler = _schedulers[id(backend)] = Scheduler(backend)
        return scheduler


def existing_scheduler(backend: Backend) -> Scheduler | None:
    """``backend``'s scheduler if a session or an offline pass has made it, else None.

    For reports (``/healthz``, ``/metrics``), which may run while the model loads: a
    scheduler made then would gate the backend to the one replica an unloaded backend
    declares, and every session after it would run its passes one at a time."""
    with _schedulers_lock:
        return _made_for(backend)


def _made_for(backend: Backend) -> Scheduler | None:
    """The scheduler made for ``backend`` (not for an earlier object at its address); the
    caller holds ``_schedulers_lock``."""
    scheduler = _schedulers.get(id(backend))
    return scheduler if scheduler is not None and scheduler.backend is backend else None
