"""Recovery decisions and the durable parts of the protocol, as plain function calls.

``node.can_recover`` decides whether a history read closes a client's gap exactly (all
of it, or nothing is replayed); the protocol functions parse ``since``, ``publish`` and
``history`` and build the frames that carry offsets and epochs.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pushhub import protocol
from pushhub.engine.base import HistoryMessage, HistoryRead
from pushhub.errors import ErrorCode, ProtocolError
from pushhub.protocol import (
    PRESENCE_PAGE_DEFAULT,
    History,
    Publish,
    Subscribe,
)
from pushhub.recovery import Held, StreamTracker, Verdict, can_recover, caught_up
from pushhub.stream import NO_HISTORY, Position

EPOCH = "6b0bf94cc87b9"
CAP = 300


def read(top: int, kept: range | list[int], epoch: str = EPOCH) -> HistoryRead:
    """A history read: ``top`` is the newest offset, ``kept`` the messages returned; the
    oldest kept offset is the first of ``kept`` (0 when none)."""
    offsets = list(kept)
    messages = [HistoryMessage(o, b"m%d" % o) for o in offsets]
    return HistoryRead(Position(top, epoch), offsets[0] if offsets else 0, messages)


def since(offset: int, epoch: str = EPOCH) -> Position:
    return Position(offset, epoch)


# -- can_recover ---------------------------------------------------------------------------


def test_same_epoch_and_nothing_missed_recovers() -> None:
    assert can_recover(since(10), read(10, []), CAP)
    assert can_recover(since(10), read(10, range(1, 11)), CAP)
    assert can_recover(since(0), read(0, []), CAP)


def test_every_missed_message_present_recovers() -> None:
    assert can_recover(since(4), read(10, range(5, 11)), CAP)
    assert can_recover(since(0), read(3, range(1, 4)), CAP)


def test_a_read_returning_more_than_the_missed_messages_still_recovers() -> None:
    # A read may return more than the gap; only the first ``missed`` count.
    assert can_recover(since(4), read(6, range(5, 11)), CAP)


def test_exactly_the_cap_of_missed_messages_recovers() -> None:
    assert can_recover(since(0), read(CAP, range(1, CAP + 1)), CAP)


def test_a_different_epoch_does_not_recover() -> None:
    assert not can_recover(since(4, "old-epoch"), read(10, range(5, 11)), CAP)
    assert not can_recover(since(10, "old-epoch"), read(10, []), CAP)


def test_a_position_ahead_of_the_newest_offset_does_not_recover() -> None:
    assert not can_recover(since(11), read(10, range(1, 11)), CAP)
    assert not can_recover(since(1), read(0, []), CAP)


def test_more_missed_messages_than_the_cap_do_not_recover() -> None:
    assert not can_recover(since(0), read(CAP + 1, range(1, CAP + 2)), CAP)
    assert not can_recover(since(10), read(15, range(11, 16)), 4)


def test_a_trimmed_gap_does_not_recover() -> None:
    # Offset 5 was trimmed: the oldest kept is 6, the client last saw 4.
    assert not can_recover(since(4), read(10, range(6, 11)), CAP)


def test_an_oldest_kept_offset_right_after_the_position_recovers() -> None:
    assert can_recover(since(5), read(10, range(6, 11)), CAP)


def test_an_empty_history_with_missed_messages_does_not_recover() -> None:
    assert not can_recover(since(4), read(10, []), CAP)


def test_a_hole_in_the_messages_does_not_recover() -> None:
    assert not can_recover(since(4), read(10, [5, 6, 8, 9, 10]), CAP)


def test_a_first_page_shorter_than_the_gap_recovers_the_rest_page_by_page() -> None:
    # A page bounded in bytes holds fewer messages than were missed; the node reads on.
    assert can_recover(since(4), read(10, range(5, 9)), CAP)


def test_an_empty_first_page_does_not_recover_a_gap() -> None:
    assert not can_recover(since(4), read(10, []), CAP)


def test_a_first_page_that_does_not_start_right_after_since_does_not_recover() -> None:
    assert not can_recover(since(4), read(10, range(6, 11)), CAP)


def test_messages_out_of_order_do_not_recover() -> None:
    assert not can_recover(since(4), read(7, [5, 7, 6]), CAP)


# -- subscribe with since -----------------------------------------------------------------


def refusal(frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        protocol.parse(frame)
    return info.value


def frame(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def subscribe_since(position: Any) -> str:
    return frame(type="subscribe", channel="user:42", since=position, id=7)


def test_subscribe_with_since_parses_into_a_position() -> None:
    parsed = protocol.parse(subscribe_since({"offset": 5, "epoch": EPOCH}))

    assert parsed == Subscribe("user:42", 7, Position(5, EPOCH))


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        ({"offset": 0, "epoch": "e"}, Position(0, "e")),
        ({"offset": 2**53 - 1, "epoch": "x" * 64}, Position(2**53 - 1, "x" * 64)),
        # The same leniency as "limit": a string of digits stands for the number.
        ({"offset": "5", "epoch": "e"}, Position(5, "e")),
        ({"offset": 5, "epoch": "e", "extra": True}, Position(5, "e")),
    ],
)
def test_since_at_the_edges_of_what_is_allowed_is_accepted(
    position: dict[str, Any], expected: Position
) -> None:
    assert protocol.parse(subscribe_since(position)) == Subscribe("user:42", 7, expected)


def test_subscribe_without_since_or_with_null_since_has_no_position() -> None:
    assert protocol.parse(frame(type="subscribe", channel="c")) == Subscribe("c")
    assert protocol.parse(frame(type="subscribe", channel="c", since=None)) == Subscribe("c")


@pytest.mark.parametrize(
    "position",
    [
        pytest.param({"offset": 5}, id="missing-epoch"),
        pytest.param({"epoch": EPOCH}, id="missing-offset"),
        pytest.param({"offset": None, "epoch": EPOCH}, id="null-offset"),
        pytest.param({"offset": -1, "epoch": EPOCH}, id="negative-offset"),
        pytest.param({"offset": "five", "epoch": EPOCH}, id="offset-as-a-word"),
        pytest.param({"offset": "-1", "epoch": EPOCH}, id="offset-as-a-negative-string"),
        pytest.param({"offset": "", "epoch": EPOCH}, id="offset-as-an-empty-string"),
        pytest.param({"offset": 1.5, "epoch": EPOCH}, id="fractional-offset"),
        pytest.param({"offset": True, "epoch": EPOCH}, id="boolean-offset"),
        pytest.param({"offset": 2**53, "epoch": EPOCH}, id="offset-too-large"),
        pytest.param({"offset": 5, "epoch": ""}, id="empty-epoch"),
        pytest.param({"offset": 5, "epoch": "x" * 65}, id="epoch-too-long"),
        pytest.param({"offset": 5, "epoch": 123}, id="epoch-not-a-string"),
        pytest.param([5, EPOCH], id="a-list"),
        pytest.param(5, id="a-number"),
        pytest.param("5:" + EPOCH, id="a-string"),
    ],
)
def test_a_bad_since_is_refused_as_bad_request_with_the_request_id(position: Any) -> None:
    err = refusal(subscribe_since(position))

    assert err.code == ErrorCode.BAD_REQUEST
    assert err.request_id == 7


# -- publish -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"data": {"text": "hi"}}, Publish("user:1", {"text": "hi"})),
        ({"data": None}, Publish("user:1", None)),
        (
            {"data": "x", "idempotency_key": "order-7:v1.2_a"},
            Publish("user:1", "x", "order-7:v1.2_a"),
        ),
        ({"data": 1, "idempotency_key": "k" * 128}, Publish("user:1", 1, "k" * 128)),
        ({"data": 1, "idempotency_key": None}, Publish("user:1", 1)),
        ({"data": [1], "id": 4}, Publish("user:1", [1], None, 4)),
    ],
)
def test_publish_command_parses_data_and_idempotency_key(
    fields: dict[str, Any], expected: Publish
) -> None:
    assert protocol.parse(frame(type="publish", channel="user:1", **fields)) == expected


def test_publish_without_data_is_refused_as_bad_request() -> None:
    err = refusal(frame(type="publish", channel="user:1", id=3))

    assert (err.code, err.request_id) == (ErrorCode.BAD_REQUEST, 3)
    assert "data" in err.message


def test_publish_to_a_bad_channel_is_refused_as_bad_channel() -> None:
    err = refusal(frame(type="publish", channel="user:*", data=1, id=3))

    assert (err.code, err.request_id) == (ErrorCode.BAD_CHANNEL, 3)


@pytest.mark.parametrize(
    "key",
    ["", "k" * 129, "has space", "slash/key", "brace{x}", "caf\u00e9", 42, True, ["k"], {"k": 1}],
)
def test_a_bad_idempotency_key_is_refused_as_bad_request(key: Any) -> None:
    err = refusal(frame(type="publish", channel="user:1", data=1, idempotency_key=key, id=5))

    assert (err.code, err.request_id) == (ErrorCode.BAD_REQUEST, 5)
    assert "idempotency_key" in err.message


# -- history ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, History("user:1")),
        ({"since": 10}, History("user:1", 10)),
        ({"since": 0}, History("user:1", 0)),
        ({"since": "10"}, History("user:1", 10)),
        ({"since": None}, History("user:1")),
        ({"since": ""}, History("user:1")),
        ({"limit": 1}, History("user:1", None, 1)),
        ({"limit": 1000}, History("user:1", None, 1000)),
        ({"reverse": True}, History("user:1", None, PRESENCE_PAGE_DEFAULT, True)),
        ({"reverse": False, "id": 9}, History("user:1", id=9)),
        ({"since": 3, "limit": 2, "reverse": True, "id": 1}, History("user:1", 3, 2, True, 1)),
    ],
)
def test_history_command_parses_since_limit_and_reverse(
    fields: dict[str, Any], expected: History
) -> None:
    assert protocol.parse(frame(type="history", channel="user:1", **fields)) == expected


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"since": -1}, id="negative-since"),
        pytest.param({"since": 1.5}, id="fractional-since"),
        pytest.param({"since": "ten"}, id="since-a-word"),
        pytest.param({"since": True}, id="boolean-since"),
        pytest.param({"since": {"offset": 1, "epoch": "e"}}, id="since-a-position"),
        pytest.param({"limit": 0}, id="limit-zero"),
        pytest.param({"limit": 1001}, id="limit-too-large"),
        pytest.param({"limit": -5}, id="negative-limit"),
        pytest.param({"reverse": "true"}, id="reverse-a-string"),
        pytest.param({"reverse": 1}, id="reverse-a-number"),
        pytest.param({"reverse": None}, id="reverse-null"),
    ],
)
def test_a_bad_history_command_is_refused_as_bad_request(fields: dict[str, Any]) -> None:
    err = refusal(frame(type="history", channel="user:1", id=2, **fields))

    assert (err.code, err.request_id) == (ErrorCode.BAD_REQUEST, 2)


# -- server frames ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (
            protocol.subscribed("user:1", 3, Position(10, EPOCH), True),
            {
                "type": "subscribed",
                "channel": "user:1",
                "offset": 10,
                "epoch": EPOCH,
                "recovered": True,
                "id": 3,
            },
        ),
        (
            protocol.subscribed("user:1", None, Position(0, EPOCH), False),
            {
                "type": "subscribed",
                "channel": "user:1",
                "offset": 0,
                "epoch": EPOCH,
                "recovered": False,
            },
        ),
        (
            protocol.subscribed("user:1", 4, Position(10, EPOCH)),
            {"type": "subscribed", "channel": "user:1", "offset": 10, "epoch": EPOCH, "id": 4},
        ),
        (
            protocol.subscribed("news", 5, None, False),
            {"type": "subscribed", "channel": "news", "recovered": False, "id": 5},
        ),
        (
            protocol.published("user:1", 6, Position(11, EPOCH)),
            {"type": "published", "channel": "user:1", "offset": 11, "epoch": EPOCH, "id": 6},
        ),
        (
            protocol.published("news", None, None),
            {"type": "published", "channel": "news"},
        ),
        (
            protocol.history_reply(
                "user:1",
                Position(11, EPOCH),
                [{"offset": 10, "data": {"a": 1}}, {"offset": 11, "data": "x\ny"}],
                9,
                7,
            ),
            {
                "type": "history",
                "channel": "user:1",
                "offset": 11,
                "epoch": EPOCH,
                "messages": [{"offset": 10, "data": {"a": 1}}, {"offset": 11, "data": "x\ny"}],
                "next_since": 9,
                "id": 7,
            },
        ),
        (
            protocol.history_reply("user:1", Position(0, EPOCH), [], None, None),
            {
                "type": "history",
                "channel": "user:1",
                "offset": 0,
                "epoch": EPOCH,
                "messages": [],
                "next_since": None,
            },
        ),
        (
            protocol.unsubscribed("user:1", None, reason="recover"),
            {"type": "unsubscribed", "channel": "user:1", "reason": "recover"},
        ),
        (
            protocol.unsubscribed("user:1", 8, reason="recover"),
            {"type": "unsubscribed", "channel": "user:1", "reason": "recover", "id": 8},
        ),
        (
            protocol.message("user:1", {"text": "a\nb"}, 12, EPOCH),
            {
                "type": "message",
                "channel": "user:1",
                "data": {"text": "a\nb"},
                "offset": 12,
                "epoch": EPOCH,
            },
        ),
    ],
)
def test_durable_server_frame_is_compact_json_on_one_line(encoded: str, expected: object) -> None:
    assert "\n" not in encoded
    assert orjson.loads(encoded) == expected
    assert encoded == orjson.dumps(expected).decode()  # field order and no spaces


def test_a_replay_after_an_overflow_that_kept_no_durable_frame_reads_once_more() -> None:
    held = Held(max_frames=2, max_bytes=1 << 20)
    for offset in (11, 12):
        held.add(offset, "m")
    seen_before = held.overflows
    held.add(None, "join")  # overflows; only the presence event is kept

    # Durable frames 11 and 12 were dropped: only a read begun after the overflow covers them.
    assert not caught_up(held, 10, 10, seen_before)
    assert caught_up(held, 12, 12, held.overflows)
    # Without an overflow, the first read's position is the mark.
    assert caught_up(Held(max_frames=10, max_bytes=1 << 20), 10, 10, 0)
    assert caught_up(None, 10, 10, 0)
    assert not caught_up(None, 9, 10, 0)


def test_after_an_overflow_the_replay_meets_the_oldest_durable_frame_still_held() -> None:
    held = Held(max_frames=2, max_bytes=1 << 20)
    for offset in (5, 6, 7):
        held.add(offset, "m")  # the third overflows: only 7 is kept

    assert not caught_up(held, 5, 6, 0)
    assert caught_up(held, 6, 6, 0)


def test_held_frames_are_released_beyond_the_replayed_position_with_every_event() -> None:
    held = Held(max_frames=10, max_bytes=1 << 20)
    for offset, frame in ((3, "m3"), (None, "join"), (4, "m4"), (5, "m5")):
        held.add(offset, frame)

    assert held.after(4) == ["join", "m5"]
    assert held.after(None) == ["m3", "join", "m4", "m5"]


# -- the stream tracker ------------------------------------------------------------------


def test_the_next_offset_is_delivered_and_moves_the_position() -> None:
    streams = StreamTracker()
    streams.start("user:1", Position(4, EPOCH))

    assert streams.observe("user:1", 5, EPOCH) is Verdict.DELIVER
    assert streams.get("user:1") == Position(5, EPOCH)


def test_an_offset_already_delivered_is_a_duplicate() -> None:
    streams = StreamTracker()
    streams.start("user:1", Position(4, EPOCH))

    assert streams.observe("user:1", 4, EPOCH) is Verdict.DUPLICATE
    assert streams.observe("user:1", 2, EPOCH) is Verdict.DUPLICATE
    assert streams.get("user:1") == Position(4, EPOCH)


def test_a_skipped_offset_or_another_epoch_is_a_gap() -> None:
    streams = StreamTracker()
    streams.start("user:1", Position(4, EPOCH))

    assert streams.observe("user:1", 6, EPOCH) is Verdict.GAP
    assert streams.observe("user:1", 5, "another") is Verdict.GAP
    assert streams.get("user:1") == Position(4, EPOCH)


def test_the_first_message_of_a_history_seen_empty_follows_on_from_it() -> None:
    streams = StreamTracker()
    streams.start("user:1", NO_HISTORY)

    assert streams.observe("user:1", 1, EPOCH) is Verdict.DELIVER
    fresh = StreamTracker()
    fresh.start("user:2", NO_HISTORY)
    assert fresh.observe("user:2", 3, EPOCH) is Verdict.GAP


def test_a_channel_without_a_position_takes_the_first_message_it_sees() -> None:
    streams = StreamTracker()

    assert streams.observe("user:1", 9, EPOCH) is Verdict.DELIVER
    streams.start("user:1", Position(7, EPOCH))  # the catch-up read, older
    assert streams.get("user:1") == Position(9, EPOCH)


def test_a_stream_that_moved_while_the_node_was_away_means_loss() -> None:
    streams = StreamTracker()
    streams.start("user:1", Position(4, EPOCH))
    streams.start("user:2", NO_HISTORY)

    assert not streams.moved("user:1", Position(4, EPOCH))
    assert streams.moved("user:1", Position(6, EPOCH))
    assert not streams.moved("user:2", None)
    assert streams.moved("user:2", Position(1, EPOCH))
    streams.forget("user:1")
    assert streams.channels() == ["user:2"]
