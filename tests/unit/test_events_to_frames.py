"""The node as the engine's ``EngineEvents``: each typed event becomes the frame it
always was, byte for byte (the frames the envelope path built are written out here as
the old code built them), under the same rules and the same supervision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from pushhub import protocol
from pushhub.channels import ChannelOptions, ChannelRule
from pushhub.config import Settings
from pushhub.connection import Connection
from pushhub.engine.base import PresenceCount
from pushhub.engine.memory import MemoryEngine
from pushhub.hub import Hub
from pushhub.node import Node
from pushhub.stream import Position
from tests.support import RecordingSender

RULES = (
    ChannelRule("durable:*", ChannelOptions(durable=True, presence=False)),
    ChannelRule("quiet:*", ChannelOptions(join_leave=False)),
    ChannelRule("private:*", ChannelOptions(presence_read=False)),
)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    settings = Settings(node_id="ev", channels=RULES, max_message_size=1024, presence_tick=0.01)
    node = Node(settings, MemoryEngine())
    await node.start()
    yield node
    await node.close()


async def subscribed(node: Node, channel: str) -> tuple[Connection, RecordingSender]:
    sender = RecordingSender()
    session = node.open(sender, "10.0.0.1")
    await session.execute(protocol.Subscribe(channel))
    await ticked(node)
    sender.sent.clear()  # the subscribed reply, and the client's own join
    return session.conn, sender


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def ticked(node: Node) -> None:
    """Until the presence tick sent what was gathered (the feed empties at a tick)."""
    async with asyncio.timeout(2):
        while len(node.presence_feed) or node._tick is not None:
            await asyncio.sleep(0.005)
    await settle()


def old_frame(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


async def test_join_and_leave_frames_are_what_the_envelope_path_built(node: Node) -> None:
    _, sender = await subscribed(node, "room:1")
    info = {"name": "Zoë", "n": [1, 2.5, None], "deep": {"a": {"b": "\u2028"}}}

    node.on_join("room:1", "u:alice", orjson.dumps(info), PresenceCount(2, 2))
    node.on_join("room:1", "c:ev.x1", None, None)  # an older node's: no counts
    node.on_leave("room:1", "u:alice", PresenceCount(2, 2))
    node.on_leave("room:1", "c:ev.x1", PresenceCount(1, 1))
    await ticked(node)

    assert sender.lines() == [
        old_frame({"type": "join", "channel": "room:1", "user": "alice", "info": info}),
        old_frame(
            {"type": "join", "channel": "room:1", "user": None, "client": "ev.x1", "info": None}
        ),
        old_frame({"type": "leave", "channel": "room:1", "user": "alice"}),
        old_frame({"type": "leave", "channel": "room:1", "user": None, "client": "ev.x1"}),
    ]


@pytest.mark.parametrize("channel", ["quiet:1", "private:1"])
async def test_joins_and_leaves_are_not_shown_where_the_channel_hides_them(
    node: Node, channel: str
) -> None:
    _, sender = await subscribed(node, channel)
    delivered = node.messages_delivered

    node.on_join(channel, "u:alice", b"{}", PresenceCount(2, 2))
    node.on_leave(channel, "u:alice", PresenceCount(1, 1))
    node.on_message(channel, b'"fence"')
    await ticked(node)

    assert sender.lines() == [old_frame({"type": "message", "channel": channel, "data": "fence"})]
    assert node.messages_delivered == delivered + 1


async def test_a_durable_message_carries_its_position_and_a_duplicate_is_skipped(
    node: Node,
) -> None:
    _, sender = await subscribed(node, "durable:1")

    node.on_durable("durable:1", Position(1, "ep"), b'{"n":1}')
    node.on_durable("durable:1", Position(1, "ep"), b'{"n":1}')  # delivered already
    node.on_durable("durable:1", Position(2, "ep"), b"not json")
    await settle()

    assert sender.lines() == [
        old_frame(
            {
                "type": "message",
                "channel": "durable:1",
                "data": {"n": 1},
                "offset": 1,
                "epoch": "ep",
            }
        ),
        old_frame(
            {
                "type": "message",
                "channel": "durable:1",
                "data": "not json",
                "offset": 2,
                "epoch": "ep",
            }
        ),
    ]


async def test_a_durable_gap_makes_the_subscribers_recover(node: Node) -> None:
    _, sender = await subscribed(node, "durable:1")
    node.on_durable("durable:1", Position(1, "ep"), b"1")

    node.on_durable("durable:1", Position(3, "ep"), b"3")
    await settle()

    assert [orjson.loads(f) for f in sender.lines()][-1] == {
        "type": "unsubscribed",
        "channel": "durable:1",
        "reason": "recover",
    }


async def test_every_event_is_counted_as_received_even_without_a_subscriber(
    node: Node,
) -> None:
    before = node.messages_received

    node.on_message("nobody", b"1")
    node.on_durable("nobody", Position(1, "e"), b"1")
    node.on_join("nobody", "u:a", None, None)
    node.on_leave("nobody", "u:a", None)
    node.on_resubscribed()

    assert node.messages_received == before + 4


async def test_an_oversized_plain_message_is_dropped_and_counted(node: Node) -> None:
    _, sender = await subscribed(node, "room:big")

    node.on_message("room:big", b'"' + b"x" * 2000 + b'"')
    node.on_message("room:big", b"1")
    await settle()

    assert node.messages_dropped == 1
    assert sender.lines() == [old_frame({"type": "message", "channel": "room:big", "data": 1})]


@pytest.mark.parametrize("event", ["message", "durable", "join", "leave"])
async def test_a_handler_that_fails_is_counted_and_delivery_goes_on(
    node: Node, event: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = "durable:1" if event == "durable" else "room:1"
    _, sender = await subscribed(node, channel)

    def broken(hub: Hub, channel: str, frame: str, offset: int | None = None) -> int:
        raise RuntimeError("a client made delivery fail")

    with monkeypatch.context() as patch:
        patch.setattr(Hub, "broadcast", broken)
        if event == "message":
            node.on_message(channel, b"1")
        elif event == "durable":
            node.on_durable(channel, Position(1, "ep"), b"1")
        elif event == "join":
            node.on_join(channel, "u:a", None, PresenceCount(2, 2))
            await ticked(node)  # presence events are sent at the tick
        else:
            node.on_leave(channel, "u:a", PresenceCount(1, 1))
            await ticked(node)

    assert node.delivery_errors == 1
    node.on_message(channel, b'"after"')
    await settle()
    assert sender.lines()[-1] == old_frame({"type": "message", "channel": channel, "data": "after"})


async def test_a_ticks_events_go_out_as_one_frame_to_each_subscriber(node: Node) -> None:
    _, sender = await subscribed(node, "room:many")
    sends_before = node.messages_delivered

    for n in range(50):
        node.on_join("room:many", f"u:{n}", None, PresenceCount(n + 2, n + 2))
    await ticked(node)

    assert [orjson.loads(f)["user"] for f in sender.lines()] == [str(n) for n in range(50)]
    assert node.messages_delivered == sends_before + 1  # one frame, fifty lines


async def test_past_the_member_bound_subscribers_get_counts_instead(node: Node) -> None:
    node.rules = type(node.rules)((ChannelRule("big:*", ChannelOptions(join_leave_max_members=3)),))
    _, sender = await subscribed(node, "big:1")

    node.on_join("big:1", "u:a", None, PresenceCount(3, 3))
    await ticked(node)
    node.on_join("big:1", "u:b", None, PresenceCount(4, 5))
    node.on_join("big:1", "u:c", None, PresenceCount(5, 6))
    await ticked(node)
    node.on_leave("big:1", "u:c", PresenceCount(3, 3))
    await ticked(node)
    node.on_leave("big:1", "u:b", PresenceCount(2, 2))
    await ticked(node)

    assert [orjson.loads(f) for f in sender.lines()] == [
        {"type": "join", "channel": "big:1", "user": "a", "info": None},
        {
            "type": "presence_count",
            "channel": "big:1",
            "users": 5,
            "connections": 6,
            "join_leave": False,
        },
        {
            "type": "presence_count",
            "channel": "big:1",
            "users": 3,
            "connections": 3,
            "join_leave": True,
        },
        {"type": "leave", "channel": "big:1", "user": "b"},
    ]
