"""Settings of one server: defaults, limits and access rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import StreamConfig
from ..errors import InvalidOption
from .protocol import ClientChoices, default_model

#: Host names that always reach a server (besides the address it binds).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

#: Bind addresses that listen on every interface: the Host header cannot be predicted.
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


@dataclass
class ServerConfig:
    """Everything ``rtlab serve`` can set; the defaults are the documented ones.

    :param stream: the stream configuration of clients that name no backend, model or
        policy (its model is loaded at start-up); a client that names another backend,
        model or policy gets that plugin's defaults (see :mod:`rtlab.server.protocol`).
    :param allow_backends: backends a client may name besides ``stream``'s (``"*"``: every
        registered one); others are refused with ``not_allowed``.
    :param allow_models: models a client may name besides ``stream``'s; no wildcard, and a
        client's model is only compared with these names, never resolved as a path.
    :param allow_policies: policies a client may name besides ``stream``'s (``"*"``: all).
    :param max_connections: open WebSocket sessions at most; more are refused
        (``server_busy``, close code 1013).
    :param token: when set, clients must present it (``?token=`` or an
        ``Authorization: Bearer`` header); refused with ``unauthorized``, close code 1008.
    :param allowed_origins: browser origins allowed besides the server's own host.
    :param allowed_hosts: ``Host`` names accepted besides the bind address and
        :data:`LOCAL_HOSTS` (``"*"``: any); others get HTTP 403, which defeats DNS
        rebinding. A server bound to every interface with none given accepts any.
    :param max_message_bytes: larger frames are refused with ``message_too_large`` and
        ignored; frames over ``hard_message_bytes`` make Tornado close with code 1009.
    :param idle_timeout: seconds without any client frame before the server ends the session.
    :param start_timeout: seconds a connection may stay without a transcription (since it
        opened, or since its last utterance ended) before it is closed to free its slot.
    :param http_timeout: seconds an HTTP request may take to send its headers or its body
        (and a kept-alive connection may stay idle) before it is closed.
    :param max_control_rate: text frames per second a connection may send, on average;
        ``control_burst`` at once. Past it frames are refused (``rate_limited``); another
        burst's worth of refused frames closes the connection.
    :param pass_deadline: seconds one pass of a session may take, waiting for its turn
        included, before it is abandoned (``backend_timeout``); None: no limit.
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
    allow_backends: tuple[str, ...] = ()
    allow_models: tuple[str, ...] = ()
    allow_policies: tuple[str, ...] = ()
    max_connections: int = 50
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_message_bytes: int = 1 << 20
    idle_timeout: float = 60.0
    start_timeout: float = 10.0
    http_timeout: float = 10.0
    max_control_rate: float = 20.0
    control_burst: int = 40
    pass_deadline: float | None = 30.0
    max_pending_audio_bytes: int = 4 << 20
    max_queued_messages: int = 64
    max_events: int = 200
    shutdown_grace: float = 5.0
    ping_interval: float = 20.0
    preload: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InvalidOption(f"port must be a whole number from 0 (any free port) to 65535, not {self.port!r}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise InvalidOption(
                "the token is empty (is RTLAB_TOKEN set to nothing?): give a secret clients must present, "
                "or leave it unset for a server without one"
            )

    @property
    def open_to_the_network(self) -> bool:
        """Whether the server listens beyond this machine (not a loopback address) and
        takes any client, without a token."""
        return self.token is None and self.host.lower() not in LOCAL_HOSTS

    @property
    def hard_message_bytes(self) -> int:
        """Frames above this are not even read (Tornado's ``websocket_max_message_size``)."""
        return 2 * self.max_message_bytes + 65_536

    def client_choices(self) -> ClientChoices:
        """What clients may name: the server's own backend, model and policy and the
        allow-lists. Names that are not registered are refused here (UnknownBackend,
        UnknownPolicy), at start-up rather than in a session."""
        from ..registry import get_registry

        registry = get_registry()
        stream = self.stream
        for kind, names in (("backend", self.allow_backends), ("policy", self.allow_policies)):
            for name in names:
                if name != "*":
                    registry.get(kind, name)  # an unknown name fails with the installed ones
        if "*" in self.allow_models:
            raise InvalidOption(
                "allow_models takes model names, not '*': a client could then name any path "
                "or download; list the models clients may choose (e.g. tiny.en,base)"
            )
        own_model = stream.model or default_model(stream.backend)
        return ClientChoices(
            backends=_unique(stream.backend, *self.allow_backends),
            models=_unique(*((own_model,) if own_model else ()), *self.allow_models),
            policies=_unique(stream.policy, *self.allow_policies),
        )

    def host_allowed(self, host: str) -> bool:
        """Whether a request's ``Host`` (name or address, without the port) may be served."""
        name = host.strip().lower().rstrip(".")
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if "*" in self.allowed_hosts:
            return True
        if self.host in WILDCARD_ADDRESSES and not self.allowed_hosts:
            return True
        accepted = {self.host.lower(), *LOCAL_HOSTS, *(h.lower().rstrip(".") for h in self.allowed_hosts)}
        return name in accepted


def _unique(*names: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in names if n))
