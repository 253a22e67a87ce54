"""Engines, chosen by URL scheme and imported lazily: only the chosen one is loaded."""

from __future__ import annotations

import importlib
from typing import Any

from pushhub.engine.base import Engine

#: scheme -> "module:factory". A factory takes (url, **options) and returns an Engine.
REGISTRY = {
    "memory": "pushhub.engine.memory:from_url",
    "redis": "pushhub.engine.redis:from_url",
    "rediss": "pushhub.engine.redis:from_url",
    "unix": "pushhub.engine.redis:from_url",
}


def create_engine(url: str | None, **options: Any) -> Engine:
    """The engine for ``url``: ``None`` or ``memory://`` for memory, ``redis://...`` for Redis."""
    url = url or "memory://"
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = REGISTRY.get(scheme)
    if target is None:
        raise ValueError(f"no engine for URL scheme {scheme!r}; use one of {sorted(REGISTRY)}")
    module_name, factory_name = target.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    engine: Engine = factory(url, **options)
    return engine
