"""The WebSocket frame rules of RFC 6455 that Tornado's server side leaves out.

Tornado drops a connection whose text frame is not UTF-8 without a close frame, so the
client cannot tell why, and it reads unmasked client frames, which section 5.1 says a
server must not. :class:`StrictWebSocketProtocol` closes with the codes the RFC names.
It overrides private methods of Tornado's ``WebSocketProtocol13``; the tests in
``tests/test_server_protocol.py`` send the raw frames that exercise them.
"""

from __future__ import annotations

from tornado.concurrent import Future
from tornado.websocket import WebSocketProtocol13

#: RFC 6455 7.4.1: "a protocol error".
PROTOCOL_ERROR = 1002
#: RFC 6455 7.4.1: "a message ... not consistent with the type of the message".
INVALID_PAYLOAD = 1007

TEXT_OPCODE = 0x1
MASK_BIT = 0x80  # in a frame's second byte


class StrictWebSocketProtocol(WebSocketProtocol13):
    """Tornado's protocol, closing with 1007 on a text frame that is not UTF-8 and with
    1002 on a client frame that is not masked."""

    _peeked_header: bytes | None = None

    async def _receive_frame(self) -> None:
        # Tornado reads the two header bytes first and keeps the mask bit to itself: read
        # them here, check the bit, and hand them to Tornado's next read.
        header = await self._read_bytes(2)
        if not header[1] & MASK_BIT:
            self.close(PROTOCOL_ERROR, "client frames must be masked")
            self._abort()
            return
        self._peeked_header = header
        await super()._receive_frame()

    async def _read_bytes(self, n: int) -> bytes:
        header, self._peeked_header = self._peeked_header, None
        if header is not None:
            assert n == len(header), "Tornado's frame reading changed: update StrictWebSocketProtocol"
            return header
        return await super()._read_bytes(n)

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
