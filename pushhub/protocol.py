"""The wire protocol, without I/O: client frames in, typed commands out; events in, frames out.

Nothing here awaits or touches a socket, so every rule of the protocol is tested with
plain function calls. ``docs/protocol.md`` is the specification this module implements.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from pushhub.errors import ErrorCode, ProtocolError
from pushhub.stream import Position

#: A channel name: 1-255 characters from this set. It excludes Redis glob characters
#: (``* ? [ ]``), cluster hash-tag braces, whitespace and control characters, so a name
#: can never reach Redis as a pattern or a key of the client's choosing; ``/``, so a name
#: is always one segment of an HTTP API path; and ``,``, which separates names in lists.
CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-:.@=+#$!~]{1,255}")

#: Names starting with this are reserved for pushhub's own Pub/Sub traffic (its probes).
RESERVED_PREFIX = "__"

#: Request ids are JSON integers a JavaScript client can hold exactly.
MAX_REQUEST_ID = 2**53 - 1

#: A user id: 1-128 characters, none of them a control character.
USER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")

#: The default of ``max_json_depth``: nesting deeper than real data ever needs, well
#: within what orjson can write (254) and what recursive parsers survive.
MAX_JSON_DEPTH = 64

#: Members per presence page, by default and at most.
PRESENCE_PAGE_DEFAULT = 100
PRESENCE_PAGE_MAX = 1000


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    id: int | None = None
    #: The position to recover from, on a durable channel.
    since: Position | None = None
    #: A subscription token (a backend's grant of this channel to this user).
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Connect:
    """Development-mode identity: the user id and info a connection states for itself."""

    user: str | None = None
    info: dict[str, Any] | None = None
    id: int | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """A fresh connection token, before the current one expires."""

    token: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    channel: str
    limit: int = PRESENCE_PAGE_DEFAULT
    cursor: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    channel: str
    data: Any
    idempotency_key: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class History:
    channel: str
    since: int | None = None
    limit: int = PRESENCE_PAGE_DEFAULT
    reverse: bool = False
    id: int | None = None


Command = Subscribe | Unsubscribe | Ping | Connect | Presence | Publish | History | Refresh


def validate_channel(name: object, request_id: int | None = None) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``bad_channel``."""
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_CHANNEL, "channel must be a string", request_id)
    if not CHANNEL_RE.fullmatch(name):
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL,
            "channel must be 1-255 characters of A-Z a-z 0-9 and _ - : . @ = + # $ ! ~",
            request_id,
        )
    if name.startswith(RESERVED_PREFIX):
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL, "channel names starting with '__' are reserved", request_id
        )
    if name.count("#") > 1:
        # "name#owner" belongs to one user; with two, a rule such as notifications#*
        # would match names a user could mint without end.
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL, "a channel name holds at most one '#'", request_id
        )
    return name


def _request_id(frame: dict[str, Any]) -> int | None:
    rid = frame.get("id")
    if rid is None:
        return None
    if type(rid) is not int or not 0 <= rid <= MAX_REQUEST_ID:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id must be an integer from 0 to 2^53-1")
    return rid


# -- JSON nesting ----------------------------------------------------------------------

#: A JSON string, escapes included (the unrolled form: linear, no backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
#: Every byte but the four brackets, for ``bytes.translate`` to delete.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: +1 for an opening bracket, -1 for a closing one, indexed by byte value.
_DEPTH_STEP = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]


def json_depth(text: bytes | str) -> int:
    """How deeply valid JSON ``text`` nests arrays and objects (a scalar is 0).

    Runs at C speed: strings are cut out with one regex, the brackets left are summed.
    """
    raw = text.encode() if isinstance(text, str) else text
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


#: The opening brackets, for ``bytes.translate`` to delete.
_OPENERS = b"[{"


def too_deep(text: bytes | str, limit: int) -> bool:
    """Whether valid JSON ``text`` nests deeper than ``limit``. Counting the opening
    brackets (one C pass) decides nearly every real payload; only one with more of them
    than the limit is scanned."""
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= limit:
            return False
    elif len(text) - len(text.translate(None, _OPENERS)) <= limit:
        return False
    return json_depth(text) > limit


