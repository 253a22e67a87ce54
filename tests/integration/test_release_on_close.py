"""A close the server decides releases what the connection holds at once.

The finding: when the node decided to close a connection (slow consumer 4001, token
expiry 4002, frame flood 4005), it released the connection's presence entry, per-user
slot, per-IP count and subscriptions only once the socket was gone. A peer that stopped
reading never let its socket go: the close frame waited behind megabytes nobody read,
until a ping timeout at best. Meanwhile it stayed a member (no ``leave`` for the
others), kept its user's connection slot (so the user could not reconnect: 4004) and
its address's count, and kept the channel subscribed in Redis.

Each test here uses a real client that stops reading, with the ping interval at 30 s,
``close_timeout`` at 10 s and ``write_timeout`` at 60 s: the only way its presence can
go within ~2 s is the release at the moment the close is decided. Each also checks, in
``/proc/net/tcp``, that the server still holds the peer's socket with unsent data then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import Client, PushhubNode, RedisServer, publish_http, stalled_client

SECRET = "release-on-close-secret-0123456789abcdef"

#: Nothing but the decided close may release the peer within the test's window.
LINGER = {
    "PUSHHUB_PING_INTERVAL": "30",
    "PUSHHUB_CLOSE_TIMEOUT": "10",
    "PUSHHUB_WRITE_TIMEOUT": "60",
}
#: A queue that overflows quickly (the smallest max_message_size allows).
SMALL_QUEUE = {"PUSHHUB_OUTBOUND_QUEUE_BYTES": "262144"}
#: A queue that never overflows here, for the closes that are not about the queue.
BIG_QUEUE = {"PUSHHUB_OUTBOUND_QUEUE_BYTES": str(64 * 1024 * 1024)}
#: How soon after the close is decided everything must be released.
WITHIN = 2.0

CONFIG = """
[[channels]]
pattern = "room:*"
subscribe = "authenticated"

[[channels]]
pattern = "chat:*"
subscribe = "authenticated"
client_publish = true
presence = false
"""


def token(user: str, ttl: float = 300) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + ttl)}, SECRET, algorithm="HS256")


def _abort(client: Client) -> None:
    """Drop a stalled client's socket at the end (a close handshake would wait)."""
    client.ws.transport.abort()


def _server_socket(node: PushhubNode, client_port: int) -> tuple[str, int] | None:
    """The state and unsent bytes of the node's end of a connection, from the kernel."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if local.endswith(f":{node.port:04X}") and remote.endswith(f":{client_port:04X}"):
                return state, int(queues.split(":")[0], 16)
    return None


def _lingers(node: PushhubNode, client_port: int) -> None:
    """The node still holds the peer's socket, established, with bytes it cannot send."""
    found = _server_socket(node, client_port)
    assert found is not None, "the server's socket is gone: this test proves nothing"
    state, unsent = found
    assert state == "01", f"the server's socket is in TCP state {state}, not established"
    assert unsent > 0, "the server's socket has nothing unsent: the peer was not stalled"


async def _count(node: PushhubNode, channel: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.get(f"{node.http}/api/presence/{channel}/count")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _until(predicate: Callable[[], Any], deadline: float, what: str) -> None:
    """Poll an async or sync condition until ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not in time: {what}")
        await asyncio.sleep(0.02)


async def _left(watcher: Client, user: str) -> bool:
    """Whether ``user``'s leave event has reached ``watcher`` (a ping pulls in what the
    node sent; presence events are set aside by the client)."""
    await watcher.request({"type": "ping"})
    return any(e["type"] == "leave" and e.get("user") == user for e in watcher.presence_events)


async def _overflow(node: PushhubNode, watcher: Client, channel: str, conn_id: str) -> float:
    """Publish 32 KB messages (the watcher reads each) until the node decides to close
    ``conn_id`` as slow; the loop time of that decision."""
    pad = "x" * 32_000
    for i in range(600):
        resp = await publish_http(node, {"channel": channel, "data": {"i": i, "pad": pad}})
        assert resp.status_code == 200, resp.text
        assert (await watcher.recv())["data"]["i"] == i
        if f"closing slow connection {conn_id}" in node.log():
            return asyncio.get_running_loop().time()
    raise AssertionError("20 MB published and the stalled client was never closed as slow")


async def _echo_until_stalled(client: Client, channel: str, frames: int) -> None:
    """Client publishes of 60 KB on a channel it holds: each comes back to it, and it
    reads none, so its socket's buffers, the kernel's and the server's, fill."""
    pad = "z" * 60_000
    for i in range(frames):
        await client.send({"type": "publish", "channel": channel, "data": pad, "id": i + 10})


