"""One typed ``Settings`` object, read once at start-up.

Sources, highest precedence first: command-line flags, environment variables
(``PUSHHUB_<NAME>``, plus the platform's unprefixed ``REDIS_URL`` and ``PORT``), the
TOML file named by ``--config`` or ``PUSHHUB_CONFIG``, then the defaults below. A bad
value raises ``ConfigError`` naming where it came from, so start-up stops with one line.
``docs/configuration.md`` lists every setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pushhub import engine
from pushhub.channels import ChannelRule, parse_rules
from pushhub.errors import ConfigError

ENV_PREFIX = "PUSHHUB_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(frozen=True, slots=True)
class Settings:
    #: Interface to listen on. Loopback by default: exposing a server is a decision.
    host: str = "127.0.0.1"
    port: int = 8000
    #: None selects the in-process memory engine (a single node).
    redis_url: str | None = None
    #: Prefix of every Redis key pushhub owns.
    key_prefix: str = "pushhub:"
    #: Largest inbound WebSocket frame and HTTP publish body. Centrifugo's default;
    #: uvicorn's 16 MiB would let one client make the node buffer that much.
    max_message_size: int = 64 * 1024
    #: Channels one connection may hold at once (Centrifugo's default).
    max_subscriptions: int = 128
    #: Bytes queued for one client before it is closed as slow. A history or presence
    #: reply, and each page of a recovery replay, is at most a quarter of this.
    outbound_queue_bytes: int = 1024 * 1024
    #: Deepest JSON nesting accepted in a payload, a frame or presence info. orjson
    #: writes at most 254 levels; 64 is far beyond real data and keeps every consumer's
    #: parser (browsers, Python's recursive json) safe.
    max_json_depth: int = 64
    #: Seconds a server-decided close may spend flushing before the socket is aborted.
    close_timeout: float = 2.0
    #: Seconds a socket's writes may make no progress (its send buffer full) before the
    #: socket is aborted: a peer that stopped reading is released in bounded time.
    write_timeout: float = 10.0
    #: Presence and history queries one connection may make: a steady rate and a burst.
    query_rate: float = 10.0
    query_burst: int = 20
    #: WebSocket ping interval and timeout: find half-open connections in bounded time.
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    #: permessage-deflate costs a zlib context per socket; off unless asked for.
    websocket_compression: bool = False
    #: Keys accepted as "Authorization: Bearer <key>" on the HTTP API. With none, the
    #: HTTP API answers loopback clients only.
    api_keys: tuple[str, ...] = ()
    #: This node's id in logs and Redis; generated when empty.
    node_id: str = ""
    log_level: str = "info"
    #: Seconds to wait for connections to close on SIGTERM.
    shutdown_timeout: float = 10.0
    #: How often a node refreshes the presence of its connections. Also the bound on
    #: restoring presence after Redis loses its data.
    presence_heartbeat: float = 5.0
    #: A presence entry not refreshed for this long expires: 3 heartbeats, so one
    #: missed heartbeat never drops a member.
    presence_ttl: float = 15.0
    #: Join and leave events of a channel are gathered for this long and sent as one
    #: frame (docs/presence.md): a client gets at most one presence frame per channel
    #: per tick, however many join at once.
    presence_tick: float = 0.1
    #: A node that has not renewed its lease for this long is dead; a surviving node
    #: removes its members. The crash bound is about this plus one second.
    node_lease_ttl: float = 5.0
    #: Largest presence ``info`` object, in bytes of compact JSON.
    max_presence_info: int = 1024
    #: Most messages replayed to one resubscribing client; a longer gap answers
    #: ``recovered: false``, since a full resync is cheaper and honest beyond it.
    recovery_max: int = 300
    #: Seconds an idempotency key remembers its publish.
    idempotency_ttl: float = 300.0
    #: JWT verification. Any key turns enforcement on everywhere (docs/security.md).
    jwt_secret: str = field(default="", repr=False)
    jwt_public_key: str = ""  # path to a PEM file
    jwt_jwks_file: str = ""  # path to a JWKS JSON file
    #: Algorithms accepted; empty: HS256 with a secret, RS256 and ES256 with a key.
    jwt_algorithms: tuple[str, ...] = ()
    jwt_audience: str = ""
    jwt_issuer: str = ""
    #: Seconds of clock skew tolerated on exp and nbf.
    jwt_leeway: float = 5.0
    #: With enforcement on: whether a connect without a token is let in (it may then
    #: use "public" channels only).
    allow_anonymous: bool = False
    #: Seconds a socket has to authenticate before it is closed (enforcement on).
    auth_timeout: float = 10.0
    #: Origins allowed to open a WebSocket: exact ("https://app.example.com") or
    #: "https://*.example.com". Empty: any origin with tokens enforced; in development
    #: mode, only loopback origins and a loopback Host (limits.OriginPolicy).
    allowed_origins: tuple[str, ...] = ()
    #: Whether a handshake without an Origin header (a non-browser client) is accepted.
    allow_missing_origin: bool = True
    #: Proxies whose X-Forwarded-For is believed (IPs or CIDRs). Empty: none.
    trusted_proxies: tuple[str, ...] = ()
    #: Inbound frames one connection may send: a steady rate and a burst.
    max_frames_per_second: float = 50.0
    frame_burst: int = 200
    #: Open connections (HTTP and WebSocket) this node holds at once; beyond it, new
    #: requests get 503. Sized for the file-descriptor limit (docs/security.md).
    max_connections: int = 20_000
    #: WebSocket handshakes in progress at once (from the upgrade request until the app
    #: accepts or refuses the socket); beyond it, upgrades get 503 with Retry-After at
    #: once, so a reconnect storm cannot starve the clients already connected.
    max_handshakes: int = 2000
    #: HTTP request line and headers: most bytes, and seconds to receive them. A
    #: connection that sends nothing is closed after ``header_timeout`` too.
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    #: Seconds an idle keep-alive HTTP connection is kept between requests.
    keepalive_timeout: float = 5.0
    #: Open connections, and new connections per second, from one client IP (per node).
    max_connections_per_ip: int = 5000
    connections_per_second_per_ip: float = 500.0
    #: Open connections of one user across all nodes (0: no limit).
    max_connections_per_user: int = 100
    #: HTTP publishes per second per API key (or per client when no keys), across nodes.
    publish_rate: float = 1000.0
    publish_burst: int = 2000
    #: Where the dashboard and browser client are served from; empty: ``static/`` of
    #: the source checkout.
    static_dir: str = ""
    #: Per-pattern channel options, from ``[[channels]]`` in the configuration file.
    channels: tuple[ChannelRule, ...] = ()
    config_file: str | None = field(default=None, repr=False)

    @property
    def engine_url(self) -> str:
        return self.redis_url or "memory://"


Parser = Callable[[str, Any], Any]


def _int(lo: int, hi: int) -> Parser:
    def parse(key: str, raw: Any) -> int:
        value: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and re.fullmatch(r"-?[0-9]{1,12}", raw.strip()):
            value = int(raw)
        if value is None or not lo <= value <= hi:
            raise ConfigError(key, raw, f"an integer from {lo} to {hi}")
        return value

    return parse


def _float(lo: float, hi: float) -> Parser:
    def parse(key: str, raw: Any) -> float:
        try:
            value = float(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None or not lo <= value <= hi:
            raise ConfigError(key, raw, f"a number from {lo:g} to {hi:g}")
        return value

    return parse


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, raw, "true or false")


def _str(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, raw, "a string")
    return raw


def _host(key: str, raw: Any) -> str:
    value = _str(key, raw).strip()
    if not value or any(c.isspace() for c in value):
        raise ConfigError(key, raw, "a host name or IP address")
    return value


def _redis_url(key: str, raw: Any) -> str | None:
    value = _str(key, raw).strip()
    if not value:
        return None
    known = engine.schemes()  # the registry only: no engine module is imported
    if urlsplit(value).scheme not in known:
        listed = ", ".join(f"{scheme}://" for scheme in known)
        raise ConfigError(key, _redact(value), f"a URL of one of the schemes {listed}")
    return value


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _key_prefix(key: str, raw: Any) -> str:
    value = _str(key, raw)
    if not 1 <= len(value) <= 64 or any(c.isspace() or c in "{}*?[]" for c in value):
        raise ConfigError(key, raw, "1-64 characters without spaces, braces or * ? [ ]")
    return value


def _keys(key: str, raw: Any) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ConfigError(key, "<redacted>", "a comma-separated list or an array of strings")
    keys = tuple(i.strip() for i in items if i.strip())
    for k in keys:
        if len(k) < 16:
            raise ConfigError(key, "<redacted>", "API keys of at least 16 characters")
    return keys


def _secret(key: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(key, "<redacted>", "a string")
    value = raw.strip()
    if value and len(value) < 32:
        raise ConfigError(key, "<redacted>", "a secret of at least 32 characters")
    return value


def _list(key: str, raw: Any) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ConfigError(key, raw, "a comma-separated list or an array of strings")
    return tuple(i.strip() for i in items if i.strip())


_ORIGIN_RE = re.compile(r"https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _origins(key: str, raw: Any) -> tuple[str, ...]:
    origins = _list(key, raw)
    for origin in origins:
        if not _ORIGIN_RE.fullmatch(origin):
            raise ConfigError(
                key, origin, "origins like https://app.example.com or https://*.example.com"
            )
    return tuple(o.lower() for o in origins)


def _proxies(key: str, raw: Any) -> tuple[str, ...]:
    normalized = []
    for proxy in _list(key, raw):
        try:
            network = ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(key, proxy, "IP addresses or CIDR networks") from None
        if network.prefixlen == 0:
            # Trusting every peer's X-Forwarded-For lets a client name itself 127.0.0.1
            # (the key-less HTTP API) or a new address per request (per-IP limits).
            raise ConfigError(
                key,
                proxy,
                "networks narrower than /0: a catch-all network would let any client "
                "choose its address",
            )
        # Normalized for the log line: the network, not "127.0.0.5/8".
        single = network.num_addresses == 1 and "/" not in proxy
        normalized.append(str(network.network_address) if single else str(network))
    return tuple(normalized)


def _log_level(key: str, raw: Any) -> str:
    value = _str(key, raw).strip().lower()
    if value not in LOG_LEVELS:
        raise ConfigError(key, raw, "one of " + ", ".join(LOG_LEVELS))
    return value


def _node_id(key: str, raw: Any) -> str:
    value = _str(key, raw).strip()
    # No '.': connection ids are "<node id>.<n>", and reaping matches on that prefix.
    if len(value) > 64 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
        raise ConfigError(key, raw, "up to 64 ASCII letters, digits, '-' or '_'")
    return value


PARSERS: dict[str, Parser] = {
    "host": _host,
    "port": _int(0, 65535),
    "redis_url": _redis_url,
    "key_prefix": _key_prefix,
    "max_message_size": _int(256, 16 * 1024 * 1024),
    "max_subscriptions": _int(1, 100_000),
    "outbound_queue_bytes": _int(64 * 1024, 1024 * 1024 * 1024),
    "ping_interval": _float(1, 3600),
    "ping_timeout": _float(1, 3600),
    "websocket_compression": _bool,
    "api_keys": _keys,
    "node_id": _node_id,
    "log_level": _log_level,
    "shutdown_timeout": _float(0, 3600),
    "presence_heartbeat": _float(0.05, 600),
    "presence_ttl": _float(0.2, 3600),
    "presence_tick": _float(0.005, 5),
    "node_lease_ttl": _float(0.2, 600),
    "max_presence_info": _int(0, 64 * 1024),
    "recovery_max": _int(1, 10_000),
    "static_dir": _str,
    "jwt_secret": _secret,
    "jwt_public_key": _str,
    "jwt_jwks_file": _str,
    "jwt_algorithms": _list,
    "jwt_audience": _str,
    "jwt_issuer": _str,
    "jwt_leeway": _float(0, 300),
    "allow_anonymous": _bool,
    "auth_timeout": _float(0.5, 300),
    "allowed_origins": _origins,
    "allow_missing_origin": _bool,
    "trusted_proxies": _proxies,
    "max_frames_per_second": _float(0.1, 100_000),
    "frame_burst": _int(1, 1_000_000),
    "max_connections_per_ip": _int(1, 10_000_000),
    "connections_per_second_per_ip": _float(0.1, 1_000_000),
    "max_connections_per_user": _int(0, 1_000_000),
    "publish_rate": _float(0.1, 10_000_000),
    "publish_burst": _int(1, 100_000_000),
    "idempotency_ttl": _float(1, 7 * 86400),
    "max_json_depth": _int(1, 200),
    "close_timeout": _float(0.1, 60),
    "write_timeout": _float(0.5, 600),
    "query_rate": _float(0.1, 100_000),
    "query_burst": _int(1, 1_000_000),
    "max_connections": _int(1, 10_000_000),
    "max_handshakes": _int(1, 1_000_000),
    "max_header_bytes": _int(4 * 1024, 1024 * 1024),
    "header_timeout": _float(0.5, 600),
    "keepalive_timeout": _float(0.5, 600),
}

#: Unprefixed variables that hosting platforms set; the PUSHHUB_ form wins over them.
PLATFORM_ENV = {"redis_url": "REDIS_URL", "port": "PORT"}


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _from_file(path: str, source: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(source, path, f"a readable TOML file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, path, f"valid TOML ({exc})") from None
    values: dict[str, Any] = {}
    for name, raw in data.items():
        key = f"{name} (in {path})"
        if name == "channels":
            values[name] = parse_rules(raw, path)
            continue
        if name not in PARSERS:
            # Never echo the value: a misspelt secret (jwt_secrte = "...") must not reach
            # the log.
            raise ConfigError(key, "<not shown>", "a known setting (see docs/configuration.md)")
        values[name] = PARSERS[name](key, raw)
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, parser in PARSERS.items():
        for var in (env_name(name), PLATFORM_ENV.get(name)):
            if var is not None and var in env:
                values[name] = parser(var, env[var])
                break
    return values


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build ``Settings`` from flags (name -> raw value), the environment and the file."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    config_file = flags.pop("config", None)
    source = "--config"
    if not config_file:
        config_file, source = env.get(ENV_PREFIX + "CONFIG") or None, ENV_PREFIX + "CONFIG"
    values: dict[str, Any] = {}
    if config_file:
        values.update(_from_file(config_file, source))
    values.update(_from_env(env))
    for name, raw in flags.items():
        if name not in PARSERS:
            raise ConfigError(f"--{name.replace('_', '-')}", raw, "a known option")
        values[name] = PARSERS[name](f"--{name.replace('_', '-')}", raw)
    settings = Settings(**values, config_file=config_file)
    if settings.ping_timeout > settings.ping_interval * 4:
        raise ConfigError("ping_timeout", settings.ping_timeout, "at most 4 x ping_interval")
    if settings.presence_ttl < settings.presence_heartbeat * 2:
        raise ConfigError("presence_ttl", settings.presence_ttl, "at least 2 x presence_heartbeat")
    if settings.outbound_queue_bytes < settings.max_message_size * 4:
        # A reply or recovery page (a quarter of the queue) must hold the largest message.
        raise ConfigError(
            "outbound_queue_bytes", settings.outbound_queue_bytes, "at least 4 x max_message_size"
        )
    return settings


def describe(settings: Settings) -> dict[str, Any]:
    """Settings as a dict safe to log: secrets redacted."""
    out = dataclasses.asdict(settings)
    out["api_keys"] = f"<{len(settings.api_keys)} configured>"
    out["jwt_secret"] = "<set>" if settings.jwt_secret else ""
    out["channels"] = [
        {"pattern": r.pattern, **dataclasses.asdict(r.options)} for r in settings.channels
    ]
    if settings.redis_url:
        out["redis_url"] = _redact(settings.redis_url)
    return out
