"""Durable channels across real nodes, a real redis-server and redis-cli itself."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import Client, PushhubNode, RedisServer, publish_http

CONFIG = """
[[channels]]
pattern = "user:*"
durable = true
history_size = 1000
presence = false

[[channels]]
pattern = "small:*"
durable = true
history_size = 10
presence = false

[[channels]]
pattern = "chat:*"
durable = true
client_publish = true
presence = false
"""


def _env(config: Path, **extra: str) -> dict[str, str]:
    return {"PUSHHUB_CONFIG": str(config), **extra}


async def test_a_client_that_was_away_recovers_exactly_what_it_missed_from_http_and_fcall(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    config: Path,
) -> None:
    a = node_factory(redis_url, env=_env(config))
    b = node_factory(redis_url, env=_env(config))
    client = await Client.connect(a.ws_url)
    _, reply = await client.recover("user:42")
    assert (reply["offset"], "recovered" in reply) == (0, False)
    await publish_http(b, {"channel": "user:42", "data": {"n": 0}})
    first = await client.recv()
    assert (first["offset"], first["data"]) == (1, {"n": 0})
    position = {"offset": first["offset"], "epoch": first["epoch"]}
    await client.close()

    for i in range(1, 51):
        resp = await publish_http(b, {"channel": "user:42", "data": {"n": i}})
        assert resp.json()["results"][0]["offset"] == i + 1
    for i in range(51, 101):
        out = redis_server.cli("FCALL", "pushhub_publish", "1", "user:42", json.dumps({"n": i}))
        assert out.split()[0] == str(i + 1)

    back = await Client.connect(a.ws_url)
    replayed, reply = await back.recover("user:42", position)

    assert reply["recovered"] is True
    assert [m["data"]["n"] for m in replayed] == list(range(1, 101))
    assert [m["offset"] for m in replayed] == list(range(2, 102))
    assert {m["epoch"] for m in replayed} == {position["epoch"]}
    assert (reply["offset"], reply["epoch"]) == (101, position["epoch"])
    # And it is live again, with no duplicate.
    await publish_http(b, {"channel": "user:42", "data": {"n": 101}})
    assert (await back.recv())["offset"] == 102


async def test_raw_publish_on_a_durable_channel_arrives_without_an_offset(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    config: Path,
) -> None:
    node = node_factory(redis_url, env=_env(config))
    client = await Client.connect(node.ws_url)
    await client.recover("user:7")

    redis_server.cli("PUBLISH", "user:7", '{"raw":true}')

    assert await client.recv() == {"type": "message", "channel": "user:7", "data": {"raw": True}}


@pytest.mark.parametrize("case", ["too_many", "trimmed", "new_epoch", "wrong_epoch", "ahead"])
async def test_a_gap_that_cannot_be_closed_honestly_replays_nothing(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    config: Path,
    case: str,
) -> None:
    node = node_factory(redis_url, env=_env(config, PUSHHUB_RECOVERY_MAX="20"))
    channel = "small:1" if case == "trimmed" else "user:1"
    resp = await publish_http(node, {"channel": channel, "data": 0})
    start = resp.json()["results"][0]
    since = {"offset": start["offset"], "epoch": start["epoch"]}
    count = {"too_many": 21, "trimmed": 11}.get(case, 3)
    for i in range(count):
        await publish_http(node, {"channel": channel, "data": i + 1})
    if case == "new_epoch":
        cleared = httpx.delete(f"{node.http}/api/history/{channel}", timeout=5).json()
        assert cleared["epoch"] != since["epoch"]
    elif case == "wrong_epoch":
        since["epoch"] = "not-the-epoch"
    elif case == "ahead":
        since["offset"] += 1000

    client = await Client.connect(node.ws_url)
    replayed, reply = await client.recover(channel, since)

    assert replayed == []
    assert reply["recovered"] is False
    # The reply tells the client where the channel is now, so it can resync from there.
    history = httpx.get(f"{node.http}/api/history/{channel}", timeout=5).json()
    assert (reply["offset"], reply["epoch"]) == (history["offset"], history["epoch"])


async def test_recovery_within_the_cap_succeeds_at_exactly_the_cap(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    node = node_factory(redis_url, env=_env(config, PUSHHUB_RECOVERY_MAX="20"))
    start = (await publish_http(node, {"channel": "user:cap", "data": 0})).json()["results"][0]
    for i in range(20):
        await publish_http(node, {"channel": "user:cap", "data": i + 1})

    client = await Client.connect(node.ws_url)
    replayed, reply = await client.recover(
        "user:cap", {"offset": start["offset"], "epoch": start["epoch"]}
    )

    assert reply["recovered"] is True
    assert [m["data"] for m in replayed] == list(range(1, 21))


async def test_publishes_during_a_replay_reach_the_client_exactly_once_in_order(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    a = node_factory(redis_url, env=_env(config))
    b = node_factory(redis_url, env=_env(config))
    start = (await publish_http(b, {"channel": "user:flow", "data": 0})).json()["results"][0]
    for i in range(200):
        await publish_http(b, {"channel": "user:flow", "data": i + 1})

    async def keep_publishing() -> None:
        async with httpx.AsyncClient(base_url=b.http, timeout=10) as http:
            for i in range(201, 401):
                await http.post("/api/publish", json={"channel": "user:flow", "data": i})

    publisher = asyncio.create_task(keep_publishing())
    client = await Client.connect(a.ws_url)
    since = {"offset": start["offset"], "epoch": start["epoch"]}
    replayed, reply = await client.recover("user:flow", since)
    await publisher
    assert reply["recovered"] is True

    offsets = [m["offset"] for m in replayed]
    while offsets[-1] < 401 if offsets else True:
        offsets.append((await client.recv())["offset"])
    assert offsets == list(range(2, 402))  # every offset exactly once, in order


async def test_four_concurrent_publishers_give_every_subscriber_the_same_order(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    nodes = [node_factory(redis_url, env=_env(config)) for _ in range(2)]
    clients = [await Client.connect(n.ws_url) for n in nodes for _ in range(2)]
    for c in clients:
        await c.recover("user:race")

    async def publisher(p: int) -> None:
        async with httpx.AsyncClient(base_url=nodes[p % 2].http, timeout=10) as http:
            for i in range(50):
                resp = await http.post(
                    "/api/publish", json={"channel": "user:race", "data": f"{p}-{i}"}
                )
                assert resp.status_code == 200

    await asyncio.gather(*(publisher(p) for p in range(4)))

    orders = []
    for c in clients:
        events = [await c.recv() for _ in range(200)]
        assert [e["offset"] for e in events] == list(range(1, 201))
        orders.append([e["data"] for e in events])
    assert all(order == orders[0] for order in orders)
    for p in range(4):  # each publisher's own messages keep their order
        mine = [d for d in orders[0] if d.startswith(f"{p}-")]
        assert mine == [f"{p}-{i}" for i in range(50)]


async def _resume_until(client: Client, channel: str, until: int, seen: list[int]) -> int:
    """Read like pushhub.js does: on {"type":"unsubscribed","reason":"recover"},
    resubscribe from the last position. Returns how many recoveries it made."""
    offset, epoch, recoveries = 0, "", 0
    while offset < until:
        event = await client.recv(timeout=10)
        if event["type"] == "message":
            assert event["offset"] == offset + 1, f"gap or duplicate after {offset}: {event}"
            offset, epoch = event["offset"], event["epoch"]
            seen.append(offset)
        elif event["type"] == "unsubscribed" and event.get("reason") == "recover":
            recoveries += 1
            since = {"offset": offset, "epoch": epoch}
            replayed, reply = await client.recover(channel, since)
            assert reply["recovered"] is True
            for m in replayed:
                assert m["offset"] == offset + 1, f"gap or duplicate in replay after {offset}"
                offset = m["offset"]
                seen.append(offset)
    return recoveries


async def test_a_killed_pubsub_connection_leads_to_recovery_with_no_gap_and_no_duplicate(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    config: Path,
) -> None:
    reader = node_factory(redis_url, env=_env(config))
    writer = node_factory(redis_url, env=_env(config))
    client = await Client.connect(reader.ws_url)
    _, reply = await client.recover("user:kill")
    assert reply["offset"] == 0
    seen: list[int] = []
    total = 300
    consumer = asyncio.create_task(_resume_until(client, "user:kill", total, seen))

    async with httpx.AsyncClient(base_url=writer.http, timeout=10) as http:
        for i in range(1, 51):
            await http.post("/api/publish", json={"channel": "user:kill", "data": i})
        # Kill the nodes' Pub/Sub connections and publish 20 more in the same breath,
        # before any node can have reconnected: those 20 are lost on the way.
        script = "CLIENT KILL TYPE pubsub\n" + "".join(
            f"FCALL pushhub_publish 1 user:kill {i}\n" for i in range(51, 71)
        )
        out = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port)],
            input=script,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        assert int(out.split()[0]) >= 2  # both nodes' Pub/Sub connections
        for i in range(71, total + 1):
            resp = await http.post("/api/publish", json={"channel": "user:kill", "data": i})
            assert resp.status_code == 200
    recoveries = await asyncio.wait_for(consumer, 30)

    assert seen == list(range(1, total + 1))  # every offset exactly once, in order
    assert recoveries >= 1
    assert "subscribers must recover" in reader.log()


async def test_history_api_pages_forward_and_backward_and_clears(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    node = node_factory(redis_url, env=_env(config))
    for i in range(25):
        await publish_http(node, {"channel": "user:h", "data": i})
    base = f"{node.http}/api/history/user:h"

    forward = httpx.get(base, params={"limit": "10"}).json()
    after = httpx.get(base, params={"since": "10", "limit": "10"}).json()
    backward = httpx.get(base, params={"reverse": "true", "limit": "5"}).json()
    cleared = httpx.delete(base).json()
    empty = httpx.get(base).json()

    assert [m["offset"] for m in forward["messages"]] == list(range(1, 11))
    assert [m["data"] for m in after["messages"]] == list(range(10, 20))
    assert [m["offset"] for m in backward["messages"]] == [25, 24, 23, 22, 21]
    assert forward["offset"] == 25
    assert cleared["offset"] == 0
    assert cleared["epoch"] != forward["epoch"]
    assert (empty["messages"], empty["epoch"]) == ([], cleared["epoch"])
    ephemeral = httpx.get(f"{node.http}/api/history/room:1")
    assert (ephemeral.status_code, ephemeral.json()["error"]["code"]) == (404, "not_found")
    bad = httpx.get(base, params={"since": "-1"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")


async def test_idempotent_http_publish_lands_once_and_answers_the_first_result(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    node = node_factory(redis_url, env=_env(config))
    client = await Client.connect(node.ws_url)
    await client.recover("user:idem")
    body = {"channel": "user:idem", "data": "once", "idempotency_key": "order-123-shipped"}

    first = (await publish_http(node, body)).json()
    retry = (await publish_http(node, body)).json()
    await publish_http(node, {"channel": "user:idem", "data": "next"})

    assert first == retry
    assert [(await client.recv())["data"] for _ in range(2)] == ["once", "next"]


async def test_socket_publish_and_history_obey_the_channel_options(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    node = node_factory(redis_url, env=_env(config))
    client = await Client.connect(node.ws_url)
    await client.recover("chat:1")

    published = await client.request({"type": "publish", "channel": "chat:1", "data": {"t": "hi"}})
    message = await client.recv()
    refused = await client.request({"type": "publish", "channel": "user:9", "data": 1})
    history = await client.request({"type": "history", "channel": "chat:1"})
    not_mine = await client.request({"type": "history", "channel": "user:9"})

    assert (published["type"], published["offset"]) == ("published", 1)
    assert message["data"] == {"t": "hi"}
    assert message["offset"] == 1
    assert refused["code"] == "forbidden"
    assert history["messages"] == [{"offset": 1, "data": {"t": "hi"}}]
    assert not_mine["code"] == "not_subscribed"


async def test_history_lost_with_redis_gets_a_new_epoch(
    own_redis: RedisServer, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    node = node_factory(own_redis.url, env=_env(config))
    old = (await publish_http(node, {"channel": "user:gone", "data": 1})).json()["results"][0]
    own_redis.stop()
    own_redis.start()  # no persistence: the stream and the Function are gone
    node.wait_ready()

    again = (await publish_http(node, {"channel": "user:gone", "data": 2})).json()
    client = await Client.connect(node.ws_url)
    replayed, reply = await client.recover(
        "user:gone", {"offset": old["offset"], "epoch": old["epoch"]}
    )

    assert again["results"][0]["epoch"] != old["epoch"]
    assert again["results"][0]["offset"] == 1
    assert replayed == []
    assert reply["recovered"] is False


async def test_nodes_with_different_rules_keep_their_own_publishes_durable_and_warn(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    config: Path,
) -> None:
    configured = node_factory(redis_url, env=_env(config))
    bare = node_factory(redis_url)  # no [[channels]]: its library makes nothing durable

    resp = await publish_http(configured, {"channel": "user:mixed", "data": 1})
    fcall = redis_server.cli("FCALL", "pushhub_publish", "1", "user:mixed", "2")

    assert resp.json()["results"][0]["offset"] == 1
    assert fcall.split()[0] == "0"  # redis-cli follows the library loaded last
    assert "different channel rules or key prefix" in bare.log()


async def test_idempotency_key_on_a_channel_that_is_not_durable_is_refused(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    node = node_factory(redis_url, env=_env(config))
    resp = await publish_http(
        node, {"channels": ["user:1", "room:1"], "data": 1, "idempotency_key": "k1"}
    )
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "bad_request")
    assert "room:1" in resp.json()["error"]["message"]
