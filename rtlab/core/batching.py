"""Passes of concurrent sessions on one backend, grouped into one model call.

A backend whose :attr:`~rtlab.backends.Backend.max_batch` is above 1 gets a
:class:`Batcher`. Its sessions' policies call ``transcribe`` as usual, on the scheduler's
threads, through their :class:`~rtlab.core.instances.SessionBackend`; the call joins the
batcher's queue and waits.
The first waiting pass leads: it gathers passes until ``max_batch`` of them wait, the
oldest has waited ``batch_wait_ms``, or every session that could send one has (each
session's :class:`~rtlab.core.instances.SessionBackend` is counted from its first pass to
its cleanup, and one with a pass in a running batch sends no other: one session alone
never waits), takes its share of them (with other replicas free,
the passes are spread over them: ``max_batch`` at most, and no more than the waiting
passes divided by the free replicas, rounded up), runs one :meth:`~rtlab.backends.Backend.transcribe_batch`
for them on its own thread (holding the backend's CPU slots, as a single pass would), hands
every pass its words and, while its own pass is not done, leads again. At most
``max_concurrency`` batches run at once, one per model replica.

Which passes a batch takes: the lowest *keys* first. On the wall clock a pass's key is the
time it joined minus its session's lag, so a session that fell behind real time counts as
having waited that much longer and goes first, and no session starves: every key is
bounded by its arrival, and later arrivals get later keys. On the simulated clock the key
is the audio time the pass reaches, as in the scheduler's own order.

Besides ``transcribe``, a batcher groups any batchable call (:meth:`Batcher.call`): a batch
holds calls of one kind, the lowest keys among the kinds ready to run. The
:class:`BatchingDecoder` sends a session's incremental decoder (AlignAtt's; see
:mod:`rtlab.policies.incremental`) through it: every encoder run and every decoder step
joins a batch of the same calls of other sessions. A decode is a sequence of steps, each
waiting for the one before: a batch of steps does not wait ``batch_wait_ms`` once every
decoder in the middle of a decode has its step waiting (no other step can come before
one of them returns).
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backends import Backend, Request, Word
from ..policies.incremental import Decoded, DecoderCall, IncrementalDecoder

if TYPE_CHECKING:
    from .scheduler import CpuSlots


@dataclass(eq=False)
class _Pass:
    run: Callable[[list[Any]], list[Any]]
    item: Any
    key: tuple[float, int]
    joined: float
    quorum: Callable[[], float] | None = None
    then: Callable[[], None] | None = None
    result: Any = None
    error: BaseException | None = None
    taken: bool = False
    done: bool = False


@dataclass
class BatchStats:
    """What the batcher did, for tests, benchmarks and a server that runs for days: how
    many batches and passes in all, and of the most recent batches (``recent`` of them at
    least, ``2 * recent`` at most) their sizes in order, their sizes by kind of call (the
    batch function's name: ``transcribe_batch``, ``encode_batch``, ``step_batch``), and
    how long each of their passes waited in the batcher for its batch (seconds)."""

    recent: int = 10_000
    batches: int = 0
    passes: int = 0
    sizes: list[int] = field(default_factory=list)
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)

    def add(self, kind: str, waits: Sequence[float]) -> None:
        """A batch of ``kind`` ran; its passes had waited ``waits`` seconds."""
        self.batches += 1
        self.passes += len(waits)
        self.sizes.append(len(waits))
        self.by_kind.setdefault(kind, []).append(len(waits))
        self.waits += waits
        for recent in (self.sizes, self.by_kind[kind], self.waits):
            if len(recent) > 2 * self.recent:
                del recent[: -self.recent]


class Batcher:
    """Groups the calls of concurrent passes on ``backend`` into batches: ``transcribe``,
    and the encoder runs and steps of incremental decoders (:class:`BatchingDecoder`)."""

    def __init__(self, backend: Backend, slots: CpuSlots) -> None:
        self.backend = backend
        self.slots = slots
        self.max_batch = max(1, int(backend.max_batch))
        self.wait_seconds = max(0.0, float(backend.batch_wait_ms)) / 1000
        self.replicas = max(1, int(backend.max_concurrency))
        self.stats = BatchStats()
        #: Decoders in the middle of a decode (see :class:`BatchingDecoder`).
        self.decoding: weakref.WeakSet[BatchingDecoder] = weakref.WeakSet()
        self._waiting: list[_Pass] = []
        self._arrivals = itertools.count()
        self._running = 0
        self._gathering = False
        self._condition = threading.Condition()
        #: Sessions that may send ``transcribe`` passes, and those of their passes taken
        #: into a batch that has not returned.
        self._sessions = 0
        self._transcribing = 0

    def transcribe(self, request: Request, key: float) -> list[Word]:
        """The words of ``request``, computed in a batch; blocking (a scheduler thread)."""
        return self.call(self.backend.transcribe_batch, request, key, quorum=self._transcribe_quorum)

    @property
    def sessions(self) -> int:
        """Sessions counted now (started and not ended)."""
        return self._sessions

    def session_started(self) -> None:
        """A session may send passes from now on (until :meth:`session_ended`)."""
        with self._condition:
            self._sessions += 1

    def session_ended(self) -> None:
        """A session sends no more passes: those waiting may be all that can come."""
        with self._condition:
            self._sessions = max(0, self._sessions - 1)
            self._condition.notify_all()

    def _transcribe_quorum(self) -> float:
        """How many ``transcribe`` passes can wait at most: a pass from every session but
        those whose pass is in a running batch (no session counted: no limit)."""
        if not self._sessions:
            return float("inf")
        return max(1, self._sessions - self._transcribing)

    def call(
        self,
        run: Callable[[list[Any]], list[Any]],
        item: Any,
        key: float,
        *,
        quorum: Callable[[], float] | None = None,
        then: Callable[[], None] | None = None,
    ) -> Any:
        """``run([item, ...])``'s result for ``item``, computed in a batch of calls with the
        same ``run`` (a function of a list that returns a result per item, in order);
        blocking (a scheduler thread). ``quorum``, if given, says how many calls of this kind
        can come at most (asked under the batcher's lock): a batch of that many does not
        wait for more. ``then``, if given, runs under the batcher's lock once the batch has
        succeeded, before any of its callers goes on."""
        mine = _Pass(run, item, (key, next(self._arrivals)), time.monotonic(), quorum, then)
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
                    batch = []  # the lead keeps no other session's call past its batch
                    self._condition.acquire()
                    self._running -= 1
                    self._condition.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def decode_ended(self, decoder: BatchingDecoder) -> None:
        """``decoder``'s decode is over: no step of it will come until it encodes again."""
        with self._condition:
            self.decoding.discard(decoder)
            self._condition.notify_all()  # a batch of steps may have its quorum now

    def _gather(self) -> list[_Pass]:
        """Lead: wait until the calls of one kind are ready (a full batch, a quorum, or the
        oldest one's deadline), then take the batch of the ready kind with the lowest key
        (called and returning with the lock held)."""
        self._gathering = True
        try:
            while True:
                batch, deadline = self._ready(time.monotonic())
                if batch is not None:
                    break
                self._condition.wait(max(0.0, deadline - time.monotonic()))
            taken = set(map(id, batch))
            self._waiting = [p for p in self._waiting if id(p) not in taken]
            for each in batch:
                each.taken = True
            if batch[0].quorum == self._transcribe_quorum:
                self._transcribing += len(batch)
            return batch
        finally:
            self._gathering = False
            self._condition.notify_all()

    def _ready(self, now: float) -> tuple[list[_Pass] | None, float]:
        """The batch to run now, if a kind is ready; else None and when one will be."""
        kinds: dict[Any, list[_Pass]] = {}
        for each in sorted(self._waiting, key=lambda p: p.key):
            kinds.setdefault(each.run, []).append(each)
        best: list[_Pass] | None = None
        deadline = float("inf")
        for calls in kinds.values():
            due = min(p.joined for p in calls) + self.wait_seconds
            quorum = calls[0].quorum
            if len(calls) >= self.max_batch or due <= now or (quorum is not None and len(calls) >= quorum()):
                if best is None or calls[0].key < best[0].key:
                    best = calls
            deadline = min(deadline, due)
        if best is None:
            return None, deadline
        # Calls that another free replica could run at the same time are left to it: a
        # batch on one replica while another idles would take longer than two halves.
        free = max(1, self.replicas - self._running)
        return best[: min(self.max_batch, -(-len(best) // free))], deadline

    def _run(self, batch: list[_Pass]) -> None:
        """One model call for ``batch``; every pass gets its result or the call's error."""
        priority = min(p.key[0] for p in batch)
        run = batch[0].run
        started = time.monotonic()
        try:
            with self.slots.hold(self.backend.cores_per_call, priority):
                results = run([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"backend {self.backend.name!r}: {getattr(run, '__name__', 'a batch call')} returned "
                    f"{len(results)} results for {len(batch)} requests"
                )
            for each, result in zip(batch, results):
                each.result = result
        except BaseException as error:  # every waiting pass learns why its call failed
            for each in batch:
                each.error = error
        with self._condition:
            self.stats.add(getattr(run, "__name__", "call"), [started - p.joined for p in batch])
            for each in batch:
                if each.then is not None and each.error is None:
                    each.then()
                each.done = True
            if batch[0].quorum == self._transcribe_quorum:
                self._transcribing -= len(batch)
            self._condition.notify_all()


class BatchingDecoder:
    """A session's :class:`~rtlab.policies.incremental.IncrementalDecoder` whose encoder runs
    and decoder steps join the batcher's batches (the decoder's class batches them: its
    ``encode_batch`` and ``step_batch``). Everything else is the decoder's own; its state
    stays in it, and the batcher keeps none of it after a batch."""

    def __init__(self, decoder: IncrementalDecoder, batcher: Batcher, key: Callable[[], float] | None = None) -> None:
        self.decoder = decoder
        self._batcher = batcher
        self._key = key

    def encode(self, audio: Any) -> int:
        """The decoder's ``encode``, in a batch of other sessions' encoder runs."""
        # In the middle of a decode from the moment its encoder run is done: every decoder of
        # the batch counts before any of them steps, so their first steps share a batch.
        return self._call(type(self.decoder).encode_batch, (self.decoder, audio), then=self._decoding)

    def _decoding(self) -> None:
        self._batcher.decoding.add(self)

    def begin(self, context: Sequence[int], forced: Sequence[int]) -> Decoded:
        """The decoder's ``begin``, in a batch of other sessions' decoder steps."""
        return self._step(DecoderCall(self.decoder, "begin", (list(context), list(forced))))

    def feed(self, token: int) -> Decoded:
        """The decoder's ``feed``, in a batch of other sessions' decoder steps."""
        return self._step(DecoderCall(self.decoder, "feed", (token,)))

    def feed_beams(self, tokens: Sequence[int], sources: Sequence[int]) -> list[Decoded]:
        """The decoder's ``feed_beams``, in a batch of other sessions' decoder steps."""
        return self._step(DecoderCall(self.decoder, "feed_beams", (list(tokens), list(sources))))

    def close(self) -> None:
        """The decoder's ``close``; the decode is over (no step of it will come)."""
        self._batcher.decode_ended(self)
        self.decoder.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.decoder, name)

    def _step(self, call: DecoderCall) -> Decoded:
        batcher = self._batcher
        return self._call(type(self.decoder).step_batch, call, quorum=lambda: len(batcher.decoding))

    def _call(
        self,
        run: Callable[[list[Any]], list[Any]],
        item: Any,
        quorum: Callable[[], float] | None = None,
        then: Callable[[], None] | None = None,
    ) -> Any:
        return self._batcher.call(run, item, self._key() if self._key else 0.0, quorum=quorum, then=then)
