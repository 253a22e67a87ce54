"""The byte envelope the Redis engine's Lua publishes for presence events and durable
messages, read back into typed events.

Redis Pub/Sub carries bytes, and one Redis channel per pushhub channel carries both raw
payloads (``redis-cli PUBLISH``) and pushhub's own events. pushhub's own start with the
byte 0x1E (ASCII record separator), which no JSON text starts with: a JSON header, then,
for a durable message, a newline and the payload exactly as published::

    \\x1e{"t":"join","m":"u:alice","i":{"name":"Alice"},"u":3,"c":4}   lua/presence.lua
    \\x1e{"t":"leave","m":"u:alice","u":2,"c":2}                       lua/presence.lua
    \\x1e{"t":"msg","o":7,"e":"6b0bf94cc87b9"}\\n<payload>    lua/durable.lua

The Lua scripts write these bytes; ``dispatch`` is the one place they are read (the
Redis engine calls it once per payload that starts with ``MARK``). The encoders below
build the same bytes for tests, which check that the Lua and this module agree. Only
``pushhub.engine.redis`` imports this module (tests/test_structure.py).
"""

from __future__ import annotations

import orjson

from pushhub.engine.base import EngineEvents, PresenceCount
from pushhub.protocol import MAX_JSON_DEPTH, too_deep
from pushhub.stream import Position

#: The first byte of every envelope.
MARK = b"\x1e"


def dispatch(
    channel: str, payload: bytes, events: EngineEvents, max_depth: int = MAX_JSON_DEPTH
) -> bool:
    """Read the envelope ``payload`` (which starts with ``MARK``) once and hand its event
    to ``events``. False, and nothing called, for anything pushhub would not have
    written: a header that is not a JSON object, nests deeper than ``max_depth`` levels
    below it, or is not a known event with well-typed fields."""
    newline = payload.find(b"\n")
    head = payload[len(MARK) : newline if newline >= 0 else None]
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(header, dict) or too_deep(head, max_depth + 1):
        return False
    kind = header.get("t")
    if kind == "msg" and newline >= 0:
        offset, epoch = header.get("o"), header.get("e")
        if type(offset) is not int or not isinstance(epoch, str):
            return False
        events.on_durable(channel, Position(offset, epoch), payload[newline + 1 :])
        return True
    member = header.get("m")
    if not isinstance(member, str):
        return False
    users, conns = header.get("u"), header.get("c")
    # Counts came with batched presence; an older node's event (a rolling upgrade) has none.
    counts = PresenceCount(users, conns) if type(users) is int and type(conns) is int else None
    if kind == "join":
        info = header.get("i")
        # Re-encoded, so the info reaches the node in orjson's compact form whatever
        # Redis held; anything but an object shows as no info.
        info_json = orjson.dumps(info) if isinstance(info, dict) else None
        events.on_join(channel, member, info_json, counts)
        return True
    if kind == "leave":
        events.on_leave(channel, member, counts)
        return True
    return False


# -- encoders: what the Lua writes, for tests --------------------------------------------


def _counted(counts: PresenceCount | None) -> bytes:
    if counts is None:
        return b"}"
    return b',"u":%d,"c":%d}' % (counts.users, counts.connections)


def join(member: str, info: bytes | None, counts: PresenceCount | None = None) -> bytes:
    """A join as lua/presence.lua publishes it (``info``: the stored JSON, or null;
    without ``counts``, as a node before batched presence published it)."""
    head = b'{"t":"join","m":' + orjson.dumps(member) + b',"i":' + (info or b"null")
    return MARK + head + _counted(counts)


def leave(member: str, counts: PresenceCount | None = None) -> bytes:
    """A leave as lua/presence.lua publishes it."""
    return MARK + b'{"t":"leave","m":' + orjson.dumps(member) + _counted(counts)


def message(offset: int, epoch: str, payload: bytes) -> bytes:
    """A durable message as lua/durable.lua publishes it: header line, newline, the
    payload unchanged."""
    header = b'{"t":"msg","o":%d,"e":%s}' % (offset, orjson.dumps(epoch))
    return MARK + header + b"\n" + payload
