"""At most N redraws a second, however many events arrive, and never a stale last frame."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """Calls ``redraw`` at most ``per_second`` times a second.

    :meth:`request` says the view changed. Far enough from the last redraw, it redraws at
    once; otherwise it schedules one redraw on the running event loop for when the interval
    is over, and later requests join that one. So a burst of a thousand events costs a
    handful of redraws, and the last state is always drawn. ``clock`` (seconds, monotonic)
    is injectable so that tests count redraws without waiting.
    """

    def __init__(
        self, redraw: Callable[[], None], per_second: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be > 0, got {per_second}")
        self._redraw = redraw
        self.interval = 1.0 / per_second
        self._clock = clock
        self._last: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._drawn: asyncio.Event | None = None
        #: Redraws so far.
        self.redraws = 0

    @property
    def pending(self) -> bool:
        """Whether a redraw is scheduled."""
        return self._timer is not None

    def request(self) -> None:
        """The view changed: redraw now, or once the interval since the last redraw is over."""
        now = self._clock()
        wait = 0.0 if self._last is None else self._last + self.interval - now
        if wait <= 0:
            self._draw()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._draw)

    async def settle(self) -> None:
        """Return once no redraw is pending (the scheduled one has been drawn)."""
        while self._timer is not None:
            if self._drawn is None:
                self._drawn = asyncio.Event()
            await self._drawn.wait()

    def cancel(self) -> None:
        """Drop a scheduled redraw (the view is going away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _draw(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last = self._clock()
        self.redraws += 1
        try:
            self._redraw()
        finally:
            self._wake()

    def _wake(self) -> None:
        if self._drawn is not None:
            self._drawn.set()
            self._drawn = None