def parse(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Command:
    """Parse one client text frame into a command, or raise ``ProtocolError``.

    The error carries the frame's ``id`` whenever the frame got far enough to have one,
    so the client can match the error to its request. A frame's data may nest
    ``max_depth`` levels (the frame object itself is one more).
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must be a JSON object")
    if too_deep(text, max_depth + 1):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"frame nests deeper than {max_depth} levels",
            frame.get("id") if type(frame.get("id")) is int else None,
        )
    rid = _request_id(frame)
    kind = frame.get("type")
    if kind == "subscribe":
        channel = validate_channel(frame.get("channel"), rid)
        since = frame.get("since")
        position = None if since is None else parse_position(since, rid)
        return Subscribe(channel, rid, position, _token(frame, rid, required=False))
    if kind == "unsubscribe":
        return Unsubscribe(validate_channel(frame.get("channel"), rid), rid)
    if kind == "ping":
        return Ping(rid)
    if kind == "connect":
        return _connect(frame, rid)
    if kind == "refresh":
        token = _token(frame, rid, required=True)
        assert token is not None
        return Refresh(token, rid)
    if kind == "presence":
        channel = validate_channel(frame.get("channel"), rid)
        limit = parse_limit(frame.get("limit"), rid)
        return Presence(channel, limit, parse_cursor(frame.get("cursor"), rid), rid)
    if kind == "publish":
        channel = validate_channel(frame.get("channel"), rid)
        if "data" not in frame:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "publish needs 'data'", rid)
        key = parse_idempotency_key(frame.get("idempotency_key"), rid)
        return Publish(channel, frame["data"], key, rid)
    if kind == "history":
        channel = validate_channel(frame.get("channel"), rid)
        reverse = frame.get("reverse", False)
        if not isinstance(reverse, bool):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "reverse must be true or false", rid)
        return History(
            channel,
            parse_offset(frame.get("since"), rid),
            parse_limit(frame.get("limit"), rid),
            reverse,
            rid,
        )
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame must have a string 'type'", rid)
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}", rid)


def parse_offset(raw: object, request_id: int | None = None) -> int | None:
    """An offset: a non-negative integer (or a string of digits, from a query string)."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and re.fullmatch(r"[0-9]{1,16}", raw):
        raw = int(raw)
    if type(raw) is not int or not 0 <= raw <= MAX_REQUEST_ID:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "offset must be an integer from 0 to 2^53-1", request_id
        )
    return raw


def parse_position(raw: object, request_id: int | None = None) -> Position:
    if not isinstance(raw, dict):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, 'since must be {"offset": N, "epoch": "..."}', request_id
        )
    offset = parse_offset(raw.get("offset"), request_id)
    epoch = raw.get("epoch")
    # The empty epoch, with offset 0, is the position of a channel that had no history.
    if (
        offset is None
        or not isinstance(epoch, str)
        or not (1 <= len(epoch) <= 64 or (not epoch and not offset))
    ):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, 'since must be {"offset": N, "epoch": "..."}', request_id
        )
    return Position(offset, epoch)


def parse_idempotency_key(raw: object, request_id: int | None = None) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z0-9_\-:.]{1,128}", raw):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "idempotency_key must be 1-128 characters of A-Z a-z 0-9 _ - : .",
            request_id,
        )
    return raw


def validate_user(user: object, request_id: int | None = None) -> str:
    if not isinstance(user, str) or not USER_RE.fullmatch(user):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "user must be a string of 1-128 characters without control characters",
            request_id,
        )
    return user


def _token(frame: dict[str, Any], rid: int | None, required: bool) -> str | None:
    token = frame.get("token")
    if token is None and not required:
        return None
    if not isinstance(token, str) or not 1 <= len(token) <= 8192:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "token must be a string of 1-8192 characters", rid
        )
    return token


def _connect(frame: dict[str, Any], rid: int | None) -> Connect:
    user = frame.get("user")
    if user is not None:
        user = validate_user(user, rid)
    info = frame.get("info")
    if info is not None and not isinstance(info, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "info must be a JSON object", rid)
    return Connect(user, info, rid, _token(frame, rid, required=False))


def parse_limit(raw: object, request_id: int | None = None) -> int:
    """A presence page size: an integer from 1 to PRESENCE_PAGE_MAX, default 100."""
    if raw is None:
        return PRESENCE_PAGE_DEFAULT
    if isinstance(raw, str) and re.fullmatch(r"[0-9]{1,4}", raw):
        raw = int(raw)
    if type(raw) is not int or not 1 <= raw <= PRESENCE_PAGE_MAX:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"limit must be an integer from 1 to {PRESENCE_PAGE_MAX}",
            request_id,
        )
    return raw