async def test_a_slow_consumer_closed_4001_leaves_presence_and_frees_its_ip_and_channels_at_once(
    redis_server: RedisServer, redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    """Old: nothing was released until the socket went (not before the ping timeout):
    no leave, the count stayed, the address's slot and the Redis subscription stayed."""
    node = node_factory(
        redis_url, env={**LINGER, **SMALL_QUEUE, "PUSHHUB_MAX_CONNECTIONS_PER_IP": "2"}
    )
    watcher = await Client.connect(node.ws_url)
    await watcher.request({"type": "connect", "user": "watcher"})
    await watcher.subscribe("room:slow")
    slow, port = await stalled_client(node)
    slow_id = (await slow.request({"type": "connect", "user": "slowpoke"}))["client"]
    await slow.subscribe("room:slow")
    await slow.subscribe("solo:slow")
    try:
        assert (await _count(node, "room:slow"))["users"] == 2
        assert redis_server.cli("PUBSUB", "NUMSUB", "solo:slow").split() == ["solo:slow", "1"]
        with pytest.raises(InvalidStatus) as refused:  # the address's 2 slots are taken
            await Client.connect(node.ws_url)
        assert refused.value.response.status_code == 429

        decided = await _overflow(node, watcher, "room:slow", slow_id)
        deadline = decided + WITHIN

        await _until(lambda: _left(watcher, "slowpoke"), deadline, "the leave event")
        _lingers(node, port)
        assert (await _count(node, "room:slow"))["users"] == 1
        await _until(
            lambda: redis_server.cli("PUBSUB", "NUMSUB", "solo:slow").split() == ["solo:slow", "0"],
            deadline,
            "the Redis subscription of its channel",
        )
        newcomer = await Client.connect(node.ws_url)  # the address's slot is back
        assert (await newcomer.request({"type": "ping"}))["type"] == "pong"
        assert asyncio.get_running_loop().time() < deadline
        _lingers(node, port)  # all of it while the peer's socket is still there
    finally:
        _abort(slow)


async def test_a_user_whose_slow_connection_was_closed_can_connect_again_at_once(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: the user's only slot stayed taken by the lingering socket: 4004 on every
    reconnect until the ping timeout dropped it."""
    env = {
        **LINGER,
        **SMALL_QUEUE,
        "PUSHHUB_JWT_SECRET": SECRET,
        "PUSHHUB_MAX_CONNECTIONS_PER_USER": "1",
    }
    node = node_factory(redis_url, env=env, args=["--config", str(config)])
    watcher = await Client.connect(f"{node.ws_url}?token={token('watcher')}")
    assert (await watcher.recv())["type"] == "connected"
    await watcher.subscribe("room:u")
    slow, port = await stalled_client(node, f"?token={token('u')}")
    slow_id = (await slow.recv_type("connected"))["client"]
    await slow.subscribe("room:u")
    try:
        second = await Client.connect(f"{node.ws_url}?token={token('u')}")
        assert await second.closed_code() == 4004  # one slot per user, and it is taken

        decided = await _overflow(node, watcher, "room:u", slow_id)
        deadline = decided + WITHIN

        async def reconnected() -> bool:
            again = await Client.connect(f"{node.ws_url}?token={token('u')}")
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                if (await again.recv(timeout=1))["type"] == "connected":
                    return True
            await again.close()
            return False

        await _until(reconnected, deadline, "user u connecting again")
        _lingers(node, port)
    finally:
        _abort(slow)


async def test_a_stalled_client_closed_for_a_frame_flood_is_released_at_once(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: after 4005 the node read on until a disconnect that never came (the close
    frame could not be sent): the flooder stayed a member and subscribed."""
    env = {
        **LINGER,
        **BIG_QUEUE,
        "PUSHHUB_MAX_FRAMES_PER_SECOND": "1",
        "PUSHHUB_FRAME_BURST": "150",
    }
    node = node_factory(redis_url, env=env, args=["--config", str(config)])
    watcher = await Client.connect(node.ws_url)
    await watcher.request({"type": "connect", "user": "watcher"})
    await watcher.subscribe("room:flood")
    flooder, port = await stalled_client(node)
    await flooder.request({"type": "connect", "user": "flooder"})  # frame 1
    await flooder.subscribe("room:flood")  # 2
    await flooder.subscribe("chat:flood")  # 3
    try:
        assert (await _count(node, "room:flood"))["users"] == 2
        await _echo_until_stalled(flooder, "chat:flood", 147)  # frames 4 to 150
        assert (await _count(node, "room:flood"))["users"] == 2  # the burst is not spent

        await flooder.send({"type": "ping"})  # 151: over the burst, close 4005
        sent = asyncio.get_running_loop().time()
        # The node handles the frames in order: allow a second to reach the 151st.
        deadline = sent + 1 + WITHIN

        await _until(lambda: _left(watcher, "flooder"), deadline, "the leave event")
        assert (await _count(node, "room:flood"))["users"] == 1
        _lingers(node, port)
    finally:
        _abort(flooder)


async def test_a_stalled_client_whose_token_expired_is_released_at_once(
    redis_url: str, node_factory: Callable[..., PushhubNode], config: Path
) -> None:
    """Old: the expiry queued an error frame and a close that could not be sent: the
    member, its subscriptions and its user's only slot stayed."""
    env = {
        **LINGER,
        **BIG_QUEUE,
        "PUSHHUB_JWT_SECRET": SECRET,
        "PUSHHUB_JWT_LEEWAY": "0",
        "PUSHHUB_MAX_CONNECTIONS_PER_USER": "1",
    }
    node = node_factory(redis_url, env=env, args=["--config", str(config)])
    watcher = await Client.connect(f"{node.ws_url}?token={token('watcher')}")
    assert (await watcher.recv())["type"] == "connected"
    await watcher.subscribe("room:exp")
    victim, port = await stalled_client(node, f"?token={token('v', ttl=5)}")
    expires_at = (await victim.recv_type("connected"))["expires_at"]
    await victim.subscribe("room:exp")
    await victim.subscribe("chat:exp")
    try:
        await _echo_until_stalled(victim, "chat:exp", 147)
        assert time.time() < expires_at - 0.5, "too slow to stall the client before expiry"
        assert (await _count(node, "room:exp"))["users"] == 2

        loop = asyncio.get_running_loop()
        deadline = loop.time() + (expires_at - time.time()) + WITHIN
        await _until(lambda: _left(watcher, "v"), deadline, "the leave event")
        assert time.time() >= expires_at - 0.1, "released before the token expired"
        assert (await _count(node, "room:exp"))["users"] == 1
        again = await Client.connect(f"{node.ws_url}?token={token('v')}")
        assert (await again.recv())["type"] == "connected"  # the user's slot is free
        _lingers(node, port)
    finally:
        _abort(victim)


async def test_a_user_slot_taken_after_the_auth_deadline_closed_the_connection_is_released(
    redis_server: RedisServer, redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    """A connection closed by its authentication deadline (4003) while its ``connect``
    was taking the user's slot in Redis: the close released nothing (no user yet), then
    the slot was taken for a connection already gone, and the heartbeat keeps it alive.

    Failed before the fix (a regression of the decided-close work): node.py released
    the slot only in ``_release``, which runs once, when the close is decided; ``authenticate`` sets
    ``conn.user`` and ``track_user`` after its ``await acquire_user_connection`` without
    checking that the connection is still open, and ``disconnect`` no longer releases it
    (``_detach`` returns early for a connection already detached). The user is locked
    out (4004) for as long as the node runs. (Old: ``disconnect`` released the slot.)
    """
    env = {
        "PUSHHUB_JWT_SECRET": SECRET,
        "PUSHHUB_MAX_CONNECTIONS_PER_USER": "1",
        "PUSHHUB_AUTH_TIMEOUT": "0.5",
        # A slot nobody refreshes lapses 3 s after it was taken; one the heartbeat
        # refreshes (every 0.2 s) never does.
        "PUSHHUB_PRESENCE_HEARTBEAT": "0.2",
        "PUSHHUB_PRESENCE_TTL": "3",
    }
    node = node_factory(redis_url, env=env)
    loop = asyncio.get_running_loop()

    # Redis holds every command for 1.5 s: the connect's slot is taken only after the
    # 0.5 s authentication deadline has closed the connection.
    assert redis_server.cli("CLIENT", "PAUSE", "1500", "ALL").strip() == "OK"
    paused_until = loop.time() + 1.5
    late = await Client.connect(node.ws_url)
    await late.send({"type": "connect", "token": token("u"), "id": 1})
    assert await late.closed_code(timeout=5) == 4003
    # PING waits out the pause, behind the connect's slot (Redis runs the commands it
    # held in the order they came).
    assert redis_server.cli("PING").strip() == "PONG"

    async def connects() -> bool:
        again = await Client.connect(f"{node.ws_url}?token={token('u')}")
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            if (await again.recv(timeout=2))["type"] == "connected":
                return True
        await again.close()
        return False

    slots = redis_server.cli("ZRANGE", "pushhub:userconns:{u}", "0", "-1")
    await _until(
        connects, max(loop.time(), paused_until) + 4, f"user u connecting again (slots: {slots})"
    )
