"""The Redis engine's envelope on a real redis-server: the bytes its Lua publishes are
the bytes ``pushhub.engine.envelope`` describes, and what arrives is read once into
typed events (or dropped and counted when it is no envelope pushhub wrote)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from pushhub.channels import ChannelOptions, ChannelRule
from pushhub.engine import envelope
from pushhub.engine.base import PresenceCount, PresenceEntry
from pushhub.engine.redis import RedisEngine
from pushhub.stream import Position
from tests.engine_events import Durable, Join, Leave, Recorder
from tests.support import RedisServer

DELIVERY_TIMEOUT = 5.0
RULES = (ChannelRule("user:*", ChannelOptions(durable=True)),)
T0, TTL = 1_000_000, 15_000


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[tuple[RedisEngine, Recorder]]:
    engine = RedisEngine(redis_url, node_id="envelope-test", rules=RULES)
    events = Recorder()
    await engine.start(events)
    await engine.check()  # connected, so the Function library is loaded
    yield engine, events
    await engine.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_what_the_lua_publishes_is_what_the_envelope_module_describes(
    engine: tuple[RedisEngine, Recorder], raw: Redis
) -> None:
    redis_engine, _ = engine
    pubsub = raw.pubsub()
    await pubsub.subscribe("user:wire", "room:wire")
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            confirmed = 0
            while confirmed < 2:
                message = await pubsub.get_message(timeout=1)
                confirmed += message is not None and message["type"] == "subscribe"

            payload = b'line\r\nbreaks\n\x1e{"t":"msg"}\n'
            position = await redis_engine.publish_durable("user:wire", payload)
            alice = PresenceEntry("n1.1", "u:alice", b'{"name":"Zo\xc3\xab"}')
            await redis_engine.presence_join("room:wire", alice, T0, TTL, True)
            anonymous = PresenceEntry("n1.2", "c:n1.2", None)
            await redis_engine.presence_join("room:wire", anonymous, T0, TTL, True)
            await redis_engine.presence_leave("room:wire", "n1.1", True)

            while len(seen) < 4:
                message = await pubsub.get_message(timeout=1)
                if message is not None and message["type"] == "message":
                    seen.append(message["data"])
    finally:
        await pubsub.aclose()

    assert seen == [
        envelope.message(position.offset, position.epoch, payload),
        envelope.join("u:alice", b'{"name":"Zo\xc3\xab"}', PresenceCount(1, 1)),
        envelope.join("c:n1.2", None, PresenceCount(2, 2)),
        envelope.leave("u:alice", PresenceCount(1, 1)),
    ]


async def test_envelopes_arrive_as_typed_events_read_once(
    engine: tuple[RedisEngine, Recorder], redis_server: RedisServer
) -> None:
    redis_engine, events = engine
    await redis_engine.subscribe("room:typed")

    # Envelopes as redis-cli would publish them: the engine cannot tell them from its
    # own Lua's, and reads them into the same events.
    redis_server.cli("PUBLISH", "room:typed", '\x1e{"t":"join","m":"u:bob","i":{"a":[1, 2]}}')
    redis_server.cli("PUBLISH", "room:typed", '\x1e{"t":"msg","o":3,"e":"ep"}\n{"x":1}')
    redis_server.cli("PUBLISH", "room:typed", '\x1e{"t":"leave","m":"u:bob"}')
    redis_server.cli("PUBLISH", "room:typed", "plain")

    async with asyncio.timeout(DELIVERY_TIMEOUT):
        got = [await events.received.get() for _ in range(4)]
    assert got == [
        ("room:typed", Join("u:bob", b'{"a":[1,2]}')),  # info in orjson's compact form
        ("room:typed", Durable(Position(3, "ep"), b'{"x":1}')),
        ("room:typed", Leave("u:bob")),
        ("room:typed", b"plain"),
    ]
    assert redis_engine.dropped == 0


@pytest.mark.parametrize(
    "payload",
    [
        "\x1e",
        "\x1enot json",
        "\x1e[1,2]",
        '\x1e{"t":"kick","m":"u:a"}',
        '\x1e{"t":"join","m":5}',
        '\x1e{"t":"msg","o":"1","e":"x"}\n{}',
        '\x1e{"t":"msg","o":1,"e":"x"}',
        '\x1e{"t":"join","m":"u:x","i":' + "[" * 100 + "]" * 100 + "}",
    ],
)
async def test_an_unreadable_envelope_is_dropped_and_counted(
    engine: tuple[RedisEngine, Recorder], redis_server: RedisServer, payload: str
) -> None:
    redis_engine, events = engine
    await redis_engine.subscribe("room:bad")

    redis_server.cli("PUBLISH", "room:bad", payload)
    redis_server.cli("PUBLISH", "room:bad", "fence")

    async with asyncio.timeout(DELIVERY_TIMEOUT):
        assert await events.received.get() == ("room:bad", b"fence")
    assert redis_engine.dropped == 1
