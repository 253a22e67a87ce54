"""The ``pushhub`` command: ``pushhub serve`` runs a node."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence

from pushhub import __version__, auth
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
    gen = sub.add_parser(
        "gentoken", help="print a development token signed with the configured jwt_secret"
    )
    gen.add_argument("--user", required=True, help="the user id (the token's sub)")
    gen.add_argument("--channels", default="", help="comma-separated channel patterns")
    gen.add_argument("--channel", help="make a subscription token for this one channel")
    gen.add_argument("--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 7d (default 1h)")
    gen.add_argument("--info", help="presence info, a JSON object")
    gen.add_argument("--config", help="TOML configuration file")
    return parser


#: Headers whose values are credentials: session cookies a browser sends along with a
#: handshake (to pushhub or to an application behind the same proxy), and any
#: ``Authorization`` scheme, not only Bearer.
_SENSITIVE_HEADERS = r"(?:set-)?cookie|(?:proxy-)?authorization"


class _RedactSecrets(logging.Filter):
    """Credentials never reach a log: a handshake URL with ?token=, anything shaped like a
    JWT, and the values of the Cookie, Set-Cookie, Authorization and Proxy-Authorization
    headers are redacted in every record, whatever logger wrote it."""

    _PATTERNS = (
        re.compile(r"(token=)[^&\s\"']+"),
        re.compile(r"(\"token\"\s*:\s*\")[^\"]*"),
        re.compile(r"(?i)(bearer\s+)[^\s'\",)]+"),
        re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        # A header as a quoted pair, in the repr of ASGI headers (b'cookie', b'a=b'), a
        # dict {'cookie': 'a=b'} or JSON {"cookie":"a=b"}: the value up to its closing
        # quote, escaped quotes included.
        re.compile(
            rf"(?i)(b?(['\"])(?:{_SENSITIVE_HEADERS})\2\s*[:,]\s*b?(['\"]))(?:\\.|(?!\3)[^\\])*"
        ),
        # A header line, as websockets logs a handshake at debug ("< cookie: a=b"): the
        # value to the end of the line, or of the line inside a repr ("\r\n" escapes).
        re.compile(
            rf"(?i)((?:(?<![\w-])|(?<=\\n))(?:{_SENSITIVE_HEADERS})[ \t]*:[ \t]*)"
            r"(?:(?!\\[rn])[^\r\n])+"
        ),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern in self._PATTERNS:
            redacted = pattern.sub(
                lambda m: (m.group(1) if m.groups() else "") + "[redacted]", redacted
            )
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


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
    for handler in logging.getLogger().handlers:
        handler.addFilter(_RedactSecrets())
    if level not in ("debug", "trace"):
        logging.getLogger("uvicorn.error").addFilter(_QuietWebSocketEvents())


def serve(settings: Settings) -> int:
    import uvicorn

    from pushhub.app import create_app
    from pushhub.node import generate_node_id

    # Start-up stops with one line if this uvicorn lacks the internals pushhub's server
    # layer overrides (it is pinned; an upgrade that changed them must not run quietly).
    try:
        from pushhub import server as server_layer
    except ImportError as exc:
        print(f"pushhub: uvicorn lacks what pushhub's server layer needs ({exc})", file=sys.stderr)
        return 2
    problem = server_layer.uvicorn_incompatibility()
    if problem is not None:
        print(f"pushhub: {problem}", file=sys.stderr)
        return 2
    if not settings.node_id:
        settings = dataclasses.replace(settings, node_id=generate_node_id())
    configure_logging(settings.log_level)
    logger.info("settings: %s", describe(settings))
    if settings.redis_url is None:
        logger.info("no Redis URL: running a single node on the in-process memory engine")
    if auth.enforcing(settings):
        logger.info(
            "tokens are enforced (algorithms: %s)",
            ", ".join(auth.TokenVerifier(settings).algorithms),
        )
    else:
        logger.warning(
            "DEVELOPMENT MODE: no JWT key configured (PUSHHUB_JWT_SECRET, jwt_public_key or "
            "jwt_jwks_file), so connections are not authenticated: anyone may connect as "
            "any user and subscribe to any channel. Never run this way in production."
        )
    if not settings.api_keys:
        logger.warning(
            "no API keys configured (PUSHHUB_API_KEYS): the HTTP API answers loopback "
            "clients only; configure keys before putting pushhub behind a proxy"
        )
    # uvicorn's protocols, subclassed so that closes, stalls and request headers end in
    # bounded time (pushhub/server.py says why subclasses rather than a proxy in front).
    http_protocol, ws_protocol = server_layer.protocols(settings)
    max_connections = server_layer.connection_bound(settings.max_connections)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=http_protocol,
        ws=ws_protocol,
        ws_max_size=settings.max_message_size,
        ws_per_message_deflate=settings.websocket_compression,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        # uvicorn counts the connection asking among the open ones: +1 lets exactly
        # max_connections be served. Beyond it, HTTP requests and (in our protocol)
        # WebSocket upgrades get 503.
        limit_concurrency=max_connections + 1,
        # Whole seconds for uvicorn's Config; our protocol applies the exact value.
        timeout_keep_alive=max(1, math.ceil(settings.keepalive_timeout)),
        # The app reads X-Forwarded-For itself, right to left (pushhub/proxy.py):
        # uvicorn's middleware takes the left-most entry, which the client chooses.
        proxy_headers=False,
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


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    match = re.fullmatch(r"([0-9]{1,7})([smhd]?)", text.strip())
    if match is None:
        raise ConfigError("--ttl", text, "a duration such as 90s, 30m, 1h or 7d")
    return int(match.group(1)) * _TTL_UNITS[match.group(2) or "s"]


def gentoken(args: argparse.Namespace) -> int:
    import jwt

    settings = load_settings({"config": args.config})
    if not settings.jwt_secret:
        raise ConfigError("jwt_secret", "", "a secret (PUSHHUB_JWT_SECRET) to sign with")
    claims: dict[str, object] = {"sub": args.user, "exp": int(time.time()) + parse_ttl(args.ttl)}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if args.channel:
        claims["channel"] = args.channel
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    if channels:
        claims["channels"] = channels
    if args.info:
        try:
            info = json.loads(args.info)
        except json.JSONDecodeError as exc:
            raise ConfigError("--info", args.info, f"a JSON object ({exc})") from None
        if not isinstance(info, dict):
            raise ConfigError("--info", args.info, "a JSON object")
        claims["info"] = info
    print(jwt.encode(claims, settings.jwt_secret, algorithm="HS256"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "gentoken":
        try:
            return gentoken(args)
        except ConfigError as exc:
            print(f"pushhub: configuration error: {exc}", file=sys.stderr)
            return 2
    flags = {
        "host": args.host,
        "port": args.port,
        "redis_url": args.redis_url,
        "config": args.config,
        "log_level": args.log_level,
    }
    try:
        settings = load_settings(flags)
        if auth.enforcing(settings):
            auth.TokenVerifier(settings)  # a bad key or algorithm stops start-up here
    except ConfigError as exc:
        print(f"pushhub: configuration error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)
