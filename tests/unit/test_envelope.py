"""The Redis engine's byte envelope (pushhub/engine/envelope.py), as plain function calls:
the encoders build what the Lua writes, and ``dispatch`` reads it once into typed
events, or refuses it whole."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pushhub.engine import envelope
from pushhub.engine.envelope import MARK
from pushhub.stream import Position
from tests.engine_events import Durable, Event, Join, Leave, Recorder, presence_frame

EPOCH = "6b0bf94cc87b9"


def read(payload: bytes, max_depth: int = 64) -> Event | None:
    """The one event ``payload`` dispatches, or None when it is refused (and then
    nothing at all was dispatched)."""
    events = Recorder()
    accepted = envelope.dispatch("room:1", payload, events, max_depth)
    got = []
    while not events.received.empty():
        channel, event = events.received.get_nowait()
        assert channel == "room:1"
        got.append(event)
    assert len(got) == (1 if accepted else 0), got
    return got[0] if got else None


def frame(payload: bytes, channel: str = "room:1") -> dict[str, Any] | None:
    """The frame a node sends for a presence envelope (None if none is sent)."""
    events = Recorder()
    envelope.dispatch(channel, payload, events)
    if events.received.empty():
        return None
    got_channel, event = events.received.get_nowait()
    return presence_frame(got_channel, event)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- durable messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"text":"hi"}', id="json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"line one\nline two\r\n\n", id="newlines"),
        pytest.param(b'\x1e\x1e{"t":"msg","o":99}\n\x1e', id="0x1e-and-a-fake-header"),
        pytest.param(b"\xff\x00\x80 not utf-8", id="not-utf8"),
        pytest.param(bytes(range(256)) * 240, id="60KiB"),
    ],
)
def test_a_message_envelope_reads_back_into_its_position_and_the_payload_unchanged(
    payload: bytes,
) -> None:
    raw = envelope.message(42, EPOCH, payload)

    assert raw.startswith(MARK)
    assert read(raw) == Durable(Position(42, EPOCH), payload)


def test_the_message_header_is_what_the_redis_function_writes() -> None:
    # durable.lua builds the same bytes by concatenation; the two must not drift apart
    # (tests/contract/test_redis_envelope.py compares them on a real Redis).
    assert envelope.message(7, "abc", b"x") == b'\x1e{"t":"msg","o":7,"e":"abc"}\nx'


def test_an_epoch_needing_json_escapes_survives_the_envelope() -> None:
    raw = envelope.message(1, 'a"b\\c\n', b"data")

    assert read(raw) == Durable(Position(1, 'a"b\\c\n'), b"data")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'\x1e{"t":"msg","o":"1","e":"x"}\n{}', id="offset-a-string"),
        pytest.param(b'\x1e{"t":"msg","o":true,"e":"x"}\n{}', id="offset-a-bool"),
        pytest.param(b'\x1e{"t":"msg","o":1.0,"e":"x"}\n{}', id="offset-a-float"),
        pytest.param(b'\x1e{"t":"msg","o":1,"e":7}\n{}', id="epoch-not-a-string"),
        pytest.param(b'\x1e{"t":"msg","o":1}\n{}', id="no-epoch"),
        pytest.param(b'\x1e{"t":"msg","o":1,"e":"x"}', id="no-payload"),
    ],
)
def test_a_message_envelope_without_a_position_or_a_payload_is_refused(raw: bytes) -> None:
    assert read(raw) is None


# -- presence events ----------------------------------------------------------------------


def test_a_join_envelope_reads_back_with_its_info_object() -> None:
    raw = envelope.join("u:alice", b'{"name":"Alice","n":[1,2]}')

    assert raw.startswith(MARK)
    assert read(raw) == Join("u:alice", b'{"name":"Alice","n":[1,2]}')
    assert frame(raw) == {
        "type": "join",
        "channel": "room:1",
        "user": "alice",
        "info": {"name": "Alice", "n": [1, 2]},
    }


def test_join_info_reaches_the_node_in_compact_form_whatever_redis_held() -> None:
    raw = MARK + b'{"t":"join","m":"u:a","i":{ "s" : "\\u00e9", "n" : [1, 2] }}'

    assert read(raw) == Join("u:a", orjson.dumps({"s": "\u00e9", "n": [1, 2]}))


def test_a_join_envelope_without_info_has_info_null() -> None:
    assert read(envelope.join("u:alice", None)) == Join("u:alice", None)
    assert frame(envelope.join("u:alice", None)) == {
        "type": "join",
        "channel": "room:1",
        "user": "alice",
        "info": None,
    }


def test_a_join_envelope_whose_info_is_not_an_object_shows_no_info() -> None:
    assert read(b'\x1e{"t":"join","m":"u:x","i":[1,2]}') == Join("u:x", None)
    assert frame(b'\x1e{"t":"join","m":"u:x","i":[1,2]}', "c") == {
        "type": "join",
        "channel": "c",
        "user": "x",
        "info": None,
    }


def test_a_leave_envelope_has_a_header_and_no_payload() -> None:
    raw = envelope.leave("u:alice")

    assert raw.startswith(MARK)
    assert read(raw) == Leave("u:alice")
    assert frame(raw) == {"type": "leave", "channel": "room:1", "user": "alice"}


def test_anonymous_members_are_identified_by_their_connection() -> None:
    assert frame(envelope.join("c:n2.7", None), "news") == {
        "type": "join",
        "channel": "news",
        "user": None,
        "client": "n2.7",
        "info": None,
    }
    assert frame(envelope.leave("c:n2.7"), "news") == {
        "type": "leave",
        "channel": "news",
        "user": None,
        "client": "n2.7",
    }


def test_user_ids_survive_the_envelope_exactly() -> None:
    user = 'Zoë "q" \\ / 🚀'

    assert read(envelope.leave("u:" + user)) == Leave("u:" + user)
    assert frame(envelope.leave("u:" + user)) == {
        "type": "leave",
        "channel": "room:1",
        "user": user,
    }


# -- what pushhub would not have written ----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(MARK, id="empty"),
        pytest.param(MARK + b"\n", id="empty-header"),
        pytest.param(MARK + b"not json", id="not-json"),
        pytest.param(MARK + b"not json\npayload", id="not-json-with-payload"),
        pytest.param(MARK + b"[1,2]", id="array"),
        pytest.param(MARK + b"[1,2]\npayload", id="array-with-payload"),
        pytest.param(MARK + b'"join"', id="string"),
        pytest.param(MARK + b"5", id="number"),
        pytest.param(MARK + b"null", id="null"),
        pytest.param(MARK + b'{"t":"join"}', id="no-member"),
        pytest.param(MARK + b'{"m":"u:a"}', id="no-type"),
        pytest.param(MARK + b'{"t":"kick","m":"u:a"}', id="unknown-type"),
        pytest.param(MARK + b'{"t":["join"],"m":"u:a"}', id="list-type"),
        pytest.param(MARK + b'{"t":"join","m":5}', id="member-not-string"),
        pytest.param(MARK + b'{"t":"leave","m":null}', id="member-null"),
        pytest.param(MARK + b"\xff\xfe", id="not-utf8"),
    ],
)
def test_an_unknown_envelope_gives_no_event(raw: bytes) -> None:
    assert read(raw) is None


def test_an_envelope_nested_too_deep_is_not_one_pushhub_wrote() -> None:
    deep = b'\x1e{"t":"join","m":"u:x","i":' + nested(300) + b"}"

    assert read(deep) is None


def test_the_depth_limit_counts_below_the_header() -> None:
    # The header is one level; its info may nest max_depth levels.
    fits = b'\x1e{"t":"join","m":"u:x","i":{"a":' + nested(9) + b"}}"
    over = b'\x1e{"t":"join","m":"u:x","i":{"a":' + nested(10) + b"}}"

    assert read(fits, max_depth=10) == Join("u:x", b'{"a":' + nested(9) + b"}")
    assert read(over, max_depth=10) is None


def test_a_durable_payload_is_not_depth_checked_here() -> None:
    # The node checks a payload when it delivers it (deep ones arrive as text).
    raw = envelope.message(1, "e", nested(300))

    assert read(raw) == Durable(Position(1, "e"), nested(300))
