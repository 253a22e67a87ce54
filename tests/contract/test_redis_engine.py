"""Behaviour only the Redis engine has: losing and regaining a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pushhub.engine.redis import RedisEngine
from pushhub.errors import EngineUnavailable
from tests.engine_events import Ignore, Recorder
from tests.support import RedisServer, free_port


def pubsub_channels(server: RedisServer) -> set[str]:
    """The channels Redis has subscribers for, asked by redis-cli (its own client)."""
    return {line for line in server.cli("PUBSUB", "CHANNELS").splitlines() if line}


MakeEngine = Callable[..., RedisEngine]


@pytest.fixture
async def make_engine() -> AsyncIterator[MakeEngine]:
    """Make Redis engines (not started); every one is closed after the test."""
    made: list[RedisEngine] = []

    def make(url: str, *, connect_timeout: float = 2.0) -> RedisEngine:
        engine = RedisEngine(
            url, node_id=f"redis-test-{len(made)}", connect_timeout=connect_timeout
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.close()


async def test_engine_resubscribes_by_itself_after_its_pubsub_connection_is_killed(
    redis_server: RedisServer, redis_url: str, make_engine: MakeEngine
) -> None:
    publisher, subscriber = make_engine(redis_url), make_engine(redis_url)
    received = Recorder()
    await publisher.start(Ignore())
    await subscriber.start(received)
    await subscriber.subscribe("survives")
    await subscriber.subscribe("also-survives")

    killed = redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")
    assert int(killed) >= 1  # at least the subscriber's Pub/Sub connection was cut

    # Messages published while the engine reconnects are lost (at-most-once), so probe
    # until one arrives; the bound is far above the engine's first reconnect delays.
    async with asyncio.timeout(10):
        while True:
            await publisher.publish("survives", b"probe")
            try:
                channel, payload = await asyncio.wait_for(received.received.get(), 0.1)
            except TimeoutError:
                continue
            assert (channel, payload) == ("survives", b"probe")
            break
        # Every channel came back, not only the one probed.
        await publisher.publish("also-survives", b"too")
        while (item := await received.received.get()) == ("survives", b"probe"):
            pass
        assert item == ("also-survives", b"too")

    assert {"survives", "also-survives"} <= pubsub_channels(redis_server)
    assert subscriber.ready
    await subscriber.check()
    assert received.resubscribed >= 1  # told once every channel was back


async def test_engine_pointed_at_nothing_fails_promptly_with_engine_unavailable(
    make_engine: MakeEngine,
) -> None:
    port = free_port()
    engine = make_engine(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)

    async with asyncio.timeout(5):
        await engine.start(Ignore())  # starts unready, does not raise
    assert not engine.ready

    began = time.monotonic()
    with pytest.raises(EngineUnavailable):
        await engine.subscribe("c")
    with pytest.raises(EngineUnavailable):
        await engine.check()
    with pytest.raises(EngineUnavailable):
        await engine.publish("c", b"x")
    with pytest.raises(EngineUnavailable):
        await engine.publish_many([("c", b"x")])
    await engine.unsubscribe("c")  # never raises for a lost connection
    assert time.monotonic() - began < 2

    # A subscribe that failed is not one the engine keeps: once Redis is there, the
    # engine subscribes its probe channel and nothing else.
    server = RedisServer(port)
    server.start()
    try:
        async with asyncio.timeout(20):
            while not engine.ready:
                await asyncio.sleep(0.05)
        assert pubsub_channels(server) == {"__pushhub__.probe.redis-test-0"}
    finally:
        server.stop()
