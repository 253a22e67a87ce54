"""The WebSocket transport: speaks ASGI directly to give each socket a pushhub ``Connection``.

It is the only module that handles WebSocket ASGI messages. It talks raw ASGI rather than
Starlette's ``WebSocket`` wrapper: a socket then waits in one coroutine frame instead of a
stack of routing and middleware frames, which at 10,000 idle sockets is most of the
difference between 30 KiB and 20 KiB each (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send

from pushhub import protocol
from pushhub.config import Settings
from pushhub.connection import ConnectionState
from pushhub.errors import CloseCode, ErrorCode, ProtocolError
from pushhub.limits import ConnectionGate, OriginPolicy, TokenBucket
from pushhub.node import Node
from pushhub.session import Session

logger = logging.getLogger("pushhub.transport")


class Abortable(Protocol):
    """What ``scope["extensions"]["pushhub.transport"]`` holds under ``pushhub serve``
    (pushhub/server.py's transport guard): a way to drop the socket."""

    def abort(self) -> None: ...


class _Sender:
    __slots__ = ("_guard", "_send", "closed")

    def __init__(self, send: Send, guard: Abortable | None) -> None:
        self._send = send
        self._guard = guard
        self.closed = False

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def abort(self) -> None:
        """Drop the socket through pushhub's uvicorn protocol (pushhub/server.py). Under
        another ASGI server there is no such hook, and the server's own close applies."""
        if self._guard is not None:
            self._guard.abort()


_BINARY = ProtocolError(ErrorCode.BINARY_FRAME, "binary frames are not supported; send JSON text")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(scope: Scope, send: Send, status: int, code: ErrorCode, message: str) -> None:
    """Refuse a handshake before accepting it: an HTTP answer where the server can send
    one (uvicorn can), else a close, which the server turns into a 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = orjson.dumps({"error": {"code": code, "message": message}})
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def websocket_endpoint(scope: Scope, receive: Receive, send: Send, state: Any) -> None:
    """One WebSocket, from handshake to disconnect."""
    node: Node = state.node
    gate: ConnectionGate = state.gate
    origins: OriginPolicy = state.origins
    if (await receive())["type"] != "websocket.connect":
        return
    # Origin first: a foreign page gets nothing, not even a token check or Redis work.
    # (In development mode without allowed_origins, a loopback Host and Origin too.)
    foreign = origins.handshake_refusal(
        _header(scope, b"origin"), _header(scope, b"host"), node.settings
    )
    if foreign is not None:
        await _refuse(scope, send, 403, ErrorCode.FORBIDDEN, foreign)
        return
    client = scope.get("client")
    ip = str(client[0]) if client else "unknown"
    refused = gate.admit(ip)
    if refused is not None:
        logger.info("refused a connection from %s: %s", ip, refused)
        await _refuse(scope, send, 429, ErrorCode.RATE_LIMITED, refused)
        return
    guard = scope.get("extensions", {}).get("pushhub.transport")
    try:
        await send({"type": "websocket.accept"})
        # The per-IP slot goes back when the close is decided, not when a peer that
        # stopped reading finally lets go of the socket.
        session = node.open(_Sender(send, guard), ip, state.release_ip)
    except BaseException:
        gate.release(ip)
        raise
    try:
        token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if token:
            await session.handle_query_token(token[0])
        await _read(receive, node.settings, session)
    except Exception:
        logger.exception("connection %s failed", session.id)
        session.conn.close(CloseCode.SERVER_ERROR, "internal error")
    finally:
        await node.disconnect(session)


async def _read(receive: Receive, settings: Settings, session: Session) -> None:
    conn = session.conn
    limit = settings.max_message_size
    bucket = TokenBucket(settings.max_frames_per_second, settings.frame_burst)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if conn.state is not ConnectionState.OPEN:
            continue  # closing: read until the disconnect, act on nothing
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
        await session.handle(text)
