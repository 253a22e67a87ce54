"""The presence pieces of the wire protocol, as plain function calls."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pushhub import protocol
from pushhub.errors import ErrorCode, ProtocolError
from pushhub.protocol import (
    PRESENCE_PAGE_DEFAULT,
    PRESENCE_PAGE_MAX,
    Connect,
    Presence,
    encode_cursor,
    join_event,
    leave_event,
    member_fields,
    member_key,
    parse_cursor,
    parse_limit,
)


def frame(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def refusal(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        protocol.parse(text)
    return info.value


# -- connect -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        (frame(type="connect"), Connect()),
        (frame(type="connect", user=None, info=None), Connect()),
        (frame(type="connect", user="alice", id=1), Connect("alice", None, 1)),
        (
            frame(type="connect", user="alice", info={"name": "Alice", "tags": [1]}),
            Connect("alice", {"name": "Alice", "tags": [1]}),
        ),
        (frame(type="connect", info={}), Connect(None, {})),
        (frame(type="connect", user="Zoë 🚀 <b>"), Connect("Zoë 🚀 <b>")),
        (frame(type="connect", user="x" * 128), Connect("x" * 128)),
        (frame(type="connect", user="with space"), Connect("with space")),
    ],
)
def test_connect_states_an_optional_user_and_info(text: str, command: Connect) -> None:
    assert protocol.parse(text) == command


@pytest.mark.parametrize(
    "user",
    [
        pytest.param(5, id="int"),
        pytest.param(True, id="bool"),
        pytest.param(["alice"], id="list"),
        pytest.param({"id": "alice"}, id="object"),
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="129-chars"),
        pytest.param("ali\x00ce", id="nul"),
        pytest.param("alice\n", id="newline"),
        pytest.param("a\tb", id="tab"),
        pytest.param("\x1b[31mred", id="escape"),
        pytest.param("del\x7f", id="del"),
    ],
)
def test_connect_with_a_bad_user_is_refused_as_bad_request(user: object) -> None:
    err = refusal(frame(type="connect", user=user, id=4))

    assert (err.code, err.request_id) == (ErrorCode.BAD_REQUEST, 4)
    assert "user" in err.message


@pytest.mark.parametrize("info", [[], ["a"], "text", 5, 1.5, True])
def test_connect_info_must_be_a_json_object(info: object) -> None:
    err = refusal(frame(type="connect", user="alice", info=info, id=6))

    assert (err.code, err.request_id) == (ErrorCode.BAD_REQUEST, 6)
    assert "info" in err.message


def test_validate_user_returns_a_good_user_unchanged() -> None:
    assert protocol.validate_user("alice@example.com") == "alice@example.com"


# -- the presence command ----------------------------------------------------------------------


def test_presence_command_defaults_to_the_first_page_of_100_members() -> None:
    assert protocol.parse(frame(type="presence", channel="room:1")) == Presence("room:1")
    assert Presence("room:1").limit == PRESENCE_PAGE_DEFAULT == 100


def test_presence_command_carries_limit_cursor_and_id() -> None:
    text = frame(type="presence", channel="room:1", limit=10, cursor=encode_cursor("u:bob"), id=3)

    assert protocol.parse(text) == Presence("room:1", 10, "u:bob", 3)


@pytest.mark.parametrize("channel", [None, "", 5, "has space", "__reserved"])
def test_presence_command_needs_a_valid_channel(channel: object) -> None:
    fields: dict[str, Any] = {"type": "presence", "id": 2}
    if channel is not None:
        fields["channel"] = channel

    err = refusal(frame(**fields))

    assert (err.code, err.request_id) == (ErrorCode.BAD_CHANNEL, 2)


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        (None, 100),
        (1, 1),
        (100, 100),
        (PRESENCE_PAGE_MAX, 1000),
        ("1", 1),
        ("250", 250),
        ("1000", 1000),
        ("0010", 10),
    ],
)
def test_limit_accepts_integers_and_digit_strings_from_1_to_1000(raw: object, limit: int) -> None:
    assert parse_limit(raw) == limit
    assert protocol.parse(frame(type="presence", channel="c", limit=raw)) == Presence("c", limit)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(0, id="zero"),
        pytest.param(1001, id="over-max"),
        pytest.param(-1, id="negative"),
        pytest.param("0", id="zero-string"),
        pytest.param("1001", id="over-max-string"),
        pytest.param("-5", id="negative-string"),
        pytest.param("", id="empty-string"),
        pytest.param(" 10", id="space"),
        pytest.param("10.0", id="decimal-string"),
        pytest.param("ten", id="word"),
        pytest.param(10.0, id="float"),
        pytest.param(True, id="bool"),
        pytest.param([10], id="list"),
        pytest.param({"n": 10}, id="object"),
        # Unicode digits: str.isdigit() says yes, int() says no.
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param("\u2460", id="circled-one"),
        # Longer than int() converts (Python's 4300-digit limit).
        pytest.param("1" * 5000, id="5000-digits"),
    ],
)
def test_any_other_limit_is_refused_as_bad_request(raw: object) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_limit(raw, 8)
    assert (info.value.code, info.value.request_id) == (ErrorCode.BAD_REQUEST, 8)

    err = refusal(frame(type="presence", channel="c", limit=raw, id=9))
    assert (err.code, err.request_id) == (ErrorCode.BAD_REQUEST, 9)


@pytest.mark.parametrize(
    "key",
    ["u:alice", "c:n1.42", "u:Zoë 🚀", "u:", "u:a/b+c=d", "u:" + "\u00e9" * 128, "u:~~~~"],
)
def test_cursor_round_trips_through_encode_cursor(key: str) -> None:
    cursor = encode_cursor(key)

    assert parse_cursor(cursor) == key
    assert cursor.isascii()
    assert "=" not in cursor
    assert "+" not in cursor  # nor "/": a cursor is safe in a URL query as it is
    assert "/" not in cursor


@pytest.mark.parametrize("raw", [None, ""])
def test_no_cursor_means_the_first_page(raw: object) -> None:
    assert parse_cursor(raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("!!!!", id="not-base64"),
        pytest.param("abc", id="truncated"),
        pytest.param(encode_cursor("x:alice"), id="not-a-member-key"),
        pytest.param(encode_cursor("alice"), id="bare-user"),
        pytest.param("__8", id="not-utf8"),
        pytest.param("é", id="non-ascii"),
        pytest.param(encode_cursor("u:" + "a" * 2000), id="too-long"),
        pytest.param(123, id="number"),
        pytest.param(["u:alice"], id="list"),
    ],
)
def test_a_cursor_the_server_did_not_issue_is_refused_as_bad_request(raw: object) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_cursor(raw, 5)
    assert (info.value.code, info.value.request_id) == (ErrorCode.BAD_REQUEST, 5)

    err = refusal(frame(type="presence", channel="c", cursor=raw, id=7))
    assert (err.code, err.request_id) == (ErrorCode.BAD_REQUEST, 7)


# -- members and their events ---------------------------------------------------------------------


def test_member_key_is_the_user_or_else_the_connection() -> None:
    assert member_key("alice", "n1.1") == "u:alice"
    assert member_key(None, "n1.1") == "c:n1.1"
    assert member_key("", "n1.1") == "u:"


def test_member_fields_give_the_wire_identity_of_a_member_key() -> None:
    assert member_fields("u:alice") == {"user": "alice"}
    assert member_fields("u:c:odd") == {"user": "c:odd"}
    assert member_fields("c:n1.1") == {"user": None, "client": "n1.1"}


def event(frame_text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(frame_text)
    return parsed


def test_a_join_event_carries_the_info_object_spliced_in_unchanged() -> None:
    text = join_event("room:1", "u:alice", b'{"name":"Alice","n":[1,2]}')

    assert text == (
        '{"type":"join","channel":"room:1","user":"alice","info":{"name":"Alice","n":[1,2]}}'
    )
    assert event(text) == {
        "type": "join",
        "channel": "room:1",
        "user": "alice",
        "info": {"name": "Alice", "n": [1, 2]},
    }


def test_a_join_event_without_info_has_info_null() -> None:
    assert event(join_event("room:1", "u:alice", None)) == {
        "type": "join",
        "channel": "room:1",
        "user": "alice",
        "info": None,
    }


def test_a_leave_event_has_no_info() -> None:
    assert event(leave_event("room:1", "u:alice")) == {
        "type": "leave",
        "channel": "room:1",
        "user": "alice",
    }


def test_anonymous_members_are_identified_by_their_connection() -> None:
    assert event(join_event("news", "c:n2.7", None)) == {
        "type": "join",
        "channel": "news",
        "user": None,
        "client": "n2.7",
        "info": None,
    }
    assert event(leave_event("news", "c:n2.7")) == {
        "type": "leave",
        "channel": "news",
        "user": None,
        "client": "n2.7",
    }


def test_user_ids_survive_the_event_exactly() -> None:
    user = 'Zoë "q" \\ / 🚀'

    assert event(leave_event("room:1", member_key(user, "n1.1"))) == {
        "type": "leave",
        "channel": "room:1",
        "user": user,
    }
