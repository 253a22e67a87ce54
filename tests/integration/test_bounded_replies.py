"""History and presence replies are bounded, queries are rate-limited, reads write nothing.

The findings: a ``history`` reply was one frame of up to ``limit`` x 64 KiB (100 messages
of 64 KiB made a 6.4 MB frame, far past the 1 MiB outbound queue and the client's own
frame limit); presence pages were bounded in count only; a socket could ask for them as
fast as it could send frames; and reading the history of (or subscribing to) a durable
channel that was never published created its epoch, a Redis key with a 24 h TTL, so a
client could fill Redis with keys by naming channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from tests.support import Client, PushhubNode, RedisServer

CONFIG = """
[[channels]]
pattern = "feed:*"
durable = true
presence = false

[[channels]]
pattern = "notifications#*"
durable = true
presence = false
"""

#: A reply's message data is at most a quarter of outbound_queue_bytes (1 MiB).
REPLY_BYTES = 1024 * 1024 // 4


async def _fcall_many(redis_url: str, channel: str, payloads: Sequence[bytes]) -> None:
    client = Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            pipe.execute_command("FCALL", "pushhub_publish", 1, channel, payload)
        await pipe.execute()
    finally:
        await client.aclose()


def _data_bytes(messages: list[dict[str, Any]]) -> int:
    return sum(len(orjson.dumps(m["data"])) for m in messages)


async def _page_http(node: PushhubNode, channel: str, reverse: bool) -> list[list[int]]:
    """Every page of GET /api/history, following ``next_since``; the offsets of each."""
    pages: list[list[int]] = []
    params: dict[str, str] = {"limit": "100", "reverse": "true" if reverse else "false"}
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        while len(pages) < 50:
            resp = await http.get(f"/api/history/{channel}", params=params)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert _data_bytes(body["messages"]) <= REPLY_BYTES
            pages.append([m["offset"] for m in body["messages"]])
            if body["next_since"] is None:
                return pages
            assert body["next_since"] == pages[-1][-1]
            params["since"] = str(body["next_since"])
    raise AssertionError("next_since never ended")


async def _page_socket(client: Client, channel: str, reverse: bool) -> list[list[int]]:
    pages: list[list[int]] = []
    frame: dict[str, Any] = {"type": "history", "channel": channel, "limit": 100}
    frame["reverse"] = reverse
    while len(pages) < 50:
        reply = await client.request(frame)
        assert reply["type"] == "history", reply
        assert _data_bytes(reply["messages"]) <= REPLY_BYTES
        pages.append([m["offset"] for m in reply["messages"]])
        if reply["next_since"] is None:
            return pages
        frame["since"] = reply["next_since"]
    raise AssertionError("next_since never ended")


async def test_history_of_100_messages_of_20_kb_pages_by_bytes_over_http_and_the_socket(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: one reply of all 100 messages (2 MB), and no ``next_since``."""
    node = node_factory(redis_url, args=["--config", str(config)])
    pad = "y" * 20_000
    await _fcall_many(
        redis_url, "feed:big", [orjson.dumps({"n": n, "pad": pad}) for n in range(1, 101)]
    )
    client = await Client.connect(node.ws_url)
    await client.subscribe("feed:big")

    for reverse in (False, True):
        expected = list(range(100, 0, -1)) if reverse else list(range(1, 101))
        for pages in (
            await _page_http(node, "feed:big", reverse),
            await _page_socket(client, "feed:big", reverse),
        ):
            assert len(pages) > 1, "100 messages of 20 KB fit no single bounded reply"
            assert all(pages), "an empty page before the end"
            assert [o for page in pages for o in page] == expected  # each exactly once


