"""The composition root: settings in, a Starlette application out."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from starlette.staticfiles import StaticFiles

from pushhub import api
from pushhub.config import Settings
from pushhub.engine import create_engine
from pushhub.engine.base import Engine
from pushhub.limits import ConnectionGate, OriginPolicy
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

    static = Path(settings.static_dir) if settings.static_dir else STATIC_DIR
    routes = [
        *api.routes,
        WebSocketRoute("/ws", websocket_endpoint),
        Mount("/static", StaticFiles(directory=static, check_dir=False), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.static_dir = static
    app.state.gate = ConnectionGate(settings)
    app.state.origins = OriginPolicy(settings.allowed_origins, settings.allow_missing_origin)
    return app


#: The browser client and dashboard, beside the package in a source checkout.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
