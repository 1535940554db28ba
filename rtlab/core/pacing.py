"""When a pass is due, and which audio it takes: one pacer per clock mode.

The processor's reader puts decoded PCM into an :class:`AudioBuffer`; its transcriber asks
the session's pacer to wait for the next pass, then hands the pass to the scheduler and lets
the pacer :meth:`~Pacer.take` the pass's audio on the event loop when the pass is admitted.

* :class:`WallPacer` (``clock="wall"``): a pass is due once ``min_chunk`` seconds of new
  audio arrived. It takes everything that arrived by the time it starts: a pass that waited
  for other sessions' passes on a shared model sees the audio that came meanwhile, instead
  of leaving it for the next pass.
* :class:`SimulatedPacer` (``clock="simulated"``): audio counts as arrived at its own
  timestamp on the virtual clock. A pass is due at ``min_chunk`` seconds after the last one
  took its audio, or when the clock says the last pass ended, whichever is later; it takes
  the audio up to that time. Waiting in a queue is not time on this clock.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np

from ..backends import SAMPLE_RATE
from .clock import SessionClock


class AudioBuffer:
    """Decoded audio waiting for the policy: at most ``max_samples`` of it.

    ``put`` waits while the buffer is full, which stops the reader, which stops the decoder
    reading its input: backpressure reaches the client. ``received`` and ``taken`` count
    samples since the stream started. Everything runs on the session's event loop.
    """

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max(1, int(max_samples))
        self.received = 0
        self.taken = 0
        self.ended = False
        self.closed = False
        self._chunks: list[np.ndarray] = []
        self._changed = asyncio.Event()

    @property
    def pending(self) -> int:
        """Samples received and not yet taken."""
        return self.received - self.taken

    @property
    def full(self) -> bool:
        return self.pending >= self.max_samples

    def _notify(self) -> None:
        # Wake every waiter: they wait on this event; later waiters wait on a fresh one.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, ready: Callable[[], bool]) -> None:
        while not (ready() or self.closed):
            await self._changed.wait()

    async def put(self, pcm: np.ndarray) -> None:
        """Append ``pcm``, first waiting for room (returns at once once closed)."""
        await self._wait_until(lambda: not self.full)
        if self.closed:
            return
        self._chunks.append(pcm)
        self.received += len(pcm)
        self._notify()

    def end(self) -> None:
        """No more audio will come."""
        self.ended = True
        self._notify()

    def close(self) -> None:
        """Stop: wake every waiter and forget the audio. Idempotent."""
        self.closed = True
        self._chunks = []
        self._notify()

    async def wait_for_samples(self, target: int) -> None:
        """Wait until ``target`` samples were received in all, the buffer is full (a full
        buffer counts: the reader waits for room, so waiting for more would deadlock), the
        input ended, or the buffer closed."""
        await self._wait_until(lambda: self.received >= target or self.full or self.ended)

    def take(self, samples: int) -> np.ndarray:
        """The oldest ``samples`` (at most what is pending), removed from the buffer."""
        samples = min(samples, self.pending)
        pcm = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        taken, rest = pcm[:samples], pcm[samples:]
        self._chunks = [rest] if len(rest) else []
        self.taken += len(taken)
        self._notify()
        return taken


class Pacer:
    """The pacing of one session's passes; see the module docstring."""

    #: Order in the scheduler's queue (lower first; None: first come, first served).
    priority: float | None = None

    def __init__(self, buffer: AudioBuffer, clock: SessionClock, min_chunk: Callable[[], float]) -> None:
        self.buffer = buffer
        self.clock = clock
        self._min_chunk = min_chunk
        #: Whether the audio of the pass just due is the end of the stream: the processor
        #: then ends with the policy's final pass instead of a regular one and a final one.
        self.last = False

    def min_chunk_samples(self) -> int:
        return int(self._min_chunk() * SAMPLE_RATE)

    async def wait(self) -> bool:
        """Wait until a pass is due; False when the buffer closed or nothing is left."""
        raise NotImplementedError

    def take(self) -> np.ndarray | None:
        """The audio of the pass that is starting, or None when there is none."""
        raise NotImplementedError

    def lag(self) -> float:
        """Seconds of audio that arrived (on this clock) and no pass has taken yet."""
        return max(0.0, self.buffer.pending / SAMPLE_RATE)


class WallPacer(Pacer):
    """Real time: a pass every ``min_chunk`` seconds of new audio, taking all that arrived."""

    async def wait(self) -> bool:
        buffer = self.buffer
        await buffer.wait_for_samples(buffer.taken + self.min_chunk_samples())
        self.last = buffer.ended
        return not buffer.closed and buffer.pending > 0

    def take(self) -> np.ndarray | None:
        buffer = self.buffer
        if buffer.closed or buffer.pending == 0:
            return None
        return buffer.take(buffer.pending)


class SimulatedPacer(Pacer):
    """Virtual time: audio arrives at its own timestamp, and a pass ends when the clock,
    which counts compute, says so."""

    def __init__(self, buffer: AudioBuffer, clock: SessionClock, min_chunk: Callable[[], float]) -> None:
        super().__init__(buffer, clock, min_chunk)
        self._due = 0

    @property
    def priority(self) -> float:  # type: ignore[override]
        # The audio time the pass reaches: the configuration furthest behind in the audio
        # goes first, so in a replay every configuration keeps pace and no core idles at
        # the end.
        return (self.buffer.taken + self._due) / SAMPLE_RATE

    async def wait(self) -> bool:
        buffer = self.buffer
        target = max(buffer.taken + self.min_chunk_samples(), int(self.clock.now() * SAMPLE_RATE))
        await buffer.wait_for_samples(target)
        if buffer.closed or buffer.pending == 0:
            return False
        arrived = min(target, buffer.received)
        self.clock.wait_for_audio(arrived / SAMPLE_RATE)
        self._due = arrived - buffer.taken
        self.last = buffer.ended and arrived == buffer.received
        return True

    def take(self) -> np.ndarray | None:
        if self.buffer.closed or self._due <= 0:
            return None
        due, self._due = self._due, 0
        return self.buffer.take(due)

    def lag(self) -> float:
        arrived = min(self.buffer.received, int(self.clock.now() * SAMPLE_RATE))
        return max(0.0, (arrived - self.buffer.taken) / SAMPLE_RATE)


def pacer_for(buffer: AudioBuffer, clock: SessionClock, min_chunk: Callable[[], float]) -> Pacer:
    """The pacer of ``clock``'s mode."""
    return (SimulatedPacer if clock.simulated else WallPacer)(buffer, clock, min_chunk)
