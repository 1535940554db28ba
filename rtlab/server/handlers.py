"""Tornado handlers: thin. The WebSocket handler forwards frames to its session; the HTTP
handlers ask the :class:`~rtlab.server.app.TranscriptionServer` for JSON or metrics text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import tornado.web
import tornado.websocket
from prometheus_client import CONTENT_TYPE_LATEST

from . import protocol

if TYPE_CHECKING:
    from .app import TranscriptionServer
    from .session import TranscriptionSession


class TranscribeSocket(tornado.websocket.WebSocketHandler):
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


class _ServerHandler(tornado.web.RequestHandler):
    def initialize(self, server: TranscriptionServer) -> None:
        self.server = server

    def write_json(self, payload: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload, indent=1, default=repr))


class BackendsHandler(_ServerHandler):
    """``GET /api/backends``: registered backends, policies, formats and the defaults."""

    def get(self) -> None:
        self.write_json(self.server.backends_info())


class HealthHandler(_ServerHandler):
    """``GET /healthz``: status, sessions, FFmpeg processes, loaded models."""

    def get(self) -> None:
        self.write_json(self.server.health())


class MetricsHandler(_ServerHandler):
    """``GET /metrics``: Prometheus text format."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.server.metrics.exposition())

