"""The bounded queue of messages waiting to be written to one WebSocket."""

from __future__ import annotations

import asyncio
import collections
from typing import Any


def _is_transcript(message: dict[str, Any]) -> bool:
    return message.get("type") == "transcript"


class Outbox:
    """Messages for one client, at most ``max_messages`` of them.

    A slow client must not grow server memory, and must never lose committed text:

    * a transcript queued behind another unsent transcript is merged into it (committed
      words appended, the stale partial replaced by the new one);
    * when the queue is full, a partial-only transcript replaces the oldest queued
      partial-only transcript, or is dropped when there is none;
    * everything else (committed words, control messages) waits for room, which in turn
      stops the session from reading more events: backpressure reaches the processor.

    ``close()`` ends the queue: ``get()`` returns what is queued, then None.
    ``discard()`` ends it at once.
    """

    def __init__(self, max_messages: int = 64, max_merged_words: int = 256) -> None:
        self.max_messages = max_messages
        self.max_merged_words = max_merged_words
        self.dropped_partials = 0
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._changed = asyncio.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, message: dict[str, Any]) -> None:
        """Queue ``message``; may merge or drop stale partials, may wait for room."""
        async with self._changed:
            if self._closed:
                return
            if _is_transcript(message) and self._merge_into_tail(message):
                return
            if len(self._queue) >= self.max_messages and _is_transcript(message) and not message["committed"]:
                self.dropped_partials += 1
                if not self._drop_oldest_partial():
                    return
            await self._changed.wait_for(lambda: len(self._queue) < self.max_messages or self._closed)
            if not self._closed:
                self._queue.append(message)
                self._changed.notify_all()

    def _merge_into_tail(self, message: dict[str, Any]) -> bool:
        tail = self._queue[-1] if self._queue else None
        if tail is None or not _is_transcript(tail):
            return False
        if len(tail["committed"]) + len(message["committed"]) > self.max_merged_words:
            return False
        if tail["partial"]:
            self.dropped_partials += 1
        tail["committed"] = tail["committed"] + message["committed"]
        for field in ("partial", "emitted_at", "lag"):
            tail[field] = message[field]
        return True

    def _drop_oldest_partial(self) -> bool:
        for index, queued in enumerate(self._queue):
            if _is_transcript(queued) and not queued["committed"]:
                del self._queue[index]
                return True
        return False

    async def get(self) -> dict[str, Any] | None:
        """The next message, waiting for one; None once closed and drained."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._queue or self._closed)
            if not self._queue:
                return None
            message = self._queue.popleft()
            self._changed.notify_all()
            return message

    async def close(self, final: dict[str, Any] | None = None) -> None:
        """No more messages after ``final`` (queued past the bound, so this never waits);
        the queued ones are still returned by ``get``. Idempotent."""
        async with self._changed:
            if final is not None and not self._closed:
                self._queue.append(final)
            self._closed = True
            self._changed.notify_all()

    async def discard(self) -> None:
        """Close and forget the queued messages (the connection is gone)."""
        async with self._changed:
            self._closed = True
            self._queue.clear()
            self._changed.notify_all()
