"""Feed an audio file, or a pipe, into an AudioProcessor, paced in real time or as fast as possible.

Used by ``rtlab transcribe``, the benchmarks and the notebooks, so that "streaming a file"
means the same thing everywhere: the encoded bytes go through the session's own decoder,
in chunks of ``chunk_seconds`` worth of bytes; on the wall clock chunk ``i`` is sent
``i * chunk_seconds`` after the first. A pipe (``rtlab transcribe -``: a microphone or a
file piped in) has no length to pace by: :func:`feed_reader` sends what arrives, and the
processor holds the decoded audio to real time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..config import StreamConfig
from ..errors import DecoderError
from ..options import is_number
from .processor import AudioProcessor

SAMPLE_RATE = 16_000


async def measure_duration(path: str | Path, *, stop: asyncio.Event | None = None) -> float | None:
    """Duration of ``path`` in seconds, by decoding it once with FFmpeg (exact for any
    codec), in bounded memory; None when ``stop`` was set first (FFmpeg is stopped then)."""
    from ..decoders.files import count_samples

    samples = await count_samples(path, stop=stop)
    if samples == 0:
        raise DecoderError(
            f"{path} holds no audio samples: FFmpeg decoded it to its end and found none (a header with "
            f"nothing after it?); give a recording that holds audio"
        )
    return None if samples is None else samples / SAMPLE_RATE


def audio_duration(path: str | Path) -> float:
    """:func:`measure_duration`, for code without an event loop running."""
    return asyncio.run(measure_duration(path))  # type: ignore[return-value]


async def feed_file(
    processor: AudioProcessor,
    path: str | Path,
    *,
    realtime: bool,
    chunk_seconds: float = 0.1,
    duration: float | None = None,
    on_progress: Callable[[float], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Send ``path``'s bytes to ``processor`` then ``finish()`` it.

    With ``realtime``, bytes are paced at the file's average byte rate (``duration``
    seconds for all of them; measured when not given). ``on_progress`` gets the fraction
    sent; ``stop``, when set, ends the input there (see :func:`feed_bytes`).
    """
    if realtime and duration is None:
        duration = await measure_duration(path, stop=stop)
        if duration is None:  # stopped while measuring: none of the file was sent
            await processor.finish()
            return
    with open(path, "rb") as source:  # read as it is sent: a long WAV is not held whole
        size = os.fstat(source.fileno()).st_size
        await _feed(processor, source.read, size, realtime=realtime, chunk_seconds=chunk_seconds,
                    duration=duration, on_progress=on_progress, stop=stop)  # fmt: skip


def check_chunk_seconds(chunk_seconds: object) -> None:
    """Refuse a ``chunk_seconds`` that is not a number of seconds above 0 (``ValueError``)."""
    if not is_number(chunk_seconds) or chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be a number of seconds > 0, not {chunk_seconds!r}")


