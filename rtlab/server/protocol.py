"""The WebSocket protocol: what clients may send, and every message the server sends.

Client text frames are JSON objects with a ``type``; binary frames carry audio. The
server's replies are built here and nowhere else, so ``docs/server.md`` has one place to
be checked against. Old clients that only know ``start_transcription``,
``stop_transcription``, ``ping`` and the replies ``model_loading_started``,
``transcription_started`` and ``transcription_stopped`` keep working: every other server
message is an addition they may ignore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..config import StreamConfig
from ..errors import MissingCapability, RtlabError

#: Client message types.
START = "start_transcription"
STOP = "stop_transcription"
PING = "ping"
CLIENT_TYPES = (START, STOP, PING)

#: The longest ``start_transcription`` field: names and codes are short, and error
#: messages (the server's and the plugins') quote the field back to the client.
MAX_FIELD_CHARS = 256

#: Containers FFmpeg can be told up front: ``format`` values that select the FFmpeg decoder
#: with that ``input_format``. A named container lets FFmpeg skip probing, which otherwise
#: waits for 2 KiB of input (about half a second of browser opus) before the first PCM.
CONTAINERS = ("webm", "ogg", "wav", "mp3", "flac")


def formats() -> list[str]:
    """Every ``format`` a client may name: ``auto`` (the server's decoder; FFmpeg probes the
    container), the containers above, and every registered decoder by name."""
    from ..registry import get_registry

    return ["auto", *CONTAINERS, *(n for n in get_registry().names("decoder") if n not in CONTAINERS)]


class ProtocolError(RtlabError):
    """A client message the server cannot act on; ``code`` says which rule it broke."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotAllowed(RtlabError):
    """A client named a backend, model or policy the operator did not allow."""

    code = "not_allowed"


def parse_client_message(text: str) -> dict[str, Any]:
    """The JSON object in a client text frame; :class:`ProtocolError` when it is not one."""
    try:
        message = json.loads(text)
    except ValueError as error:
        raise ProtocolError(
            "invalid_json", f"text frames must be JSON objects; could not parse this one ({error})"
        ) from None
    except RecursionError:  # JSON nested deeper than Python's recursion limit
        raise ProtocolError(
            "invalid_json", "text frames must be JSON objects; this one is nested too deeply to parse"
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError(
            "invalid_message",
            f"text frames must be JSON objects with a 'type', got {type(message).__name__}",
        )
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            "invalid_message", f"the message has no string 'type'; use one of {', '.join(CLIENT_TYPES)}"
        )
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type", f"unknown message type {_shown(kind)}; use one of {', '.join(CLIENT_TYPES)}"
        )
    return message


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON for an error message, cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class ClientChoices:
    """The backends, models and policies a client may name: the operator's allow-lists.

    A client's ``model`` is only ever compared with these names (never looked up as a
    path or a hub name on its own), so the backend instances clients can make the server
    create are bounded by the lists. ``"*"`` in ``backends`` or ``policies`` allows every
    registered one; models have no wildcard.
    """

    backends: tuple[str, ...]
    models: tuple[str, ...]
    policies: tuple[str, ...]

    def check(self, request: StartRequest) -> None:
        """Raise :class:`NotAllowed` for a name in ``request`` outside the lists."""
        for kind, name, allowed, flag in (
            ("backend", request.backend, self.backends, "--allow-backends"),
            ("model", request.model, self.models, "--allow-models"),
            ("policy", request.policy, self.policies, "--allow-policies"),
        ):
            if name is None or name in allowed or (kind != "model" and "*" in allowed):
                continue
            listed = ", ".join(allowed) if allowed else "none"
            raise NotAllowed(
                f"{kind} {_shown(name)} is not allowed on this server; allowed: {listed} "
                f"(the operator chooses them with rtlab serve {flag})"
            )


def start_refusal(error: RtlabError, allowed: ClientChoices | None = None) -> str:
    """Why ``start_transcription`` was refused, as a client reads it: ``str(error)``, except
    for a policy's refusal of a backend without a capability it needs, whose fix is worded
    as this protocol takes it (the ``"backend"`` field) and names only the backends in
    ``allowed`` (elsewhere it says ``backend=NAME``, for any installed backend)."""
    if not isinstance(error, MissingCapability) or not error.refusal:
        return str(error)
    names = [n for n in error.backends if allowed is None or n in allowed.backends or "*" in allowed.backends]
    if names:
        fields = " or ".join(f'"backend": {json.dumps(name)}' for name in names)
        return f"{error.refusal}: send {fields} in start_transcription"
    if error.backends:
        return (
            f"{error.refusal}, and this server allows no backend that does "
            f"(the operator allows one with rtlab serve --allow-backends {error.backends[0]})"
        )
    return f"{error.refusal}, and this server has no backend that does"


def default_model(backend: str) -> str | None:
    """The model a backend loads when none is named (its ``model`` option's default)."""
    from ..registry import get_registry

    default = get_registry().accepted_options("backend", backend).get("model")
    return default if isinstance(default, str) else None


