"""Floods far over every limit: the limit holds, and everyone else carries on.

Frames per connection, subscriptions per connection, connections per client IP (open
and new per second) and HTTP publishes per API key, the last one shared by two nodes
through Redis. Several source addresses on 127.0.0.0/8 stand for several clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.security.harness import (
    Nodes,
    bearer,
    http_client,
    is_alive,
    open_client,
    pubsub_channels,
    redis_keys,
    refused_handshake,
    until_closed,
)
from tests.security.tokens import ISSUED
from tests.support import Client, PushhubNode, RedisServer

KEY_RATE = "flood-rate-key-0123456789"
KEY_OTHER = "flood-other-key-0123456789"
KEY_WATCH = "flood-watch-key-0123456789"
ISSUED.extend([KEY_RATE, KEY_OTHER, KEY_WATCH])

FRAME_RATE, FRAME_BURST, MAX_SUBSCRIPTIONS = 20, 60, 4
PUBLISH_BURST = 5
LIMITED = {
    "PUSHHUB_API_KEYS": f"{KEY_RATE},{KEY_OTHER},{KEY_WATCH}",
    "PUSHHUB_MAX_FRAMES_PER_SECOND": str(FRAME_RATE),
    "PUSHHUB_FRAME_BURST": str(FRAME_BURST),
    "PUSHHUB_MAX_SUBSCRIPTIONS": str(MAX_SUBSCRIPTIONS),
    # One publish every 5 s after a burst of 5: nothing refills during a test.
    "PUSHHUB_PUBLISH_RATE": "0.2",
    "PUSHHUB_PUBLISH_BURST": str(PUBLISH_BURST),
}


@dataclass(frozen=True)
class FloodNodes:
    limited: PushhubNode  # frame, subscription and publish limits
    limited_b: PushhubNode  # the same publish limits, sharing the budget through Redis
    ip_cap: PushhubNode  # at most 3 open connections per client IP
    ip_rate: PushhubNode  # at most 2 new connections a second per client IP


@pytest.fixture(scope="module")
def flood_nodes(nodes: Nodes) -> FloodNodes:
    return FloodNodes(
        *nodes.start(
            LIMITED,
            LIMITED,
            {"PUSHHUB_MAX_CONNECTIONS_PER_IP": "3"},
            {"PUSHHUB_CONNECTIONS_PER_SECOND_PER_IP": "2"},
        )
    )


async def _publish(node: PushhubNode, key: str, channel: str, data: object) -> httpx.Response:
    async with http_client(node) as http:
        return await http.post(
            "/api/publish", json={"channel": channel, "data": data}, headers=bearer(key)
        )


async def test_frame_flood_closes_the_flooder_with_4005_and_others_keep_receiving(
    flood_nodes: FloodNodes,
) -> None:
    node = flood_nodes.limited
    watcher = await open_client(node)
    await watcher.subscribe("flood.watch")
    flooder = await open_client(node)
    started = time.monotonic()

    with contextlib.suppress(ConnectionClosed):
        for i in range(2000):  # 100 seconds' worth of frames at the allowed rate
            await flooder.send({"type": "ping", "id": i})
    frames, close_code = await until_closed(flooder)

    assert close_code == 4005
    pongs = [f for f in frames if f["type"] == "pong"]
    assert len(pongs) <= FRAME_BURST + FRAME_RATE * (time.monotonic() - started) + 1
    assert (await _publish(node, KEY_WATCH, "flood.watch", "still here")).status_code == 200
    assert (await watcher.recv())["data"] == "still here"
    assert await is_alive(watcher)


async def test_subscribe_flood_gets_too_many_subscriptions_and_never_reaches_redis(
    flood_nodes: FloodNodes, redis_server: RedisServer
) -> None:
    client = await open_client(flood_nodes.limited)
    channels = [f"subflood.{i}" for i in range(50)]

    for i, channel in enumerate(channels):
        await client.send({"type": "subscribe", "channel": channel, "id": i})
    replies = sorted([await client.recv() for _ in channels], key=lambda r: r["id"])

    assert [r["type"] for r in replies[:MAX_SUBSCRIPTIONS]] == ["subscribed"] * MAX_SUBSCRIPTIONS
    refused = replies[MAX_SUBSCRIPTIONS:]
    assert {(r["type"], r["code"]) for r in refused} == {("error", "too_many_subscriptions")}
    held = {c for c in pubsub_channels(redis_server) if c.startswith("subflood.")}
    assert held == set(channels[:MAX_SUBSCRIPTIONS])
    assert await is_alive(client)


async def test_open_connections_per_ip_are_capped_and_other_addresses_are_not(
    flood_nodes: FloodNodes,
) -> None:
    node = flood_nodes.ip_cap
    held = [await open_client(node) for _ in range(3)]

    status, body = await refused_handshake(node)
    # X-Forwarded-For is not believed from a peer that is not a trusted proxy.
    spoofed_status, _ = await refused_handshake(
        node, additional_headers={"X-Forwarded-For": "203.0.113.9"}
    )
    neighbours = [await open_client(node, source_ip="127.0.0.2") for _ in range(3)]

    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert spoofed_status == 429
    for client in held + neighbours:
        assert await is_alive(client)

    # Closing one frees its place.
    await held[0].close()
    reopened = await _retry_open(node, seconds=5)
    assert await is_alive(reopened)


async def _retry_open(node: PushhubNode, seconds: float, source_ip: str | None = None) -> Client:
    """Open a socket as soon as the node admits one (it releases a place on the close)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await open_client(node, source_ip=source_ip)
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_new_connections_per_second_per_ip_are_limited(
    flood_nodes: FloodNodes,
) -> None:
    node = flood_nodes.ip_rate
    first = [await open_client(node, source_ip="127.0.0.3") for _ in range(2)]

    status, body = await refused_handshake(node, source_ip="127.0.0.3")
    other = await open_client(node, source_ip="127.0.0.5")

    assert (status, body["error"]["code"]) == (429, "rate_limited")
    for client in [*first, other]:
        assert await is_alive(client)


