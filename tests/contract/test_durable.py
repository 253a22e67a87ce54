"""The durable-channel contract (pushhub/engine/base.py), written once and run on every engine.

"Nodes" are engines sharing one store: ``MemoryEngine`` objects on one ``MemoryBroker``,
or ``RedisEngine`` objects on one real redis-server, all given the same channel rules.
Where the engines differ on purpose (a non-durable channel; how a TTL is observed) each
behaviour is asserted in a test of its own, named after the engine.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from pushhub.channels import ChannelOptions, ChannelRule
from pushhub.engine.base import (
    Engine,
    HistoryMessage,
    HistoryRead,
)
from pushhub.engine.memory import MemoryBroker, MemoryEngine
from pushhub.engine.redis import RedisEngine
from pushhub.errors import EngineError
from pushhub.stream import NO_HISTORY, Position
from tests.engine_events import Durable, Event, Ignore, Recorder
from tests.support import RedisServer

#: Every wait for a delivery is bounded by this, so a lost message fails the test fast.
DELIVERY_TIMEOUT = 5.0

#: The Redis engines of this suite use a prefix of their own, to see that it is used.
PREFIX = "durable-test:"

#: Seconds a history lives after its last publish.
TTL = 60

RULES = (
    ChannelRule("small:*", ChannelOptions(durable=True, history_size=5, history_ttl=TTL)),
    ChannelRule("user:*", ChannelOptions(durable=True, history_size=1000, history_ttl=TTL)),
    ChannelRule("plain:*", ChannelOptions(durable=False)),
)

#: A channel no rule makes durable.
PLAIN = "plain:1"


class Clock:
    """Seconds, moved only by the test."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Delivered:
    """A durable message as a subscribed node received it."""

    offset: int
    epoch: str
    data: bytes


def unwrap(event: Event) -> Delivered:
    """A durable message event; fail the test on anything else."""
    assert isinstance(event, Durable), f"not a durable message: {event!r:.80}"
    offset, epoch = event.position.offset, event.position.epoch
    assert type(offset) is int
    assert isinstance(epoch, str)
    assert type(event.payload) is bytes
    return Delivered(offset, epoch, event.payload)


