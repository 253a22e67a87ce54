"""Close codes tell a client whether to reconnect, by the ranges errors.py documents."""

from __future__ import annotations

import pytest

from pushhub.errors import (
    CloseCode,
    ConfigError,
    EngineError,
    EngineUnavailable,
    ErrorCode,
    ProtocolError,
    PushhubError,
    should_reconnect,
)

#: The standard codes after which errors.py says a client reconnects.
RECONNECTABLE_STANDARD = {1001, 1006, 1009, 1011, 1012, 1013, 1014}


@pytest.mark.parametrize("code", [4000, 4001, 4250, 4499])
def test_codes_4000_to_4499_mean_reconnect(code: int) -> None:
    assert should_reconnect(code) is True


@pytest.mark.parametrize("code", [4500, 4501, 4750, 4999])
def test_codes_4500_to_4999_mean_do_not_reconnect(code: int) -> None:
    assert should_reconnect(code) is False


@pytest.mark.parametrize("code", range(1000, 1016))
def test_standard_code_means_reconnect_only_when_documented_so(code: int) -> None:
    assert should_reconnect(code) is (code in RECONNECTABLE_STANDARD)


@pytest.mark.parametrize("code", [0, 999, 1016, 2000, 3000, 3999, 5000, 65535])
def test_code_outside_every_documented_range_means_do_not_reconnect(code: int) -> None:
    assert should_reconnect(code) is False


@pytest.mark.parametrize("code", list(CloseCode))
def test_every_close_code_answers_reconnect_as_should_reconnect_does(code: CloseCode) -> None:
    assert code.reconnect is should_reconnect(code.value)


def test_slow_consumer_is_told_to_reconnect_and_a_protocol_violation_is_not() -> None:
    assert CloseCode.SLOW.reconnect
    assert CloseCode.SERVER_ERROR.reconnect
    assert not CloseCode.PROTOCOL_VIOLATION.reconnect
    assert not CloseCode.NORMAL.reconnect


def test_every_error_descends_from_the_one_root() -> None:
    assert issubclass(ConfigError, PushhubError)
    assert issubclass(ProtocolError, PushhubError)
    assert issubclass(EngineUnavailable, EngineError)
    assert issubclass(EngineError, PushhubError)


def test_errors_render_their_fields() -> None:
    assert str(ConfigError("port", "abc", "an integer")) == (
        "port='abc' is invalid: expected an integer"
    )
    err = ProtocolError(ErrorCode.BAD_CHANNEL, "no spaces", 3)
    assert (err.code, err.message, err.request_id) == ("bad_channel", "no spaces", 3)
    assert str(err) == "bad_channel: no spaces"
