"""Transcript events (the contract shared by CLI, WebSocket, widgets and benchmarks),
and the bounded queue that carries them from a processor to its consumer.

* ``{"type": "partial", "text", "emitted_at"}``: provisional, may change.
* ``{"type": "commit", "words": [{"text", "start", "end"}], "emitted_at"}``: final. A word
  with ``"joins": true`` goes on from the word before it, without a space: the rest of a
  word heard over one already committed ("Unabhängigkeit", then "serklärung"; "25", then
  "-30"). :func:`join_words` writes words as text by this rule; the key is absent otherwise.
* ``{"type": "error", "error": code, "message", "emitted_at"}``.
* ``{"type": "summary", "text", "audio_seconds", "compute_seconds", "measured_compute_seconds",
  "rtf", "emitted_at"}``: ``compute_seconds`` is what the clock reports (the cost model's
  prediction on the ``modeled`` clock, else the measured compute), ``rtf`` is it per second
  of audio. Always the last event of a stream that ended normally.

Word times are seconds of audio; ``emitted_at`` is seconds on the session clock.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

from ..backends import Word


def commit_event(words: list[Word], emitted_at: float) -> dict[str, Any]:
    """A commit event; words keep only the contract's fields, times rounded to ms."""
    return {
        "type": "commit",
        "words": [
            {"text": w["text"].strip(), "start": round(w["start"], 3), "end": round(w["end"], 3),
             **({"joins": True} if w.get("joins") else {})}
            for w in words
        ],  # fmt: skip
        "emitted_at": round(emitted_at, 4),
    }


def partial_event(words: list[Word], emitted_at: float) -> dict[str, Any]:
    """A partial event with the provisional text after the last commit, and ``"joins":
    true`` when that text goes on from the last committed word without a space (its first
    word is the rest of the committed one, see :func:`join_words`; absent otherwise)."""
    event = {"type": "partial", "text": join_words(words), "emitted_at": round(emitted_at, 4)}
    if words and words[0].get("joins"):
        event["joins"] = True
    return event


def error_event(code: str, message: str, emitted_at: float) -> dict[str, Any]:
    """An error event; ``code`` is machine-readable, ``message`` says what to do."""
    return {"type": "error", "error": code, "message": message, "emitted_at": round(emitted_at, 4)}


def join_words(words: Iterable[Mapping[str, Any]]) -> str:
    """Words as text: separated by single spaces, but a word marked ``"joins"`` goes on from
    the one before it ("Unabhängigkeit" and "serklärung" make "Unabhängigkeitserklärung")."""
    text = ""
    for word in words:
        piece = str(word.get("text", "")).strip()
        if piece:
            text += piece if not text or word.get("joins") else " " + piece
    return text


def is_partial(event: dict[str, Any]) -> bool:
    """Whether ``event`` is a partial event (stale once a newer one exists)."""
    return event.get("type") == "partial"


class EventQueue:
    """A bounded async queue of events that drops stale partials and never committed text.

    The processor's events to its consumer and the server's messages to a client go through
    one of these. At most ``max_items`` wait:

    * a ``stale`` item (by default a partial event) is provisional: it takes at most half
      the room. Arriving at a half-full queue, it replaces the oldest queued stale item,
      or is dropped when there is none (``dropped_partials`` counts both);
    * ``merge(tail, item)``, when given, may fold an item into the last queued one: it
      returns None when it cannot, else whether the fold superseded provisional text of
      the tail (counted as a dropped partial). The server folds a transcript into an
      unsent one;
    * everything else waits for room. That wait is the backpressure: a consumer that does
      not read stops the producer.

    ``close(final)`` ends the queue with ``final`` appended past the bound (so it never
    waits): iteration, or :meth:`get`, returns what is queued, then ends. ``discard()``
    ends it at once.
    """

    def __init__(
        self,
        max_items: int = 1000,
        *,
        stale: Callable[[dict[str, Any]], bool] = is_partial,
        merge: Callable[[dict[str, Any], dict[str, Any]], bool | None] | None = None,
    ) -> None:
        self.max_items = max(2, int(max_items))
        self.dropped_partials = 0
        self._stale = stale
        #: The merge function (see above); may be replaced while the queue is in use.
        self.merge = merge
        self._items: collections.deque[dict[str, Any]] = collections.deque()
        self._changed = asyncio.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: dict[str, Any]) -> None:
        """Queue ``item``: may merge it, replace or drop a stale one, or wait for room."""
        async with self._changed:
            if self._closed:
                return
            merged = self.merge(self._items[-1], item) if self.merge and self._items else None
            if merged is not None:
                self.dropped_partials += merged
                self._changed.notify_all()
                return
            if self._stale(item) and len(self._items) >= self.max_items // 2:
                self.dropped_partials += 1
                if not self._drop_oldest_stale():
                    return
            await self._changed.wait_for(lambda: len(self._items) < self.max_items or self._closed)
            if not self._closed:
                self._items.append(item)
                self._changed.notify_all()

    def _drop_oldest_stale(self) -> bool:
        for index, queued in enumerate(self._items):
            if self._stale(queued):
                del self._items[index]
                return True
        return False

    async def get(self) -> dict[str, Any] | None:
        """The next item, waiting for one; None once closed and drained."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._items or self._closed)
            if not self._items:
                return None
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    async def close(self, final: dict[str, Any] | None = None) -> None:
        """Append ``final`` (if any) past the bound and end the queue; idempotent."""
        async with self._changed:
            if self._closed:
                return
            if final is not None:
                self._items.append(final)
            self._closed = True
            self._changed.notify_all()

    async def discard(self) -> None:
        """End the queue now and forget what waits in it (the consumer is gone)."""
        async with self._changed:
            self._closed = True
            self._items.clear()
            self._changed.notify_all()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self.get()
        if item is None:
            raise StopAsyncIteration
        return item
