"""An async client for ``rtlab serve``: stream a file in real time (or faster), collect events.

>>> result = await stream_file("ws://127.0.0.1:8765/ws/transcribe", "talk.webm", backend="test")
>>> result.text, result.start_latency, result.commit_latencies()

:class:`TranscriptionClient` is the lower level used by tests: send any frame, wait for a
message type, drop the connection abruptly. Every received message is kept with its
arrival time; results give it in seconds since the stream started.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

#: Bytes per second of ``format="pcm_s16le"`` audio (16 kHz, mono, 16 bit).
PCM_BYTES_PER_SECOND = 32_000


class ConnectionClosed(Exception):
    """The server closed the connection before the awaited message arrived."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"the server closed the connection (code {code}, reason {reason!r})")
        self.code = code
        self.reason = reason


class TranscriptionClient:
    """One WebSocket connection to the server, with every received message recorded."""

    def __init__(self, connection: WebSocketClientConnection) -> None:
        self.connection = connection
        #: ``(time.monotonic(), message)`` in arrival order.
        self.received: list[tuple[float, dict[str, Any]]] = []
        #: ``time.monotonic()`` when the stream started: the first audio byte was sent, or
        #: earlier when a paced sender says so (see :func:`stream_file`). None before.
        self.first_audio_at: float | None = None
        self._cursor = 0
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(
        cls, url: str, *, token: str | None = None, headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> TranscriptionClient:  # fmt: skip
        """Open ``url`` (``ws://host:port/ws/transcribe``), optionally with a bearer token."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        request = HTTPRequest(url, headers=all_headers, connect_timeout=timeout, request_timeout=timeout)
        connection = await websocket_connect(request, max_message_size=64 << 20)
        connection.protocol.set_nodelay(True)  # audio chunks go out at once
        return cls(connection)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message received so far."""
        return [message for _, message in self.received]

    @property
    def closed(self) -> bool:
        """Whether the connection has closed (by either side)."""
        return self._reader.done()

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self.connection.close_reason

    # -- sending -------------------------------------------------------------------------

    async def send_json(self, message: Any) -> None:
        """Send any JSON value as a text frame."""
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        """Send a raw text frame (tests send invalid JSON this way)."""
        await self.connection.write_message(text)

    async def start(self, **fields: Any) -> None:
        """``start_transcription`` with optional backend, model, language, policy, format."""
        await self.send_json({"type": "start_transcription", **fields})

    async def stop(self) -> None:
        """``stop_transcription``: the server flushes and answers ``transcription_stopped``."""
        await self.send_json({"type": "stop_transcription"})

    async def ping(self) -> None:
        await self.send_json({"type": "ping"})

    async def send_audio(self, data: bytes) -> None:
        """Send a binary frame of audio."""
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        await self.connection.write_message(data, binary=True)

    # -- receiving -----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while (frame := await self.connection.read_message()) is not None:
                received = (time.monotonic(), json.loads(frame))
                async with self._changed:
                    self.received.append(received)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, *types: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next message (after those already waited for) whose type is in ``types``.

        Raises :class:`ConnectionClosed` if the connection closes first and
        ``asyncio.TimeoutError`` after ``timeout`` seconds.
        """

        def found() -> bool:
            while self._cursor < len(self.received):
                if self.received[self._cursor][1].get("type") in types:
                    return True
                self._cursor += 1
            return self.closed

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(found), timeout)
            except asyncio.TimeoutError:
                raise asyncio.TimeoutError(
                    f"no {'/'.join(types)} within {timeout} s; received {self.messages}"
                ) from None
            if self._cursor >= len(self.received):
                raise ConnectionClosed(self.close_code, self.close_reason)
            message = self.received[self._cursor][1]
            self._cursor += 1
            return message

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until the server has closed the connection."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with a close frame and wait (a little) for the server's answer."""
        self.connection.close(code, reason)
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 5)
        except asyncio.TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, like a crashed browser."""
        stream = self.connection.stream
        if stream is not None:
            stream.close()
        self._reader.cancel()


@dataclass
class ClientResult:
    """What one streamed file produced, as the client saw it.

    ``received`` holds ``(received_at, message)``: seconds since the stream started
    (negative for messages before it).
    """

    received: list[tuple[float, dict[str, Any]]]
    audio_seconds: float
    start_latency: float | None
    error: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    text: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [message for _, message in self.received]

    def committed_words(self) -> list[dict[str, Any]]:
        """Committed words in order, each with ``received_at`` (client clock, seconds)."""
        return [
            {**word, "received_at": at}
            for at, message in self.received
            if message.get("type") == "transcript"
            for word in message["committed"]
        ]

    def commit_latencies(self, reference_words: Sequence[Mapping[str, Any]] | None = None) -> list[float]:
        """Per committed word: arrival at the client minus the word's end in the audio.

        With ``reference_words`` (true times), words are aligned by sequence as in
        :func:`rtlab.eval.metrics.commit_latencies`; without, each word's own end time is used.
        """
        words = self.committed_words()
        if reference_words is None:
            return [w["received_at"] - w["end"] for w in words]
        from ..eval.metrics import commit_latencies

        commits = [{"type": "commit", "words": [w], "emitted_at": w["received_at"]} for w in words]
        return commit_latencies(commits, reference_words)

    def delivery_delays(self) -> list[float]:
        """Per transcript message: arrival at the client minus the server's ``emitted_at``."""
        return [
            at - message["emitted_at"]
            for at, message in self.received
            if message.get("type") == "transcript"
        ]


