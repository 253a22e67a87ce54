"""The composition root: settings in, a Starlette application out."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from pushhub import api
from pushhub.config import Settings
from pushhub.engine import create_engine
from pushhub.engine.base import Engine
from pushhub.node import Node, generate_node_id
from pushhub.transport import websocket_endpoint

logger = logging.getLogger("pushhub.app")


def create_app(settings: Settings, engine: Engine | None = None) -> Starlette:
    """The pushhub ASGI application. The engine is made from settings unless given."""
    if not settings.node_id:
        settings = dataclasses.replace(settings, node_id=generate_node_id())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        eng = engine
        if eng is None:
            eng = create_engine(
                settings.engine_url,
                node_id=settings.node_id,
                key_prefix=settings.key_prefix,
                rules=settings.channels,
                idempotency_ttl=settings.idempotency_ttl,
            )
        node = Node(settings, eng)
        app.state.node = node
        await node.start()
        try:
            yield
        finally:
            await node.close()

    routes = [*api.routes, WebSocketRoute("/ws", websocket_endpoint)]
    return Starlette(routes=routes, lifespan=lifespan)
