"""The Redis Function library (pushhub/engine/lua/durable.lua) as redis-cli users meet it.

A ``RedisEngine`` given channel rules loads the library when it connects; from then on
``redis-cli FCALL pushhub_publish 1 <channel> <data> [idempotency key]``, run here as a
real subprocess, must do exactly what a durable publish through pushhub does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pushhub.channels import ChannelOptions, ChannelRule, ChannelRules
from pushhub.engine.base import HistoryMessage, HistoryRead
from pushhub.engine.redis import RedisEngine, function_library
from pushhub.stream import Position
from tests.engine_events import Durable, Event, Ignore, Recorder
from tests.support import RedisServer

DELIVERY_TIMEOUT = 5.0

PREFIX = "fn-test:"

RULES = (
    ChannelRule("user:*", ChannelOptions(durable=True, history_size=100, history_ttl=60)),
    ChannelRule("plain:*", ChannelOptions(durable=False)),
)


def durable(offset: int, epoch: str, payload: bytes) -> Durable:
    return Durable(Position(offset, epoch), payload)


class Subscriber(Recorder):
    def __init__(self, engine: RedisEngine) -> None:
        super().__init__()
        self.engine = engine

    async def next(self) -> tuple[str, Event]:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            return await self.received.get()

    async def until(self, channel: str, payload: Event) -> list[tuple[str, Event]]:
        """Everything received before ``(channel, payload)``, which must arrive."""
        before: list[tuple[str, Event]] = []
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while (item := await self.received.get()) != (channel, payload):
                before.append(item)
        return before


StartEngine = Callable[..., Awaitable[Subscriber]]


@pytest.fixture
async def start_engine(redis_url: str) -> AsyncIterator[StartEngine]:
    """Start Redis engines (loading the library with ``rules``) and wait until each is
    ready; every one is closed after the test."""
    started: list[RedisEngine] = []

    async def start(rules: tuple[ChannelRule, ...] = RULES) -> Subscriber:
        engine = RedisEngine(
            redis_url, node_id=f"fn-{len(started)}", key_prefix=PREFIX, rules=rules
        )
        subscriber = Subscriber(engine)
        started.append(engine)
        await engine.start(subscriber)
        await engine.check()  # connected, so the library is loaded
        return subscriber

    yield start
    for engine in started:
        await engine.close()


@pytest.fixture
async def node(start_engine: StartEngine) -> Subscriber:
    return await start_engine()


def fcall(server: RedisServer, *args: str) -> list[str]:
    """``redis-cli FCALL pushhub_publish 1 <args>``: the answer's lines."""
    return server.cli("FCALL", "pushhub_publish", "1", *args).splitlines()


async def test_fcall_from_redis_cli_publishes_durably_and_answers_offset_and_epoch(
    redis_server: RedisServer, node: Subscriber
) -> None:
    await node.engine.subscribe("user:42")
    before = await node.engine.publish_durable("user:42", b'{"via":"pushhub"}')

    answer = fcall(redis_server, "user:42", '{"text":"hi"}')

    assert answer == ["2", before.epoch]
    assert await node.next() == (
        "user:42",
        durable(before.offset, before.epoch, b'{"via":"pushhub"}'),
    )
    assert await node.next() == ("user:42", durable(2, before.epoch, b'{"text":"hi"}'))
    read = await node.engine.read_history("user:42", None, 10)
    assert read == HistoryRead(
        Position(2, before.epoch),
        1,
        [HistoryMessage(1, b'{"via":"pushhub"}'), HistoryMessage(2, b'{"text":"hi"}')],
    )
    # The prefix the engine was configured with is compiled into the library.
    assert redis_server.cli("XLEN", f"{PREFIX}stream:{{user:42}}").strip() == "2"


async def test_fcall_keeps_utf8_payload_bytes_exactly(
    redis_server: RedisServer, node: Subscriber
) -> None:
    await node.engine.subscribe("user:utf8")
    text = '{"text":"caf\u00e9 \u2603 \U0001f680","q":"\\"quoted\\""}'

    offset, epoch = fcall(redis_server, "user:utf8", text)

    assert await node.next() == ("user:utf8", durable(int(offset), epoch, text.encode()))
    read = await node.engine.read_history("user:utf8", None, 1)
    assert read.messages == [HistoryMessage(1, text.encode())]