def chunk_size(total_bytes: int, seconds_per_chunk: float, duration: float | None) -> int:
    """Bytes in a piece of about ``seconds_per_chunk`` seconds of ``duration`` seconds of
    audio held in ``total_bytes`` (16 KiB when the duration is unknown)."""
    return max(1, int(total_bytes * seconds_per_chunk / duration)) if duration else 16_384


def chunks(data: bytes, seconds_per_chunk: float, duration: float | None) -> list[bytes]:
    """``data`` cut into pieces of about ``seconds_per_chunk`` seconds of audio each
    (16 KiB pieces when the duration is unknown)."""
    size = chunk_size(len(data), seconds_per_chunk, duration)
    return [data[i : i + size] for i in range(0, len(data), size)]


async def stream_file(
    url: str,
    audio: str | Path | bytes,
    *,
    speed: float = 1.0,
    chunk_seconds: float = 0.25,
    format: str = "auto",
    token: str | None = None,
    duration: float | None = None,
    timeout: float = 60.0,
    **start_fields: Any,
) -> ClientResult:
    """Connect, start, stream ``audio`` paced at ``speed`` x real time (0: no pacing), stop.

    Paced like a microphone (and like :func:`rtlab.core.feeding.feed_bytes`): a chunk is sent
    once its audio has been played, so the stream starts one chunk before the first send
    and latencies measured from that start are not flattered by the chunk length.
    Pacing encoded bytes needs ``duration``: measured for a path, required for bytes
    (raw PCM knows its own). ``start_fields`` go into ``start_transcription`` (backend,
    model, language, policy). Returns when ``transcription_stopped`` or
    ``transcription_failed`` arrives; a closed connection or a timeout becomes ``error``
    in the result instead of an exception.
    """
    source: BinaryIO
    if isinstance(audio, bytes):
        source = io.BytesIO(audio)
    else:
        # Read a chunk at a time as it is sent, not all at once: a two-hour WAV is over a
        # gigabyte. Opened first, so that a missing file fails before FFmpeg or a connection.
        source = Path(audio).open("rb")
    with source:
        total = source.seek(0, io.SEEK_END)
        source.seek(0)
        if duration is None and format == "pcm_s16le":  # raw PCM knows its own, in a file too
            duration = total / PCM_BYTES_PER_SECOND
        elif not isinstance(audio, bytes) and duration is None:
            from ..core.feeding import measure_duration

            duration = await measure_duration(audio)
        if speed > 0 and duration is None:
            raise ValueError("streaming encoded bytes in real time needs their duration")
        size = chunk_size(total, chunk_seconds, duration)
        connecting_at = time.monotonic()
        client = await TranscriptionClient.connect(url, token=token)
        started_at = time.monotonic()  # start latency: start_transcription to transcription_started
        start_latency = None
        error: dict[str, Any] | None = None
        summary = None
        text = ""
        try:
            await client.start(format=format, **start_fields)
            reply = await client.wait_for("transcription_started", "transcription_failed", timeout=timeout)
            if reply["type"] == "transcription_failed":
                error = reply
            else:
                start_latency = time.monotonic() - started_at
                origin = client.first_audio_at = time.monotonic()  # the stream starts now
                index = 0
                while chunk := source.read(size):
                    index += 1
                    if speed > 0:
                        delay = origin + index * chunk_seconds / speed - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    if client.closed:
                        break
                    await client.send_audio(chunk)
                await client.stop()
                final = await client.wait_for("transcription_stopped", "transcription_failed", timeout=timeout)
                if final["type"] == "transcription_failed":
                    error = final
                else:
                    summary, text = final["summary"], final["text"]
        except (ConnectionClosed, asyncio.TimeoutError, OSError) as failure:
            error = {"type": "client_error", "error": type(failure).__name__, "message": str(failure)}
        finally:
            await client.close()
    origin = client.first_audio_at or started_at
    return ClientResult(
        received=[(at - origin, message) for at, message in client.received],
        audio_seconds=duration,
        start_latency=start_latency,
        error=error,
        summary=summary,
        text=text,
        timings={"connect_seconds": started_at - connecting_at, "wall_seconds": time.monotonic() - connecting_at},
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m rtlab.server.client FILE``: stream a file and print the messages as JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m rtlab.server.client", description=main.__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--url", default="ws://127.0.0.1:8765/ws/transcribe")
    parser.add_argument("--speed", type=float, default=1.0, help="x real time; 0 = as fast as possible")
    parser.add_argument("--backend")
    parser.add_argument("--model")
    parser.add_argument("--language")
    parser.add_argument("--format", default="auto", choices=["auto", "pcm_s16le"])
    parser.add_argument("--token")
    parser.add_argument("--duration", type=float, help="seconds of audio (measured when omitted)")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"no such audio file: {args.file}")
    if args.speed < 0:
        parser.error(f"--speed must be >= 0 (0: as fast as possible), not {args.speed:g}")
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration must be a number of seconds > 0, not {args.duration:g}")
    fields = {k: v for k in ("backend", "model", "language") if (v := getattr(args, k)) is not None}
    try:
        result = asyncio.run(
            stream_file(args.url, args.file, speed=args.speed, format=args.format, token=args.token,
                        duration=args.duration, **fields)
        )
    except (OSError, asyncio.TimeoutError) as error:  # refused, unreachable, name not found
        print(f"error: could not reach {args.url}: {error.strerror or error or type(error).__name__}; is 'rtlab serve' running there?",
              file=sys.stderr)  # fmt: skip
        return 2
    for at, message in result.received:
        print(json.dumps({"received_at": round(at, 3), **message}))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
