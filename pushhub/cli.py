"""The ``pushhub`` command: ``pushhub serve`` runs a node."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from collections.abc import Sequence

from pushhub import __version__
from pushhub.config import Settings, describe, load_settings
from pushhub.errors import ConfigError

logger = logging.getLogger("pushhub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushhub", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pushhub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a pushhub node")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", help="port to listen on (default 8000, or $PORT)")
    serve.add_argument("--redis-url", help="Redis URL; without one, the memory engine")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument("--log-level", help="critical, error, warning, info, debug or trace")
    return parser


class _QuietWebSocketEvents(logging.Filter):
    """Drop uvicorn's per-socket INFO lines; at 10,000 sockets they drown everything else."""

    _NOISE = ("connection open", "connection closed", '"WebSocket ')

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(noise in message for noise in self._NOISE)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=logging.DEBUG if level == "trace" else getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level not in ("debug", "trace"):
        logging.getLogger("uvicorn.error").addFilter(_QuietWebSocketEvents())


def serve(settings: Settings) -> int:
    import uvicorn

    from pushhub.app import create_app
    from pushhub.node import generate_node_id

    if not settings.node_id:
        settings = dataclasses.replace(settings, node_id=generate_node_id())
    configure_logging(settings.log_level)
    logger.info("settings: %s", describe(settings))
    if settings.redis_url is None:
        logger.info("no Redis URL: running a single node on the in-process memory engine")
    if not settings.api_keys:
        logger.warning(
            "no API keys configured (PUSHHUB_API_KEYS): the HTTP API answers loopback "
            "clients only; configure keys before putting pushhub behind a proxy"
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        ws_max_size=settings.max_message_size,
        ws_per_message_deflate=settings.websocket_compression,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        lifespan="on",
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {
        "host": args.host,
        "port": args.port,
        "redis_url": args.redis_url,
        "config": args.config,
        "log_level": args.log_level,
    }
    try:
        settings = load_settings(flags)
    except ConfigError as exc:
        print(f"pushhub: configuration error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)