async def _open_connections(http: httpx.AsyncClient) -> int:
    count: int = (await http.get("/api/stats")).json()["connections"]
    return count


async def test_new_connections_per_second_hold_for_sockets_opened_one_after_another(
    flood_nodes: FloodNodes,
) -> None:
    """A client that closes each socket before opening the next still opens new
    connections, and at most 2 a second of them (burst 2) may be admitted."""
    node = flood_nodes.ip_rate
    admitted = refused = 0
    started = time.monotonic()
    async with http_client(node) as http:
        for _ in range(8):
            try:
                client = await open_client(node, source_ip="127.0.0.4")
            except InvalidStatus:
                refused += 1
                continue
            admitted += 1
            await client.close()
            # Wait until the node has let go of the socket (and its place in the gate).
            async with asyncio.timeout(5):
                while await _open_connections(http) > 0:
                    await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started

    assert admitted <= 2 + 2 * elapsed + 1, (
        f"{admitted} sequential connections admitted in {elapsed:.2f}s "
        f"(limit 2/s, burst 2); {refused} refused"
    )


async def test_http_publish_rate_is_shared_by_nodes_and_per_key(
    flood_nodes: FloodNodes, redis_server: RedisServer
) -> None:
    a, b = flood_nodes.limited, flood_nodes.limited_b
    burst = [await _publish(a, KEY_RATE, "rate.a", i) for i in range(PUBLISH_BURST)]

    # The burst was spent on node a: node b refuses, and so does a.
    on_b = await _publish(b, KEY_RATE, "rate.a", "over")
    on_a = await _publish(a, KEY_RATE, "rate.a", "over")
    # Requests with a wrong key spend nobody's budget; another key has its own.
    async with http_client(b) as http:
        wrong = [
            await http.post(
                "/api/publish",
                json={"channel": "rate.a", "data": 0},
                headers=bearer("flood-wrong-key-0123456789"),
            )
            for _ in range(20)
        ]
    other = await _publish(b, KEY_OTHER, "rate.a", "other key")

    assert [r.status_code for r in burst] == [200] * PUBLISH_BURST
    for refused in (on_b, on_a):
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["retry-after"] == "1"
    assert {r.status_code for r in wrong} == {401}
    assert other.status_code == 200
    # The budget lives in Redis under a digest of the key, never the key itself.
    names = redis_keys(redis_server, "*rate*")
    assert names
    assert not [n for n in names if KEY_RATE in n or KEY_OTHER in n]