def parse_cursor(raw: object, request_id: int | None = None) -> str | None:
    """Decode an opaque presence cursor back to the member key it continues after."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and len(raw) <= 1024:
        try:
            key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            key = ""
        if key[:2] in ("u:", "c:"):
            return key
    raise ProtocolError(ErrorCode.BAD_REQUEST, "cursor is not one this server issued", request_id)


def encode_cursor(member_key: str) -> str:
    return base64.urlsafe_b64encode(member_key.encode()).decode().rstrip("=")


def member_key(user: str | None, conn_id: str) -> str:
    """Presence groups connections by member: a user, or an anonymous connection."""
    return f"u:{user}" if user is not None else f"c:{conn_id}"


def member_fields(key: str) -> dict[str, Any]:
    """The wire identity of a member key: {"user": ...} or {"user": null, "client": ...}."""
    if key.startswith("u:"):
        return {"user": key[2:]}
    return {"user": None, "client": key[2:]}


def join_event(channel: str, member: str, info: bytes | None) -> str:
    """The ``join`` event frame. ``info`` is the member's info as a compact JSON object
    (as the engine hands it over), spliced in unchanged; None shows as ``null``."""
    data = orjson.Fragment(info) if info is not None else None
    return _frame({"type": "join", "channel": channel, **member_fields(member), "info": data})


def leave_event(channel: str, member: str) -> str:
    """The ``leave`` event frame."""
    return _frame({"type": "leave", "channel": channel, **member_fields(member)})


def presence_reply(
    channel: str, members: list[dict[str, Any]], next_cursor: str | None, request_id: int | None
) -> str:
    return _with_id(
        {"type": "presence", "channel": channel, "members": members, "next_cursor": next_cursor},
        request_id,
    )


def connected(
    conn_id: str,
    user: str | None,
    request_id: int | None,
    ping_interval: float,
    expires_at: int | None = None,
) -> str:
    obj = {
        "type": "connected",
        "client": conn_id,
        "user": user,
        "ping_interval": ping_interval,
        "expires_at": expires_at,
    }
    return _with_id(obj, request_id)


def refreshed(expires_at: int, request_id: int | None) -> str:
    return _with_id({"type": "refreshed", "expires_at": expires_at}, request_id)


def server_ping() -> str:
    return _frame({"type": "ping"})


def payload_data(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> orjson.Fragment | str:
    """The ``data`` of a message published as raw bytes (by redis-cli, HTTP or a client).

    A payload that is valid JSON nested at most ``max_depth`` levels is delivered as
    that JSON, its original bytes spliced into the frame (never decoded and encoded
    again, so nothing about it can fail on the way out); anything else is delivered as
    a string, with bytes that are not UTF-8 replaced by U+FFFD.
    """
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
    if too_deep(raw, max_depth):
        return raw.decode()  # valid JSON is valid UTF-8
    if raw.find(b"\n") >= 0:  # find: memchr, twice as fast as `in` here
        # A newline in valid JSON is whitespace between tokens, and server frames are
        # split on newlines (docs/protocol.md): make it a space.
        raw = raw.replace(b"\n", b" ")
    return orjson.Fragment(raw)


def decode_payload(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``payload_data`` as a Python value, for callers that need one (tests, tools)."""
    data = payload_data(raw, max_depth)
    return data if isinstance(data, str) else orjson.loads(raw)


def encode_data(data: Any) -> bytes:
    """The bytes published upstream for ``data``: its compact JSON, as redis-cli would send."""
    return orjson.dumps(data)


def _frame(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def message(channel: str, data: Any, offset: int | None = None, epoch: str | None = None) -> str:
    """The frame delivering one message. Built once per node and shared by every subscriber."""
    if offset is None:
        return _frame({"type": "message", "channel": channel, "data": data})
    return _frame(
        {"type": "message", "channel": channel, "data": data, "offset": offset, "epoch": epoch}
    )


def subscribed(
    channel: str,
    request_id: int | None,
    position: Position | None = None,
    recovered: bool | None = None,
) -> str:
    obj: dict[str, Any] = {"type": "subscribed", "channel": channel}
    if position is not None:
        obj["offset"], obj["epoch"] = position.offset, position.epoch
    if recovered is not None:
        obj["recovered"] = recovered
    return _with_id(obj, request_id)


def unsubscribed(channel: str, request_id: int | None, reason: str | None = None) -> str:
    obj: dict[str, Any] = {"type": "unsubscribed", "channel": channel}
    if reason is not None:
        obj["reason"] = reason
    return _with_id(obj, request_id)


def published(channel: str, request_id: int | None, position: Position | None) -> str:
    obj: dict[str, Any] = {"type": "published", "channel": channel}
    if position is not None:
        obj["offset"], obj["epoch"] = position.offset, position.epoch
    return _with_id(obj, request_id)


def history_reply(
    channel: str,
    position: Position,
    messages: list[dict[str, Any]],
    next_since: int | None,
    request_id: int | None,
) -> str:
    return _with_id(
        {
            "type": "history",
            "channel": channel,
            "offset": position.offset,
            "epoch": position.epoch,
            "messages": messages,
            "next_since": next_since,
        },
        request_id,
    )


def pong(request_id: int | None) -> str:
    return _with_id({"type": "pong"}, request_id)


def error(err: ProtocolError, request_id: int | None = None) -> str:
    """The error frame for ``err``, answering ``request_id`` unless the error names its
    own (a parse error knows the frame's id)."""
    rid = err.request_id if err.request_id is not None else request_id
    return _frame({"type": "error", "id": rid, "code": err.code, "message": err.message})


def _with_id(obj: dict[str, Any], request_id: int | None) -> str:
    if request_id is not None:
        obj["id"] = request_id
    return _frame(obj)
