"""Fixtures for the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def config(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test module's ``CONFIG`` (pushhub.toml text) written to a file, for
    ``--config`` or ``PUSHHUB_CONFIG``."""
    text = getattr(request.module, "CONFIG", None)
    assert isinstance(text, str), f"{request.module.__name__} defines no CONFIG to write"
    path = tmp_path_factory.mktemp("config") / "pushhub.toml"
    path.write_text(text)
    return path
