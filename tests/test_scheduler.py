"""The scheduler's CPU slots: backends sharing the machine never run more passes than it
has cores, waiting for a slot is not compute, waiters are served in order of priority and
then of arrival, and numpy's BLAS keeps to one thread while inference runs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rtlab.backends import Backend
from rtlab.core.scheduler import CpuSlots, JobThreads, OneBlasThread, Scheduler, stepping_aside
from rtlab.testing import blas_thread_counts

pytestmark = pytest.mark.timeout(30)


class Busy(Backend):
    name = "busy"

    def __init__(self, cores: int = 1, workers: int = 4) -> None:
        self.cores_per_call = cores
        self.max_concurrency = workers


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_slots_never_hand_out_more_cores_than_there_are():
    slots = CpuSlots(2)
    running, peak, lock = [0], [0], threading.Lock()

    def job(cores: int) -> None:
        with slots.hold(cores):
            with lock:
                running[0] += cores
                peak[0] = max(peak[0], running[0])
            time.sleep(0.01)
            with lock:
                running[0] -= cores

    threads = [threading.Thread(target=job, args=(1 + i % 2,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 2 and running[0] == 0 and slots.in_use == 0


def test_waiters_are_served_first_come_first_served():
    slots = CpuSlots(2)
    order: list[str] = []
    blocker = threading.Event()

    def hold_one() -> None:
        with slots.hold(1):
            blocker.wait(10)

    def job(name: str, cores: int) -> None:
        with slots.hold(cores):
            order.append(name)

    first = threading.Thread(target=hold_one)
    first.start()
    wait_until(lambda: slots.in_use == 1)
    # "wide" needs both cores and asks first; "narrow" would fit in the free core now, but
    # must not overtake it (a stream of one-core jobs would starve a two-core one).
    wide = threading.Thread(target=job, args=("wide", 2))
    wide.start()
    wait_until(lambda: len(slots._queue) == 1)
    narrow = threading.Thread(target=job, args=("narrow", 1))
    narrow.start()
    wait_until(lambda: len(slots._queue) == 2)
    assert order == []
    blocker.set()
    for thread in (first, wide, narrow):
        thread.join()
    assert order == ["wide", "narrow"]


def test_a_lower_priority_is_served_first_and_equal_ones_in_order_of_arrival():
    slots = CpuSlots(1)
    order: list[str] = []
    blocker = threading.Event()

    def hold_one() -> None:
        with slots.hold(1):
            blocker.wait(10)

    def job(name: str, priority: float | None) -> None:
        with slots.hold(1, priority):
            order.append(name)

    first = threading.Thread(target=hold_one)
    first.start()
    wait_until(lambda: slots.in_use == 1)
    threads = []
    for queued, (name, priority) in enumerate([("ahead", 5.0), ("ahead-later", 5.0), ("behind", 1.0), ("plain", None)], 1):
        threads.append(threading.Thread(target=job, args=(name, priority)))
        threads[-1].start()
        wait_until(lambda n=queued: len(slots._queue) == n)
    blocker.set()
    for thread in [first, *threads]:
        thread.join()
    # None counts as 0: a server's sessions, which give none, are first come, first served.
    assert order == ["plain", "behind", "ahead", "ahead-later"]


async def test_queued_jobs_of_one_backend_run_lowest_priority_first():
    scheduler = Scheduler(Busy(workers=1), slots=CpuSlots(2))
    held, release = threading.Event(), threading.Event()
    order: list[str] = []
    loop = asyncio.get_running_loop()
    blocking = asyncio.ensure_future(scheduler.submit(lambda: held.set() or release.wait(10)))
    await loop.run_in_executor(None, held.wait, 10)
    jobs = [asyncio.ensure_future(scheduler.submit(order.append, name, priority=priority))
            for name, priority in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a-later", 1.0)]]  # fmt: skip
    cancelled = asyncio.ensure_future(scheduler.submit(order.append, "cancelled", priority=0.0))
    await asyncio.sleep(0.1)  # every job is queued behind the one running
    assert scheduler.pending == 6 and order == []
    cancelled.cancel()
    await asyncio.sleep(0.05)  # the cancellation reaches the queued job on the next turn
    release.set()
    await asyncio.gather(blocking, *jobs)
    assert order == ["a", "a-later", "b", "c"]  # the cancelled job never ran
    assert scheduler.pending == 0


async def test_priority_holds_across_replicas_and_models():
    """A job never waits behind another for a thread: with both replicas of a model taken
    by jobs that wait for the one core, a later job that is further behind still goes
    first; and a model whose replica is busy does not hold up another model's job."""
    slots = CpuSlots(1)
    other = Scheduler(Busy(workers=1), slots=slots)
    model = Scheduler(Busy(workers=2), slots=slots)
    held, release = threading.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    blocking = asyncio.ensure_future(other.submit(lambda: held.set() or release.wait(10)))
    await loop.run_in_executor(None, held.wait, 10)
    order: list[str] = []
    jobs = []
    for queued, (name, priority) in enumerate([("a", 5.0), ("b", 5.0), ("behind", 1.0)], 1):
        jobs.append(asyncio.ensure_future(model.submit(order.append, name, priority=priority)))
        await loop.run_in_executor(None, wait_until, lambda n=queued: len(slots._queue) == n)
    release.set()
    await asyncio.gather(blocking, *jobs)
    assert order == ["behind", "a", "b"]

    # One replica, busy: the other model's job behind it in the queue runs meanwhile.
    slots = CpuSlots(2)
    single = Scheduler(Busy(workers=1), slots=slots)
    second = Scheduler(Busy(workers=1), slots=slots)
    held.clear(), release.clear()
    running = asyncio.ensure_future(single.submit(lambda: held.set() or release.wait(10)))
    await loop.run_in_executor(None, held.wait, 10)
    queued = asyncio.ensure_future(single.submit(lambda: "after", priority=0.0))
    await loop.run_in_executor(None, wait_until, lambda: len(slots._queue) == 1)
    result, _ = await asyncio.wait_for(second.submit(lambda: "meanwhile", priority=9.0), 5)
    assert result == "meanwhile"
    assert not queued.done()
    release.set()
    await asyncio.gather(running, queued)