async def test_history_replies_hold_at_most_recovery_max_messages(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: ``limit`` (up to 1000) messages, whatever recovery_max said."""
    node = node_factory(
        redis_url, env={"PUSHHUB_RECOVERY_MAX": "20"}, args=["--config", str(config)]
    )
    await _fcall_many(redis_url, "feed:small", [str(n).encode() for n in range(1, 51)])
    client = await Client.connect(node.ws_url)
    await client.subscribe("feed:small")

    async with httpx.AsyncClient(timeout=10) as http:
        body = (await http.get(f"{node.http}/api/history/feed:small?limit=100")).json()
    reply = await client.request({"type": "history", "channel": "feed:small", "limit": 100})

    for answer in (body, reply):
        assert [m["offset"] for m in answer["messages"]] == list(range(1, 21))
        assert answer["next_since"] == 20


async def test_presence_pages_are_bounded_in_bytes_and_continue_with_next_cursor(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    """Old: all 8 members of 20 KB info in one page, with ``next_cursor`` null."""
    node = node_factory(
        redis_url,
        env={
            "PUSHHUB_OUTBOUND_QUEUE_BYTES": "262144",  # replies of at most 64 KiB
            "PUSHHUB_MAX_PRESENCE_INFO": "65536",
        },
    )
    users = [f"user{i}" for i in range(8)]
    members = []
    for user in users:
        member = await Client.connect(node.ws_url)
        reply = await member.request(
            {"type": "connect", "user": user, "info": {"bio": user * 4000}}
        )
        assert reply["type"] == "connected", reply
        await member.subscribe("room:crowd")
        members.append(member)
    reader = members[-1]

    socket_pages: list[list[str]] = []
    frame: dict[str, Any] = {"type": "presence", "channel": "room:crowd", "limit": 100}
    while len(socket_pages) < 20:
        page = await reader.request(frame)
        assert page["type"] == "presence", page
        assert len(orjson.dumps(page["members"])) <= 64 * 1024 + 1024
        socket_pages.append([m["user"] for m in page["members"]])
        if page["next_cursor"] is None:
            break
        frame["cursor"] = page["next_cursor"]
    http_pages: list[list[str]] = []
    params = {"limit": "100"}
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        while len(http_pages) < 20:
            body = (await http.get("/api/presence/room:crowd", params=params)).json()
            http_pages.append([m["user"] for m in body["members"]])
            assert all(m["info"] == {"bio": m["user"] * 4000} for m in body["members"])
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]

    for pages in (socket_pages, http_pages):
        assert len(pages) > 1
        assert sorted(u for page in pages for u in page) == users  # each exactly once


async def test_the_21st_immediate_query_is_rate_limited_and_the_connection_stays_open(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Defaults: query_rate 10/s, query_burst 20. Old: no limit on queries."""
    node = node_factory(redis_url, args=["--config", str(config)])
    client = await Client.connect(node.ws_url)
    await client.subscribe("feed:rl")
    await client.subscribe("room:rl")

    frames = [
        {"type": "history", "channel": "feed:rl", "id": i}
        if i % 2
        else {"type": "presence", "channel": "room:rl", "id": i}
        for i in range(1, 22)
    ]
    for frame in frames:  # all at once, without waiting for any reply
        await client.send(frame)
    replies: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(5):
        while len(replies) < 21:
            event = await client.recv()
            replies[event["id"]] = event

    answered = [replies[i]["type"] for i in range(1, 21)]
    assert answered == ["history" if i % 2 else "presence" for i in range(1, 21)]
    assert (replies[21]["type"], replies[21]["code"]) == ("error", "rate_limited")
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    # The budget refills: within a second a query is answered again.
    async with asyncio.timeout(3):
        while (await client.request({"type": "history", "channel": "feed:rl"}))[
            "type"
        ] != "history":
            await asyncio.sleep(0.05)


def _history_keys(redis: RedisServer) -> list[str]:
    keys = redis.cli("--scan", "--pattern", "*").split()
    return sorted(k for k in keys if "stream:" in k or "meta:" in k)


async def test_subscribing_to_and_reading_never_published_durable_channels_writes_nothing(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    config: Path,
) -> None:
    """Old: every read (and subscribe) of a new name created ``meta:{<name>}`` with a
    24 h TTL: a client could mint Redis keys without end."""
    node = node_factory(redis_url, args=["--config", str(config)])
    assert _history_keys(redis_server) == []
    channels = [f"notifications#u{i}" for i in range(50)]
    client = await Client.connect(node.ws_url)
    recovering = await Client.connect(node.ws_url)

    subscribed = [
        await client.request({"type": "subscribe", "channel": channel}) for channel in channels
    ]
    # Subscribing with a position reads the history too (the recovery path).
    since = {"offset": 0, "epoch": ""}
    recovered = [
        await recovering.request({"type": "subscribe", "channel": channel, "since": since})
        for channel in channels[:10]
    ]
    histories = [
        await client.request({"type": "history", "channel": channel}) for channel in channels[:20]
    ]
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        reads = [
            await http.get(f"/api/history/{channel.replace('#', '%23')}") for channel in channels
        ]

    assert _history_keys(redis_server) == []
    for reply in [*subscribed, *recovered]:
        assert (reply["type"], reply["offset"], reply["epoch"]) == ("subscribed", 0, ""), reply
    assert {r["recovered"] for r in recovered} == {True}  # nothing to miss: still none
    for reply in histories:
        assert (reply["type"], reply["messages"], reply["next_since"]) == ("history", [], None)
    for resp in reads:
        assert resp.status_code == 200, resp.text
        assert (resp.json()["offset"], resp.json()["epoch"]) == (0, "")


async def test_channel_names_with_two_hashes_are_refused(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: accepted, so a rule like ``notifications#*`` matched names without end."""
    node = node_factory(redis_url, args=["--config", str(config)])
    client = await Client.connect(node.ws_url)

    reply = await client.request({"type": "subscribe", "channel": "notifications#a#b"})
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        read = await http.get("/api/history/notifications%23a%23b")
        published = await http.post(
            "/api/publish", json={"channel": "notifications#a#b", "data": 1}
        )

    assert (reply["type"], reply["code"]) == ("error", "bad_channel")
    assert (read.status_code, read.json()["error"]["code"]) == (400, "bad_channel")
    assert (published.status_code, published.json()["error"]["code"]) == (400, "bad_channel")
    assert (await client.subscribe("notifications#a"))["type"] == "subscribed"
