"""The engine contract (pushhub/engine/base.py), written once and run on every engine.

"Two nodes" are two engines on one backing store: two ``MemoryEngine`` objects sharing a
``MemoryBroker``, or two ``RedisEngine`` objects on the same real redis-server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pushhub.engine.base import Engine
from pushhub.engine.memory import MemoryBroker, MemoryEngine
from pushhub.engine.redis import RedisEngine
from tests.engine_events import Event, Recorder

#: Every wait for a delivery is bounded by this, so a lost message fails the test fast.
DELIVERY_TIMEOUT = 5.0


class Node(Recorder):
    """One engine and the events it delivered, in order (a message as its bytes)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    async def next(self) -> tuple[str, Event]:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            return await self.received.get()

    async def take(self, count: int) -> list[tuple[str, Event]]:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            return [await self.received.get() for _ in range(count)]


StartNode = Callable[[], Awaitable[Node]]


@pytest.fixture(params=["memory", "redis"])
def make_engine(request: pytest.FixtureRequest) -> Callable[[], Engine]:
    """Make engines that share one backing store; the redis-server starts only if needed."""
    if request.param == "memory":
        broker = MemoryBroker()
        return lambda: MemoryEngine(broker)
    url: str = request.getfixturevalue("redis_url")
    ids = itertools.count()
    return lambda: RedisEngine(url, node_id=f"contract-{next(ids)}")


@pytest.fixture
async def start_node(make_engine: Callable[[], Engine]) -> AsyncIterator[StartNode]:
    """Start nodes on the shared store; every engine is closed after the test."""
    started: list[Engine] = []

    async def start() -> Node:
        node = Node(make_engine())
        await node.engine.start(node)
        started.append(node.engine)
        return node

    yield start
    for engine in started:
        await engine.close()


async def test_publish_from_another_node_reaches_the_handler_once_subscribe_returns(
    start_node: StartNode,
) -> None:
    publisher, subscriber = await start_node(), await start_node()
    await subscriber.engine.subscribe("order:updates")

    await publisher.engine.publish("order:updates", b'{"orderId":"123"}')

    assert await subscriber.next() == ("order:updates", b'{"orderId":"123"}')


async def test_publish_reaches_every_subscribed_node_including_the_publisher(
    start_node: StartNode,
) -> None:
    a, b = await start_node(), await start_node()
    await a.engine.subscribe("news")
    await b.engine.subscribe("news")

    await a.engine.publish("news", b"hello")

    assert await a.next() == ("news", b"hello")
    assert await b.next() == ("news", b"hello")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"plain text", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00\x80 not utf-8 \xc3", id="not-utf8"),
        pytest.param("caf\u00e9 \u2603".encode(), id="utf8"),
        pytest.param(b"line\r\nbreaks\n", id="newlines"),
        pytest.param(bytes(range(256)) * 240, id="60KiB"),
    ],
)
async def test_payload_bytes_arrive_exactly_as_published(
    start_node: StartNode, payload: bytes
) -> None:
    publisher, subscriber = await start_node(), await start_node()
    await subscriber.engine.subscribe("bytes")

    await publisher.engine.publish("bytes", payload)

    channel, received = await subscriber.next()
    assert channel == "bytes"
    assert type(received) is bytes
    assert received == payload


async def test_payloads_from_one_publisher_arrive_in_publish_order(start_node: StartNode) -> None:
    publisher, subscriber = await start_node(), await start_node()
    await subscriber.engine.subscribe("seq")
    payloads = [str(i).encode() for i in range(500)]

    for payload in payloads:
        await publisher.engine.publish("seq", payload)

    assert await subscriber.take(len(payloads)) == [("seq", p) for p in payloads]


async def test_unsubscribe_stops_delivery_of_that_channel_only(start_node: StartNode) -> None:
    publisher, subscriber = await start_node(), await start_node()
    await subscriber.engine.subscribe("gone")
    await subscriber.engine.subscribe("kept")

    await subscriber.engine.unsubscribe("gone")
    await publisher.engine.publish("gone", b"must not arrive")
    await publisher.engine.publish("kept", b"later")

    # "kept" was published after "gone" by the same publisher, so "gone" would be first.
    assert await subscriber.next() == ("kept", b"later")
    assert subscriber.received.empty()


async def test_channel_subscribed_again_after_unsubscribe_is_delivered_again(
    start_node: StartNode,
) -> None:
    publisher, subscriber = await start_node(), await start_node()
    await subscriber.engine.subscribe("again")
    await subscriber.engine.unsubscribe("again")

    await subscriber.engine.subscribe("again")
    await publisher.engine.publish("again", b"back")

    assert await subscriber.next() == ("again", b"back")


async def test_unsubscribe_from_a_channel_never_subscribed_is_not_an_error(
    start_node: StartNode,
) -> None:
    node = await start_node()

    await node.engine.unsubscribe("never")

    await node.engine.subscribe("fence")
    await node.engine.publish("never", b"not subscribed")
    await node.engine.publish("fence", b"fence")
    assert await node.next() == ("fence", b"fence")


async def test_publish_many_delivers_every_item_in_order(start_node: StartNode) -> None:
    publisher, subscriber = await start_node(), await start_node()
    await subscriber.engine.subscribe("x")
    await subscriber.engine.subscribe("y")
    items = [("x", b"1"), ("y", b"2"), ("x", b"3"), ("nobody", b"4"), ("y", b"5")]

    await publisher.engine.publish_many(items)

    assert await subscriber.take(4) == [("x", b"1"), ("y", b"2"), ("x", b"3"), ("y", b"5")]


async def test_publish_many_of_nothing_is_not_an_error(start_node: StartNode) -> None:
    node = await start_node()

    await node.engine.publish_many([])


async def test_the_engine_receives_exactly_the_channels_it_holds(start_node: StartNode) -> None:
    publisher, node = await start_node(), await start_node()

    await node.engine.subscribe("a")
    await node.engine.subscribe("b")
    await node.engine.subscribe("a")  # twice: still one subscription, one delivery
    await publisher.engine.publish_many([("a", b"1"), ("b", b"2"), ("c", b"3")])
    assert await node.take(2) == [("a", b"1"), ("b", b"2")]

    await node.engine.unsubscribe("a")
    await publisher.engine.publish_many([("a", b"4"), ("b", b"5")])
    assert await node.next() == ("b", b"5")
    assert node.received.empty()


async def test_check_passes_on_a_started_engine(start_node: StartNode) -> None:
    node = await start_node()

    await node.engine.check()


async def test_close_is_idempotent(start_node: StartNode) -> None:
    node = await start_node()
    await node.engine.subscribe("c")

    await node.engine.close()
    await node.engine.close()


async def test_closed_engine_no_longer_receives(start_node: StartNode) -> None:
    publisher, closing, staying = await start_node(), await start_node(), await start_node()
    await closing.engine.subscribe("c")
    await staying.engine.subscribe("c")

    await closing.engine.close()
    await publisher.engine.publish("c", b"after close")

    assert await staying.next() == ("c", b"after close")
    assert closing.received.empty()


async def test_publish_to_a_channel_nobody_subscribes_is_not_an_error(
    start_node: StartNode,
) -> None:
    publisher, subscriber = await start_node(), await start_node()
    await subscriber.engine.subscribe("watched")

    await publisher.engine.publish("unwatched", b"into the void")
    await publisher.engine.publish("watched", b"seen")

    assert await subscriber.next() == ("watched", b"seen")
