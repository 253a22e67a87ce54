"""Property-based fuzzing of the frame parser: any input is a command or a ProtocolError.

Nothing else may escape ``pushhub.protocol.parse``: an unexpected exception there would
reach the transport and close the socket with 4000 instead of answering an error frame.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushhub import protocol
from pushhub.errors import ErrorCode, ProtocolError


def fuzz(examples: int) -> settings:
    """Bounded runs: a fixed number of examples, no deadline per example, and no example
    database written into the checkout."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


FRAME_TYPES = [
    "subscribe",
    "unsubscribe",
    "ping",
    "connect",
    "refresh",
    "presence",
    "publish",
    "history",
]
FIELDS = [
    "id",
    "channel",
    "since",
    "token",
    "user",
    "info",
    "limit",
    "cursor",
    "data",
    "idempotency_key",
    "reverse",
]

#: Any JSON value, with the edge cases the parser must bound: huge and negative
#: integers, floats, booleans where integers are expected, deep nesting.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "a", "c" * 255, "c" * 256, "news:*", "__x", "#", "a#b"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["offset", "epoch", "a", ""]), inner, max_size=3)
    ),
    max_leaves=6,
)


def _check(text: str | bytes) -> None:
    try:
        command = protocol.parse(text)
    except ProtocolError as exc:
        error = exc
    else:
        _check_command(command)
        return
    assert isinstance(error.code, ErrorCode)
    assert error.request_id is None or 0 <= error.request_id <= protocol.MAX_REQUEST_ID


def _check_command(command: protocol.Command) -> None:
    assert isinstance(command, protocol.Command)
    channel = getattr(command, "channel", None)
    if channel is not None:
        assert protocol.CHANNEL_RE.fullmatch(channel)
        assert not channel.startswith(protocol.RESERVED_PREFIX)
    if command.id is not None:
        assert type(command.id) is int
        assert 0 <= command.id <= protocol.MAX_REQUEST_ID


@fuzz(2000)
@given(st.text())
def test_any_text_is_a_command_or_a_protocol_error(text: str) -> None:
    _check(text)


@fuzz(1000)
@given(st.binary())
def test_any_bytes_are_a_command_or_a_protocol_error(raw: bytes) -> None:
    _check(raw)


@fuzz(1000)
@given(
    st.sampled_from(FRAME_TYPES) | JSON,
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5),
)
def test_any_json_object_shaped_like_a_frame_is_a_command_or_a_protocol_error(
    kind: Any, fields: dict[str, Any]
) -> None:
    _check(json.dumps({"type": kind, **fields}))


@fuzz(1000)
@given(
    st.sampled_from(FRAME_TYPES),
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5),
    SCALARS,
)
def test_frames_with_escapes_and_duplicate_keys_are_a_command_or_a_protocol_error(
    kind: str, fields: dict[str, Any], extra: Any
) -> None:
    text = json.dumps({"type": kind, **fields}, ensure_ascii=True)
    # A second "type" and a trailing value: what a hand-written attack frame looks like.
    _check(text[:-1] + ', "type": ' + json.dumps(extra) + "}")
    _check(text + json.dumps(extra))
    _check(text.replace('"', "'", 1))
