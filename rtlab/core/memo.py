"""Backend calls that several streams of one replay make alike, computed once.

On the ``modeled`` and ``unaware`` clocks (see :mod:`rtlab.core.clock`) no measured time
counts, so a pass's words depend only on what it asked the backend: the audio, the
prompt and the language. Configurations of a sweep often ask the same thing: two that
differ only in how they commit (a deadline, a trimming rule) send identical buffers
until their first different commit. A :class:`PassMemo` shared by the processors of one
replay hands the second asker the first one's words (a copy), instead of a second run of
the model. A call that is still running when the same request comes in is waited for, not
started again; meanwhile the waiting stream's model replica serves other streams
(:func:`~rtlab.core.scheduler.stepping_aside`).

The words are what the backend would have returned, so events are unchanged. A stream
that reuses a call is credited with the compute the call took when it ran (its measured
compute, recorded beside the modeled one and never counted as time on these clocks, is
what its calls cost, whichever stream ran them); the replay only takes less time. It needs a deterministic backend, as the modeled clock's
reproducibility does. The measured clocks never use it: their passes must cost what they
cost.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from ..backends import Request
from .scheduler import stepping_aside

__all__ = ["PassMemo"]


class PassMemo:
    """Words of backend calls, by backend instance and request; at most ``max_entries``
    (the oldest go first), thread-safe. ``hits`` counts calls answered from it, ``misses``
    calls it ran."""

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, Future] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(backend: Any, request: Request, kind: str = "transcribe") -> tuple:
        audio = np.ascontiguousarray(request.audio)
        digest = hashlib.blake2b(memoryview(audio).cast("B"), digest_size=20).hexdigest()
        return (backend, kind, str(audio.dtype), len(audio), digest, request.prompt, request.language)

    def call(
        self, backend: Any, request: Request, compute: Callable[[], Any], kind: str = "transcribe"
    ) -> tuple[Any, float]:
        """``compute()``'s result for ``request`` on ``backend``, computed once per replay,
        and the seconds to add to the caller's measured compute: 0 for the call that ran,
        and for a reused one the compute the first call took less the time spent here
        waiting for it, so that a stream's measured compute is what its calls cost,
        whoever ran them. ``kind`` names the backend method (``transcribe``,
        ``detect_language``)."""
        started = time.perf_counter()
        key = self.key(backend, request, kind)
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = Future()
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
        if not owner:
            # Waiting is not compute: the caller's replica serves other streams meanwhile.
            with stepping_aside():
                try:
                    result, seconds = entry.result()
                    failed = False
                except Exception:  # noqa: BLE001 - the first asker's failure
                    failed = True
            if failed:  # try for ourselves
                return compute(), 0.0
            with self._lock:
                self.hits += 1
            return copy.deepcopy(result), seconds - (time.perf_counter() - started)
        try:
            computing = time.perf_counter()
            result = compute()
            seconds = time.perf_counter() - computing
        except BaseException as error:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
                self.misses += 1
            entry.set_exception(error)
            raise
        with self._lock:
            self.misses += 1
        entry.set_result((copy.deepcopy(result), seconds))
        return result, 0.0
