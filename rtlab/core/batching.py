"""Passes of concurrent sessions on one backend, grouped into one model call.

A backend whose :attr:`~rtlab.backends.Backend.max_batch` is above 1 gets a
:class:`Batcher`. Its sessions' policies call ``transcribe`` as usual, on the scheduler's
threads, through their :class:`~rtlab.core.instances.SessionBackend`; the call joins the
batcher's queue and waits.
The first waiting pass leads: it gathers passes until ``max_batch`` of them wait or the
oldest has waited ``batch_wait_ms``, runs one :meth:`~rtlab.backends.Backend.transcribe_batch`
for them on its own thread (holding the backend's CPU slots, as a single pass would), hands
every pass its words and, while its own pass is not done, leads again. At most
``max_concurrency`` batches run at once, one per model replica.

Which passes a batch takes: the lowest *keys* first. On the wall clock a pass's key is the
time it joined minus its session's lag, so a session that fell behind real time counts as
having waited that much longer and goes first, and no session starves: every key is
bounded by its arrival, and later arrivals get later keys. On the simulated clock the key
is the audio time the pass reaches, as in the scheduler's own order.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..backends import Backend, Request, Word

if TYPE_CHECKING:
    from .scheduler import CpuSlots


@dataclass(eq=False)
class _Pass:
    request: Request
    key: tuple[float, int]
    joined: float
    words: list[Word] | None = None
    error: BaseException | None = None
    taken: bool = False
    done: bool = False


@dataclass
class BatchStats:
    """What the batcher did: batch sizes in order (for tests and benchmarks)."""

    sizes: list[int] = field(default_factory=list)

    @property
    def passes(self) -> int:
        return sum(self.sizes)


class Batcher:
    """Groups the ``transcribe`` calls of concurrent passes on ``backend`` into batches."""

    def __init__(self, backend: Backend, slots: CpuSlots) -> None:
        self.backend = backend
        self.slots = slots
        self.max_batch = max(1, int(backend.max_batch))
        self.wait_seconds = max(0.0, float(backend.batch_wait_ms)) / 1000
        self.replicas = max(1, int(backend.max_concurrency))
        self.stats = BatchStats()
        self._waiting: list[_Pass] = []
        self._arrivals = itertools.count()
        self._running = 0
        self._gathering = False
        self._condition = threading.Condition()

    def transcribe(self, request: Request, key: float) -> list[Word]:
        """The words of ``request``, computed in a batch; blocking (a scheduler thread)."""
        mine = _Pass(request, (key, next(self._arrivals)), time.monotonic())
        with self._condition:
            self._waiting.append(mine)
            self._condition.notify_all()
            while not mine.done:
                if mine.taken or self._gathering or self._running >= self.replicas:
                    self._condition.wait()  # another pass leads
                    continue
                batch = self._gather()
                self._running += 1
                self._condition.release()
                try:
                    self._run(batch)
                finally:
                    self._condition.acquire()
                    self._running -= 1
                    self._condition.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.words  # type: ignore[return-value]

    def _gather(self) -> list[_Pass]:
        """Lead: wait for a full batch or the oldest pass's deadline, then take the batch
        (called and returning with the lock held)."""
        self._gathering = True
        try:
            deadline = min(p.joined for p in self._waiting) + self.wait_seconds
            while len(self._waiting) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            self._waiting.sort(key=lambda p: p.key)
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            for each in batch:
                each.taken = True
            return batch
        finally:
            self._gathering = False
            self._condition.notify_all()

    def _run(self, batch: list[_Pass]) -> None:
        """One model call for ``batch``; every pass gets its words or the call's error."""
        priority = min(p.key[0] for p in batch)
        try:
            with self.slots.hold(self.backend.cores_per_call, priority):
                results = self.backend.transcribe_batch([p.request for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"backend {self.backend.name!r}: transcribe_batch returned {len(results)} results "
                    f"for {len(batch)} requests"
                )
            for each, words in zip(batch, results):
                each.words = words
        except BaseException as error:  # every waiting pass learns why its call failed
            for each in batch:
                each.error = error
        with self._condition:
            self.stats.sizes.append(len(batch))
            for each in batch:
                each.done = True
            self._condition.notify_all()
