"""Fan-out across real processes: redis-server, two pushhub nodes, websockets clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable

from tests.support import Client, PushhubNode, RedisServer, publish_http, wait_for


async def test_redis_cli_publish_reaches_subscribers_on_every_node(
    redis_server: RedisServer, redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    a, b = node_factory(redis_url), node_factory(redis_url)
    ca, cb = await Client.connect(a.ws_url), await Client.connect(b.ws_url)
    await ca.subscribe("order:updates")
    await cb.subscribe("order:updates")

    out = redis_server.cli("PUBLISH", "order:updates", '{"orderId":"123","status":"shipped"}')

    assert out.strip() == "2"  # one Redis subscriber per node, not per client
    for client in (ca, cb):
        assert await client.recv() == {
            "type": "message",
            "channel": "order:updates",
            "data": {"orderId": "123", "status": "shipped"},
        }


async def test_payload_that_is_not_json_arrives_as_a_string(
    redis_node: PushhubNode,
    redis_server: RedisServer,
) -> None:
    client = await Client.connect(redis_node.ws_url)
    await client.subscribe("news")

    redis_server.cli("PUBLISH", "news", "hello world")

    assert (await client.recv())["data"] == "hello world"


async def test_http_publish_on_one_node_reaches_a_subscriber_on_another(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    a, b = node_factory(redis_url), node_factory(redis_url)
    client = await Client.connect(a.ws_url)
    await client.subscribe("order:updates")

    resp = await publish_http(b, {"channel": "order:updates", "data": {"n": 1}})

    assert resp.status_code == 200
    assert resp.json() == {"results": [{"channel": "order:updates"}]}
    event = await client.recv()
    assert event == {"type": "message", "channel": "order:updates", "data": {"n": 1}}


async def test_http_publish_carries_the_same_payload_as_a_raw_publish(
    redis_node: PushhubNode,
    redis_server: RedisServer,
) -> None:
    watcher = subprocess.Popen(
        ["redis-cli", "-p", str(redis_server.port), "--raw", "SUBSCRIBE", "order:updates"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        wait_for(
            lambda: redis_server.cli("PUBSUB", "NUMSUB", "order:updates").split()[-1] == "1",
            10,
            "redis-cli SUBSCRIBE",
        )
        data = {"orderId": "123", "status": "shipped", "tags": ["a", "é"]}
        resp = await publish_http(redis_node, {"channel": "order:updates", "data": data})
        assert resp.status_code == 200
        lines = [watcher.stdout.readline() for _ in range(6)]  # 3 for subscribe, 3 for message
    finally:
        watcher.kill()
        watcher.wait(5)
        if watcher.stdout is not None:
            watcher.stdout.close()
    payload = lines[-1].strip()
    assert payload == json.dumps(data, separators=(",", ":"), ensure_ascii=False)


async def test_http_publish_to_several_channels(
    redis_node: PushhubNode,
) -> None:
    client = await Client.connect(redis_node.ws_url)
    await client.subscribe("a")
    await client.subscribe("b")

    resp = await publish_http(redis_node, {"channels": ["a", "b", "a"], "data": "x"})

    assert resp.json() == {"results": [{"channel": "a"}, {"channel": "b"}]}
    got = {(await client.recv())["channel"], (await client.recv())["channel"]}
    assert got == {"a", "b"}


def _pubsub_channels(redis_server: RedisServer) -> set[str]:
    return set(redis_server.cli("PUBSUB", "CHANNELS").split()) - {
        c for c in redis_server.cli("PUBSUB", "CHANNELS").split() if c.startswith("__pushhub__")
    }


async def test_node_subscribes_upstream_on_first_subscriber_and_unsubscribes_after_last(
    redis_node: PushhubNode,
    redis_server: RedisServer,
) -> None:
    c1, c2 = await Client.connect(redis_node.ws_url), await Client.connect(redis_node.ws_url)
    assert _pubsub_channels(redis_server) == set()

    await c1.subscribe("room:1")
    assert _pubsub_channels(redis_server) == {"room:1"}
    await c2.subscribe("room:1")
    await c2.subscribe("room:2")
    assert _pubsub_channels(redis_server) == {"room:1", "room:2"}

    await c1.request({"type": "unsubscribe", "channel": "room:1"})
    assert _pubsub_channels(redis_server) == {"room:1", "room:2"}  # c2 still holds room:1
    await c2.close()  # a disconnect releases everything the connection held
    wait_for(lambda: _pubsub_channels(redis_server) == set(), 5, "upstream unsubscribe")


async def test_every_message_reaches_every_subscriber_in_publish_order(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    a, b = node_factory(redis_url), node_factory(redis_url)
    clients = [await Client.connect(n.ws_url) for n in (a, b, a, b)]
    for c in clients:
        await c.subscribe("seq")

    for i in range(200):
        resp = await publish_http(a if i % 2 else b, {"channel": "seq", "data": i})
        assert resp.status_code == 200

    for c in clients:
        got = [(await c.recv())["data"] for _ in range(200)]
        assert got == list(range(200))
    await asyncio.gather(*(c.close() for c in clients))
