"""The work behind one WebSocket connection.

A :class:`TranscriptionSession` lives as long as its connection. Each
``start_transcription`` begins an :class:`Utterance`: one new AudioProcessor, hence one
FFmpeg process, until ``stop_transcription`` flushes it, the decoder fails, or the
connection goes. The WebSocket handler only forwards frames here and reports the close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Awaitable, Protocol

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError

from ..core.instances import get_backend
from ..core.events import EventQueue
from ..core.state import State
from ..errors import ProcessorNotRunning, ProcessorStopped, RtlabError
from ..core.processor import AudioProcessor
from ..core.scheduler import pass_deadline
from . import protocol

if TYPE_CHECKING:
    from .app import TranscriptionServer

log = logging.getLogger("rtlab.server")

#: Utterances a connection may have at once: one stopping and one queued behind it.
MAX_UTTERANCES = 2


class Connection(Protocol):
    """What a session needs from its WebSocket (a Tornado handler provides it)."""

    def write_message(self, message: str, binary: bool = False) -> Awaitable[None]: ...

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Utterance:
    """One start … stop: one AudioProcessor (one FFmpeg process), and its event pump.

    ``state``: IDLE (the model loads; audio is held) → RUNNING (audio goes to the
    processor; once ``stop_requested`` is set, it flushes) → STOPPED. Whatever happens,
    ``run`` ends with the processor cleaned up.
    """

    def __init__(self, session: TranscriptionSession, processor: AudioProcessor) -> None:
        self.session = session
        self.processor = processor
        self.state = State.IDLE
        self.pending: collections.deque[bytes] = collections.deque()
        self.pending_bytes = 0
        self.stop_requested = asyncio.Event()
        self.task: asyncio.Task | None = None
        self._reported = False  # transcription_stopped or transcription_failed was sent
        self._failure: tuple[str, str] | None = None
        self._last_partial = ""
        self._last_partial_joins = False
        self.model: str | None = processor.config.model
        self.audio_bytes = 0  # received for this utterance, held or fed

    def hold_audio(self, data: bytes) -> bool:
        """Keep audio that arrives while the model loads; False when over the limit."""
        if self.pending_bytes + len(data) > self.session.config.max_pending_audio_bytes:
            return False
        self.pending.append(data)
        self.pending_bytes += len(data)
        self.audio_bytes += len(data)
        return True

    def abort(self, code: str, message: str) -> None:
        """End now, reporting ``transcription_failed`` with ``code``."""
        if self.task is not None and not self.task.done():
            self._failure = (code, message)
            self.task.cancel()

    async def run(self, previous: Utterance | None, requested_at: float) -> None:
        """Start the processor, feed it, flush it on stop; always clean up."""
        processor, session = self.processor, self.session
        pump: asyncio.Task | None = None
        finishing: asyncio.Future | None = None
        started = cancelled = False
        # Every pass of this utterance (the processor's tasks inherit this context) is
        # abandoned after the deadline: a hung backend call cannot hold the session.
        pass_deadline.set(session.config.pass_deadline)
        try:
            if previous is not None and previous.task is not None:
                await asyncio.wait([previous.task])  # its transcription_stopped goes first
            backend_name = processor.config.backend
            backend = get_backend(processor.config)
            session.server.track_backend(backend)
            self.model = processor.config.model or backend.info().get("model")
            await session.send(protocol.model_loading_started(backend_name, self.model, backend.loaded))
            try:
                events = await processor.create_tasks()
            except Exception as error:
                session.server.note_model_load(processor.config, backend, error)
                raise
            session.server.note_model_load(processor.config, backend, None)
            pump = asyncio.create_task(self._pump(events), name="rtlab-session-pump")
            await session.send(protocol.transcription_started(backend_name, self.model))
            session.metrics.start_latency.observe(time.monotonic() - requested_at)
            session.metrics.transcriptions.inc()
            started = True
            while self.pending:
                data = self.pending.popleft()
                self.pending_bytes -= len(data)
                await processor.process_audio(data)
            self.state = State.RUNNING
            stop_wait = asyncio.ensure_future(self.stop_requested.wait())
            try:
                await asyncio.wait([stop_wait, pump], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
            if self.stop_requested.is_set() and self.audio_bytes == 0:
                # Nothing to decode: an empty utterance, not a decoding failure.
                language = getattr(processor.policy, "language", None)
                await self._report(protocol.transcription_stopped(_empty_summary(language)))
            else:
                # Shielded: cancelling the flush mid-way (a disconnect, a shutdown) would
                # cancel asyncio's own wait for FFmpeg's stdin to close, which then fails
                # with InvalidStateError in a loop callback. The cleanup below stops the
                # decoder, and the flush then ends on its own.
                finishing = asyncio.ensure_future(processor.finish())
                await asyncio.shield(finishing)
        except asyncio.CancelledError:
            cancelled = True
            if self._failure is not None:
                await self._report(protocol.transcription_failed(*self._failure))
            raise
        except ProcessorStopped:
            pass  # the decoder failed while held audio was fed; the pump reports it
        except Exception as error:  # noqa: BLE001 - any failure must reach the client
            if not isinstance(error, RtlabError):
                log.exception("internal_error in session %s: the transcription failed", session.id)
            await self._report(protocol.transcription_failed(*_describe(error)))
        finally:
            self.state = State.STOPPED
            await processor.cleanup()
            if finishing is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await finishing
            if pump is not None:
                if cancelled:
                    pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump  # the stream is closed: the pump sends what is left, then ends
            if started:
                session.metrics.transcriptions.dec()
                if not cancelled and not self._reported:
                    log.error("internal_error in session %s: the transcription ended without a summary", session.id)
                    await self._report(
                        protocol.transcription_failed(
                            "internal_error", "the transcription ended without a summary"
                        )
                    )
            session.utterance_done(self)

    async def _report(self, message: dict[str, Any]) -> None:
        """Send the utterance's final message (stopped or failed), once."""
        if not self._reported:
            self._reported = True
            await self.session.send(message)

    async def _pump(self, events) -> None:
        """Turn processor events into protocol messages, in order."""
        metrics = self.session.metrics
        async for event in events:
            kind = event["type"]
            if kind == "partial":
                self._last_partial = event["text"]
                self._last_partial_joins = bool(event.get("joins"))
                await self.session.send(
                    protocol.transcript(
                        [], event["text"], event["emitted_at"], self.processor.lag, self._last_partial_joins
                    )
                )
            elif kind == "commit":
                for word in event["words"]:
                    metrics.commit_latency.observe(event["emitted_at"] - word["end"])
                # A partial event usually follows at once and is merged into this message.
                await self.session.send(
                    protocol.transcript(
                        event["words"], self._last_partial, event["emitted_at"], self.processor.lag,
                        self._last_partial_joins,
                    )
                )
            elif kind == "summary":
                if event.get("rtf") is not None:
                    metrics.rtf.observe(event["rtf"])
                await self._report(protocol.transcription_stopped(event))
            elif kind == "error":
                self._log_failure(event["error"], event["message"])
                await self._report(protocol.transcription_failed(event["error"], event["message"]))

    def _log_failure(self, code: str, message: str) -> None:
        """Tell the operator what a client is told: a bug with its traceback."""
        if code == "internal_error":
            error = self.processor.error
            log.error(
                "internal_error in session %s: %s", self.session.id, message,
                exc_info=(type(error), error, error.__traceback__) if isinstance(error, BaseException) else None,
            )  # fmt: skip
        elif code == "backend_timeout":
            log.warning("session %s: %s", self.session.id, message)


