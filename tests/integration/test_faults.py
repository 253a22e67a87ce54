"""Faults: a client that stops reading, Redis going away and coming back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.support import (
    Client,
    PushhubNode,
    RedisServer,
    publish_http,
    stalled_client,
    wait_for,
)


async def test_slow_subscriber_is_closed_with_slow_code_while_others_receive_everything(
    redis_node: PushhubNode,
) -> None:
    fast = await Client.connect(redis_node.ws_url)
    await fast.subscribe("firehose")
    slow, _ = await stalled_client(redis_node)
    await slow.subscribe("firehose")

    # ~3 MiB through a client that reads nothing: its 1 MiB queue must overflow.
    chunk = "x" * (48 * 1024)
    count = 200
    received = 0
    for i in range(count):
        resp = await publish_http(
            redis_node, {"channel": "firehose", "data": {"i": i, "pad": chunk}}
        )
        assert resp.status_code == 200
        # The fast client keeps up, as a real one would.
        event = await fast.recv()
        assert event["data"]["i"] == i
        received += 1

    assert received == count
    # The 4001 frame reaches a client only if it reads again within close_timeout (2 s);
    # this one did not, so its socket was aborted after that (a reset: 1006).
    assert await slow.closed_code(timeout=20) in (4001, 1006)
    assert "closing slow connection" in redis_node.log()
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"{redis_node.http}/api/stats")).json()
    assert stats["connections"] == 1


async def test_delivery_resumes_after_redis_restarts_under_a_subscribed_client(
    own_redis: RedisServer,
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory(own_redis.url)
    client = await Client.connect(node.ws_url)
    await client.subscribe("orders")
    own_redis.cli("PUBLISH", "orders", '"before"')
    assert (await client.recv())["data"] == "before"

    own_redis.stop()

    async with httpx.AsyncClient(timeout=10) as http:
        wait_for(
            lambda: httpx.get(f"{node.http}/readyz", timeout=5).status_code == 503,
            10,
            "/readyz to answer 503 while Redis is down",
        )
        started = time.monotonic()
        resp = await http.post(
            f"{node.http}/api/publish", json={"channel": "orders", "data": "lost"}
        )
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"
        assert time.monotonic() - started < 3  # fails fast, does not hang
        assert (await http.get(f"{node.http}/healthz")).status_code == 200

    own_redis.start()
    node.wait_ready(timeout=15)

    # The node resubscribed by itself: the client did nothing.
    assert own_redis.cli("PUBSUB", "NUMSUB", "orders").split()[-1] == "1"
    own_redis.cli("PUBLISH", "orders", '"after"')
    assert (await client.recv())["data"] == "after"
    resp = await publish_http(node, {"channel": "orders", "data": "via http"})
    assert resp.status_code == 200
    assert (await client.recv())["data"] == "via http"


async def test_subscribe_while_redis_is_down_gets_unavailable_then_works_after(
    own_redis: RedisServer,
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory(own_redis.url)
    client = await Client.connect(node.ws_url)
    own_redis.stop()
    wait_for(lambda: httpx.get(f"{node.http}/readyz", timeout=5).status_code == 503, 10, "unready")

    reply = await client.request({"type": "subscribe", "channel": "later"}, timeout=10)
    assert reply["code"] == "unavailable"

    own_redis.start()
    node.wait_ready(timeout=15)
    assert (await client.subscribe("later"))["type"] == "subscribed"


async def test_node_that_starts_while_redis_is_down_becomes_ready_when_it_comes_up(
    node_factory: Callable[..., PushhubNode],
) -> None:
    redis = RedisServer()
    node = node_factory(redis.url)
    assert httpx.get(f"{node.http}/readyz", timeout=5).status_code == 503
    try:
        redis.start()
        node.wait_ready(timeout=15)
        client = await Client.connect(node.ws_url)
        await client.subscribe("late")
        redis.cli("PUBLISH", "late", "1")
        assert (await client.recv())["data"] == 1
    finally:
        redis.stop()


async def test_sigterm_closes_clients_with_a_reconnectable_code(
    redis_node: PushhubNode,
) -> None:
    client = await Client.connect(redis_node.ws_url)
    await client.subscribe("bye")

    stopping = asyncio.get_running_loop().run_in_executor(None, redis_node.stop)
    code = await client.closed_code(timeout=20)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so the exit status names it.
    assert await stopping in (0, -15)

    assert code in (1001, 1012)
    assert "node " in redis_node.log()
    assert " stopped" in redis_node.log()
