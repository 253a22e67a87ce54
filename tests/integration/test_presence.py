"""Presence across real node processes sharing a real redis-server."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Client, PushhubNode, RedisServer, wait_for


async def _join(node: PushhubNode, channel: str, user: str | None, **info: Any) -> Client:
    client = await Client.connect(node.ws_url, presence_events=True)
    if user is not None:
        reply = await client.request({"type": "connect", "user": user, "info": info or None})
        assert reply["type"] == "connected"
    await client.subscribe(channel)
    return client


async def _next_event(
    client: Client, kind: str, user: str | None = None, timeout: float = 5
) -> dict[str, Any]:
    """The next event of ``kind`` (about ``user``, if given), skipping any other."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.recv(timeout)
            if event["type"] == kind and (user is None or event.get("user") == user):
                return event


def _presence(node: PushhubNode, channel: str, **params: str) -> httpx.Response:
    return httpx.get(f"{node.http}/api/presence/{channel}", params=params, timeout=5)


def _count(node: PushhubNode, channel: str) -> dict[str, Any]:
    resp = httpx.get(f"{node.http}/api/presence/{channel}/count", timeout=5)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_a_user_in_two_tabs_on_two_nodes_is_one_member_and_leaves_once(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    a, b = node_factory(redis_url), node_factory(redis_url)
    watcher = await _join(a, "room:1", "bob")
    tab1 = await _join(a, "room:1", "alice", name="Alice")
    joined = await _next_event(watcher, "join", "alice")
    assert joined == {
        "type": "join",
        "channel": "room:1",
        "user": "alice",
        "info": {"name": "Alice"},
    }
    tab2 = await _join(b, "room:1", "alice", name="Alice")

    members = _presence(b, "room:1").json()["members"]
    assert members == [
        {"user": "alice", "connections": 2, "info": {"name": "Alice"}},
        {"user": "bob", "connections": 1, "info": None},
    ]
    assert _count(a, "room:1") == {"channel": "room:1", "users": 2, "connections": 3}

    await tab1.close()
    # Closing one tab sends no leave: prove it by a later event arriving first.
    carol = await _join(b, "room:1", "carol")
    ev = await watcher.recv()
    assert ev["user"] == "carol", ev
    assert _count(a, "room:1")["connections"] == 3

    await tab2.close()
    left = await watcher.recv()
    assert left == {"type": "leave", "channel": "room:1", "user": "alice"}
    assert [m["user"] for m in _presence(a, "room:1").json()["members"]] == ["bob", "carol"]
    await carol.close()


async def test_anonymous_connections_join_and_leave_one_by_one(
    redis_node: PushhubNode,
) -> None:
    watcher = await _join(redis_node, "lobby", "watcher")
    await _next_event(watcher, "join", "watcher")
    anon = await _join(redis_node, "lobby", None)
    joined = await _next_event(watcher, "join")
    assert joined["user"] is None
    assert joined["client"]

    await anon.close()

    left = await _next_event(watcher, "leave")
    assert (left["user"], left["client"]) == (None, joined["client"])


async def test_killed_node_members_leave_within_ten_seconds_with_default_settings(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    survivor, doomed = node_factory(redis_url), node_factory(redis_url)
    watcher = await _join(survivor, "room:crash", "watcher")
    victim = await _join(doomed, "room:crash", "victim")
    await _next_event(watcher, "join", "victim")
    assert _count(survivor, "room:crash")["users"] == 2

    killed_at = time.monotonic()
    doomed.stop(signal.SIGKILL)
    left = await _next_event(watcher, "leave", timeout=12)
    elapsed = time.monotonic() - killed_at

    assert left["user"] == "victim"
    assert elapsed < 10, f"leave arrived {elapsed:.1f}s after kill -9"
    assert _count(survivor, "room:crash") == {"channel": "room:crash", "users": 1, "connections": 1}
    assert [m["user"] for m in _presence(survivor, "room:crash").json()["members"]] == ["watcher"]
    await victim.close()


async def test_presence_is_restored_after_redis_restarts_without_its_data(
    own_redis: RedisServer,
    node_factory: Callable[..., PushhubNode],
) -> None:
    env = {"PUSHHUB_PRESENCE_HEARTBEAT": "1", "PUSHHUB_PRESENCE_TTL": "3"}
    a, b = node_factory(own_redis.url, env=env), node_factory(own_redis.url, env=env)
    await _join(a, "room:r", "alice")
    await _join(b, "room:r", "bob")
    await _join(b, "room:r", "bob")
    assert _count(a, "room:r")["connections"] == 3

    own_redis.stop()
    own_redis.start()  # no persistence: every key is gone
    a.wait_ready()
    b.wait_ready()

    # One heartbeat after the engine is back, each node has restored its entries.
    wait_for(lambda: _count(a, "room:r")["connections"] == 3, 5, "presence restored")
    assert _count(a, "room:r")["users"] == 2
    members = _presence(b, "room:r").json()["members"]
    assert [(m["user"], m["connections"]) for m in members] == [("alice", 1), ("bob", 2)]


async def test_presence_over_the_socket_answers_subscribers_only(
    redis_node: PushhubNode,
) -> None:
    alice = await _join(redis_node, "room:s", "alice", role="admin")

    reply = await alice.request({"type": "presence", "channel": "room:s"})
    refused = await alice.request({"type": "presence", "channel": "room:other"})

    assert reply["type"] == "presence"
    assert reply["members"] == [{"user": "alice", "connections": 1, "info": {"role": "admin"}}]
    assert reply["next_cursor"] is None
    assert refused["code"] == "not_subscribed"


async def test_rest_presence_pages_through_members_with_an_opaque_cursor(
    redis_node: PushhubNode,
) -> None:
    clients = [await _join(redis_node, "room:p", f"user{i:02d}") for i in range(25)]

    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        body = _presence(redis_node, "room:p", limit="10", cursor=cursor).json()
        seen += [m["user"] for m in body["members"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert seen == [f"user{i:02d}" for i in range(25)]
    assert pages == 3

    counts = httpx.get(
        f"{redis_node.http}/api/presence", params={"channels": "room:p,empty"}
    ).json()
    assert counts == {
        "channels": {
            "room:p": {"users": 25, "connections": 25},
            "empty": {"users": 0, "connections": 0},
        }
    }
    await asyncio.gather(*(c.close() for c in clients))


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/api/presence/bad%20name", {}, "bad_channel"),
        ("/api/presence/a*b/count", {}, "bad_channel"),
        ("/api/presence/room:x", {"cursor": "not-a-cursor!"}, "bad_request"),
        ("/api/presence/room:x", {"cursor": "Zm9vOmJhcg"}, "bad_request"),
        ("/api/presence/room:x", {"limit": "0"}, "bad_request"),
        ("/api/presence/room:x", {"limit": "1001"}, "bad_request"),
        ("/api/presence", {}, "bad_request"),
        ("/api/presence", {"channels": "ok,bad name"}, "bad_channel"),
    ],
)
async def test_bad_presence_requests_get_400_with_a_json_error(
    redis_node: PushhubNode,
    path: str,
    params: dict[str, str],
    code: str,
) -> None:
    resp = httpx.get(f"{redis_node.http}{path}", params=params, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == code


async def test_channel_options_turn_presence_and_events_off_per_pattern(
    redis_url: str, node_factory: Callable[..., PushhubNode], tmp_path: Path
) -> None:
    config = tmp_path / "pushhub.toml"
    config.write_text(
        '[[channels]]\npattern = "quiet:*"\njoin_leave = false\n\n'
        '[[channels]]\npattern = "feed:*"\npresence = false\n'
    )
    node = node_factory(redis_url, args=["--config", str(config)])
    watcher = await _join(node, "quiet:1", "watcher")
    await _join(node, "quiet:1", "alice")
    redis_url_cli = await _join(node, "feed:1", "alice")

    # Presence is kept on quiet:1 but nobody hears joins: the next frame is the message.
    httpx.post(f"{node.http}/api/publish", json={"channel": "quiet:1", "data": "m"})
    assert (await watcher.recv())["type"] == "message"
    assert _count(node, "quiet:1")["users"] == 2
    disabled = _presence(node, "feed:1")
    assert disabled.status_code == 404
    assert disabled.json()["error"]["code"] == "not_found"
    reply = await redis_url_cli.request({"type": "presence", "channel": "feed:1"})
    assert reply["code"] == "not_found"


async def test_connect_frame_rules(
    redis_node: PushhubNode,
) -> None:
    late = await Client.connect(redis_node.ws_url)
    await late.subscribe("x")
    too_late = await late.request({"type": "connect", "user": "alice"})
    big = await Client.connect(redis_node.ws_url)
    too_big = await big.request({"type": "connect", "user": "a", "info": {"pad": "x" * 2000}})
    twice = await Client.connect(redis_node.ws_url)
    first = await twice.request({"type": "connect", "user": "alice"})
    second = await twice.request({"type": "connect", "user": "mallory"})

    assert too_late["code"] == "bad_request"
    assert too_big["code"] == "bad_request"
    assert first["type"] == "connected"
    assert first["user"] == "alice"
    assert second["code"] == "bad_request"
