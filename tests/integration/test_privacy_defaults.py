"""Privacy defaults: what a connection shows others about itself and about the node.

The findings: an anonymous connection could set presence ``info`` that every member then
saw as if someone had vouched for it; connection ids were ``<host>-<pid>-<hex>.<n>``, so
anonymous members (shown by id) told everyone the node's host name, its process id and
how many connections it had taken; and on ``subscribe = "public"`` channels, which anyone
may join anonymously, anyone could list the members and watch them come and go.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.support import Client, PushhubNode, publish_http

SECRET = "privacy-defaults-secret-0123456789abcdef"

CONFIG = """
[[channels]]
pattern = "status:*"
subscribe = "public"

[[channels]]
pattern = "open:*"
subscribe = "public"
presence_read = true
join_leave = true
"""

#: Tokens enforced, anonymous connections admitted (to public channels only).
ANONYMOUS_OK = {"PUSHHUB_JWT_SECRET": SECRET, "PUSHHUB_ALLOW_ANONYMOUS": "true"}


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + 300)}, SECRET, algorithm="HS256")


async def _as_user(node: PushhubNode, user: str) -> Client:
    client = await Client.connect(f"{node.ws_url}?token={token(user)}", presence_events=True)
    assert (await client.recv())["type"] == "connected"
    return client


async def _anonymous(node: PushhubNode, **connect: Any) -> tuple[Client, dict[str, Any]]:
    client = await Client.connect(node.ws_url, presence_events=True)
    reply = await client.request({"type": "connect", **connect})
    assert reply["type"] == "connected", reply
    return client, reply


async def _members(node: PushhubNode, channel: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.get(f"{node.http}/api/presence/{channel}")
    assert resp.status_code == 200, resp.text
    members: list[dict[str, Any]] = resp.json()["members"]
    return members


async def test_an_anonymous_connection_cannot_set_info_in_development_mode(
    redis_node: PushhubNode,
) -> None:
    """Old: its info went into the join event and the member list."""
    watcher = await Client.connect(redis_node.ws_url, presence_events=True)
    await watcher.request({"type": "connect", "user": "watcher", "info": {"name": "W"}})
    await watcher.subscribe("room:dev")
    assert (await watcher.recv())["user"] == "watcher"

    anon, connected = await _anonymous(redis_node, info={"name": "Admin", "verified": True})
    await anon.subscribe("room:dev")
    joined = await watcher.recv()

    assert connected["user"] is None
    assert joined == {
        "type": "join",
        "channel": "room:dev",
        "user": None,
        "client": connected["client"],
        "info": None,
    }
    members = await _members(redis_node, "room:dev")
    assert {"user": None, "client": connected["client"], "connections": 1, "info": None} in (
        members
    )
    # A named user still states its info in development mode.
    assert {"user": "watcher", "connections": 1, "info": {"name": "W"}} in members


async def test_an_anonymous_connection_cannot_set_info_with_allow_anonymous(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: ``{"type":"connect","info":...}`` without a token kept the info."""
    node = node_factory(redis_url, env=ANONYMOUS_OK, args=["--config", str(config)])
    watcher = await _as_user(node, "watcher")
    await watcher.subscribe("open:info")
    assert (await watcher.recv())["user"] == "watcher"

    anon, connected = await _anonymous(node, info={"name": "Support team"})
    await anon.subscribe("open:info")
    joined = await watcher.recv()
    page = await watcher.request({"type": "presence", "channel": "open:info"})

    assert (joined["type"], joined["user"], joined["info"]) == ("join", None, None)
    assert joined["client"] == connected["client"]
    assert {"user": None, "client": connected["client"], "connections": 1, "info": None} in (
        page["members"]
    )


async def test_client_ids_share_only_the_node_prefix_and_name_no_host_pid_or_count(
    redis_node: PushhubNode,
) -> None:
    """Old: ``<host>-<pid>-<6 hex>.1``, ``.2``, ... shown to every member by anonymous
    joins."""
    assert redis_node.proc is not None
    pid = str(redis_node.proc.pid)
    host = socket.gethostname().split(".")[0]
    ids = []
    for _ in range(5):
        _, reply = await _anonymous(redis_node)
        ids.append(reply["client"])
    async with httpx.AsyncClient(timeout=5) as http:
        node_id = (await http.get(f"{redis_node.http}/api/stats")).json()["node"]

    prefixes = {i.split(".", 1)[0] for i in ids}
    suffixes = [i.split(".", 1)[1] for i in ids]
    assert prefixes == {node_id}
    assert len(set(suffixes)) == len(suffixes)
    for part in (node_id, *suffixes):
        assert pid not in part, f"{part!r} names the node's process id {pid}"
        # A host name of a few letters ("vm") turns up in random text by chance.
        if len(host) >= 5:
            assert host.lower() not in part.lower(), f"{part!r} names the host {host!r}"
    for suffix in suffixes:
        assert len(suffix) >= 12, f"{suffix!r} is too short to be random"
        assert not suffix.isdigit(), f"{suffix!r} is a counter"
    # Not a sequence under a fixed stem: random ids do not all start alike.
    assert len({s[:3] for s in suffixes}) > 1, suffixes


async def test_public_channels_hide_members_and_join_leave_unless_the_rule_shows_them(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: a ``subscribe = "public"`` rule left ``presence_read`` and ``join_leave`` on,
    so any anonymous socket could list the members and watch them come and go."""
    node = node_factory(redis_url, env=ANONYMOUS_OK, args=["--config", str(config)])
    hidden, _ = await _anonymous(node)
    shown, _ = await _anonymous(node)
    await hidden.subscribe("status:1")
    await shown.subscribe("open:1")
    assert (await shown.recv())["type"] == "join"  # its own, on the channel that shows them

    alice = await _as_user(node, "alice")
    await alice.subscribe("status:1")
    await alice.subscribe("open:1")
    await alice.close()
    for channel in ("status:1", "open:1"):
        resp = await publish_http(node, {"channel": channel, "data": "after alice"})
        assert resp.status_code == 200, resp.text

    # On open:1 the anonymous subscriber sees alice come and go, and the message (presence
    # events come at the next presence tick, so after it). On status:1 it sees the
    # message only: no join, no leave, even once the tick that showed them on open:1
    # has passed.
    shown_events = [(e["type"], e.get("user")) for e in [await shown.recv() for _ in range(3)]]
    assert sorted(shown_events, key=str) == [
        ("join", "alice"),
        ("leave", "alice"),
        ("message", None),
    ]
    assert shown_events.index(("join", "alice")) < shown_events.index(("leave", "alice"))
    assert (await hidden.recv())["data"] == "after alice"
    refused = await hidden.request({"type": "presence", "channel": "status:1"})
    assert not [e for e in hidden._pending if e["type"] in ("join", "leave")]
    page = await shown.request({"type": "presence", "channel": "open:1"})
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert page["type"] == "presence"
    assert [m["user"] for m in page["members"]] == [None]
    # Counts stay available over the HTTP API.
    async with httpx.AsyncClient(timeout=5) as http:
        count = await http.get(f"{node.http}/api/presence/status:1/count")
    assert (count.status_code, count.json()["users"]) == (200, 1)
