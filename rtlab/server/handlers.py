"""Tornado handlers: thin. The WebSocket handler forwards frames to its session; the HTTP
handlers ask the :class:`~rtlab.server.app.TranscriptionServer` for JSON or metrics text.

Every handler checks the request's ``Host`` (DNS rebinding) and logs paths without their
query string (which may carry the token).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import tornado.web
import tornado.websocket
from prometheus_client import CONTENT_TYPE_LATEST
from tornado.log import access_log, app_log, gen_log

from . import protocol
from .frames import StrictWebSocketProtocol

if TYPE_CHECKING:
    from .app import TranscriptionServer
    from .session import TranscriptionSession


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The access log line of a finished request: status, method, path (never the query
    string: ``?token=`` is how browsers present the token), client, duration."""
    status = handler.get_status()
    write = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
    request = handler.request
    write("%d %s %s (%s) %.2fms", status, request.method, request.path, request.remote_ip,
          1000.0 * request.request_time())  # fmt: skip


class _Guarded(tornado.web.RequestHandler):
    """Host check before anything else; logs that name the path, not the query string."""

    server: TranscriptionServer

    def prepare(self) -> None:
        host = self.request.host_name
        if not self.server.config.host_allowed(host):
            raise tornado.web.HTTPError(
                403, "Host %r is not allowed (DNS rebinding?); the operator can add it with --allowed-host",
                host, reason="Host not allowed",
            )  # fmt: skip

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ, value, tb) -> None:  # noqa: ANN001 - Tornado's signature
        if isinstance(value, tornado.web.HTTPError):
            if value.log_message:
                gen_log.warning("%d %s: " + value.log_message, value.status_code, self._request_summary(), *value.args)
        else:  # Tornado's own would print the request, query string included
            app_log.error("Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))


class TranscribeSocket(_Guarded, tornado.websocket.WebSocketHandler):
    """``WS /ws/transcribe``: admission on open, frames to the session, cleanup on close."""

    def initialize(self, server: TranscriptionServer) -> None:
        self.server = server
        self.session: TranscriptionSession | None = None

    @property
    def max_message_size(self) -> int:
        return self.server.config.hard_message_bytes

    @property
    def ping_interval(self) -> float:
        return self.server.config.ping_interval

    def get_websocket_protocol(self) -> StrictWebSocketProtocol | None:
        standard = super().get_websocket_protocol()  # None for an unsupported version
        return None if standard is None else StrictWebSocketProtocol(self, False, standard.params)

    def check_origin(self, origin: str) -> bool:
        # Browsers send Origin; the server's own page and --allowed-origin pass.
        allowed = self.server.config.allowed_origins
        return "*" in allowed or origin in allowed or super().check_origin(origin)

    async def open(self) -> None:
        self.set_nodelay(True)  # small, latency-sensitive messages: no Nagle delay
        refusal = self.server.admit(self.request)
        if refusal is not None:
            code, message, close_code = refusal
            try:
                await self.write_message(json.dumps(protocol.transcription_failed(code, message)))
            except tornado.websocket.WebSocketClosedError:
                return
            self.close(close_code, code)
            return
        self.session = self.server.open_session(self)

    async def on_message(self, message: str | bytes) -> None:
        if self.session is not None:
            await self.session.receive(message)

    def on_close(self) -> None:
        if self.session is not None:
            self.server.close_session(self.session)


class StaticHandler(_Guarded, tornado.web.StaticFileHandler):
    """The demo page and its files; a path that cannot name a file (a NUL byte) is a 400,
    one the file system refuses a 404, never a 500."""

    def initialize(self, server: TranscriptionServer, path: str, default_filename: str | None = None) -> None:
        self.server = server
        super().initialize(path, default_filename)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:
            raise tornado.web.HTTPError(400, "NUL byte in a static path", reason="Bad path")
        try:
            return super().validate_absolute_path(root, absolute_path)
        except (ValueError, OSError):
            raise tornado.web.HTTPError(404) from None


class _ServerHandler(_Guarded):
    def initialize(self, server: TranscriptionServer) -> None:
        self.server = server

    def write_json(self, payload: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload, indent=1, default=repr))

    def head(self) -> None:
        """The GET answer's status and headers without its body: uptime monitors and load
        balancers often check with HEAD, and a 405 would read as "down"."""
        self.get()


class BackendsHandler(_ServerHandler):
    """``GET /api/backends``: registered backends, policies, formats, the defaults and
    what clients may choose (``allowed``)."""

    def get(self) -> None:
        info = self.server.backends_info()
        choices = self.server.client_choices
        info["allowed"] = {"backends": list(choices.backends), "models": list(choices.models),
                           "policies": list(choices.policies)}  # fmt: skip
        self.write_json(info)


class HealthHandler(_ServerHandler):
    """``GET /healthz``: status, sessions, FFmpeg processes, loaded models; HTTP 503 unless
    the status is ``ok``."""

    def get(self) -> None:
        health = self.server.health()
        if health["status"] != "ok":
            self.set_status(503)
        self.write_json(health)


class MetricsHandler(_ServerHandler):
    """``GET /metrics``: Prometheus text format."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.server.metrics.exposition())
