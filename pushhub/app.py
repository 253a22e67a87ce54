"""The composition root: settings in, a Starlette application out."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from pushhub import api
from pushhub.config import Settings
from pushhub.engine import create_engine
from pushhub.engine.base import Engine
from pushhub.limits import ConnectionGate, OriginPolicy
from pushhub.node import Node, generate_node_id
from pushhub.proxy import trusted_proxies
from pushhub.transport import websocket_endpoint

logger = logging.getLogger("pushhub.app")


def create_app(settings: Settings, engine: Engine | None = None) -> PushhubApp:
    """The pushhub ASGI application. The engine is made from settings unless given."""
    if not settings.node_id:
        settings = dataclasses.replace(settings, node_id=generate_node_id())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        eng = engine if engine is not None else create_engine(settings.engine_url, settings)
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
        Mount("/static", StaticFiles(directory=static, check_dir=False), name="static"),
    ]
    http = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=api.middleware(static),
        exception_handlers=api.exception_handlers,
    )
    http.state.static_dir = static
    http.state.gate = ConnectionGate(settings)
    # One callable shared by every connection (a closure per socket costs memory).
    http.state.release_ip = http.state.gate.release
    http.state.origins = OriginPolicy(settings.allowed_origins, settings.allow_missing_origin)
    return PushhubApp(http)


class PushhubApp:
    """The ASGI application: ``/ws`` straight to the transport, the rest to Starlette
    (HTTP API, static files, lifespan)."""

    def __init__(self, http: Starlette) -> None:
        self.http = http
        self.state = http.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            node = getattr(self.state, "node", None)
            if node is not None and node.settings.trusted_proxies:
                trusted_proxies(node.settings.trusted_proxies).rewrite(scope)
        if kind == "websocket" and scope["path"] == "/ws":
            await websocket_endpoint(scope, receive, send, self.state)
        else:
            await self.http(scope, receive, send)


#: The browser client and dashboard, beside the package in a source checkout.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
