"""A WebSocket peer that stops reading is released in bounded time, at the transport.

Each peer is a raw socket with a 4 KiB receive buffer that does the handshake and
subscribes, then never reads again. Publishing a few MB fills its buffers, the kernel's
and the server's, so a plain ``transport.close()`` would wait for ever for them to drain.
The node must still drop the socket, tell the app (stats and presence go back to zero)
and keep serving new connections from the same address.

The app-level slow-consumer close (4001 when ``outbound_queue_bytes`` is exceeded) is
kept out of the way with a 64 MiB queue: these tests are about the transport's own
bounds, the ping timeout and the write-stall timeout.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.support import Client, PushhubNode, publish_http, wait_for

PEERS = 3
#: Comfortably more than a loopback socket's send and receive buffers (about 3 MB here)
#: plus uvicorn's 64 KiB write buffer, for each peer.
PUBLISHES, PAYLOAD = 140, "x" * 60_000
#: Keep the app's own slow-consumer close out of it (see the module docstring).
BIG_QUEUE = {"PUSHHUB_OUTBOUND_QUEUE_BYTES": str(64 * 1024 * 1024)}
MARGIN = 2.0


class SlowPeer:
    """A WebSocket client on a raw socket that subscribes and then never reads."""

    def __init__(self, node: PushhubNode, channel: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the window the server sees is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", node.port))
        protocol = ClientProtocol(parse_uri(node.ws_url))
        protocol.send_request(protocol.connect())
        self.sock.sendall(b"".join(protocol.data_to_send()))
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed during the handshake"
            response += chunk
        head, _, _ = response.partition(b"\r\n\r\n")
        protocol.receive_data(head + b"\r\n\r\n")
        assert protocol.state is State.OPEN, response
        protocol.send_text(orjson.dumps({"type": "subscribe", "channel": channel}))
        self.sock.sendall(b"".join(protocol.data_to_send()))
        self.port: int = self.sock.getsockname()[1]

    def wait_closed_by_server(self, timeout: float) -> str:
        """Now read: what is left in the buffer, then the server's EOF or reset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return "eof"
            except ConnectionResetError:
                return "reset"
            except TimeoutError:
                break
        raise AssertionError("the server side of a slow peer's socket is still open")

    def close(self) -> None:
        self.sock.close()


def _get(node: PushhubNode, path: str) -> dict[str, Any]:
    resp = httpx.get(f"{node.http}{path}", timeout=5)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _node_sockets_to(node: PushhubNode, peers: list[SlowPeer]) -> int:
    """How many of the peers' connections the node process still holds a socket for:
    /proc/net/tcp rows from the node's port to a peer's port, whose inode is one of the
    node's open descriptors."""
    assert node.proc is not None
    fd_dir = Path(f"/proc/{node.proc.pid}/fd")
    inodes = set()
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except FileNotFoundError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = {peer.port for peer in peers}
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if (
                int(local.rsplit(":", 1)[1], 16) == node.port
                and int(remote.rsplit(":", 1)[1], 16) in ports
                and inode in inodes
            ):
                held += 1
    return held


async def _flood(node: PushhubNode, channel: str) -> None:
    """PUBLISHES messages of PAYLOAD (as a JSON string) to ``channel`` in one pipelined
    burst: it must be over well within the write-stall timeout, which starts as soon as
    the first peer's buffers are full (a loop of HTTP publishes on a loaded machine could
    outlast it, and the peers were then released before the check that they were held)."""
    assert node.redis_url is not None
    redis = Redis.from_url(node.redis_url)
    try:
        pipe = redis.pipeline(transaction=False)
        for _ in range(PUBLISHES):
            pipe.publish(channel, orjson.dumps(PAYLOAD))
        receivers: list[int] = await pipe.execute()
    finally:
        await redis.aclose()
    assert receivers == [1] * PUBLISHES  # the node's Pub/Sub connection got each one


async def _stall_and_expect_release(node: PushhubNode, channel: str, within: float) -> None:
    peers = [SlowPeer(node, channel) for _ in range(PEERS)]
    try:
        wait_for(
            lambda: _get(node, f"/api/presence/{channel}/count")["connections"] == PEERS,
            5,
            "the slow peers to be subscribed",
        )
        started = time.monotonic()
        await _flood(node, channel)
        assert _node_sockets_to(node, peers) == PEERS

        # Released at the transport: the app saw the disconnects...
        def released() -> bool:
            connections = _get(node, "/api/stats")["connections"]
            present = _get(node, f"/api/presence/{channel}/count")["connections"]
            return bool(connections == 0 and present == 0)

        wait_for(released, within - (time.monotonic() - started), "the slow peers' release")
        # ...and the sockets are gone from the node, not left flushing.
        assert _node_sockets_to(node, peers) == 0
        for peer in peers:
            assert peer.wait_closed_by_server(2) in ("eof", "reset")
    finally:
        for peer in peers:
            peer.close()

    # The same address is welcome again.
    client = await Client.connect(node.ws_url)
    await client.subscribe(channel)
    assert (await publish_http(node, {"channel": channel, "data": "after"})).status_code == 200
    assert (await client.recv())["data"] == "after"


async def test_peers_that_stop_reading_are_released_by_the_ping_timeout(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    # Only pings can act: a write stall would take ten minutes.
    env = {
        **BIG_QUEUE,
        "PUSHHUB_PING_INTERVAL": "2",
        "PUSHHUB_PING_TIMEOUT": "1",
        "PUSHHUB_WRITE_TIMEOUT": "600",
    }
    node = node_factory(redis_url, env=env)

    await _stall_and_expect_release(node, "slow:ping", within=2 + 1 + MARGIN)


async def test_peers_that_stop_reading_are_released_by_the_write_stall_timeout(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    # Only the stall timer can act: the first ping would come after ten minutes.
    env = {
        **BIG_QUEUE,
        "PUSHHUB_PING_INTERVAL": "600",
        "PUSHHUB_WRITE_TIMEOUT": "1",
    }
    node = node_factory(redis_url, env=env)

    await _stall_and_expect_release(node, "slow:stall", within=1 + MARGIN)
    assert "no write progress for 1s" in node.log()