async def feed_bytes(
    processor: AudioProcessor,
    data: bytes,
    *,
    realtime: bool,
    chunk_seconds: float = 0.1,
    duration: float | None = None,
    on_progress: Callable[[float], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Send ``data`` (encoded audio, or s16le PCM for the PCM decoder) then ``finish()``.

    With ``realtime``, chunk ``i`` holds ``duration * chunk_seconds / len(data)`` worth of
    bytes and is sent ``(i + 1) * chunk_seconds`` after the stream starts. For raw PCM the
    duration is known from the length; for encoded audio pass it (see :func:`audio_duration`).
    Once ``stop`` is set (Ctrl-C), no more is sent: the input ends where it got to.
    """
    await _feed(processor, io.BytesIO(data).read, len(data), realtime=realtime, chunk_seconds=chunk_seconds,
                duration=duration, on_progress=on_progress, stop=stop)  # fmt: skip


async def _feed(
    processor: AudioProcessor,
    read: Callable[[int], bytes],
    size: int,
    *,
    realtime: bool,
    chunk_seconds: float,
    duration: float | None,
    on_progress: Callable[[float], None] | None,
    stop: asyncio.Event | None,
) -> None:
    """:func:`feed_bytes` of the ``size`` bytes that ``read(n)`` gives, ``n`` at a time."""
    if realtime and duration is None:
        raise ValueError("feeding encoded bytes in real time needs their duration")
    if realtime and duration:
        chunk = max(1, int(size * chunk_seconds / duration))
    else:
        chunk = 16_384
    started = time.monotonic()
    if realtime:
        # Like a microphone, chunk i holds the audio of [i, i+1) * chunk_seconds and can only
        # be sent when that audio has been played: the stream starts one chunk before the
        # first send, so latencies are not flattered by the chunk length.
        processor.clock.start()
    for index, offset in enumerate(range(0, size, chunk)):
        if processor.state != "RUNNING":
            return  # it failed; the reason is in its event stream
        if realtime:
            delay = started + (index + 1) * chunk_seconds - time.monotonic()
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
        if stop is not None and stop.is_set():
            break
        data = read(chunk)
        if not data:
            break  # the file is shorter than it was (truncated while it was sent)
        await processor.process_audio(data)
        if on_progress is not None:
            on_progress(min(1.0, (offset + chunk) / size))
    await processor.finish()


#: Chunks a pipe's reader thread may hold before the session takes them.
READER_QUEUE_CHUNKS = 4


async def feed_reader(
    processor: AudioProcessor,
    read: Callable[[int], bytes],
    *,
    stop: asyncio.Event | None = None,
    chunk_bytes: int = 4096,
) -> None:
    """Send what ``read(chunk_bytes)`` gives until it gives ``b""`` (the end of the input),
    then ``finish()``; or until ``stop`` is set (Ctrl-C), then ``cut_input()`` and ``finish()``.

    ``read`` is a blocking read of a pipe (``functools.partial(os.read, fd)``; not a
    buffered file's read, whose lock a thread still waiting at exit holds). It runs on a
    daemon thread that stays at most :data:`READER_QUEUE_CHUNKS` chunks ahead of the
    session; an error it raises ends the stream with that error. Chunks are sent as they
    arrive: a pipe has no length to pace by, so holding a fast source to real time is the
    processor's ``pace_input`` (which :func:`stream_reader` sets).
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue(maxsize=READER_QUEUE_CHUNKS)
    done = threading.Event()

    def pump() -> None:
        while not done.is_set():
            try:
                data: bytes | BaseException = bytes(read(chunk_bytes))
            except Exception as error:  # noqa: BLE001 - the stream ends with it, below
                data = error
            try:
                handed = asyncio.run_coroutine_threadsafe(chunks.put(data), loop)
            except RuntimeError:
                return  # the event loop is gone
            while not done.is_set():
                try:
                    handed.result(timeout=0.2)
                    break
                except concurrent.futures.TimeoutError:
                    continue
                except (concurrent.futures.CancelledError, RuntimeError):
                    return
            else:
                handed.cancel()
            if not isinstance(data, bytes) or not data:
                return

    threading.Thread(target=pump, name="rtlab-pipe-reader", daemon=True).start()
    stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if stopped is not None:
        # At once, also while a write waits for the decoder: the audio after this moment is
        # dropped, so the write does not wait for it to be played.
        stopped.add_done_callback(lambda waited: waited.cancelled() or processor.cut_input())
    try:
        try:
            while processor.state == "RUNNING":
                taken = asyncio.ensure_future(chunks.get())
                waiting = {taken} | ({stopped} if stopped else set())
                # A quiet pipe must not keep a stream that failed (or was stopped) waiting for it.
                while not taken.done() and not (stopped and stopped.done()) and processor.state == "RUNNING":
                    await asyncio.wait(waiting, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
                if not taken.done():
                    taken.cancel()
                    break
                data = taken.result()
                if isinstance(data, BaseException):
                    raise data
                if not data:
                    break
                await processor.process_audio(data)
        finally:
            done.set()
            if stopped is not None and stopped.done() and not stopped.cancelled():
                processor.cut_input()  # the input ends here, not where the pipe got to (before its callback's turn)
        # The pipe may have given everything long before it is played (pace_input holds
        # it to real time): a stop while it plays still ends the input there.
        await processor.finish()
    finally:
        if stopped is not None:
            stopped.cancel()


async def stream_file(
    path: str | Path,
    config: StreamConfig | str | None = None,
    *,
    clock: str = "wall",
    cost_model: Any = None,
    chunk_seconds: float = 0.1,
    on_event: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
    on_progress: Callable[[float], None] | None = None,
    stop: asyncio.Event | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Stream one file through a new AudioProcessor and return every event.

    ``config`` and ``settings`` are those of :class:`AudioProcessor` (a
    :class:`~rtlab.config.StreamConfig`, a backend name or ``"KEY=VALUE,..."``, StreamConfig
    fields on top).
    ``clock="wall"`` paces the file in real time; the virtual clocks (``"simulated"``,
    ``"modeled"`` with its ``cost_model``, ``"unaware"``) feed it as fast as passes take it.
    Setting ``stop`` ends the input where the feeding got to: the tail is committed and the
    summary follows.
    """
    check_chunk_seconds(chunk_seconds)

    def feed(processor: AudioProcessor) -> Awaitable[None]:
        return feed_file(processor, path, realtime=clock == "wall", chunk_seconds=chunk_seconds,
                         on_progress=on_progress, stop=stop)  # fmt: skip

    return await _stream(feed, AudioProcessor(config, clock=clock, cost_model=cost_model, **settings), on_event)


async def stream_reader(
    read: Callable[[int], bytes],
    config: StreamConfig | str | None = None,
    *,
    clock: str = "wall",
    cost_model: Any = None,
    stop: asyncio.Event | None = None,
    on_event: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Stream what ``read`` gives (a pipe; see :func:`feed_reader`) through a new
    AudioProcessor and return every event, as :func:`stream_file` does for a file. On the
    wall clock the audio is held to real time (``pace_input``): a microphone piped in is
    never held, a file piped in plays as if live. Setting ``stop`` ends the input: the tail
    is committed and the summary follows."""
    def feed(processor: AudioProcessor) -> Awaitable[None]:
        return feed_reader(processor, read, stop=stop)

    processor = AudioProcessor(config, clock=clock, cost_model=cost_model, pace_input=True, **settings)
    return await _stream(feed, processor, on_event)


async def _stream(
    feed: Callable[[AudioProcessor], Awaitable[None]],
    processor: AudioProcessor,
    on_event: Callable[[dict[str, Any]], Awaitable[None] | None] | None,
) -> list[dict[str, Any]]:
    events_out: list[dict[str, Any]] = []
    try:
        events = await processor.create_tasks()
        feeder = asyncio.ensure_future(feed(processor))
        # A feeder that breaks (unreadable input, cancelled source) must end the stream too.
        feeder.add_done_callback(
            lambda task: task.cancelled()
            or task.exception() is None
            or asyncio.ensure_future(processor.fail(task.exception()))
        )
        async for event in events:
            events_out.append(event)
            if on_event is not None:
                result = on_event(event)
                if asyncio.iscoroutine(result):
                    await result
        with contextlib.suppress(Exception):
            await feeder
    finally:
        await processor.cleanup()
    return events_out
