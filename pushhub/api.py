"""The HTTP API: publish, health and readiness.

Channel data is reachable over HTTP only with an API key (``Authorization: Bearer``) once
keys are configured. While none are, only from this machine: a loopback client, addressed
to a loopback name, not sent by a page of another site, and a publish only with a JSON
body (loopback.py says why each).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

import orjson
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from pushhub import __version__, loopback, protocol
from pushhub.errors import EngineError, EngineUnavailable, ErrorCode, ProtocolError, unavailable
from pushhub.headers import SecurityHeaders
from pushhub.node import Node

logger = logging.getLogger("pushhub.api")

#: Channels one publish request may name: a bound on the work one request can cause.
MAX_PUBLISH_CHANNELS = 100

_STATUS = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BAD_CHANNEL: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(code: ErrorCode, message: str, status: int | None = None) -> Response:
    retry = code in (ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED)
    headers = {"Retry-After": "1"} if retry else None
    if code is ErrorCode.UNAUTHORIZED:
        headers = {"WWW-Authenticate": "Bearer"}
    body = {"error": {"code": code, "message": message}}
    return json_response(body, status or _STATUS.get(code, 500), headers)


class UnsupportedMediaType(ProtocolError):
    """A body the API does not take as JSON: HTTP 415 with the code ``bad_request``
    (the codes are the wire protocol's; the status says which kind of bad request)."""

    status = 415

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message)


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _local_refusal(request: Request) -> str | None:
    """Why a request is not one this machine made itself, or None. A loopback peer is
    not enough: a browser here is a loopback peer for every page it shows, so the
    request must also be addressed to a loopback name and not come from another site."""
    if not loopback.is_loopback_address(request.client.host if request.client else None):
        return "no API keys are configured, so the HTTP API answers loopback clients only"
    headers = request.headers
    return loopback.browser_refusal(
        headers.get("host"), headers.get("origin"), headers.get("sec-fetch-site")
    )


def _bearer(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    return given.strip()


def _known_key(candidate: str, keys: tuple[str, ...]) -> bool:
    # Compare against every key, never stopping early, so timing tells nothing.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


def authorize(request: Request) -> None:
    """Raise ProtocolError unless the request may read or write channel data."""
    keys = _node(request).settings.api_keys
    if not keys:
        refused = _local_refusal(request)
        if refused is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, refused)
        return
    given = _bearer(request)
    if given is None:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "send 'Authorization: Bearer <API key>'")
    if not _known_key(given, keys):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "unknown API key")


def require_json_body(request: Request) -> None:
    """Without API keys, a write must declare a JSON body. A page of any site can send a
    ``text/plain`` or form POST without asking first (a CORS "simple request"); it can
    send ``application/json`` only after a preflight, which pushhub never answers."""
    if _node(request).settings.api_keys:
        return  # a Bearer header needs a preflight too: the key is the protection
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            "send the body with 'Content-Type: application/json': without API keys "
            "other types are refused, since any web page can send them"
        )


async def read_json_body(request: Request, limit: int, max_depth: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"body over {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"body is not valid JSON: {exc}") from None
    # The body object is one level; its data may nest max_depth more.
    if protocol.too_deep(body, max_depth + 1):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"data nests deeper than {max_depth} levels")
    return parsed


_PUBLISH_FIELDS = {"channel", "channels", "data", "idempotency_key"}


def parse_publish(body: Any) -> tuple[list[str], Any, str | None]:
    """The channels and data of a publish request body, or ProtocolError."""
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "body must be a JSON object")
    unknown = sorted(set(body) - _PUBLISH_FIELDS)
    if unknown:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}")
    if "data" not in body:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "missing field 'data'")
    if ("channel" in body) == ("channels" in body):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "give exactly one of 'channel' or 'channels'")
    key = protocol.parse_idempotency_key(body.get("idempotency_key"))
    if "channel" in body:
        return [protocol.validate_channel(body["channel"])], body["data"], key
    raw = body["channels"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PUBLISH_CHANNELS:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"'channels' must be a list of 1 to {MAX_PUBLISH_CHANNELS} channel names",
        )
    channels = list(dict.fromkeys(protocol.validate_channel(c) for c in raw))
    return channels, body["data"], key


def _limiter_key(request: Request) -> str:
    """Whose publish budget a request spends: its API key's (hashed, never stored
    whole), or its client address's when no keys are configured."""
    given = request.headers.get("authorization", "").partition(" ")[2]
    if given and _node(request).settings.api_keys:
        return "key:" + hashlib.sha256(given.strip().encode()).hexdigest()[:24]
    return "ip:" + (request.client.host if request.client else "unknown")


async def _check_rate(request: Request) -> None:
    node = _node(request)
    try:
        allowed = await node.publish_allowed(_limiter_key(request))
    except EngineError:
        return  # the publish itself will answer 503
    if not allowed:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED, f"over {node.settings.publish_rate:g} publishes a second"
        )