async def test_a_backend_only_ever_runs_on_as_many_threads_as_it_has_replicas():
    scheduler = Scheduler(Busy(workers=2), slots=CpuSlots(4))
    threads: set[str] = set()

    def job() -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)

    await asyncio.gather(*(scheduler.submit(job, priority=float(i % 3)) for i in range(30)))
    assert 1 <= len(threads) <= 2
    assert scheduler.pending == 0


async def test_no_thread_is_left_waiting_after_a_burst_of_passes():
    """Each queued pass waits for its turn on a thread of its own, which ends with it: a
    burst of sessions leaves no idle threads behind (the server's thread count returns)."""
    scheduler = Scheduler(Busy(workers=1), slots=CpuSlots(1))

    def waiting() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("rtlab-busy-wait")]

    await asyncio.gather(*(scheduler.submit(time.sleep, 0.005) for _ in range(40)))
    await asyncio.get_running_loop().run_in_executor(None, wait_until, lambda: not waiting())
    assert waiting() == [] and scheduler.pending == 0


async def test_a_running_job_counts_as_pending_until_it_ends_even_when_its_caller_left():
    scheduler = Scheduler(Busy(workers=1), slots=CpuSlots(1))
    started, release = threading.Event(), threading.Event()
    job = asyncio.ensure_future(scheduler.submit(lambda: started.set() or release.wait(10)))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    job.cancel()  # e.g. a client that disconnected mid-pass
    with pytest.raises(asyncio.CancelledError):
        await job
    assert scheduler.pending == 1  # its thread is still busy: max_pending must count it
    release.set()
    await asyncio.get_running_loop().run_in_executor(None, wait_until, lambda: scheduler.pending == 0)


async def test_an_error_in_a_job_reaches_the_caller():
    scheduler = Scheduler(Busy(workers=1), slots=CpuSlots(1))
    with pytest.raises(ZeroDivisionError):
        await scheduler.submit(lambda: 1 / 0)
    result, seconds = await scheduler.submit(lambda: "next")
    assert result == "next" and seconds >= 0


def test_numpy_blas_runs_one_thread_while_held_and_is_restored_by_the_last_holder():
    before = blas_thread_counts()
    if not before or max(before) < 2:
        pytest.skip(f"numpy's BLAS runs {before} threads here (one core, or OPENBLAS_NUM_THREADS): nothing to limit")
    hold = OneBlasThread()
    hold.release()  # letting go of nothing is harmless
    with hold():
        assert blas_thread_counts() == [1] * len(before)
        hold.acquire()  # a second processor
        assert blas_thread_counts() == [1] * len(before)
        hold.release()
        assert blas_thread_counts() == [1] * len(before)  # the first one still runs
    assert blas_thread_counts() == before


def test_zero_cores_takes_no_slot_and_more_than_all_takes_all():
    slots = CpuSlots(2)
    with slots.hold(0):
        assert slots.in_use == 0
    with slots.hold(5):
        assert slots.in_use == 2
    with pytest.raises(ValueError):
        CpuSlots(0)


