"""Module-scoped nodes for the abuse suite: one set per module, shared by its tests.

The suite uses the session's redis-server without flushing it (other modules' nodes may
be connected); every test works on channels, users and API keys of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.harness import Nodes
from tests.security.tokens import write_key_files
from tests.support import RedisServer


@pytest.fixture(scope="module")
def nodes(redis_server: RedisServer) -> Iterator[Nodes]:
    started = Nodes(redis_server)
    yield started
    started.stop_all()


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The trusted public keys as a node reads them: RSA PEM, EC PEM and a JWKS."""
    return write_key_files(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")