def _describe(error: Exception) -> tuple[str, str]:
    if isinstance(error, RtlabError):
        return error.code, str(error)
    return "internal_error", f"{type(error).__name__}: {error}"


def _empty_summary(language: str | None) -> dict[str, Any]:
    """The summary of an utterance that received no audio: a processor's summary fields,
    ``language`` the one asked for or the backend's (None when neither says)."""
    return {
        "type": "summary", "text": "", "audio_seconds": 0.0, "compute_seconds": 0.0,
        "measured_compute_seconds": 0.0, "rtf": None, "language": language, "emitted_at": 0.0,
    }  # fmt: skip


class ControlRate:
    """A token bucket: ``rate`` frames per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        """Whether one more frame may pass now (it takes a token)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class TranscriptionSession:
    """Everything one WebSocket connection does; see the module docstring."""

    _ids = 0

    def __init__(self, connection: Connection, server: TranscriptionServer) -> None:
        TranscriptionSession._ids += 1
        self.id = TranscriptionSession._ids
        self.connection = connection
        self.server = server
        self.config = server.config
        self.metrics = server.metrics
        self.outbox = EventQueue(
            self.config.max_queued_messages, stale=protocol.is_partial_transcript, merge=protocol.merge_transcripts
        )
        self.utterance: Utterance | None = None
        self.utterances: set[Utterance] = set()
        self.last_activity = time.monotonic()
        #: Since when the connection has had no transcription (None while it has one).
        self.unstarted_since: float | None = self.last_activity
        self.closed = False
        self._audio_refused = False
        self._close_with: tuple[int, str] | None = None
        self._ending = False
        self._dropped_reported = 0
        self._control_rate = ControlRate(self.config.max_control_rate, self.config.control_burst)
        self._refused_controls = 0
        self._watch_again = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="rtlab-session-writer")
        self._watchdog = asyncio.create_task(self._watch(), name="rtlab-session-watchdog")

    # -- frames from the client --------------------------------------------------------

    async def receive(self, frame: str | bytes) -> None:
        """Handle one client frame; never raises (a bug is logged and answered)."""
        if self._ending:
            return  # the server is closing this connection
        self.last_activity = time.monotonic()
        try:
            await self._receive(frame)
        except Exception:  # noqa: BLE001 - one bad frame must not drop the connection
            log.exception("internal_error in session %s: a client frame could not be handled", self.id)
            await self.send(
                protocol.error(
                    "internal_error",
                    "the server could not handle this frame (a bug, logged on the server); "
                    "the connection stays open",
                )
            )

    async def _receive(self, frame: str | bytes) -> None:
        # The limit is in bytes: a text frame's characters take up to four each.
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        too_large = size > self.config.max_message_bytes
        if (too_large or isinstance(frame, str)) and not await self._admit_control():
            return
        if too_large:
            await self.send(
                protocol.error(
                    "message_too_large",
                    f"frames are limited to {self.config.max_message_bytes} bytes and this one "
                    f"had {size}; it was ignored. Send audio in chunks of 100-250 ms.",
                )
            )
        elif isinstance(frame, bytes):
            await self._receive_audio(frame)
        else:
            await self._receive_text(frame)

    async def _admit_control(self) -> bool:
        """Whether a text (or refused) frame is within the connection's rate; past it the
        client is told once, and closed after another burst's worth."""
        if self._control_rate.take():
            self._refused_controls = 0
            return True
        self._refused_controls += 1
        rate, burst = self.config.max_control_rate, self.config.control_burst
        if self._refused_controls == 1:
            await self.send(
                protocol.error(
                    "rate_limited",
                    f"more than {rate:g} messages per second (at most {burst} at once); this one "
                    "and any more sent this fast are ignored, and the connection is closed if "
                    "they go on",
                )
            )
        elif self._refused_controls > burst:
            await self.end(
                1008,
                "rate limited",
                protocol.transcription_failed(
                    "rate_limited",
                    f"the connection kept sending more than {rate:g} messages per second and "
                    "was closed; reconnect and send control messages only when needed",
                ),
            )
        return False

    async def _receive_text(self, text: str) -> None:
        try:
            message = protocol.parse_client_message(text)
        except protocol.ProtocolError as error:
            await self.send(protocol.error(error.code, str(error)))
            return
        if message["type"] == protocol.PING:
            await self.send(protocol.pong())
        elif message["type"] == protocol.START:
            await self._start(message)
        else:
            await self._stop()

    async def _start(self, message: dict[str, Any]) -> None:
        requested_at = time.monotonic()
        current = self.utterance
        going_on = current is not None and current.state is not State.STOPPED and not current.stop_requested.is_set()
        if going_on and current.state is State.RUNNING:
            await self.send(protocol.transcription_started(current.processor.config.backend, current.model))
            return
        await self.send(protocol.transcription_starting())
        if going_on:
            return  # still IDLE: transcription_started follows once the model is loaded
        if sum(1 for u in self.utterances if u.state is not State.STOPPED) >= MAX_UTTERANCES:
            await self.send(
                protocol.transcription_failed(
                    "queue_full",
                    "one utterance is still stopping and another is queued behind it; this "
                    "start was refused. Wait for transcription_stopped before starting again.",
                )
            )
            return
        try:
            request = protocol.StartRequest.from_message(message)
            stream = request.stream_config(self.config.stream, self.server.client_choices)
            processor = AudioProcessor(stream, clock="wall", max_events=self.config.max_events)
        except RtlabError as error:
            message = protocol.start_refusal(error, self.server.client_choices)
            await self.send(protocol.transcription_failed(error.code, message))
            return
        # A previous utterance that is still stopping finishes (and reports) first.
        previous = current if current is not None and current.state is not State.STOPPED else None
        utterance = Utterance(self, processor)
        self.utterance = utterance
        self.utterances.add(utterance)
        self.unstarted_since = None
        self._audio_refused = False
        utterance.task = asyncio.create_task(
            utterance.run(previous, requested_at), name=f"rtlab-utterance-{self.id}"
        )

    async def _stop(self) -> None:
        current = self.utterance
        if current is None or current.state is State.STOPPED:
            await self.send(
                protocol.error(
                    "not_started",
                    "stop_transcription, but no transcription is running; send start_transcription first",
                )
            )
            return
        current.stop_requested.set()  # an IDLE utterance stops as soon as it has started

    async def _receive_audio(self, data: bytes) -> None:
        current = self.utterance
        if current is not None and current.state is State.IDLE and not current.stop_requested.is_set():
            if not current.hold_audio(data):
                current.abort(
                    "audio_overflow",
                    f"more than {self.config.max_pending_audio_bytes} bytes of audio arrived while "
                    "the model was loading; wait for transcription_started before streaming",
                )
            return
        if current is not None and current.state is State.RUNNING and not current.stop_requested.is_set():
            try:
                current.audio_bytes += len(data)
                await current.processor.process_audio(data)
                return
            except (ProcessorStopped, ProcessorNotRunning):
                pass  # it failed a moment ago; transcription_failed is on its way
        if not self._audio_refused:
            self._audio_refused = True  # once per idle period, not once per chunk
            await self.send(
                protocol.error(
                    "not_started",
                    "audio arrived while no transcription is running and was ignored; "
                    "send start_transcription first",
                )
            )

    # -- messages to the client --------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """Queue ``message`` for the client (see :class:`EventQueue` for the bounds)."""
        self._count_error(message)
        await self.outbox.put(message)

    def _count_error(self, message: dict[str, Any]) -> None:
        if message["type"] in ("transcription_failed", "error"):
            self.metrics.errors.labels(error=message["error"]).inc()

    async def _write_loop(self) -> None:
        # Awaiting each write is the backpressure: a client that does not read fills the
        # outbox, which stops the pump, which stops the processor, which stops reading audio.
        while (message := await self.outbox.get()) is not None:
            try:
                await self.connection.write_message(json.dumps(message))
            except (WebSocketClosedError, StreamClosedError):
                return
            dropped = self.outbox.dropped_partials - self._dropped_reported
            if dropped:
                self.metrics.dropped_partials.inc(dropped)
                self._dropped_reported += dropped
        if self._close_with is not None:
            self.connection.close(*self._close_with)

    async def end(self, code: int, reason: str, message: dict[str, Any] | None = None) -> None:
        """Server-side close: send ``message`` (never waits), flush, then close with ``code``."""
        if message is not None:
            self._count_error(message)
        self._ending = True
        self._close_with = (code, reason)
        await self.outbox.close(message)

    async def _watch(self) -> None:
        """Close a connection that sends nothing for ``idle_timeout``, or that holds its
        slot without a transcription for ``start_timeout``."""
        config = self.config
        while True:
            now = time.monotonic()
            unstarted = self.unstarted_since
            start_left = math.inf if unstarted is None else unstarted + config.start_timeout - now
            idle_left = self.last_activity + config.idle_timeout - now
            if start_left <= 0:
                await self.end(
                    1000,
                    "start timeout",
                    protocol.transcription_failed(
                        "start_timeout",
                        f"no transcription for {config.start_timeout:g} s (since the connection "
                        "opened or the last utterance ended); the connection was closed to free "
                        "its slot. Connect when you are ready to send start_transcription.",
                    ),
                )
                return
            if idle_left <= 0:
                await self.end(
                    1000,
                    "idle timeout",
                    protocol.transcription_failed(
                        "idle_timeout",
                        f"no message from the client for {config.idle_timeout:g} s; the session "
                        "was closed. Reconnect to start again.",
                    ),
                )
                return
            self._watch_again.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._watch_again.wait(), min(start_left, idle_left))

    # -- the end -----------------------------------------------------------------------

    def utterance_done(self, utterance: Utterance) -> None:
        """Called by an utterance when it has cleaned up."""
        self.utterances.discard(utterance)
        if not self.utterances:
            self.unstarted_since = time.monotonic()
            self._watch_again.set()  # the start timeout runs again

    async def shutdown(self, grace: float) -> None:
        """Server shutdown: flush a running transcription (up to ``grace`` s), then close."""
        running = [u for u in self.utterances if u.task is not None]
        for utterance in running:
            utterance.stop_requested.set()
        if running:
            _, late = await asyncio.wait([u.task for u in running], timeout=grace)
            for utterance in running:
                if utterance.task in late:
                    utterance.abort(
                        "server_shutdown",
                        "the server is shutting down; the transcription could not be finished",
                    )
            await asyncio.wait([u.task for u in running])
            await self.end(1001, "server shutting down")
        else:
            await self.end(
                1001,
                "server shutting down",
                protocol.transcription_failed("server_shutdown", "the server is shutting down"),
            )

    async def close(self) -> None:
        """The connection is gone: stop every processor (and FFmpeg). Idempotent."""
        if self.closed:
            return
        self.closed = True
        await self.outbox.discard()
        self._watchdog.cancel()
        utterances = list(self.utterances)
        for utterance in utterances:
            if utterance.task is not None:
                utterance.task.cancel()
        for utterance in utterances:
            if utterance.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await utterance.task
            await utterance.processor.cleanup()
        self._writer.cancel()  # a write to a vanished client may never complete
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self.utterances.clear()