async def test_waiting_for_a_slot_is_not_counted_as_compute():
    slots = CpuSlots(1)
    held, release = threading.Event(), threading.Event()
    other = Scheduler(Busy(), slots=slots)  # another backend, e.g. a second model
    scheduler = Scheduler(Busy(), slots=slots)

    def hold() -> None:
        held.set()
        release.wait(10)

    blocking = asyncio.ensure_future(other.submit(hold))
    await asyncio.get_running_loop().run_in_executor(None, held.wait, 10)
    waiting = asyncio.ensure_future(scheduler.submit(lambda: "done"))
    await asyncio.get_running_loop().run_in_executor(None, wait_until, lambda: len(slots._queue) == 1)
    await asyncio.sleep(0.3)  # the pass waits for the slot all this time
    assert not waiting.done()
    release.set()
    (_, held_for), (result, seconds) = await asyncio.gather(blocking, waiting)
    assert result == "done"
    assert held_for >= 0.3
    assert seconds < held_for  # its own compute only, not the 0.3 s it queued for the slot


def test_cpu_slots_come_from_the_environment(monkeypatch):
    from rtlab.core import scheduler

    monkeypatch.setenv("RTLAB_CPU_SLOTS", "3")
    assert scheduler._slots_from_environment() == 3
    monkeypatch.setenv("RTLAB_CPU_SLOTS", "many")
    with pytest.raises(ValueError, match="RTLAB_CPU_SLOTS"):
        scheduler._slots_from_environment()
    monkeypatch.delenv("RTLAB_CPU_SLOTS")
    assert scheduler._slots_from_environment() == scheduler.available_cores()


async def test_a_job_that_steps_aside_lends_its_replica_and_takes_it_back():
    """A job waiting for something that is not compute (a call another stream runs, see
    rtlab.core.memo) lets another job use its only replica, then takes it back in turn:
    the model is never called by more jobs at once than it has replicas."""
    scheduler = Scheduler(Busy(workers=1), slots=CpuSlots(2))
    loop = asyncio.get_running_loop()
    aside, go = threading.Event(), threading.Event()
    computing, most = [0], [0]
    lock = threading.Lock()

    def compute(label: str) -> str:
        with lock:
            computing[0] += 1
            most[0] = max(most[0], computing[0])
        time.sleep(0.02)
        with lock:
            computing[0] -= 1
        return label

    def waiting_job() -> str:
        with stepping_aside():
            aside.set()
            assert go.wait(10)
        return compute("waited")

    first = asyncio.ensure_future(scheduler.submit(waiting_job))
    await loop.run_in_executor(None, aside.wait, 10)
    # With the replica held, this job could not start until the first one ended.
    other, _ = await asyncio.wait_for(scheduler.submit(compute, "meanwhile"), 5)
    assert other == "meanwhile" and not first.done()
    go.set()
    assert (await asyncio.wait_for(first, 5))[0] == "waited"
    assert most[0] == 1 and scheduler.gate.in_use == 0 and scheduler.pending == 0
    assert scheduler._running.count == 2, "the job that stepped aside kept its thread; the other got one"


def test_stepping_aside_outside_a_job_does_nothing():
    with stepping_aside():
        pass


def test_job_threads_are_reused_and_extra_idle_ones_end():
    threads = JobThreads("rtlab-test-jobs", keep=1, linger=0.05)
    release = threading.Event()
    held = [threads.submit(release.wait, 10) for _ in range(3)]
    wait_until(lambda: threads.count == 3)
    release.set()
    assert all(f.result(5) for f in held)
    wait_until(lambda: threads.count == 1)
    names = {threads.submit(lambda: threading.current_thread().name).result(5) for _ in range(5)}
    assert len(names) == 1 and threads.count == 1
    failing = threads.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)


@pytest.mark.parametrize("deadline", [0, -1.0, float("nan"), "30", True])
async def test_a_pass_deadline_that_is_no_number_of_seconds_is_refused_naming_it(deadline):
    # Before: 0, below 0 or NaN abandoned every pass ("gave this pass no turn within its
    # nan s deadline"), and "30" failed with a TypeError from inside the scheduler.
    from rtlab.core.scheduler import pass_deadline
    from rtlab.errors import InvalidOption

    scheduler = Scheduler(Busy(workers=1), slots=CpuSlots(1))
    token = pass_deadline.set(deadline)
    try:
        with pytest.raises(InvalidOption, match=rf"^pass_deadline must be a number of seconds above 0 \(or None: no limit\), not {deadline!r}$"):
            await scheduler.submit(lambda: "ran")
        assert scheduler.pending == 0  # nothing was queued
        pass_deadline.set(float("inf"))  # no limit, as None
        assert (await scheduler.submit(lambda: "ran"))[0] == "ran"
    finally:
        pass_deadline.reset(token)
