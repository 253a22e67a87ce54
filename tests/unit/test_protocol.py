"""The wire protocol as plain function calls: no server, no socket, no event loop."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pushhub import protocol
from pushhub.errors import ErrorCode, ProtocolError
from pushhub.protocol import MAX_REQUEST_ID, Command, Ping, Subscribe, Unsubscribe
from pushhub.stream import Position


def refusal(frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        protocol.parse(frame)
    return info.value


def frame(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


# -- valid commands ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ('{"type":"subscribe","channel":"news"}', Subscribe("news")),
        ('{"type":"subscribe","channel":"news","id":7}', Subscribe("news", 7)),
        ('{"type":"unsubscribe","channel":"news"}', Unsubscribe("news")),
        ('{"type":"unsubscribe","channel":"news","id":8}', Unsubscribe("news", 8)),
        ('{"type":"ping"}', Ping()),
        ('{"type":"ping","id":9}', Ping(9)),
        ('{"type":"ping","id":null}', Ping()),
        ('{"type":"ping","id":0}', Ping(0)),
        ('{"type":"ping","id":9007199254740991}', Ping(MAX_REQUEST_ID)),
    ],
)
def test_valid_command_parses_into_its_typed_form(text: str, command: Command) -> None:
    assert protocol.parse(text) == command


def test_frame_given_as_bytes_parses_like_text() -> None:
    assert protocol.parse(b'{"type":"subscribe","channel":"a","id":1}') == Subscribe("a", 1)


@pytest.mark.parametrize(
    "channel",
    ["a", "order:updates", "user:42", "a-b_c.d@e=f+g#i$j!k~l", "Z9", "x" * 255, "_single"],
)
def test_channel_of_allowed_characters_up_to_255_long_is_accepted(channel: str) -> None:
    assert protocol.parse(frame(type="subscribe", channel=channel)) == Subscribe(channel)


# -- refused frames ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "{", '{"type":"ping"', "not json", b"\xff\xfe"])
def test_malformed_json_is_refused_as_bad_json(text: str | bytes) -> None:
    err = refusal(text)
    assert err.code == ErrorCode.BAD_JSON
    assert err.request_id is None


@pytest.mark.parametrize("text", ["[]", "1", '"x"', "null", "true", '[{"type":"ping"}]'])
def test_frame_that_is_not_a_json_object_is_refused_as_bad_frame(text: str) -> None:
    assert refusal(text).code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "text", ["{}", '{"channel":"a"}', '{"type":null}', '{"type":1}', '{"type":["ping"]}']
)
def test_frame_without_a_string_type_is_refused_as_bad_frame(text: str) -> None:
    assert refusal(text).code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize("kind", ["broadcast", "PING", "Subscribe", "", "x" * 1000])
def test_unknown_type_is_refused_as_unknown_type(kind: str) -> None:
    err = refusal(frame(type=kind))
    assert err.code == ErrorCode.UNKNOWN_TYPE
    assert len(err.message) < 200  # a huge type name is not echoed back whole


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize(
    "channel",
    [
        pytest.param(None, id="missing"),
        pytest.param(42, id="number"),
        pytest.param(["a"], id="array"),
        pytest.param({"a": 1}, id="object"),
        pytest.param(True, id="bool"),
        pytest.param("", id="empty"),
        pytest.param("x" * 256, id="256-chars"),
        pytest.param("a*", id="star"),
        pytest.param("a?", id="question-mark"),
        pytest.param("a[", id="open-bracket"),
        pytest.param("a]", id="close-bracket"),
        pytest.param("a{", id="open-brace"),
        pytest.param("a}", id="close-brace"),
        pytest.param("a b", id="space"),
        pytest.param("a\r", id="carriage-return"),
        pytest.param("a\n", id="newline"),
        pytest.param("a\nb", id="inner-newline"),
        pytest.param("a\0", id="nul"),
        pytest.param("a\t", id="tab"),
        pytest.param("user/42", id="slash"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param("\u0430", id="cyrillic-a"),
        pytest.param("__pushhub__.probe.x", id="reserved-prefix"),
        pytest.param("__", id="reserved-prefix-alone"),
    ],
)
def test_bad_channel_is_refused_as_bad_channel(kind: str, channel: object) -> None:
    fields: dict[str, Any] = {"type": kind}
    if channel is not None:
        fields["channel"] = channel
    assert refusal(frame(**fields)).code == ErrorCode.BAD_CHANNEL


@pytest.mark.parametrize(
    "rid",
    [
        pytest.param("-1", id="negative"),
        pytest.param("1.5", id="float"),
        pytest.param("1.0", id="integral-float"),
        pytest.param("1e3", id="exponent"),
        pytest.param('"1"', id="string"),
        pytest.param("true", id="true"),
        pytest.param("false", id="false"),
        pytest.param("[1]", id="array"),
        pytest.param("9007199254740992", id="2^53"),
        pytest.param("18446744073709551616", id="2^64"),
    ],
)
def test_bad_request_id_is_refused_as_bad_request(rid: str) -> None:
    err = refusal(f'{{"type":"ping","id":{rid}}}')
    assert err.code == ErrorCode.BAD_REQUEST
    assert err.request_id is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type":"subscribe","channel":"a b","id":5}', ErrorCode.BAD_CHANNEL),
        ('{"type":"unsubscribe","id":5}', ErrorCode.BAD_CHANNEL),
        ('{"type":"subscribe","channel":"__x","id":5}', ErrorCode.BAD_CHANNEL),
        ('{"type":"nope","id":5}', ErrorCode.UNKNOWN_TYPE),
        ('{"id":5}', ErrorCode.BAD_FRAME),
        ('{"type":7,"id":5}', ErrorCode.BAD_FRAME),
    ],
)
def test_error_carries_the_request_id_when_the_frame_had_a_valid_one(
    text: str, code: ErrorCode
) -> None:
    err = refusal(text)
    assert (err.code, err.request_id) == (code, 5)


def test_validate_channel_returns_a_valid_name_unchanged() -> None:
    assert protocol.validate_channel("order:updates") == "order:updates"


# -- payloads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b'{"orderId":"123","status":"shipped"}', {"orderId": "123", "status": "shipped"}),
        (b"42", 42),
        (b"-1.5", -1.5),
        (b'"quoted"', "quoted"),
        (b"[1,2]", [1, 2]),
        (b"hello world", "hello world"),
        (b"", ""),
        (b"{not json", "{not json"),
        (b"caf\xc3\xa9", "caf\u00e9"),
        (b"a\xffb", "a\ufffdb"),
        (b"\xff\xfe", "\ufffd\ufffd"),
    ],
)
def test_decode_payload_gives_json_as_json_and_anything_else_as_a_string(
    raw: bytes, data: object
) -> None:
    assert protocol.decode_payload(raw) == data


def test_encode_data_is_compact_json_as_redis_cli_would_send_it() -> None:
    assert protocol.encode_data({"a": [1, 2], "b": "x"}) == b'{"a":[1,2],"b":"x"}'


# -- server frames --------------------------------------------------------------------

TRICKY = {"text": "line one\nline two\r\n", "nested": ["a\nb", {"k": "\u2028\t"}]}


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (
            protocol.message("news", TRICKY),
            {"type": "message", "channel": "news", "data": TRICKY},
        ),
        (protocol.message("news", "a\nb"), {"type": "message", "channel": "news", "data": "a\nb"}),
        (protocol.subscribed("news", 3), {"type": "subscribed", "channel": "news", "id": 3}),
        (protocol.subscribed("news", None), {"type": "subscribed", "channel": "news"}),
        (protocol.unsubscribed("news", 4), {"type": "unsubscribed", "channel": "news", "id": 4}),
        (protocol.unsubscribed("news", None), {"type": "unsubscribed", "channel": "news"}),
        (protocol.pong(5), {"type": "pong", "id": 5}),
        (protocol.pong(None), {"type": "pong"}),
        (
            protocol.error(ProtocolError(ErrorCode.BAD_CHANNEL, "bad\nname", 6)),
            {"type": "error", "id": 6, "code": "bad_channel", "message": "bad\nname"},
        ),
        (
            protocol.error(ProtocolError(ErrorCode.BAD_JSON, "no")),
            {"type": "error", "id": None, "code": "bad_json", "message": "no"},
        ),
    ],
)
def test_server_frame_is_compact_json_on_one_line(encoded: str, expected: object) -> None:
    # Frames may be coalesced with "\n" between them, so none may contain a raw newline.
    assert "\n" not in encoded
    assert "\r" not in encoded
    assert orjson.loads(encoded) == expected
    assert encoded == orjson.dumps(expected).decode()  # no spaces after ":" or ","


def test_coalesced_frames_split_back_into_the_original_events() -> None:
    frames = [protocol.message("a", TRICKY), protocol.pong(1), protocol.message("b", "x\ny")]
    assert "\n".join(frames).split("\n") == frames


# -- JSON nesting and payload pass-through -------------------------------------------------


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[["', 0),
        ("[]", 1),
        ('[[1],{"a":[2]}]', 3),
        ('["\\"[[", [[]]]', 3),
        ('{"a\\\\":[[[]]]}', 4),
        (nested(254), 254),
        (nested(900), 900),
    ],
)
def test_json_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert protocol.json_depth(text) == depth
    assert protocol.json_depth(text.encode()) == depth


def test_too_deep_decides_from_counts_and_scans_only_bracket_heavy_text() -> None:
    assert not protocol.too_deep(nested(64), 64)
    assert protocol.too_deep(nested(65), 64)
    # Many brackets side by side are not deep.
    assert not protocol.too_deep("[" + ",".join(["[1]"] * 500) + "]", 64)


def test_a_json_payload_is_spliced_into_the_frame_byte_for_byte() -> None:
    raw = b'{"orderId":"123","big":123456789012345678901234567890,"x":1.50}'

    frame = protocol.message("order:updates", protocol.payload_data(raw))

    assert frame == '{"type":"message","channel":"order:updates","data":' + raw.decode() + "}"


@pytest.mark.parametrize("depth", [254, 255, 900, 1024, 1025])
def test_a_payload_nested_deeper_than_the_limit_is_delivered_as_its_text(depth: int) -> None:
    raw = nested(depth).encode()

    frame = protocol.message("c", protocol.payload_data(raw, max_depth=64))

    assert orjson.loads(frame)["data"] == raw.decode()


def test_newlines_inside_a_json_payload_become_spaces_so_frames_stay_one_line() -> None:
    frame = protocol.message("c", protocol.payload_data(b'{"a":\n1,\r\n"b":"x\\ny"}'))

    assert "\n" not in frame
    assert orjson.loads(frame)["data"] == {"a": 1, "b": "x\ny"}


def test_a_frame_nested_deeper_than_the_limit_is_refused_with_its_id() -> None:
    frame = '{"type":"publish","channel":"c","id":7,"data":' + nested(65) + "}"

    with pytest.raises(ProtocolError) as info:
        protocol.parse(frame, max_depth=64)

    assert (info.value.code, info.value.request_id) == (ErrorCode.BAD_REQUEST, 7)
    accepted = protocol.parse(frame, max_depth=65)
    assert isinstance(accepted, protocol.Publish)
    assert accepted.id == 7


@pytest.mark.parametrize("channel", ["a#b#c", "notifications#x#alice", "##"])
def test_a_channel_name_with_more_than_one_hash_is_refused(channel: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.validate_channel(channel)

    assert info.value.code is ErrorCode.BAD_CHANNEL


def test_the_empty_epoch_is_a_position_only_at_offset_zero() -> None:
    assert protocol.parse_position({"offset": 0, "epoch": ""}) == Position(0, "")
    with pytest.raises(ProtocolError):
        protocol.parse_position({"offset": 3, "epoch": ""})
