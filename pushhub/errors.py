"""Every error pushhub raises, and the close codes it sends.

The tree::

    PushhubError                  root: catch this to catch anything of ours
    ├── ConfigError               a setting has a bad value; start-up stops
    ├── ProtocolError             a client frame was refused; answered with an error frame
    └── EngineError               the engine (memory or Redis) failed an operation
        └── EngineUnavailable     the engine cannot be reached right now; retry later

Error codes (``ErrorCode``) and close codes (``CloseCode``) are part of the wire
protocol: their values are stable and documented in ``docs/protocol.md``.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class PushhubError(Exception):
    """The root of every error pushhub raises on purpose."""


class ConfigError(PushhubError):
    """A setting has a value pushhub cannot use.

    Renders as one line naming the setting, the value and what was expected, so
    that start-up can print it and stop.
    """

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"{key}={value!r} is invalid: expected {expected}")


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame or an HTTP error body."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    BINARY_FRAME = "binary_frame"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    BAD_CHANNEL = "bad_channel"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    ALREADY_SUBSCRIBED = "already_subscribed"
    NOT_SUBSCRIBED = "not_subscribed"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 (an error code, not a secret)
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    INTERNAL = "internal"


class ProtocolError(PushhubError):
    """A client frame or HTTP request that pushhub refuses, with a stable code."""

    def __init__(self, code: ErrorCode, message: str, request_id: int | None = None) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(f"{code}: {message}")


def unavailable(request_id: int | None = None) -> ProtocolError:
    """The answer to a client when the engine cannot serve it right now."""
    return ProtocolError(
        ErrorCode.UNAVAILABLE, "the engine is unavailable, retry later", request_id
    )


class EngineError(PushhubError):
    """An engine operation failed."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached right now (Redis down, reconnecting)."""


class CloseCode(IntEnum):
    """WebSocket close codes pushhub sends.

    The range tells a client what to do without knowing every code:
    1000-1015 are the standard codes of RFC 6455 (reconnect after 1001, 1006, 1009,
    1011, 1012, 1013, 1014: the server went away, broke, or refused one oversized
    frame, none of which a new connection repeats by itself); 4000-4499 mean
    "reconnect with backoff";
    4500-4999 mean "do not reconnect, a person or a code change must act".
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012

    # 4000-4499: reconnect with backoff.
    SERVER_ERROR = 4000
    SLOW = 4001
    TOKEN_EXPIRED = 4002  # get a fresh token, then reconnect
    AUTH_TIMEOUT = 4003  # no connect frame in time
    TOO_MANY_CONNECTIONS = 4004  # this user holds the most connections allowed
    RATE_LIMITED = 4005  # frames came in faster than allowed

    # 4500-4999: do not reconnect.
    PROTOCOL_VIOLATION = 4500
    UNAUTHORIZED = 4501  # the token is invalid: reconnecting with it cannot succeed

    @property
    def reconnect(self) -> bool:
        """Whether a client should reconnect after a close with this code."""
        return should_reconnect(self.value)


def should_reconnect(code: int) -> bool:
    """Whether a client should reconnect after a close with ``code``."""
    if 4000 <= code < 4500:
        return True
    if 4500 <= code < 5000:
        return False
    return code in {1001, 1006, 1009, 1011, 1012, 1013, 1014}