async def publish(request: Request) -> Response:
    node = _node(request)
    authorize(request)
    require_json_body(request)
    await _check_rate(request)
    settings = node.settings
    body = await read_json_body(request, settings.max_message_size, settings.max_json_depth)
    channels, data, key = parse_publish(body)
    try:
        positions = await node.publish(channels, data, key)
    except EngineError as exc:
        logger.warning("HTTP publish failed: %s", exc)
        raise unavailable() from None
    results = [
        {"channel": c} if p is None else {"channel": c, "offset": p.offset, "epoch": p.epoch}
        for c, p in zip(channels, positions, strict=True)
    ]
    return json_response({"results": results})


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name} must be true or false")
    return raw in ("true", "1")


async def history(request: Request) -> Response:
    node = _node(request)
    authorize(request)
    channel = protocol.validate_channel(request.path_params["channel"])
    since = protocol.parse_offset(request.query_params.get("since"))
    limit = protocol.parse_limit(request.query_params.get("limit"))
    reverse = _bool_param(request, "reverse")
    if request.method == "DELETE":
        cleared = await node.clear_history(channel)
        return json_response({"channel": channel, "offset": cleared.offset, "epoch": cleared.epoch})
    position, messages, next_since = await node.history(channel, since, limit, reverse)
    body = {
        "channel": channel,
        "offset": position.offset,
        "epoch": position.epoch,
        "messages": messages,
        "next_since": next_since,
    }
    return json_response(body)


async def presence_members(request: Request) -> Response:
    node = _node(request)
    authorize(request)
    channel = protocol.validate_channel(request.path_params["channel"])
    limit = protocol.parse_limit(request.query_params.get("limit"))
    cursor = protocol.parse_cursor(request.query_params.get("cursor"))
    members, next_cursor = await node.presence_page(channel, limit, cursor)
    return json_response({"channel": channel, "members": members, "next_cursor": next_cursor})


async def presence_count(request: Request) -> Response:
    node = _node(request)
    authorize(request)
    channel = protocol.validate_channel(request.path_params["channel"])
    node.require_presence(channel)
    (count,) = await node.presence_counts([channel])
    return json_response({"channel": channel, **(count or {})})


async def presence_counts(request: Request) -> Response:
    node = _node(request)
    authorize(request)
    raw = request.query_params.get("channels", "")
    names = list(dict.fromkeys(c for c in raw.split(",") if c))
    if not 1 <= len(names) <= MAX_PUBLISH_CHANNELS:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"give 1 to {MAX_PUBLISH_CHANNELS} comma-separated names in ?channels=",
        )
    channels = [protocol.validate_channel(c) for c in names]
    counts = await node.presence_counts(channels)
    return json_response({"channels": dict(zip(channels, counts, strict=True))})


async def stats(request: Request) -> Response:
    authorize(request)
    return json_response(_node(request).stats())


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok", "version": __version__})


def _may_see_internals(request: Request) -> bool:
    """Whether a request may read what the node knows of its surroundings (the engine's
    address in a failure reason): one with a valid API key, or one from this machine."""
    keys = _node(request).settings.api_keys
    given = _bearer(request)
    if keys and given is not None and _known_key(given, keys):
        return True
    return _local_refusal(request) is None


async def readyz(request: Request) -> Response:
    node = _node(request)
    try:
        await node.check()
    except EngineUnavailable as exc:
        # The status stays public (load balancers need it); the reason names Redis's
        # host and port, which is nobody else's business.
        if not _may_see_internals(request):
            return json_response({"status": "unavailable"}, 503)
        return json_response(
            {"status": "unavailable", "engine": node.engine_name, "reason": str(exc)}, 503
        )
    return json_response({"status": "ready", "engine": node.engine_name})


async def index(request: Request) -> Response:
    """The dashboard when the static files are there, else a pointer to the API."""
    page = Path(request.app.state.static_dir) / "index.html"
    if page.is_file():
        return FileResponse(page, media_type="text/html")
    return json_response({"name": "pushhub", "version": __version__, "websocket": "/ws"})


async def _refused(request: Request, exc: Exception) -> Response:
    """Every route's refusal, in one place: a ``ProtocolError`` raised anywhere below a
    route becomes its JSON error body and status."""
    assert isinstance(exc, ProtocolError)
    return error_response(exc.code, exc.message, getattr(exc, "status", None))


async def _engine_failed(request: Request, exc: Exception) -> Response:
    """An engine failure no route turned into an answer: the engine is unavailable."""
    logger.warning("HTTP %s %s failed: %s", request.method, request.url.path, exc)
    err = unavailable()
    return error_response(err.code, err.message)


#: For ``Starlette(exception_handlers=...)``: the routes raise, these answer.
exception_handlers = {ProtocolError: _refused, EngineError: _engine_failed}


def middleware(static_dir: Path) -> list[Middleware]:
    """The Starlette middleware of every HTTP response (never /ws, which goes around it)."""
    return [Middleware(SecurityHeaders, static_dir=static_dir)]


routes = [
    Route("/", index, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/api/publish", publish, methods=["POST"]),
    Route("/api/stats", stats, methods=["GET"]),
    Route("/api/history/{channel}", history, methods=["GET", "DELETE"]),
    Route("/api/presence", presence_counts, methods=["GET"]),
    Route("/api/presence/{channel}", presence_members, methods=["GET"]),
    Route("/api/presence/{channel}/count", presence_count, methods=["GET"]),
]
