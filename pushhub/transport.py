"""The WebSocket transport: adapts Starlette's WebSocket to a pushhub ``Connection``.

The only module that imports Starlette's ``WebSocket``. It reads frames and hands their
text to the node; the connection's writer task sends through ``_Sender``.
"""

from __future__ import annotations

import logging

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket

from pushhub import protocol
from pushhub.connection import Connection
from pushhub.errors import CloseCode, ErrorCode, ProtocolError
from pushhub.limits import ConnectionGate, OriginPolicy, TokenBucket
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


async def _refuse(ws: WebSocket, status: int, code: ErrorCode, message: str) -> None:
    """Refuse a handshake before accepting it: an HTTP answer where the server can send
    one (uvicorn can), else a close, which the server turns into a 403."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        body = {"error": {"code": code, "message": message}}
        await ws.send_denial_response(
            Response(orjson.dumps(body), status, media_type="application/json")
        )
    else:
        await ws.close(1008)


async def websocket_endpoint(ws: WebSocket) -> None:
    node: Node = ws.app.state.node
    gate: ConnectionGate = ws.app.state.gate
    origins: OriginPolicy = ws.app.state.origins
    settings = node.settings
    # Origin first: a foreign page gets nothing, not even a token check or Redis work.
    if not origins.allows(ws.headers.get("origin")):
        await _refuse(ws, 403, ErrorCode.FORBIDDEN, "origin not allowed")
        return
    ip = ws.client.host if ws.client else "unknown"
    refused = gate.admit(ip)
    if refused is not None:
        logger.info("refused a connection from %s: %s", ip, refused)
        await _refuse(ws, 429, ErrorCode.RATE_LIMITED, refused)
        return
    try:
        await ws.accept()
        conn = node.open(_Sender(ws), ip)
    except BaseException:
        gate.release(ip)
        raise
    try:
        token = ws.query_params.get("token")
        if token is not None:
            await node.handle_query_token(conn, token)
        await _read(ws, node, conn, settings.max_message_size)
    except Exception:
        logger.exception("connection %s failed", conn.id)
        conn.close(CloseCode.SERVER_ERROR, "internal error")
    finally:
        gate.release(ip)
        await node.disconnect(conn)


async def _read(ws: WebSocket, node: Node, conn: Connection, limit: int) -> None:
    settings = node.settings
    bucket = TokenBucket(settings.max_frames_per_second, settings.frame_burst)
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if not bucket.take():
            # Per socket and in process: a flood costs no Redis round trip.
            conn.close(CloseCode.RATE_LIMITED, "too many frames")
            continue
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
