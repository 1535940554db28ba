"""Settings of one server: defaults, limits and access rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import StreamConfig


@dataclass
class ServerConfig:
    """Everything ``rtlab serve`` can set; the defaults are the documented ones.

    :param stream: the stream configuration of clients that name no backend, model or
        policy (its model is loaded at start-up); a client that names another backend,
        model or policy gets that plugin's defaults (see :mod:`rtlab.server.protocol`).
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
    stream: StreamConfig = field(default_factory=StreamConfig)
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