@dataclass(frozen=True)
class StartRequest:
    """The fields of ``start_transcription``; None means "the server's default"."""

    backend: str | None = None
    model: str | None = None
    language: str | None = None
    policy: str | None = None
    format: str = "auto"

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> StartRequest:
        """Validate the optional fields (strings or null); unknown fields are ignored."""
        values: dict[str, Any] = {}
        for name in ("backend", "model", "language", "policy", "format"):
            value = message.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ProtocolError(
                    "invalid_message",
                    f"start_transcription field {name!r} must be a non-empty string or null, "
                    f"got {_shown(value)}",
                )
            if len(value) > MAX_FIELD_CHARS:
                raise ProtocolError(
                    "invalid_message",
                    f"start_transcription field {name!r} has {len(value)} characters; names and "
                    f"codes have at most {MAX_FIELD_CHARS}, got {_shown(value)}",
                )
            values[name] = value.strip()
        accepted = formats()
        if values.get("format", "auto") not in accepted:
            raise ProtocolError(
                "invalid_message",
                f"start_transcription field 'format' must be one of {', '.join(accepted)}, "
                f"got {_shown(values['format'])}",
            )
        return cls(**values)

    def stream_config(self, default: StreamConfig, allowed: ClientChoices | None = None) -> StreamConfig:
        """The stream this request asks for, on top of the server's ``default``.

        The server's model and backend options apply when the request names its backend
        and model (or none; naming the model the server's backend loads by default counts
        as none: it shares the loaded one). Its policy options apply when it names its
        policy (or none). A request for another backend, model or policy gets that
        plugin's own defaults. With ``allowed``, a name outside the operator's lists is
        refused with :class:`NotAllowed` before anything is created.
        """
        if allowed is not None:
            allowed.check(self)
        backend = self.backend or default.backend
        own_model = backend == default.backend and (
            self.model in (None, default.model)
            or (default.model is None and self.model == default_model(backend))
        )
        policy = self.policy or default.policy
        if self.format == "auto":
            decoder, decoder_options = default.decoder, default.decoder_options
        elif self.format in CONTAINERS:
            decoder, decoder_options = "ffmpeg", {"input_format": self.format}
        else:
            decoder = self.format
            decoder_options = default.decoder_options if decoder == default.decoder else {}
        return StreamConfig(
            backend=backend,
            model=default.model if own_model else self.model,
            backend_options=default.backend_options if own_model else {},
            policy=policy,
            policy_options=default.policy_options if policy == default.policy else {},
            decoder=decoder,
            decoder_options=decoder_options,
            language=self.language or default.language,
        )


def is_partial_transcript(message: dict[str, Any]) -> bool:
    """A transcript with no committed words: stale once a newer one exists."""
    return message.get("type") == "transcript" and not message["committed"]


def merge_transcripts(tail: dict[str, Any], message: dict[str, Any], max_words: int = 256) -> bool | None:
    """Fold transcript ``message`` into the unsent transcript ``tail`` (committed words
    appended, the partial text replaced); None when they cannot be folded (not two
    transcripts, or over ``max_words`` committed words). Returns whether a partial text
    of ``tail`` was superseded unsent (see :class:`~rtlab.core.events.EventQueue`)."""
    if tail.get("type") != "transcript" or message.get("type") != "transcript":
        return None
    if len(tail["committed"]) + len(message["committed"]) > max_words:
        return None
    superseded = bool(tail["partial"])
    tail["committed"] = tail["committed"] + message["committed"]
    for field in ("partial", "emitted_at", "lag"):
        tail[field] = message[field]
    tail.pop("partial_joins", None)
    if message.get("partial_joins"):
        tail["partial_joins"] = True
    return superseded


# -- server messages ------------------------------------------------------------------


def transcription_starting() -> dict[str, Any]:
    """Sent at once in reply to ``start_transcription``."""
    return {"type": "transcription_starting"}


def model_loading_started(backend: str, model: str | None, cached: bool) -> dict[str, Any]:
    """The model is being loaded (``cached``: it already is, the start will be quick)."""
    return {"type": "model_loading_started", "backend": backend, "model": model, "cached": cached}


def transcription_started(backend: str, model: str | None) -> dict[str, Any]:
    """The model is loaded and the decoder runs; audio is being transcribed."""
    return {"type": "transcription_started", "backend": backend, "model": model}


def transcript(
    committed: list[dict], partial: str, emitted_at: float, lag: float, partial_joins: bool = False
) -> dict[str, Any]:
    """Words committed since the last transcript message, and the current partial text
    (``partial_joins``: it goes on from the last committed word without a space; the key
    is sent only then)."""
    message = {
        "type": "transcript",
        "committed": committed,
        "partial": partial,
        "emitted_at": emitted_at,
        "lag": round(lag, 3),
    }
    if partial_joins:
        message["partial_joins"] = True
    return message


def transcription_stopped(summary: dict[str, Any]) -> dict[str, Any]:
    """The stream was flushed: the full committed text and the processor's summary."""
    return {"type": "transcription_stopped", "text": summary.get("text", ""), "summary": summary}


def transcription_failed(code: str, message: str) -> dict[str, Any]:
    """The transcription could not start or had to end; ``message`` says what to do."""
    return {"type": "transcription_failed", "error": code, "message": message}


def error(code: str, message: str) -> dict[str, Any]:
    """A client message was refused; nothing else changed and the connection stays open."""
    return {"type": "error", "error": code, "message": message}


def pong() -> dict[str, Any]:
    """Reply to ``ping``."""
    return {"type": "pong"}
