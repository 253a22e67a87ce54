from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.support import ROOT, Client, Engines, NodeGroup, PushhubNode, RedisServer

#: Packages that run whole on one pytest-xdist worker, in collection order (see below).
WHOLE_PACKAGES = ("browser", "security")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for ``pytest -n N --dist loadgroup`` (./dev.sh test): each module's tests
    run on one worker, so its module-scoped nodes start once; tests/security runs whole
    on one worker, so its last module reads the log of every node the suite started;
    tests/browser too, so one Chromium serves it. Without xdist the marks do nothing."""
    tests = ROOT / "tests"
    for item in items:
        parts = item.path.relative_to(tests).parts
        group = parts[0] if parts[0] in WHOLE_PACKAGES else "/".join(parts)
        item.add_marker(pytest.mark.xdist_group(group))


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


@pytest.fixture(scope="module")
def module_nodes(redis_server: RedisServer) -> Iterator[NodeGroup]:
    """Nodes shared by a module's tests, on the session's Redis (not flushed: their tests
    use channels of their own); stopped at the module's end."""
    group = NodeGroup(redis_server.url)
    yield group
    group.stop_all()


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
