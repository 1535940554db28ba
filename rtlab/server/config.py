"""Settings of one server: defaults, limits and access rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.processor import DEFAULT_BACKEND, DEFAULT_POLICY


@dataclass
class ServerConfig:
    """Everything ``rtlab serve`` can set; the defaults are the documented ones.

    :param backend: backend for clients that name none; its model is loaded at start-up.
    :param model: that backend's model (None: the backend's own default).
    :param backend_options: options of that backend (e.g. ``{"workers": 2}``).
    :param policy: streaming policy for clients that name none.
    :param policy_options: options of that policy (e.g. ``{"min_chunk": 1.0}``).
    :param max_connections: open WebSocket sessions at most; more are refused
        (``server_busy``, close code 1013).
    :param token: when set, clients must present it (``?token=`` or an
        ``Authorization: Bearer`` header); refused with ``unauthorized``, close code 1008.
    :param allowed_origins: browser origins allowed besides the server's own host.
    :param max_message_bytes: larger frames are refused with ``message_too_large`` and
        ignored; frames over ``hard_message_bytes`` make Tornado close with code 1009.
    :param idle_timeout: seconds without any client frame before the server ends the session.
    :param max_pending_audio_bytes: audio held while the model loads, at most.
    :param max_queued_messages: messages waiting for a slow client, at most (see Outbox).
    :param max_events: events a processor holds for its session, at most.
    :param shutdown_grace: seconds a running transcription gets to flush on shutdown.
    :param ping_interval: seconds between WebSocket pings that detect dead peers.
    :param preload: load the default backend's model when the server starts.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    backend: str = DEFAULT_BACKEND
    model: str | None = None
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    policy: str = DEFAULT_POLICY
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    max_connections: int = 50
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_message_bytes: int = 1 << 20
    idle_timeout: float = 60.0
    max_pending_audio_bytes: int = 4 << 20
    max_queued_messages: int = 64
    max_events: int = 200
    shutdown_grace: float = 5.0
    ping_interval: float = 20.0
    preload: bool = True

    @property
    def hard_message_bytes(self) -> int:
        """Frames above this are not even read (Tornado's ``websocket_max_message_size``)."""
        return 2 * self.max_message_bytes + 65_536
