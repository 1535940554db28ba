"""The WebSocket transcription server (``rtlab serve``), its demo page and its protocol.

One connection = one :class:`~rtlab.server.session.TranscriptionSession`; each
``start_transcription`` gets a new AudioProcessor with its own FFmpeg process. See
``docs/server.md`` for the protocol.

>>> running = await start_server(ServerConfig(port=0, stream=StreamConfig(backend="test")))
>>> running.ws_url
'ws://127.0.0.1:54321/ws/transcribe'
>>> await running.stop()
"""

from __future__ import annotations

from .app import RunningServer, TranscriptionServer, make_app, serve, start_server
from .config import ServerConfig

__all__ = ["RunningServer", "ServerConfig", "TranscriptionServer", "make_app", "serve", "start_server"]
