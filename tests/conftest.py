from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.support import Client, Engines, NodeGroup, PushhubNode, RedisServer

#: Packages that run whole on one pytest-xdist worker, in collection order (see below).
WHOLE_PACKAGES = ("tests/browser/", "tests/security/")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``pytest -n N --dist loadscope`` (./dev.sh test), with two packages kept whole.

    Each module's tests run on one worker, so its module-scoped nodes start once.
    tests/security runs whole on one worker, in order: its last module reads the log of
    every node the suite started. tests/browser too, so one Chromium serves it. (The
    ``xdist_group`` marks of ``--dist loadgroup`` would say this, but pytest-xdist 3.8
    ignores them on pytest 9.2: pytest-xdist issue 1386.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WholePackages(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            whole = [package for package in WHOLE_PACKAGES if path.startswith(package)]
            return whole[0] if whole else path

    return WholePackages(config, log)


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
