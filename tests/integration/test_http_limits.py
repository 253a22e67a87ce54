"""No HTTP client pins a connection or memory: request headers have a deadline and a size
cap, and the node holds at most ``max_connections`` at once. Real node processes, raw
sockets over loopback."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.support import Client, PushhubNode, wait_for

HEADER_TIMEOUT = 1.0
#: Slack for a loaded machine on top of a deadline.
MARGIN = 1.5


def connect(node: PushhubNode) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), timeout=5)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (EOF or reset); fails if the
    connection is still open after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the server kept the connection open for {timeout}s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return bytes(received)
        except TimeoutError:
            continue
        if not chunk:
            return bytes(received)
        received += chunk


def vm_peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM): a transient spike counts too."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def pid_of(node: PushhubNode) -> int:
    assert node.proc is not None
    return node.proc.pid


def test_an_idle_connection_that_sends_nothing_is_closed_after_header_timeout(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory(env={"PUSHHUB_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})

    with connect(node) as sock:
        started = time.monotonic()
        received = read_until_closed(sock, HEADER_TIMEOUT + MARGIN)
        elapsed = time.monotonic() - started

    assert received == b""
    assert elapsed >= HEADER_TIMEOUT * 0.9


def test_a_slow_header_sender_is_cut_off_at_header_timeout(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory(env={"PUSHHUB_HEADER_TIMEOUT": str(HEADER_TIMEOUT)})
    trickle = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    limit = HEADER_TIMEOUT + MARGIN

    with connect(node) as sock:
        started = time.monotonic()
        closed = False
        for byte in trickle:
            assert time.monotonic() - started < limit, "still accepting header bytes"
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            # One byte every 200 ms; the server's close makes the socket readable.
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                assert read_until_closed(sock, 1) == b""
                closed = True
                break
        elapsed = time.monotonic() - started

    assert closed
    assert elapsed < limit


def test_request_headers_over_the_cap_get_431_and_a_closed_connection(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory()
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100 * 1024
    request += b"\r\n\r\n"

    with connect(node) as sock:
        sock.sendall(request)
        response = read_until_closed(sock, 5)

    assert response.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close\r\n" in response.lower()
    # The node still serves everyone else.
    assert httpx.get(f"{node.http}/healthz", timeout=5).status_code == 200


def _stream_headers(node: PushhubNode, size: int, outcome: list[bytes]) -> None:
    """Send a request whose header never ends, ``size`` bytes of it, then read the answer."""
    chunk = b"a" * 65536
    with connect(node) as sock:
        sent = 0
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node gave up on us first: that is the point
        outcome.append(read_until_closed(sock, 10))


def test_streaming_huge_headers_does_not_grow_the_node_s_memory(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory()
    # Warm up the code paths a request goes through, then take the peak so far.
    assert httpx.get(f"{node.http}/healthz", timeout=5).status_code == 200
    before = vm_peak_rss_kib(pid_of(node))
    outcomes: list[bytes] = []

    senders = [
        threading.Thread(target=_stream_headers, args=(node, 20 * 1024 * 1024, outcomes))
        for _ in range(3)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
        assert not sender.is_alive(), "a sender was still streaming after 30 s"

    growth_mib = (vm_peak_rss_kib(pid_of(node)) - before) / 1024
    # Buffering the headers would take 60 MiB at least; a few MiB is read buffers.
    assert growth_mib < 8, f"peak RSS grew by {growth_mib:.1f} MiB"
    assert len(outcomes) == 3
    for response in outcomes:
        # Each got its 431, unless the reset came first while it was still sending.
        assert response == b"" or response.startswith(b"HTTP/1.1 431 ")


async def _open_websocket(node: PushhubNode) -> Client:
    """A WebSocket, retried briefly: the health checks of start-up may still be closing."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return await Client.connect(node.ws_url)
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise


async def test_beyond_max_connections_requests_and_upgrades_get_503(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory(env={"PUSHHUB_MAX_CONNECTIONS": "20"})
    held = [await _open_websocket(node) for _ in range(20)]

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        refused = await http.get("/healthz")
    with pytest.raises(InvalidStatus) as upgrade:
        await Client.connect(node.ws_url)

    assert refused.status_code == 503
    assert upgrade.value.response.status_code == 503

    # A place comes free when one of them leaves.
    await held[0].close()

    def served() -> bool:
        return httpx.get(f"{node.http}/healthz", timeout=5).status_code == 200

    wait_for(served, 5, "a request to be served once a connection closed")
