from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.support import Client, Engines, PushhubNode, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests use distinct channels and FLUSHALL."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.cli("FLUSHALL")
    return redis_server.url


@pytest.fixture
async def engines() -> AsyncIterator[Engines]:
    """Start in-process engines; every one is closed after the test, last started first."""
    engines = Engines()
    yield engines
    for engine in reversed(engines.started):
        await engine.close()


@pytest.fixture
def node_factory() -> Iterator[Callable[..., PushhubNode]]:
    """Start pushhub nodes as real processes; all are stopped after the test."""
    nodes: list[PushhubNode] = []

    def make(redis_url: str | None = None, **kwargs: Any) -> PushhubNode:
        node = PushhubNode(redis_url, **kwargs)
        nodes.append(node)
        node.start()
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Close every WebSocket client a test opened, so no socket outlives its test."""
    Client.opened.clear()
    yield
    opened, Client.opened[:] = list(Client.opened), []
    await asyncio.gather(*(c.ws.close() for c in opened), return_exceptions=True)


@pytest.fixture
def redis_node(redis_url: str, node_factory: Callable[..., PushhubNode]) -> PushhubNode:
    """One pushhub node with the default settings on the session's (flushed) Redis."""
    node: PushhubNode = node_factory(redis_url)
    return node


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A started redis-server of the test's own, for tests that stop and restart Redis
    under their nodes; stopped after the test (the nodes first)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