async def test_fcall_on_a_channel_that_is_not_durable_is_a_plain_publish(
    redis_server: RedisServer, node: Subscriber
) -> None:
    await node.engine.subscribe("plain:1")
    await node.engine.subscribe("nomatch")

    assert fcall(redis_server, "plain:1", '{"a":1}') == ["0", ""]
    assert fcall(redis_server, "nomatch", "raw text") == ["0", ""]

    assert await node.next() == ("plain:1", b'{"a":1}')
    assert await node.next() == ("nomatch", b"raw text")
    assert await node.engine.stream_positions(["plain:1", "nomatch"]) == [None, None]


async def test_fcall_with_the_same_idempotency_key_twice_lands_once(
    redis_server: RedisServer, node: Subscriber
) -> None:
    await node.engine.subscribe("user:idem")

    first = fcall(redis_server, "user:idem", "once", "retry-1")
    second = fcall(redis_server, "user:idem", "once", "retry-1")
    other = fcall(redis_server, "user:idem", "twice", "retry-2")

    assert first == second
    assert first[0] == "1"
    assert other == ["2", first[1]]
    delivered = await node.until("user:idem", durable(2, first[1], b"twice"))
    assert delivered == [("user:idem", durable(1, first[1], b"once"))]
    read = await node.engine.read_history("user:idem", None, 10)
    assert read.messages == [HistoryMessage(1, b"once"), HistoryMessage(2, b"twice")]
    # A pushhub publish with the key redis-cli used answers the same first position.
    again = await node.engine.publish_durable("user:idem", b"once", "retry-1")
    assert again == Position(1, first[1])


async def test_fcall_without_data_is_refused_with_the_usage(
    redis_server: RedisServer, node: Subscriber
) -> None:
    await node.engine.subscribe("user:usage")

    without_data = redis_server.cli("FCALL", "pushhub_publish", "1", "user:usage")
    without_channel = redis_server.cli("FCALL", "pushhub_publish", "0")

    for answer in (without_data, without_channel):
        assert "usage: FCALL pushhub_publish 1 <channel> <data> [idempotency key]" in answer
    assert await node.engine.stream_positions(["user:usage"]) == [None]
    await node.engine.publish("user:usage", b"fence")
    assert await node.until("user:usage", b"fence") == []


async def test_fcall_of_a_payload_over_max_message_size_is_refused_and_keeps_nothing(
    redis_server: RedisServer, node: Subscriber
) -> None:
    await node.engine.subscribe("user:big")
    await node.engine.subscribe("plain:big")

    durable = redis_server.cli("FCALL", "pushhub_publish", "1", "user:big", "x" * 65537)
    plain = redis_server.cli("FCALL", "pushhub_publish", "1", "plain:big", "x" * 65537)
    fits = fcall(redis_server, "user:big", "x" * 65536)

    for answer in (durable, plain):
        assert "payload of 65537 bytes is over 65536 (max_message_size)" in answer
    assert fits[0] == "1"
    read = await node.engine.read_history("user:big", None, 10)
    assert [m.offset for m in read.messages] == [1]
    await node.engine.publish("plain:big", b"fence")
    before = await node.until("plain:big", b"fence")
    assert [channel for channel, _ in before] == ["user:big"]  # the one that fitted


async def test_raw_publish_on_a_durable_channel_reaches_subscribers_without_an_offset(
    redis_server: RedisServer, node: Subscriber
) -> None:
    await node.engine.subscribe("user:raw")
    position = await node.engine.publish_durable("user:raw", b"durable")

    assert redis_server.cli("PUBLISH", "user:raw", "raw").strip() == "1"

    assert await node.next() == ("user:raw", durable(1, position.epoch, b"durable"))
    channel, payload = await node.next()
    assert (channel, payload) == ("user:raw", b"raw")  # a plain message: no position
    read = await node.engine.read_history("user:raw", None, 10)
    assert read.messages == [HistoryMessage(1, b"durable")]


