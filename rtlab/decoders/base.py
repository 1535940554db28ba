"""The decoder contract every decoder plugin implements."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..core.state import State


class Decoder:
    """The decoder contract. ``state`` moves ``State.IDLE → RUNNING → STOPPED``.

    ``start`` and ``stop`` are idempotent; a stopped decoder is not started again (a
    session makes a new one). ``read`` returns the next PCM chunk, or None
    once the input has ended and everything was returned; it raises
    :class:`~rtlab.errors.DecoderError` when the input cannot be decoded.

    The options a decoder accepts are the keyword arguments of its ``__init__`` (the
    registry reads them from its signature); this one takes none.
    """

    name: ClassVar[str] = ""
    #: Also a class default, for a subclass whose ``__init__`` does not call this one's.
    state: State = State.IDLE

    def __init__(self) -> None:
        self.state = State.IDLE

    async def start(self) -> bool:
        """Begin decoding; returns True when running (also if it already was)."""
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        """Feed encoded bytes, in chunks of any size; waits when the decoder is full."""
        raise NotImplementedError

    async def end_input(self) -> None:
        """Declare the end of the input; ``read`` returns None once all is decoded."""
        raise NotImplementedError

    async def read(self) -> np.ndarray | None:
        """The next float32 PCM chunk, or None at the end of the stream."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Release everything; safe to call at any time, any number of times."""
        raise NotImplementedError
