"""The WebSocket frame rules of RFC 6455 that Tornado's server side leaves out.

Tornado drops a connection whose text frame is not UTF-8 without a close frame, so the
client cannot tell why. :class:`StrictWebSocketProtocol` closes with the code the RFC
names instead. It overrides private methods of Tornado's ``WebSocketProtocol13``; the
tests in ``tests/test_server_protocol.py`` send the raw frames that exercise them.
"""

from __future__ import annotations

from tornado.concurrent import Future
from tornado.websocket import WebSocketProtocol13

#: RFC 6455 7.4.1: "a message ... not consistent with the type of the message".
INVALID_PAYLOAD = 1007

TEXT_OPCODE = 0x1


class StrictWebSocketProtocol(WebSocketProtocol13):
    """Tornado's protocol, closing with 1007 on a text frame that is not UTF-8."""

    def _handle_message(self, opcode: int, data: bytes) -> Future[None] | None:
        # A compressed frame is decompressed by Tornado first; rtlab offers no compression.
        if opcode != TEXT_OPCODE or self.client_terminated or self._frame_compressed:
            return super()._handle_message(opcode, data)
        self._message_bytes_in += len(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # As Tornado closes a frame over max_message_size: the close frame, then the socket.
            self.close(INVALID_PAYLOAD, "text frame is not valid UTF-8")
            self._abort()
            return None
        return self._run_callback(self.handler.on_message, text)