async def test_fcall_after_flushall_starts_a_new_epoch_at_offset_one(
    redis_server: RedisServer, node: Subscriber
) -> None:
    old = fcall(redis_server, "user:flushed", "before")

    assert redis_server.cli("FLUSHALL").strip() == "OK"  # keys go, functions stay
    new = fcall(redis_server, "user:flushed", "after")

    assert old[0] == new[0] == "1"
    assert new[1] != old[1]


# -- the rules compiled into Lua match exactly what fnmatchcase matches ----------------------

TRICKY_RULES = (
    ChannelRule("a.b-c:*", ChannelOptions(durable=True)),
    ChannelRule("x?y", ChannelOptions(durable=True)),
    ChannelRule("$p+q.*", ChannelOptions(durable=True)),
    ChannelRule("off:*", ChannelOptions(durable=False)),
    ChannelRule("o*", ChannelOptions(durable=True)),  # shadowed by "off:*" for off:...
    ChannelRule("t#@=!~?", ChannelOptions(durable=True)),
    ChannelRule("*.end", ChannelOptions(durable=True)),
)

CANDIDATES = [
    # "a.b-c:*": "." and "-" are Lua magic; unescaped, "a.c:1" and "aXb-c:1" would match.
    *("a.b-c:1", "a.b-c:", "a.b-c:x.y-z", "a.b-c", "aXb-c:1", "a.c:1", "a.bbc:1"),
    *("za.b-c:1", "A.b-c:1"),
    # "x?y": exactly one character between, anchored at both ends.
    *("xay", "x.y", "x-y", "xy", "xaay", "xayz", "zxay"),
    # "$p+q.*": "$", "+" and "." are literal.
    *("$p+q.", "$p+q.zz", "$ppq.x", "$pq.x", "p+q.x", "a$p+q.x", "$p+qX"),
    # First match wins, durable or not.
    *("off:1", "off:", "other", "o", "of"),
    *("t#@=!~z", "t#@=!~", "t#@=!~zz", "t#@=!!z"),
    *("x.end", ".end", "end", "x.endx", "xXend"),
    "matches-nothing",
]


def test_the_tricky_patterns_are_valid_and_the_candidates_cover_both_answers() -> None:
    rules = ChannelRules(TRICKY_RULES)
    durable = [c for c in CANDIDATES if rules.options(c).durable]
    assert 0 < len(durable) < len(CANDIDATES)
    library = function_library(PREFIX, TRICKY_RULES, 1000)
    assert "__RULES__" not in library
    assert "__PREFIX__" not in library


async def test_compiled_lua_patterns_make_durable_exactly_the_channels_fnmatchcase_matches(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    await start_engine(TRICKY_RULES)  # loads function_library(..., TRICKY_RULES, ...)
    expected = ChannelRules(TRICKY_RULES)

    durable_in_redis = {}
    for channel in CANDIDATES:
        out = redis_server.cli("FCALL", "pushhub_publish", "1", channel, "probe")
        durable_in_redis[channel] = int(out.split()[0]) > 0

    assert durable_in_redis == {c: expected.options(c).durable for c in CANDIDATES}


async def test_nodes_keep_their_own_key_prefix_whichever_library_was_loaded_last(
    redis_server: RedisServer, redis_url: str
) -> None:
    rules = (ChannelRule("user:*", ChannelOptions(durable=True)),)
    first = RedisEngine(redis_url, node_id="prefix-a", key_prefix="alpha:", rules=rules)
    second = RedisEngine(redis_url, node_id="prefix-b", key_prefix="beta:", rules=rules)
    try:
        await first.start(Ignore())
        await first.check()
        await second.start(Ignore())  # loads its library last
        await second.check()

        position = await first.publish_durable("user:1", b"1")
        read = await first.read_history("user:1", None, 10)

        assert position.offset == 1
        assert [m.data for m in read.messages] == [b"1"]
        keys = redis_server.cli("KEYS", "*user:1*").split()
        assert sorted(keys) == ["alpha:meta:{user:1}", "alpha:stream:{user:1}"]
    finally:
        await first.close()
        await second.close()
