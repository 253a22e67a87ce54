"""The wire protocol, without I/O: client frames in, typed commands out; events in, frames out.

Nothing here awaits or touches a socket, so every rule of the protocol is tested with
plain function calls. ``docs/protocol.md`` is the specification this module implements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from pushhub.errors import ErrorCode, ProtocolError

#: A channel name: 1-255 characters from this set. It excludes Redis glob characters
#: (``* ? [ ]``), cluster hash-tag braces, whitespace and control characters, so a name
#: can never reach Redis as a pattern or a key of the client's choosing.
CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-:.@/=+,#$!~]{1,255}")

#: Names starting with this are reserved for pushhub's own Pub/Sub traffic (its probes).
RESERVED_PREFIX = "__"

#: Request ids are JSON integers a JavaScript client can hold exactly.
MAX_REQUEST_ID = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: int | None = None


Command = Subscribe | Unsubscribe | Ping


def validate_channel(name: object, request_id: int | None = None) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``bad_channel``."""
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_CHANNEL, "channel must be a string", request_id)
    if not CHANNEL_RE.fullmatch(name):
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL,
            "channel must be 1-255 characters of A-Z a-z 0-9 and _ - : . @ / = + , # $ ! ~",
            request_id,
        )
    if name.startswith(RESERVED_PREFIX):
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL, "channel names starting with '__' are reserved", request_id
        )
    return name


def _request_id(frame: dict[str, Any]) -> int | None:
    rid = frame.get("id")
    if rid is None:
        return None
    if type(rid) is not int or not 0 <= rid <= MAX_REQUEST_ID:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id must be an integer from 0 to 2^53-1")
    return rid


def parse(text: str | bytes) -> Command:
    """Parse one client text frame into a command, or raise ``ProtocolError``.

    The error carries the frame's ``id`` whenever the frame got far enough to have one,
    so the client can match the error to its request.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    rid = _request_id(frame)
    kind = frame.get("type")
    if kind == "subscribe":
        return Subscribe(validate_channel(frame.get("channel"), rid), rid)
    if kind == "unsubscribe":
        return Unsubscribe(validate_channel(frame.get("channel"), rid), rid)
    if kind == "ping":
        return Ping(rid)
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must have a string 'type'", rid)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}", rid)


def decode_payload(raw: bytes) -> Any:
    """The ``data`` of a message published as raw bytes (for instance by redis-cli).

    A payload that is valid JSON is delivered as that JSON value; anything else is
    delivered as a string, with bytes that are not UTF-8 replaced by U+FFFD.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")


def encode_data(data: Any) -> bytes:
    """The bytes published upstream for ``data``: its compact JSON, as redis-cli would send."""
    return orjson.dumps(data)


def _frame(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def message(channel: str, data: Any) -> str:
    """The frame delivering one message. Built once per node and shared by every subscriber."""
    return _frame({"type": "message", "channel": channel, "data": data})


def subscribed(channel: str, request_id: int | None) -> str:
    return _with_id({"type": "subscribed", "channel": channel}, request_id)


def unsubscribed(channel: str, request_id: int | None) -> str:
    return _with_id({"type": "unsubscribed", "channel": channel}, request_id)


def pong(request_id: int | None) -> str:
    return _with_id({"type": "pong"}, request_id)


def error(err: ProtocolError) -> str:
    return _frame({"type": "error", "id": err.request_id, "code": err.code, "message": err.message})


def _with_id(obj: dict[str, Any], request_id: int | None) -> str:
    if request_id is not None:
        obj["id"] = request_id
    return _frame(obj)
