"""Presence with many members on one channel, across two real node processes on a real
redis-server: events gathered into one frame per tick, member lists that agree with
REST, a crashed node's members leaving in batches, and counts past the member bound."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support import PushhubNode

#: The node's default presence tick: at most one presence frame per channel per tick.
TICK = 0.1

pytestmark = pytest.mark.timeout(90)


def member_of(event: dict[str, Any]) -> str:
    return f"u:{event['user']}" if event.get("user") is not None else f"c:{event['client']}"


class Member:
    """A raw WebSocket that tracks the channel's member list: a snapshot by the socket's
    ``presence`` query, then every ``join``/``leave`` line on top, counting frames."""

    def __init__(self, ws: ClientConnection, channel: str) -> None:
        self.ws = ws
        self.channel = channel
        self.members: set[str] = set()
        self.presence_frames = 0  # frames holding at least one join or leave line
        self.joins: list[str] = []
        self.leaves: list[str] = []
        self.counts: list[dict[str, Any]] = []
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def join(cls, node: PushhubNode, channel: str, user: str) -> Member:
        ws = await connect(node.ws_url, open_timeout=20, close_timeout=1)
        member = cls(ws, channel)
        member._reader = asyncio.get_running_loop().create_task(member._read())
        connected = await member.request({"type": "connect", "user": user})
        assert connected["type"] == "connected", connected
        subscribed = await member.request({"type": "subscribe", "channel": channel})
        assert subscribed["type"] == "subscribed", subscribed
        cursor = None
        snapshot: set[str] = set()
        while True:
            query: dict[str, Any] = {"type": "presence", "channel": channel, "limit": 1000}
            if cursor is not None:
                query["cursor"] = cursor
            page = await member.request(query)
            assert page["type"] == "presence", page
            snapshot |= {member_of(m) for m in page["members"]}
            cursor = page["next_cursor"]
            if cursor is None:
                break
        # Events seen meanwhile are already applied; joins and leaves are idempotent on
        # a set, and later events keep their order, so the union is the list.
        member.members |= snapshot
        return member

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        rid = len(self._replies) + 1
        future = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        await self.ws.send(orjson.dumps({**frame, "id": rid}).decode())
        return await asyncio.wait_for(future, 20)

    async def _read(self) -> None:
        async for raw in self.ws:
            assert isinstance(raw, str)
            presence_lines = 0
            for line in raw.split("\n"):
                event = orjson.loads(line)
                rid = event.get("id")
                if rid is not None and rid in self._replies:
                    self._replies[rid].set_result(event)
                elif event["type"] == "join":
                    presence_lines += 1
                    self.joins.append(member_of(event))
                    self.members.add(member_of(event))
                elif event["type"] == "leave":
                    presence_lines += 1
                    self.leaves.append(member_of(event))
                    self.members.discard(member_of(event))
                elif event["type"] == "presence_count":
                    self.counts.append(event)
            self.presence_frames += presence_lines > 0

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()


def rest_members(node: PushhubNode, channel: str) -> set[str]:
    found: set[str] = set()
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        resp = httpx.get(f"{node.http}/api/presence/{channel}", params=params, timeout=5)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        found |= {member_of(m) for m in body["members"]}
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def rest_count(node: PushhubNode, channel: str) -> dict[str, Any]:
    resp = httpx.get(f"{node.http}/api/presence/{channel}/count", timeout=5)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def settled(members: list[Member], expected: set[str], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while any(m.members != expected for m in members):
            await asyncio.sleep(0.05)


async def test_300_members_on_one_channel_agree_with_rest_and_a_killed_nodes_leave_in_batches(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    a, b = node_factory(redis_url), node_factory(redis_url)
    channel = "room:crowd"
    began = time.monotonic()
    joining = [Member.join(a if n % 2 == 0 else b, channel, f"user{n}") for n in range(300)] + [
        Member.join(a, channel, "tabs"),
        Member.join(b, channel, "tabs"),
    ]
    everyone = list(await asyncio.gather(*joining))
    expected = rest_members(a, channel)
    assert len(expected) == 301  # 300 users and one user with two tabs
    assert rest_members(b, channel) == expected

    await settled(everyone, expected, 15)
    elapsed = time.monotonic() - began
    for member in everyone:
        # One frame per tick at most, whatever the number of joins in it.
        assert member.presence_frames <= elapsed / TICK + 3, (
            member.presence_frames,
            elapsed,
        )
    # The user with two tabs joined once, on every subscriber that saw it join.
    assert all(m.joins.count("u:tabs") <= 1 for m in everyone)

    on_a = [m for i, m in enumerate(everyone[:300]) if i % 2 == 0] + [everyone[300]]
    frames_before = [m.presence_frames for m in on_a]
    killed_at = time.monotonic()
    b.stop(signal.SIGKILL)
    survivors = {f"u:user{n}" for n in range(0, 300, 2)} | {"u:tabs"}
    await settled(on_a, survivors, 12)
    assert time.monotonic() - killed_at < 10
    assert rest_members(a, channel) == survivors
    assert rest_count(a, channel) == {"channel": channel, "users": 151, "connections": 151}
    for member, before in zip(on_a, frames_before, strict=True):
        # 150 leaves, in a handful of frames, not one frame each.
        assert member.leaves.count("u:tabs") == 0  # one tab remains
        assert member.presence_frames - before <= 20
    for member in everyone:
        await member.close()


@pytest.fixture
def bounded(tmp_path: Path) -> Path:
    path = tmp_path / "pushhub.toml"
    path.write_text('[[channels]]\npattern = "big:*"\njoin_leave_max_members = 5\n')
    return path


async def test_past_the_member_bound_counts_replace_events_and_events_resume_below_it(
    redis_url: str, node_factory: Callable[..., PushhubNode], bounded: Path
) -> None:
    a = node_factory(redis_url, args=["--config", str(bounded)])
    b = node_factory(redis_url, args=["--config", str(bounded)])
    channel = "big:1"
    watcher = await Member.join(a, channel, "watcher")
    others = []
    for n in range(7):  # members 2..8: past the bound of 5 from the sixth
        others.append(await Member.join(b if n % 2 else a, channel, f"m{n}"))
        await asyncio.sleep(TICK * 1.5)  # one tick each: each change is seen
    async with asyncio.timeout(5):
        while not watcher.counts or watcher.counts[-1]["users"] != 8:
            await asyncio.sleep(0.02)

    # Joins while within the bound, then counts only.
    assert watcher.joins == ["u:watcher", "u:m0", "u:m1", "u:m2", "u:m3"]
    # Counts at most once a second: the first past the bound, the last, maybe one between.
    users = [c["users"] for c in watcher.counts]
    assert users[0] == 6
    assert users[-1] == 8
    assert users == sorted(users)
    assert len(users) <= 3
    assert all(c["join_leave"] is False for c in watcher.counts)
    assert rest_count(a, channel) == {
        "channel": channel,
        "users": 8,
        "connections": watcher.counts[-1]["connections"],
    }

    for member in others[4:]:
        await member.close()
        await asyncio.sleep(TICK * 1.5)
    async with asyncio.timeout(5):
        while not watcher.counts[-1]["join_leave"]:
            await asyncio.sleep(0.02)
    resumed = watcher.counts[-1]
    assert (resumed["users"], resumed["join_leave"]) == (5, True)
    assert rest_count(a, channel)["users"] == 5

    # Within the bound again: events as before.
    await others[0].close()
    async with asyncio.timeout(5):
        while "u:m0" not in watcher.leaves:
            await asyncio.sleep(0.02)
    for member in [watcher, *others[1:4]]:
        await member.close()
