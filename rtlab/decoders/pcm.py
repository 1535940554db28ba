"""Raw PCM input (s16le, 16 kHz, mono) for clients that already send samples."""

from __future__ import annotations

import asyncio

import numpy as np

from ..core.state import State
from ..errors import DecoderError, InvalidOption
from ..options import is_whole_number
from .base import Decoder
from .files import from_pcm16

_CHUNK_SAMPLES = 16_000
#: The most chunks (seconds of audio) ``max_chunks`` may let wait.
MAX_CHUNKS = 3600


class PCMDecoder(Decoder):
    """Converts little-endian 16-bit PCM to float32 without starting any process.

    Chunks of any size are accepted: an odd trailing byte is kept for the next write.
    Writes are split into chunks of at most ``_CHUNK_SAMPLES`` (1 s), and at most
    ``max_chunks`` chunks wait to be read, so the decoder holds at most ``max_chunks``
    seconds of audio however large the frames; ``write`` waits beyond that.
    """

    name = "pcm_s16le"

    def __init__(self, *, max_chunks: int = 64) -> None:
        super().__init__()
        if not is_whole_number(max_chunks) or not 1 <= max_chunks <= MAX_CHUNKS:
            # asyncio.Queue(maxsize=0) would be unbounded: the decoder must stay bounded.
            raise InvalidOption(f"decoder 'pcm_s16le': max_chunks must be a whole number from 1 to {MAX_CHUNKS}, not {max_chunks!r}")
        self._queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue(maxsize=max_chunks)
        self._remainder = b""
        self._ended = False
        self._drained = False

    async def start(self) -> bool:
        if self.state is State.STOPPED:
            raise DecoderError("this PCM decoder was stopped; create a new one")
        self.state = State.RUNNING
        return True

    async def write(self, data: bytes) -> None:
        if self.state is not State.RUNNING or self._ended:
            raise DecoderError(f"cannot write to a PCM decoder in state {self.state}")
        data = self._remainder + bytes(data)
        usable = len(data) - len(data) % 2
        self._remainder = data[usable:]
        for start in range(0, usable, 2 * _CHUNK_SAMPLES):
            piece = data[start : min(usable, start + 2 * _CHUNK_SAMPLES)]
            await self._queue.put(from_pcm16(piece))

    async def end_input(self) -> None:
        if self.state is State.RUNNING and not self._ended:
            self._ended = True
            await self._queue.put(None)

    async def read(self) -> np.ndarray | None:
        if self._drained or (self.state is not State.RUNNING and self._queue.empty()):
            return None
        pcm = await self._queue.get()
        if pcm is None:
            # The end marker is queued once; later reads must not wait for another.
            self._drained = True
        return pcm

    async def stop(self) -> None:
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wake a reader blocked in read()
