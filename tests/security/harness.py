"""Nodes, sockets and Redis probes for the abuse suite.

Every node the suite starts is remembered in ``STARTED``, so the log test can read every
log the suite produced. Waits are bounded: a refused or silent socket fails the test in
seconds, never hangs it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import Client, NodeGroup, PushhubNode, RedisServer

#: Every node the security suite started, in order (their logs outlive them).
STARTED: list[PushhubNode] = []


class Nodes(NodeGroup):
    """Starts nodes for one test module on the suite's Redis, several at once, and stops
    them all at its end; every one is remembered in ``STARTED``."""

    def __init__(self, redis: RedisServer) -> None:
        super().__init__(redis.url)
        self.redis = redis

    def start(self, *envs: Mapping[str, str], args: list[str] | None = None) -> list[PushhubNode]:
        made = super().start(*envs, args=args)
        STARTED.extend(made)
        return made


def write_config(directory: Path, text: str) -> str:
    path = directory / "pushhub.toml"
    path.write_text(text)
    return str(path)


# -- sockets ---------------------------------------------------------------------------


def ws_url(node: PushhubNode, token: str | None = None) -> str:
    return node.ws_url if token is None else f"{node.ws_url}?token={token}"


def socket_from(source_ip: str, node: PushhubNode) -> socket.socket:
    """A TCP socket to ``node`` from ``source_ip`` (any address on 127.0.0.0/8)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.bind((source_ip, 0))
        sock.connect(("127.0.0.1", node.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def open_client(
    node: PushhubNode,
    token: str | None = None,
    source_ip: str | None = None,
    **kwargs: Any,
) -> Client:
    """A WebSocket to ``node``: with ``?token=`` if given, from ``source_ip`` if given."""
    if source_ip is not None:
        kwargs["sock"] = socket_from(source_ip, node)
    return await Client.connect(ws_url(node, token), proxy=None, **kwargs)


async def refused_handshake(
    node: PushhubNode, token: str | None = None, source_ip: str | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a handshake the node must refuse."""
    if source_ip is not None:
        kwargs["sock"] = socket_from(source_ip, node)
    try:
        ws = await connect(ws_url(node, token), proxy=None, open_timeout=5, **kwargs)
    except InvalidStatus as exc:
        body: dict[str, Any] = orjson.loads(exc.response.body) if exc.response.body else {}
        return exc.response.status_code, body
    await ws.close()
    raise AssertionError("the handshake was accepted")


async def authenticate(client: Client, token: str) -> dict[str, Any]:
    reply = await client.request({"type": "connect", "token": token})
    assert reply["type"] == "connected", reply
    return reply


async def connect_as(node: PushhubNode, token: str, **kwargs: Any) -> Client:
    client = await open_client(node, **kwargs)
    await authenticate(client, token)
    return client


async def until_closed(client: Client, timeout: float = 5) -> tuple[list[dict[str, Any]], int]:
    """Every frame the server sends until it closes the socket, and the close code."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                frames.append(await client.recv(timeout))
            except ConnectionClosed:
                break
    code = client.ws.close_code
    assert code is not None, "the server did not send a close code"
    return frames, code


async def is_alive(client: Client) -> bool:
    """Whether the socket still answers a ping."""
    try:
        reply = await client.request({"type": "ping"}, timeout=3)
    except (ConnectionClosed, TimeoutError):
        return False
    return bool(reply["type"] == "pong")


# -- Redis -------------------------------------------------------------------------------


def pubsub_channels(redis: RedisServer) -> set[str]:
    return set(redis.cli("PUBSUB", "CHANNELS").split("\n")) - {""}


def redis_publish(redis: RedisServer, channel: str, data: str) -> int:
    """PUBLISH with redis-cli; how many Redis subscribers (nodes) received it."""
    return int(redis.cli("PUBLISH", channel, data).strip())


def redis_keys(redis: RedisServer, pattern: str) -> list[str]:
    return [k for k in redis.cli("--scan", "--pattern", pattern).split("\n") if k]


# -- HTTP ---------------------------------------------------------------------------------


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def http_client(node: PushhubNode) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=node.http, timeout=10)
