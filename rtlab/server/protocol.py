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

from ..errors import RtlabError

#: Client message types.
START = "start_transcription"
STOP = "stop_transcription"
PING = "ping"
CLIENT_TYPES = (START, STOP, PING)

#: ``format`` values of ``start_transcription``, each with the decoder it selects and that
#: decoder's options. A named container lets FFmpeg skip probing, which otherwise waits
#: for 2 KiB of input (about half a second of browser opus) before the first PCM.
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "auto": ("ffmpeg", {}),
    "pcm_s16le": ("pcm_s16le", {"max_chunks": 32}),
    **{name: ("ffmpeg", {"input_format": name}) for name in ("webm", "ogg", "wav", "mp3", "flac")},
}


class ProtocolError(RtlabError):
    """A client message the server cannot act on; ``code`` says which rule it broke."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_client_message(text: str) -> dict[str, Any]:
    """The JSON object in a client text frame; :class:`ProtocolError` when it is not one."""
    try:
        message = json.loads(text)
    except ValueError as error:
        raise ProtocolError(
            "invalid_json", f"text frames must be JSON objects; could not parse this one ({error})"
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
            "unknown_type", f"unknown message type {kind!r}; use one of {', '.join(CLIENT_TYPES)}"
        )
    return message


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
                    f"got {json.dumps(value)}",
                )
            values[name] = value.strip()
        if values.get("format", "auto") not in FORMATS:
            raise ProtocolError(
                "invalid_message",
                f"start_transcription field 'format' must be one of {', '.join(FORMATS)}, "
                f"got {values['format']!r}",
            )
        return cls(**values)

    @property
    def decoder(self) -> str:
        """The decoder plugin for this request's audio format."""
        return FORMATS[self.format][0]

    @property
    def decoder_options(self) -> dict[str, Any]:
        """Options for that decoder (e.g. the container FFmpeg should expect)."""
        return dict(FORMATS[self.format][1])


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


def transcript(committed: list[dict], partial: str, emitted_at: float, lag: float) -> dict[str, Any]:
    """Words committed since the last transcript message, and the current partial text."""
    return {
        "type": "transcript",
        "committed": committed,
        "partial": partial,
        "emitted_at": emitted_at,
        "lag": round(lag, 3),
    }


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
