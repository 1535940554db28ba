"""Transcript events (the contract shared by CLI, WebSocket, widgets and benchmarks),
and the bounded stream that carries them from a processor to its consumer.

* ``{"type": "partial", "text", "emitted_at"}``: provisional, may change.
* ``{"type": "commit", "words": [{"text", "start", "end"}], "emitted_at"}``: final.
* ``{"type": "error", "error": code, "message", "emitted_at"}``.
* ``{"type": "summary", "text", "audio_seconds", "compute_seconds", "rtf", "emitted_at"}``:
  always the last event of a stream that ended normally.

Word times are seconds of audio; ``emitted_at`` is seconds on the session clock.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, AsyncIterator

from ..backends import Word


def commit_event(words: list[Word], emitted_at: float) -> dict[str, Any]:
    """A commit event; words keep only the contract's fields, times rounded to ms."""
    return {
        "type": "commit",
        "words": [
            {"text": w["text"].strip(), "start": round(w["start"], 3), "end": round(w["end"], 3)}
            for w in words
        ],
        "emitted_at": round(emitted_at, 4),
    }


def partial_event(words: list[Word], emitted_at: float) -> dict[str, Any]:
    """A partial event with the provisional text after the last commit."""
    return {"type": "partial", "text": join_words(words), "emitted_at": round(emitted_at, 4)}


def error_event(code: str, message: str, emitted_at: float) -> dict[str, Any]:
    """An error event; ``code`` is machine-readable, ``message`` says what to do."""
    return {"type": "error", "error": code, "message": message, "emitted_at": round(emitted_at, 4)}


def join_words(words: list[Word]) -> str:
    """Words as text, separated by single spaces."""
    return " ".join(w["text"].strip() for w in words if w["text"].strip())


class EventStream:
    """An async iterator of events with a bounded buffer.

    When the consumer is slow, partial events are dropped first (they are stale once a
    newer one exists); commits wait for room, so committed text is never lost. The final
    event and the end marker always fit.
    """

    def __init__(self, max_events: int = 1000) -> None:
        self.max_events = max_events
        self._events: collections.deque[dict] = collections.deque()
        self._changed = asyncio.Condition()
        self._closed = False
        self.dropped_partials = 0

    async def put(self, event: dict[str, Any]) -> None:
        """Queue ``event``: drops it if it is a partial and the buffer is full, else waits."""
        async with self._changed:
            if event["type"] == "partial" and len(self._events) >= self.max_events // 2:
                # Replace the oldest queued partial; with none to replace, drop this one.
                if not self._drop_oldest_partial():
                    self.dropped_partials += 1
                    return
            await self._changed.wait_for(lambda: len(self._events) < self.max_events or self._closed)
            if not self._closed:
                self._events.append(event)
                self._changed.notify_all()

    def _drop_oldest_partial(self) -> bool:
        for index, queued in enumerate(self._events):
            if queued["type"] == "partial":
                del self._events[index]
                self.dropped_partials += 1
                return True
        return False

    async def close(self, final: dict[str, Any] | None = None) -> None:
        """Append ``final`` (if any) past the bound and end the stream; idempotent."""
        async with self._changed:
            if self._closed:
                return
            if final is not None:
                self._events.append(final)
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._events or self._closed)
            if self._events:
                event = self._events.popleft()
                self._changed.notify_all()
                return event
            raise StopAsyncIteration
