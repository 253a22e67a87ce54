"""The WebSocket transport: adapts Starlette's WebSocket to a pushhub ``Connection``.

The only module that imports Starlette's ``WebSocket``. It reads frames and hands their
text to the node; the connection's writer task sends through ``_Sender``.
"""

from __future__ import annotations

import logging

from starlette.websockets import WebSocket

from pushhub import protocol
from pushhub.errors import CloseCode, ErrorCode, ProtocolError
from pushhub.node import Node

logger = logging.getLogger("pushhub.transport")


class _Sender:
    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    async def send_text(self, text: str) -> None:
        await self._ws.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


_BINARY = ProtocolError(ErrorCode.BINARY_FRAME, "binary frames are not supported; send JSON text")


async def websocket_endpoint(ws: WebSocket) -> None:
    node: Node = ws.app.state.node
    limit = node.settings.max_message_size
    await ws.accept()
    conn = node.open(_Sender(ws))
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                conn.send(protocol.error(_BINARY))
                continue
            # The ASGI server enforces the limit in bytes before buffering (close 1009);
            # this guards servers that do not.
            if len(text) > limit:
                conn.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
                continue
            await node.handle(conn, text)
    except Exception:
        logger.exception("connection %s failed", conn.id)
        conn.close(CloseCode.SERVER_ERROR, "internal error")
    finally:
        await node.disconnect(conn)
