"""What one connect + subscribe costs in Redis, counted by the real redis-server
(``INFO commandstats``): the lean connect path of docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import jwt

from tests.support import Client, PushhubNode, RedisServer

SECRET = "connect-cost-secret-0123456789abcdef"
#: Heartbeats and leases far apart, so none falls inside the measured window.
QUIET = {
    "PUSHHUB_PRESENCE_HEARTBEAT": "60",
    "PUSHHUB_PRESENCE_TTL": "180",
    "PUSHHUB_NODE_LEASE_TTL": "60",
}


class Monitor:
    """``redis-cli MONITOR``: every command the server runs, from which client; the
    commands a script runs are marked ``lua`` and left out (they are one round trip)."""

    def __init__(self, redis: RedisServer) -> None:
        self.proc = subprocess.Popen(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(redis.port), "MONITOR"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "OK"

    def stop(self) -> dict[str, int]:
        time.sleep(0.2)  # what the server already ran reaches the pipe
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        calls: dict[str, int] = {}
        for line in out.splitlines():
            source, _, command = line.partition("] ")
            if "lua" in source or not command:
                continue
            name = command.split(" ", 1)[0].strip('"').lower()
            calls[name] = calls.get(name, 0) + 1
        return calls


async def _measure(redis: RedisServer, node: PushhubNode, token: str | None) -> dict[str, int]:
    # Someone already holds the channel on this node: the node's SUBSCRIBE is done.
    first = await Client.connect(node.ws_url)
    if token is not None:
        assert (await first.request({"type": "connect", "token": _token("first")}))[
            "type"
        ] == "connected"
    await first.subscribe("room:cost")
    monitor = Monitor(redis)
    try:
        client = await Client.connect(node.ws_url)
        if token is not None:
            reply = await client.request({"type": "connect", "token": token})
            assert reply["type"] == "connected"
        await client.subscribe("room:cost")
    finally:
        calls = monitor.stop()
    return calls


def _token(user: str) -> str:
    claims = {"sub": user, "exp": int(time.time()) + 60, "channels": ["room:*"]}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def test_a_connect_and_subscribe_with_presence_is_one_script_call_without_a_token(
    redis_server: RedisServer, redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    node = node_factory(redis_url, env=QUIET)

    # The presence join: one script call, nothing else.
    assert await _measure(redis_server, node, None) == {"evalsha": 1}


async def test_with_a_token_it_is_two_the_users_slot_and_the_presence_join(
    redis_server: RedisServer, redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    node = node_factory(redis_url, env={**QUIET, "PUSHHUB_JWT_SECRET": SECRET})

    assert await _measure(redis_server, node, _token("second")) == {"evalsha": 2}
