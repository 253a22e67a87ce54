"""Engines, chosen by URL scheme and imported lazily: only the chosen one is loaded.

The registry maps a URL scheme to an import string, ``"module:factory"``. A factory
takes ``(url, settings)`` (``pushhub.config.Settings``) and returns an ``Engine``, taking
from the settings whatever it needs. A new engine is therefore one module with a factory
and one ``register`` call (or one line below): nothing in config.py, app.py or the node
changes. Importing this package imports no engine module, so ``pushhub.config`` can ask
for the known schemes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pushhub.engine.base import Engine

if TYPE_CHECKING:
    from pushhub.config import Settings

REGISTRY: dict[str, str] = {
    "memory": "pushhub.engine.memory:from_url",
    "redis": "pushhub.engine.redis:from_url",
    "rediss": "pushhub.engine.redis:from_url",
    "unix": "pushhub.engine.redis:from_url",
}


def register(scheme: str, target: str) -> None:
    """Make ``scheme://`` URLs select the engine built by ``target``, an import string
    ``"module:factory"``; the module is imported only when such a URL is used."""
    module, sep, factory = target.partition(":")
    if not sep or not module or not factory:
        raise ValueError(f"engine target {target!r} is not 'module:factory'")
    REGISTRY[scheme.lower()] = target


def unregister(scheme: str) -> None:
    """Forget ``scheme`` (tests register fakes and take them back)."""
    REGISTRY.pop(scheme.lower(), None)


def schemes() -> tuple[str, ...]:
    """The URL schemes an engine is registered for, sorted."""
    return tuple(sorted(REGISTRY))


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def create_engine(url: str | None, settings: Settings) -> Engine:
    """The engine for ``url``: ``None`` or ``memory://`` for memory, ``redis://...`` for
    Redis, or whatever was registered for the URL's scheme."""
    url = url or "memory://"
    scheme = scheme_of(url)
    target = REGISTRY.get(scheme)
    if target is None:
        raise ValueError(f"no engine for URL scheme {scheme!r}; use one of {list(schemes())}")
    module_name, factory_name = target.split(":", 1)
    factory = getattr(importlib.import_module(module_name), factory_name)
    engine: Engine = factory(url, settings)
    return engine
