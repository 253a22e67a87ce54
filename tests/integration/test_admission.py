"""Admission control against a real node: a burst of WebSocket upgrades past
``max_handshakes`` gets 503 with Retry-After at once, and clients that back off and
retry all get in."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support import PushhubNode

pytestmark = pytest.mark.timeout(60)


async def test_a_burst_past_max_handshakes_gets_503_and_retrying_clients_all_connect(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory(env={"PUSHHUB_MAX_HANDSHAKES": "2"})
    refusals: list[tuple[int, str | None]] = []

    async def arrive() -> ClientConnection:
        for attempt in range(50):
            try:
                return await connect(node.ws_url, open_timeout=10, close_timeout=1)
            except InvalidStatus as exc:
                response = exc.response
                refusals.append((response.status_code, response.headers.get("Retry-After")))
                # What a client should do: back off, with jitter (the browser client's
                # full jitter, on a scale short enough for a test).
                await asyncio.sleep(random.uniform(0, 0.05 * 2 ** min(attempt, 4)))
        raise AssertionError("never admitted")

    clients = await asyncio.gather(*(arrive() for _ in range(300)))

    assert len(clients) == 300
    assert refusals, "no upgrade was refused: the burst never passed max_handshakes"
    assert set(refusals) == {(503, "1")}
    for ws in clients:
        await ws.close()
