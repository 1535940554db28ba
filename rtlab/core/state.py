"""The one state machine of decoders, processors and server sessions."""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    """``IDLE → RUNNING → STOPPED``; never back.

    Members are strings, so ``state == "RUNNING"`` holds and JSON shows ``"RUNNING"``.
    Every loop runs while ``state is State.RUNNING`` and checks nothing else.
    """

    IDLE = "IDLE"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)