class Node(Recorder):
    """One engine and the events it delivered, in order (a message as its bytes)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self._fences = itertools.count()

    async def messages(self, channel: str, count: int) -> list[Delivered]:
        """The next ``count`` payloads, which must all be durable messages on ``channel``."""
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            got = [await self.received.get() for _ in range(count)]
        assert [c for c, _ in got] == [channel] * count
        return [unwrap(payload) for _, payload in got]

    async def until_fence(self, channel: str) -> list[Event]:
        """Every payload received on ``channel`` before a fence published now.

        The fence is a plain publish made after the operations under test returned; one
        store delivers in the order it executed, so nothing they published is still in
        flight once the fence arrives.
        """
        fence = b"fence-%d" % next(self._fences)
        await self.engine.publish(channel, fence)
        payloads: list[Event] = []
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while True:
                got, payload = await self.received.get()
                if (got, payload) == (channel, fence):
                    return payloads
                if got == channel:
                    payloads.append(payload)


@dataclass
class Store:
    """The shared state behind the nodes of one test, and a way to lose all of it."""

    make: Callable[[], Engine]
    lose_everything: Callable[[], None]


StartNode = Callable[[], Awaitable[Node]]


def redis_store(server: RedisServer, url: str) -> Store:
    ids = itertools.count()

    def flushall() -> None:
        assert server.cli("FLUSHALL").strip() == "OK"

    return Store(
        lambda: RedisEngine(url, node_id=f"durable-{next(ids)}", key_prefix=PREFIX, rules=RULES),
        flushall,
    )


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    """The backing store; the redis-server is started (and flushed) only if needed."""
    if request.param == "memory":
        broker = MemoryBroker()
        return Store(lambda: MemoryEngine(broker, rules=RULES), broker.flush)
    return redis_store(
        request.getfixturevalue("redis_server"), request.getfixturevalue("redis_url")
    )


@pytest.fixture
async def start_node(store: Store) -> AsyncIterator[StartNode]:
    """Start nodes on the shared store; every engine is closed after the test."""
    started: list[Engine] = []

    async def start() -> Node:
        node = Node(store.make())
        await node.engine.start(node)
        started.append(node.engine)
        return node

    yield start
    for engine in started:
        await engine.close()


@pytest.fixture
async def publisher(start_node: StartNode) -> Node:
    return await start_node()


@pytest.fixture
async def subscriber(start_node: StartNode) -> Node:
    return await start_node()


async def publish_numbered(node: Node, channel: str, count: int) -> list[Position]:
    return [await node.engine.publish_durable(channel, b"m%d" % (i + 1)) for i in range(count)]


def offsets(read: HistoryRead) -> list[int]:
    return [m.offset for m in read.messages]


# -- offsets and delivery ------------------------------------------------------------------


async def test_offsets_increase_by_exactly_one_per_channel_and_channels_count_independently(
    publisher: Node, start_node: StartNode
) -> None:
    other = await start_node()

    a = [await publisher.engine.publish_durable("user:a", b"x") for _ in range(3)]
    b = [await other.engine.publish_durable("user:b", b"y") for _ in range(2)]
    a += [await other.engine.publish_durable("user:a", b"x") for _ in range(2)]

    assert [p.offset for p in a] == [1, 2, 3, 4, 5]
    assert [p.offset for p in b] == [1, 2]
    assert len({p.epoch for p in a}) == 1
    assert len({p.epoch for p in b}) == 1


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"text":"hi","n":[1,2,{"k":null}]}', id="json"),
        pytest.param(b"plain text, not JSON", id="text"),
        pytest.param(b'line\r\nbreaks\n\x1e{"t":"msg"}\n', id="newlines-and-0x1e"),
        pytest.param(b"\xff\xfe\x00\x80 not utf-8 \xc3", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(bytes(range(256)) * 240, id="60KiB"),
    ],
)
async def test_publish_answer_and_delivered_message_carry_the_same_position_and_the_payload(
    publisher: Node, subscriber: Node, payload: bytes
) -> None:
    await subscriber.engine.subscribe("user:42")

    position = await publisher.engine.publish_durable("user:42", payload)

    assert position.offset == 1
    channel, raw = await asyncio.wait_for(subscriber.received.get(), DELIVERY_TIMEOUT)
    assert channel == "user:42"
    assert unwrap(raw) == Delivered(position.offset, position.epoch, payload)
    assert raw == Durable(position, payload)
    read = await subscriber.engine.read_history("user:42", None, 10)
    assert read.messages == [HistoryMessage(1, payload)]
    assert type(read.messages[0].data) is bytes


async def test_an_epoch_fits_in_what_a_client_may_present_back(publisher: Node) -> None:
    position = await publisher.engine.publish_durable("user:42", b"x")

    # protocol.parse_position accepts epochs of 1 to 64 characters.
    assert 1 <= len(position.epoch) <= 64
    assert position.epoch.isascii()
    assert position.epoch.isprintable()


async def test_messages_of_one_channel_are_delivered_in_offset_order(
    publisher: Node, subscriber: Node
) -> None:
    await subscriber.engine.subscribe("user:seq")

    positions = await publish_numbered(publisher, "user:seq", 100)

    received = await subscriber.messages("user:seq", 100)
    assert [m.offset for m in received] == list(range(1, 101))
    assert [m.data for m in received] == [b"m%d" % i for i in range(1, 101)]
    assert {m.epoch for m in received} == {positions[0].epoch}


async def test_four_concurrent_publishers_give_offsets_1_to_200_once_each_in_delivery_order(
    start_node: StartNode, subscriber: Node
) -> None:
    publishers = [await start_node() for _ in range(4)]
    await subscriber.engine.subscribe("user:busy")

    async def publish_fifty(index: int, node: Node) -> list[tuple[Position, bytes]]:
        answers = []
        for i in range(50):
            payload = b"p%d-%d" % (index, i)
            answers.append((await node.engine.publish_durable("user:busy", payload), payload))
        return answers

    results = await asyncio.gather(*(publish_fifty(i, n) for i, n in enumerate(publishers)))

    answered = [answer for result in results for answer in result]
    assert sorted(p.offset for p, _ in answered) == list(range(1, 201))
    assert len({p.epoch for p, _ in answered}) == 1
    for result in results:  # each publisher's own publishes got increasing offsets
        own = [p.offset for p, _ in result]
        assert own == sorted(own)
    payload_at = {p.offset: payload for p, payload in answered}
    received = await subscriber.messages("user:busy", 200)
    assert [m.offset for m in received] == list(range(1, 201))
    assert [m.data for m in received] == [payload_at[o] for o in range(1, 201)]
    read = await subscriber.engine.read_history("user:busy", None, 1000)
    assert [(m.offset, m.data) for m in read.messages] == [
        (o, payload_at[o]) for o in range(1, 201)
    ]


# -- history ---------------------------------------------------------------------------


async def test_history_keeps_exactly_history_size_newest_messages(publisher: Node) -> None:
    await publish_numbered(publisher, "small:trim", 10)

    read = await publisher.engine.read_history("small:trim", None, 100)

    assert read.position.offset == 10
    assert read.first == 6
    assert read.messages == [HistoryMessage(i, b"m%d" % i) for i in range(6, 11)]


async def test_reading_after_a_trimmed_offset_gives_what_is_kept(publisher: Node) -> None:
    await publish_numbered(publisher, "small:trim", 10)

    read = await publisher.engine.read_history("small:trim", 2, 100)

    assert read.first == 6
    assert offsets(read) == [6, 7, 8, 9, 10]


async def test_history_pages_forward_after_an_offset_oldest_first(
    publisher: Node, subscriber: Node
) -> None:
    positions = await publish_numbered(publisher, "user:page", 10)
    pages = []
    after = None
    for _ in range(4):
        read = await subscriber.engine.read_history("user:page", after, 4)
        assert read.position == positions[-1]
        assert read.first == 1
        pages.append(offsets(read))
        after = read.messages[-1].offset if read.messages else after

    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10], []]
    everything = await subscriber.engine.read_history("user:page", 0, 100)
    assert everything.messages == [HistoryMessage(i, b"m%d" % i) for i in range(1, 11)]


async def test_reverse_history_pages_backward_below_an_offset_newest_first(
    publisher: Node, subscriber: Node
) -> None:
    positions = await publish_numbered(publisher, "user:page", 10)
    pages = []
    before = None
    for _ in range(4):
        read = await subscriber.engine.read_history("user:page", before, 4, reverse=True)
        assert read.position == positions[-1]
        assert read.first == 1
        pages.append(offsets(read))
        before = read.messages[-1].offset if read.messages else before

    assert pages == [[10, 9, 8, 7], [6, 5, 4, 3], [2, 1], []]
    newest = await subscriber.engine.read_history("user:page", None, 1, reverse=True)
    assert newest.messages == [HistoryMessage(10, b"m10")]


async def test_history_reads_stop_at_a_byte_budget_but_always_give_one_message(
    publisher: Node, subscriber: Node
) -> None:
    for i in range(1, 7):
        await publisher.engine.publish_durable("user:bytes", b"%d" % i * 100)  # 100 bytes each

    forward = await subscriber.engine.read_history("user:bytes", None, 10, max_bytes=250)
    backward = await subscriber.engine.read_history(
        "user:bytes", None, 10, reverse=True, max_bytes=300
    )
    tiny = await subscriber.engine.read_history("user:bytes", 2, 10, max_bytes=1)
    unbounded = await subscriber.engine.read_history("user:bytes", None, 10, max_bytes=0)

    assert offsets(forward) == [1, 2]
    assert offsets(backward) == [6, 5, 4]
    assert offsets(tiny) == [3]
    assert offsets(unbounded) == [1, 2, 3, 4, 5, 6]
    assert forward.position == backward.position == tiny.position


async def test_reading_past_the_newest_offset_gives_no_messages_and_the_position(
    publisher: Node,
) -> None:
    positions = await publish_numbered(publisher, "user:ahead", 3)

    read = await publisher.engine.read_history("user:ahead", 50, 10)

    assert read == HistoryRead(positions[-1], 1, [])


async def test_reading_a_channel_without_history_writes_nothing_and_answers_no_history(
    publisher: Node, start_node: StartNode
) -> None:
    assert await publisher.engine.stream_positions(["user:new"]) == [None]

    read = await publisher.engine.read_history("user:new", None, 10)

    assert read == HistoryRead(NO_HISTORY, 0, [])
    # Nothing was created: no node sees an epoch, and the first publish makes one.
    other = await start_node()
    assert await other.engine.stream_positions(["user:new"]) == [None]
    assert await other.engine.read_history("user:new", None, 10, reverse=True) == read
    first = await other.engine.publish_durable("user:new", b"x")
    assert first.offset == 1
    assert first.epoch


async def test_clear_history_starts_a_new_epoch_at_offset_zero_and_publishes_restart_at_one(
    publisher: Node, subscriber: Node
) -> None:
    before = await publish_numbered(publisher, "user:clear", 3)
    await subscriber.engine.subscribe("user:clear")

    cleared = await subscriber.engine.clear_history("user:clear")

    assert cleared.offset == 0
    assert cleared.epoch
    assert cleared.epoch != before[-1].epoch
    assert await publisher.engine.read_history("user:clear", None, 10) == HistoryRead(
        cleared, 0, []
    )
    assert await publisher.engine.stream_positions(["user:clear"]) == [cleared]
    after = await publisher.engine.publish_durable("user:clear", b"fresh")
    assert after == Position(1, cleared.epoch)
    assert await subscriber.messages("user:clear", 1) == [Delivered(1, cleared.epoch, b"fresh")]
    read = await subscriber.engine.read_history("user:clear", None, 10)
    assert read == HistoryRead(after, 1, [HistoryMessage(1, b"fresh")])


async def test_clearing_a_channel_without_history_also_gives_a_fresh_epoch(
    publisher: Node,
) -> None:
    first = await publisher.engine.clear_history("user:never")
    second = await publisher.engine.clear_history("user:never")

    assert first.offset == second.offset == 0
    assert first.epoch != second.epoch


async def test_history_is_kept_per_channel(publisher: Node) -> None:
    await publish_numbered(publisher, "user:one", 2)
    await publish_numbered(publisher, "user:two", 3)
    await publisher.engine.clear_history("user:one")

    two = await publisher.engine.read_history("user:two", None, 10)

    assert offsets(two) == [1, 2, 3]
    assert offsets(await publisher.engine.read_history("user:one", None, 10)) == []


# -- idempotency -------------------------------------------------------------------------


async def test_a_retried_publish_with_the_same_idempotency_key_lands_once_and_answers_the_first(
    publisher: Node, start_node: StartNode, subscriber: Node
) -> None:
    retrier = await start_node()
    await subscriber.engine.subscribe("user:idem")
    await publisher.engine.publish_durable("user:idem", b"before")

    first = await publisher.engine.publish_durable("user:idem", b"once", "order-7:v1")
    retried = await publisher.engine.publish_durable("user:idem", b"once", "order-7:v1")
    from_elsewhere = await retrier.engine.publish_durable("user:idem", b"changed", "order-7:v1")

    assert first.offset == 2
    assert retried == from_elsewhere == first
    delivered = [unwrap(p) for p in await subscriber.until_fence("user:idem")]
    assert delivered == [
        Delivered(1, first.epoch, b"before"),
        Delivered(2, first.epoch, b"once"),
    ]
    read = await subscriber.engine.read_history("user:idem", None, 10)
    assert read.messages == [HistoryMessage(1, b"before"), HistoryMessage(2, b"once")]
    assert read.position == first


async def test_a_different_idempotency_key_publishes_again(
    publisher: Node, subscriber: Node
) -> None:
    await subscriber.engine.subscribe("user:idem")

    a = await publisher.engine.publish_durable("user:idem", b"same", "key-a")
    b = await publisher.engine.publish_durable("user:idem", b"same", "key-b")
    plain = await publisher.engine.publish_durable("user:idem", b"same")

    assert [a.offset, b.offset, plain.offset] == [1, 2, 3]
    assert [m.offset for m in await subscriber.messages("user:idem", 3)] == [1, 2, 3]


async def test_an_idempotency_key_is_scoped_to_its_channel(publisher: Node) -> None:
    await publish_numbered(publisher, "user:x", 4)

    on_x = await publisher.engine.publish_durable("user:x", b"a", "shared-key")
    on_y = await publisher.engine.publish_durable("user:y", b"a", "shared-key")

    assert on_x.offset == 5
    assert on_y.offset == 1
    assert offsets(await publisher.engine.read_history("user:y", None, 10)) == [1]


# -- state loss and positions -------------------------------------------------------------


async def test_after_the_store_loses_its_data_the_next_publish_has_a_new_epoch(
    store: Store, publisher: Node, subscriber: Node
) -> None:
    await subscriber.engine.subscribe("user:lost")
    old = await publish_numbered(publisher, "user:lost", 3)
    await subscriber.messages("user:lost", 3)

    store.lose_everything()
    new = await publisher.engine.publish_durable("user:lost", b"after")

    assert new.offset == 1
    assert new.epoch != old[-1].epoch
    assert await subscriber.messages("user:lost", 1) == [Delivered(1, new.epoch, b"after")]
    read = await subscriber.engine.read_history("user:lost", None, 10)
    assert read == HistoryRead(new, 1, [HistoryMessage(1, b"after")])


async def test_after_the_store_loses_its_data_the_next_read_has_a_new_epoch(
    store: Store, publisher: Node
) -> None:
    old = await publish_numbered(publisher, "user:lost", 3)
    idem = await publisher.engine.publish_durable("user:lost", b"k", "retry-me")

    store.lose_everything()
    assert await publisher.engine.stream_positions(["user:lost"]) == [None]
    read = await publisher.engine.read_history("user:lost", None, 10)

    assert read == HistoryRead(NO_HISTORY, 0, [])
    # The idempotency record went with the rest: the retry lands, in a new epoch.
    retried = await publisher.engine.publish_durable("user:lost", b"k", "retry-me")
    assert retried.offset == 1
    assert retried.epoch not in (old[-1].epoch, "")
    assert retried != idem


async def test_stream_positions_gives_each_channels_position_and_none_without_history(
    publisher: Node, subscriber: Node
) -> None:
    a = await publish_numbered(publisher, "user:a", 3)
    b = await publish_numbered(publisher, "small:b", 7)
    c = await publisher.engine.clear_history("user:c")

    positions = await subscriber.engine.stream_positions(
        ["user:a", "user:none", "small:b", "user:c", PLAIN]
    )

    assert positions == [a[-1], None, b[-1], c, None]
    assert await subscriber.engine.stream_positions([]) == []


# -- a channel that is not durable: the engines differ on purpose --------------------------


async def test_memory_refuses_publish_durable_on_a_non_durable_channel() -> None:
    broker = MemoryBroker()
    engine, watcher = MemoryEngine(broker, rules=RULES), Node(MemoryEngine(broker, rules=RULES))
    await engine.start(Ignore())
    await watcher.engine.start(watcher)
    await watcher.engine.subscribe(PLAIN)
    try:
        with pytest.raises(EngineError, match="not a durable channel"):
            await engine.publish_durable(PLAIN, b"nope")
        with pytest.raises(EngineError, match="not a durable channel"):
            await engine.publish_durable("matches:no-rule", b"nope", "some-key")

        assert await watcher.until_fence(PLAIN) == []
        assert await engine.stream_positions([PLAIN, "matches:no-rule"]) == [None, None]
    finally:
        await engine.close()
        await watcher.engine.close()


async def test_redis_refuses_publish_durable_on_a_non_durable_channel(
    redis_server: RedisServer, redis_url: str
) -> None:
    # Nodes pass the channel's options to the Function themselves, so the engine refuses a
    # channel its rules do not make durable, as memory does. (redis-cli's FCALL
    # pushhub_publish on such a channel is a plain PUBLISH: see test_redis_function.py.)
    store = redis_store(redis_server, redis_url)
    engine, watcher = store.make(), Node(store.make())
    await engine.start(Ignore())
    await watcher.engine.start(watcher)
    await watcher.engine.subscribe(PLAIN)
    try:
        with pytest.raises(EngineError, match="not a durable channel"):
            await engine.publish_durable(PLAIN, b"nope", "some-key")

        assert await watcher.until_fence(PLAIN) == []
        assert await engine.stream_positions([PLAIN]) == [None]
        assert redis_server.cli("KEYS", f"{PREFIX}*").strip() == ""
    finally:
        await engine.close()
        await watcher.engine.close()


# -- history TTL: observed with an injected clock on memory, with PTTL on Redis ------------


async def test_memory_history_expires_ttl_after_the_last_publish_into_a_new_epoch() -> None:
    clock = Clock()
    broker = MemoryBroker(clock=clock)
    engine = MemoryEngine(broker, rules=RULES)
    await engine.start(Ignore())
    first = await engine.publish_durable("user:ttl", b"one")
    clock.advance(TTL - 1)
    second = await engine.publish_durable("user:ttl", b"two")  # extends the TTL
    clock.advance(TTL - 1)

    kept = await engine.read_history("user:ttl", None, 10)
    assert kept == HistoryRead(second, 1, [HistoryMessage(1, b"one"), HistoryMessage(2, b"two")])
    assert await engine.stream_positions(["user:ttl"]) == [second]

    clock.advance(1.5)

    assert await engine.stream_positions(["user:ttl"]) == [None]
    assert await engine.read_history("user:ttl", None, 10) == HistoryRead(NO_HISTORY, 0, [])
    third = await engine.publish_durable("user:ttl", b"three")
    assert third.offset == 1
    assert third.epoch not in (first.epoch, "")
    await engine.close()


async def test_memory_history_expired_before_a_publish_comes_back_under_a_new_epoch() -> None:
    clock = Clock()
    engine = MemoryEngine(MemoryBroker(clock=clock), rules=RULES)
    await engine.start(Ignore())
    old = await publish_numbered(Node(engine), "small:ttl", 3)

    clock.advance(TTL + 1)
    new = await engine.publish_durable("small:ttl", b"after")

    assert new.offset == 1
    assert new.epoch != old[-1].epoch
    assert await engine.read_history("small:ttl", None, 10) == HistoryRead(
        new, 1, [HistoryMessage(1, b"after")]
    )
    await engine.close()


async def test_memory_idempotency_key_is_forgotten_after_the_idempotency_ttl() -> None:
    clock = Clock()
    # Shorter than the history TTL, so the history outlives the record.
    engine = MemoryEngine(MemoryBroker(clock=clock), rules=RULES, idempotency_ttl=TTL / 2)
    await engine.start(Ignore())
    first = await engine.publish_durable("user:idem", b"a", "key-1")

    clock.advance(TTL / 2 - 1)
    assert await engine.publish_durable("user:idem", b"a", "key-1") == first
    clock.advance(2)
    again = await engine.publish_durable("user:idem", b"a", "key-1")

    assert again == Position(2, first.epoch)
    await engine.close()


@pytest.fixture
async def redis_node(redis_server: RedisServer, redis_url: str) -> AsyncIterator[Node]:
    node = Node(redis_store(redis_server, redis_url).make())
    await node.engine.start(node)
    yield node
    await node.engine.close()


def pttl(server: RedisServer, key: str) -> int:
    return int(server.cli("PTTL", key))


async def test_redis_keys_are_named_after_prefix_and_channel_and_live_history_ttl(
    redis_server: RedisServer, redis_node: Node
) -> None:
    await publish_numbered(redis_node, "user:ttl", 3)

    stream, meta = f"{PREFIX}stream:{{user:ttl}}", f"{PREFIX}meta:{{user:ttl}}"
    assert redis_server.cli("TYPE", stream).strip() == "stream"
    assert redis_server.cli("TYPE", meta).strip() == "hash"
    assert redis_server.cli("XLEN", stream).strip() == "3"
    assert redis_server.cli("HGET", meta, "offset").strip() == "3"
    for key in (stream, meta):
        assert 0 < pttl(redis_server, key) <= TTL * 1000


async def test_redis_publish_extends_the_ttl_of_stream_and_meta(
    redis_server: RedisServer, redis_node: Node
) -> None:
    await redis_node.engine.publish_durable("user:ttl", b"one")
    stream, meta = f"{PREFIX}stream:{{user:ttl}}", f"{PREFIX}meta:{{user:ttl}}"
    for key in (stream, meta):  # as if nearly all of the TTL had passed
        assert redis_server.cli("PEXPIRE", key, "5000").strip() == "1"

    await redis_node.engine.publish_durable("user:ttl", b"two")

    for key in (stream, meta):
        assert 5000 < pttl(redis_server, key) <= TTL * 1000


async def test_redis_reading_a_channel_without_history_writes_no_key(
    redis_server: RedisServer, redis_node: Node
) -> None:
    keys_before = redis_server.cli("DBSIZE").strip()

    await redis_node.engine.read_history("small:fresh", None, 10)
    await redis_node.engine.read_history("small:fresh", 3, 10, reverse=True)

    assert redis_server.cli("KEYS", f"{PREFIX}*small:fresh*").strip() == ""
    assert redis_server.cli("DBSIZE").strip() == keys_before


async def test_redis_history_whose_meta_expired_comes_back_under_a_new_epoch(
    redis_server: RedisServer, redis_node: Node
) -> None:
    old = await publish_numbered(redis_node, "user:ttl", 3)
    # An expiry of the meta alone (the stream may outlive it by a millisecond) must not
    # leave the old entries to be served under a new epoch.
    redis_server.cli("DEL", f"{PREFIX}meta:{{user:ttl}}")

    read = await redis_node.engine.read_history("user:ttl", None, 10)
    assert read == HistoryRead(NO_HISTORY, 0, [])
    after = await redis_node.engine.publish_durable("user:ttl", b"new life")
    assert after.offset == 1
    assert after.epoch != old[-1].epoch
    assert await redis_node.engine.read_history("user:ttl", None, 10) == HistoryRead(
        after, 1, [HistoryMessage(1, b"new life")]
    )


async def test_redis_idempotency_record_is_named_after_channel_and_key_and_lives_its_ttl(
    redis_server: RedisServer, redis_node: Node
) -> None:
    position = await redis_node.engine.publish_durable("user:idem", b"a", "key-1")

    record = f"{PREFIX}idem:{{user:idem}}:key-1"
    assert redis_server.cli("GET", record).strip() == f"{position.offset} {position.epoch}"
    assert 0 < pttl(redis_server, record) <= 300 * 1000  # the engine's default, 300 s
