"""The Tornado application: routes, admission, health, start-up and graceful shutdown."""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web

from ..backends import Backend, accepted_options, ensure_loaded
from ..config import StreamConfig
from ..core.instances import get_backend
from ..core.scheduler import Scheduler, existing_scheduler
from ..core.state import State
from ..registry import get_registry
from .config import ServerConfig
from .handlers import BackendsHandler, HealthHandler, MetricsHandler, StaticHandler, TranscribeSocket, log_request
from .metrics import ServerMetrics
from .processes import ffmpeg_children
from .protocol import formats
from .session import Connection, TranscriptionSession

log = logging.getLogger("rtlab.server")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: (error code, message, WebSocket close code) of a refused connection.
Refusal = tuple[str, str, int]

#: The largest HTTP request body read (no endpoint takes one).
MAX_BODY_BYTES = 64 * 1024


class TranscriptionServer:
    """What all connections of one application share: settings, metrics, the sessions."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        #: What clients may name (unknown names in the allow-lists fail here).
        self.client_choices = config.client_choices()
        self.metrics = ServerMetrics(
            count_ffmpeg=self.count_ffmpeg, count_stuck=self.stuck_passes, batch_totals=self.batch_totals
        )
        self.sessions: set[TranscriptionSession] = set()
        self.accepting = True
        self.started_at = time.monotonic()
        self.preload_task: asyncio.Future | None = None
        #: Why the default model cannot load (its last attempt failed), or None.
        self.default_model_error: str | None = None
        self._backends: dict[int, Backend] = {}
        self._closing: set[asyncio.Task] = set()

    # -- connections ---------------------------------------------------------------------

    def admit(self, request: tornado.httputil.HTTPServerRequest) -> Refusal | None:
        """Why a new connection is refused (shutdown, token, capacity), or None."""
        config = self.config
        if not self.accepting:
            refusal: Refusal = ("server_shutdown", "the server is shutting down", 1001)
        elif config.token and not hmac.compare_digest(
            (_presented_token(request) or "").encode(), config.token.encode()
        ):
            refusal = (
                "unauthorized",
                "missing or wrong token: connect with ?token=TOKEN or an "
                "'Authorization: Bearer TOKEN' header",
                1008,
            )
        elif len(self.sessions) >= config.max_connections:
            refusal = (
                "server_busy",
                f"the server already has {len(self.sessions)} sessions (its limit, "
                f"--max-connections {config.max_connections}); try again later",
                1013,
            )
        else:
            return None
        self.metrics.rejected.labels(reason=refusal[0]).inc()
        self.metrics.errors.labels(error=refusal[0]).inc()
        return refusal

    def open_session(self, connection: Connection) -> TranscriptionSession:
        """A session for an admitted connection."""
        session = TranscriptionSession(connection, self)
        self.sessions.add(session)
        self.metrics.sessions.set(len(self.sessions))
        return session

    def close_session(self, session: TranscriptionSession) -> None:
        """The connection closed: release its session in the background."""
        self.sessions.discard(session)
        self.metrics.sessions.set(len(self.sessions))
        task = asyncio.ensure_future(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def wait_closed(self) -> None:
        """Wait until every session closed so far has released its processors."""
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def track_backend(self, backend: Backend) -> None:
        """Remember a backend a session uses, for the health report."""
        self._backends[id(backend)] = backend

    def note_model_load(self, stream: StreamConfig, backend: Backend, error: Exception | None) -> None:
        """A processor of ``stream`` started (``error`` None) or failed to. Only a failure to
        load the default model, and its later success, change the health report."""
        if stream.model_key != self.config.stream.model_key:
            return
        if error is None:
            if self.default_model_error is not None:
                log.info("the default model loads again: %s", backend.info())
            self.default_model_error = None
        elif not backend.loaded:  # the load failed, not the decoder that starts after it
            self.default_model_error = f"the default model cannot load: {type(error).__name__}: {error}"
            log.error("%s", self.default_model_error)

    # -- reports -------------------------------------------------------------------------

    def count_ffmpeg(self) -> int:
        """FFmpeg children of this process right now (0 where it cannot be counted)."""
        return len(ffmpeg_children() or [])

    def stuck_passes(self) -> int:
        """Passes of this server's backends abandoned after the pass deadline whose backend
        call has not returned (each holds a thread and a model replica)."""
        return sum(scheduler.abandoned for scheduler in self._schedulers())

    def batch_totals(self) -> tuple[int, int]:
        """Model calls of this server's batching backends so far, and the passes they ran."""
        stats = [s.batcher.stats for s in self._schedulers() if s.batcher is not None]
        return sum(s.batches for s in stats), sum(s.passes for s in stats)

    def _schedulers(self) -> list[Scheduler]:
        """The schedulers of this server's backends that sessions have made. A report makes
        none (:func:`~rtlab.core.scheduler.existing_scheduler`): it may run while a model
        loads."""
        found = (existing_scheduler(backend) for backend in list(self._backends.values()))
        return [scheduler for scheduler in found if scheduler is not None]

    def problems(self, stuck: int) -> list[str]:
        """What keeps the server from serving as configured, with ``stuck`` passes (see
        :meth:`stuck_passes`); empty when it is healthy."""
        found = []
        if self.default_model_error is not None:
            found.append(self.default_model_error)
        if stuck:
            found.append(
                f"{stuck} backend call(s) still running after the {self.config.pass_deadline:g} s "
                "pass deadline; their threads and model replicas are held until they return"
            )
        return found

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` document."""
        children = ffmpeg_children()
        stuck = self.stuck_passes()  # once: the problems and the count describe one moment
        problems = self.problems(stuck)
        return {
            "status": "shutting_down" if not self.accepting else "degraded" if problems else "ok",
            "problems": problems,
            "stuck_passes": stuck,
            "sessions": len(self.sessions),
            "transcribing": sum(
                1 for s in self.sessions for u in s.utterances if u.state is State.RUNNING
            ),
            "max_connections": self.config.max_connections,
            "ffmpeg_processes": None if children is None else len(children),
            "loaded_models": [b.info() for b in self._backends.values() if b.loaded],
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
        }

    def backends_info(self) -> dict[str, Any]:
        """The ``/api/backends`` document: what the plugin registry offers, and which
        policies each backend can run (a policy's ``requires`` against a backend's
        ``capabilities``)."""
        from ..policies import missing_capabilities

        registry = get_registry()

        def describe(kind: str, name: str) -> dict[str, Any]:
            entry = registry.entries[kind][name]
            described = {
                "name": name,
                "description": getattr(entry.cls, "description", ""),
                "plugin": entry.plugin,
                "options": {k: _jsonable(v) for k, v in accepted_options(entry.cls).items()},
            }
            if kind == "backend":  # where it can compute here; None when it does not say
                described["devices"] = entry.cls.devices()
                described["capabilities"] = list(getattr(entry.cls, "capabilities", ()))
                described["policies"] = [
                    policy for policy, registered in sorted(registry.entries["policy"].items())
                    if not missing_capabilities(registered.cls, entry.cls)
                ]  # fmt: skip
            if kind == "policy":
                described["requires"] = list(getattr(entry.cls, "requires", ()))
            return described

        stream = self.config.stream
        return {
            "default": {
                "backend": stream.backend,
                "model": stream.model,
                "backend_options": {k: _jsonable(v) for k, v in stream.backend_options.items()},
                "policy": stream.policy,
                "policy_options": {k: _jsonable(v) for k, v in stream.policy_options.items()},
                "format": "auto",
                # The loaded default model's languages (Backend.languages); None before it
                # has loaded, or when the backend does not say.
                "languages": self._default_languages(),
            },
            "backends": [describe("backend", n) for n in registry.names("backend")],
            "policies": [describe("policy", n) for n in registry.names("policy")],
            "decoders": [describe("decoder", n) for n in registry.names("decoder")],
            "formats": formats(),
        }

    def _default_languages(self) -> list[str] | None:
        try:
            backend = get_backend(self.config.stream)
        except Exception:  # noqa: BLE001 - an unbuildable default is reported by /healthz and sessions
            return None
        return backend.languages() if backend.loaded else None

    # -- start-up and shutdown -----------------------------------------------------------

    async def preload(self) -> None:
        """Load the default backend's model so the first session starts warm."""
        backend = None
        try:
            backend = get_backend(self.config.stream)
            self.track_backend(backend)
            started = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(None, ensure_loaded, backend)
            log.info("loaded %s in %.1f s", backend.info(), time.perf_counter() - started)
            self.note_model_load(self.config.stream, backend, None)
        except Exception as error:  # noqa: BLE001 - sessions report it again, clearly
            if backend is None or not backend.loaded:
                self.default_model_error = f"the default model cannot load: {type(error).__name__}: {error}"
            log.error("could not preload backend %r: %s", self.config.stream.backend, error)

    async def shutdown(self) -> None:
        """Refuse new sessions, let running ones flush, tell everyone, close, clean up."""
        self.accepting = False
        grace = self.config.shutdown_grace
        sessions = list(self.sessions)
        if sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.shutdown(grace)) for s in sessions], timeout=grace + 2
            )
            # Clients have a moment to answer the close frame; then the sessions go anyway.
            deadline = time.monotonic() + 2
            while self.sessions & set(sessions) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for session in list(self.sessions):
            self.close_session(session)
        await self.wait_closed()


def _presented_token(request: tornado.httputil.HTTPServerRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    values = request.query_arguments.get("token")
    return values[0].decode(errors="replace") if values else None


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else repr(value)


def make_app(server: TranscriptionServer) -> tornado.web.Application:
    """The Tornado application for ``server``: demo page, WebSocket, JSON, metrics.

    The access log names the path only: a query string may carry the token.
    """
    injected = {"server": server}
    static = {"server": server, "path": str(STATIC_DIR)}
    return tornado.web.Application(
        [
            (r"/ws/transcribe", TranscribeSocket, injected),
            (r"/api/backends", BackendsHandler, injected),
            (r"/healthz", HealthHandler, injected),
            (r"/metrics", MetricsHandler, injected),
            (r"/()", StaticHandler, {**static, "default_filename": "index.html"}),
            (r"/static/(.*)", StaticHandler, static),
        ],
        log_function=log_request,
    )


@dataclass
class RunningServer:
    """A server listening in the current event loop (tests, notebooks, ``rtlab serve``)."""

    server: TranscriptionServer
    http: tornado.httpserver.HTTPServer
    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The transcription WebSocket, ``ws://host:port/ws/transcribe``."""
        return f"ws://{self.host}:{self.port}/ws/transcribe"

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, flush and tell clients, leave no FFmpeg."""
        self.http.stop()
        await self.server.shutdown()
        await self.http.close_all_connections()


async def start_server(config: ServerConfig | None = None) -> RunningServer:
    """Listen on ``config.host:config.port`` (port 0 picks a free one) in this event loop."""
    config = config or ServerConfig()
    server = TranscriptionServer(config)
    sockets = tornado.netutil.bind_sockets(config.port, config.host)
    # Unfinished requests (slowloris) are closed after http_timeout, not Tornado's hour;
    # no endpoint takes a body, so a large one is refused.
    http = tornado.httpserver.HTTPServer(
        make_app(server),
        idle_connection_timeout=config.http_timeout,
        body_timeout=config.http_timeout,
        max_body_size=MAX_BODY_BYTES,
    )
    http.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    if config.preload:
        server.preload_task = asyncio.ensure_future(server.preload())
    return RunningServer(server, http, config.host, port)


async def serve(config: ServerConfig, *, announce=print, on_signal=None) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully.

    ``on_signal()``, if given, is called as soon as the signal arrives (``rtlab serve``
    starts its exit deadline there)."""
    running = await start_server(config)
    announce(f"rtlab server on {running.url}/ (WebSocket {running.ws_url})")
    if config.open_to_the_network:
        announce(f"warning: listening on {config.host} without a token: anyone who reaches port {running.port} can "
                 f"stream audio to this machine's model; set --token (or RTLAB_TOKEN), or bind 127.0.0.1")  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_now() -> None:
        if not stop.is_set() and on_signal is not None:
            on_signal()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_now)
    try:
        await stop.wait()
        log.info("shutting down: %d sessions", len(running.server.sessions))
        await running.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
