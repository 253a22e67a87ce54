"""Engines chosen by URL scheme: the registry, and what config.py accepts from it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pushhub.config import Settings, load_settings
from pushhub.engine import create_engine, register, schemes, unregister
from pushhub.engine.memory import MemoryEngine
from pushhub.errors import ConfigError


class FakeEngine(MemoryEngine):
    """A third engine, as a registration would bring one: it remembers what it got."""

    name = "fake"

    def __init__(self, url: str, settings: Settings) -> None:
        super().__init__()
        self.url, self.settings = url, settings


def from_url(url: str, settings: Settings) -> FakeEngine:
    return FakeEngine(url, settings)


@pytest.fixture
def fake_scheme() -> Iterator[str]:
    register("fake", f"{__name__}:from_url")
    yield "fake"
    unregister("fake")


def test_the_built_in_schemes() -> None:
    assert schemes() == ("memory", "redis", "rediss", "unix")


def test_a_registered_scheme_picks_its_engine_with_the_url_and_the_settings(
    fake_scheme: str,
) -> None:
    settings = Settings(node_id="n1")

    engine = create_engine("FAKE://somewhere/0", settings)

    assert isinstance(engine, FakeEngine)
    assert (engine.url, engine.settings) == ("FAKE://somewhere/0", settings)
    assert fake_scheme in schemes()


def test_unregister_takes_the_scheme_back(fake_scheme: str) -> None:
    unregister(fake_scheme)

    assert fake_scheme not in schemes()
    with pytest.raises(ValueError, match="no engine for URL scheme 'fake'"):
        create_engine("fake://x", Settings())


def test_no_url_or_memory_makes_the_memory_engine() -> None:
    assert isinstance(create_engine(None, Settings()), MemoryEngine)
    assert isinstance(create_engine("memory://", Settings()), MemoryEngine)


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no engine for URL scheme 'nats'") as info:
        create_engine("nats://x", Settings())

    for scheme in ("memory", "redis", "rediss", "unix"):
        assert scheme in str(info.value)


def test_a_target_that_is_no_import_string_is_refused() -> None:
    with pytest.raises(ValueError, match="module:factory"):
        register("bad", "pushhub.engine.memory")
    assert "bad" not in schemes()


def test_config_accepts_a_registered_scheme_as_the_engine_url(fake_scheme: str) -> None:
    settings = load_settings({"redis_url": "fake://cluster/1"}, {})

    assert settings.engine_url == "fake://cluster/1"


def test_config_refuses_an_unknown_scheme_naming_the_key_and_the_schemes() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"redis_url": "nats://x"}, {})

    message = str(info.value)
    assert message.startswith("--redis-url='nats://x' is invalid")
    assert "memory://, redis://, rediss://, unix://" in message
