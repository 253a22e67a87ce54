"""Races only an in-process node can stage: a Node on the memory engine, a recording
sender, engine calls held or failed on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from pushhub.channels import ChannelOptions, ChannelRule
from pushhub.config import Settings
from pushhub.engine.base import HistoryRead
from pushhub.engine.memory import MemoryEngine
from pushhub.errors import EngineUnavailable
from pushhub.node import Node
from tests.support import RecordingSender

RULES = (ChannelRule("user:*", ChannelOptions(durable=True)),)


class HeldEngine(MemoryEngine):
    """A memory engine whose subscribe waits for the test, and whose history reads can
    be made to fail."""

    def __init__(self) -> None:
        super().__init__(rules=RULES)
        self.gate = asyncio.Event()
        self.gate.set()
        self.subscribing = asyncio.Event()
        self.fail_reads = False

    async def subscribe(self, channel: str) -> None:
        self.subscribing.set()
        await self.gate.wait()
        await super().subscribe(channel)

    async def read_history(self, *args: Any, **kwargs: Any) -> HistoryRead:
        if self.fail_reads:
            raise EngineUnavailable("Redis went away (in a test)")
        return await super().read_history(*args, **kwargs)

    async def stream_positions(self, channels: Any) -> Any:
        if self.fail_reads:
            raise EngineUnavailable("Redis went away (in a test)")
        return await super().stream_positions(channels)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    node = Node(Settings(node_id="race", channels=RULES), HeldEngine())
    await node.start()
    yield node
    await node.close()


def engine_of(node: Node) -> HeldEngine:
    assert isinstance(node.engine, HeldEngine)
    return node.engine


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_client_that_leaves_while_the_engine_subscribes_leaves_nothing_behind(
    node: Node,
) -> None:
    engine = engine_of(node)
    engine.gate.clear()
    sender = RecordingSender()
    conn = node.open(sender, "10.0.0.1")
    subscribing = asyncio.create_task(conn.execute(_subscribe("room", 1)))
    await engine.subscribing.wait()

    await node.disconnect(conn)  # the socket goes while Redis has not confirmed
    engine.gate.set()
    await subscribing
    await settle()

    assert not node.hub.has_subscribers("room")
    # Nothing upstream either: a publish on the channel no longer reaches the node.
    received = node.messages_received
    await engine.publish("room", b"1")
    await settle()
    assert node.messages_received == received
    assert (await engine.presence_counts(["room"]))[0].connections == 0
    assert not any(e.get("type") == "subscribed" for e in sender.events())


async def test_a_history_read_failing_during_catch_up_answers_unavailable_and_undoes(
    node: Node,
) -> None:
    engine = engine_of(node)
    await engine.publish_durable("user:1", b'{"n":1}')
    engine.fail_reads = True
    sender = RecordingSender()
    conn = node.open(sender, "10.0.0.2")

    await conn.execute(_subscribe("user:1", 7))
    await settle()

    (reply,) = [e for e in sender.events() if e.get("id") == 7]
    assert (reply["type"], reply["code"]) == ("error", "unavailable")
    assert "user:1" not in conn.conn.channels
    assert not node.hub.has_subscribers("user:1")
    assert conn.conn.held is None
    assert (await engine.presence_counts(["user:1"]))[0].connections == 0
    # The connection is still usable once the engine answers again.
    engine.fail_reads = False
    await conn.execute(_subscribe("user:1", 8))
    await settle()
    assert [e["type"] for e in sender.events() if e.get("id") == 8] == ["subscribed"]


async def test_a_recovery_from_a_position_replays_exactly_the_missed_messages(
    node: Node,
) -> None:
    engine = engine_of(node)
    first = await engine.publish_durable("user:2", b'{"n":1}')
    for n in (2, 3):
        await engine.publish_durable("user:2", b'{"n":%d}' % n)
    sender = RecordingSender()
    conn = node.open(sender, "10.0.0.3")
    since = {"offset": first.offset, "epoch": first.epoch}

    await conn.handle(
        orjson.dumps({"type": "subscribe", "channel": "user:2", "since": since, "id": 9}).decode(),
    )
    await settle()

    events = sender.events()
    assert [e["offset"] for e in events if e["type"] == "message"] == [2, 3]
    (reply,) = [e for e in events if e.get("id") == 9]
    assert (reply["type"], reply["recovered"], reply["offset"]) == ("subscribed", True, 3)
    # The replay came before the reply.
    assert events.index(reply) > max(i for i, e in enumerate(events) if e["type"] == "message")


def _subscribe(channel: str, request_id: int) -> Any:
    from pushhub import protocol

    return protocol.Subscribe(channel, request_id)
