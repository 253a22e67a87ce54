"""The log filter of ``pushhub serve`` redacts credentials in every form a library logs
them: header lines, ASGI header tuples, dict and JSON reprs."""

from __future__ import annotations

import logging

import pytest

from pushhub.cli import _RedactSecrets

COOKIE = "sid=s3ss10n-c00kie-value; theme=dark"
SECRET_PARTS = ("s3ss10n-c00kie-value", "theme=dark")


def redact(msg: str, *args: object) -> str:
    record = logging.LogRecord("test", logging.DEBUG, __file__, 1, msg, args or None, None)
    assert _RedactSecrets().filter(record) is True
    return record.getMessage()


@pytest.mark.parametrize(
    ("msg", "args", "kept"),
    [
        # websockets at debug: one line per handshake header.
        ("< %s: %s", ("cookie", COOKIE), "< cookie: [redacted]"),
        ("< %s: %s", ("Cookie", COOKIE), "< Cookie: [redacted]"),
        ("> %s: %s", ("Set-Cookie", COOKIE + "; HttpOnly"), "> Set-Cookie: [redacted]"),
        ("Cookie:%s", (COOKIE,), "Cookie:[redacted]"),
        # ASGI headers, as an ASGI scope or message repr shows them.
        ("scope=%r", ({"headers": [(b"cookie", COOKIE.encode())]},), "(b'cookie', b'[redacted]')"),
        ("headers=%r", ([(b"set-cookie", COOKIE.encode())],), "(b'set-cookie', b'[redacted]')"),
        ("headers=%r", ([("Cookie", COOKIE)],), "('Cookie', '[redacted]')"),
        # A dict repr and JSON.
        ("headers=%r", ({"cookie": COOKIE},), "{'cookie': '[redacted]'}"),
        ('{"cookie":"%s"}', (COOKIE,), '{"cookie":"[redacted]"}'),
        # A raw request as a bytes repr: only the header's own line goes.
        (
            "%r",
            (b"GET /ws HTTP/1.1\r\nCookie: " + COOKIE.encode() + b"\r\nHost: a\r\n\r\n",),
            "\\r\\nCookie: [redacted]\\r\\nHost: a\\r\\n",
        ),
    ],
)
def test_cookie_values_are_redacted_in_every_form_they_are_logged(
    msg: str, args: tuple[object, ...], kept: str
) -> None:
    out = redact(msg, *args)

    assert kept in out
    for part in SECRET_PARTS:
        assert part not in out


def test_a_cookie_value_holding_quotes_is_redacted_to_its_closing_quote() -> None:
    out = redact("%r", [(b"cookie", b"a='x\"y'; b=secret-part"), (b"host", b"h")])

    assert "secret-part" not in out
    assert "(b'host', b'h')" in out


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("< %s: %s", ("authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")),
        ("< %s: %s", ("Proxy-Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")),
        ("headers=%r", ([(b"authorization", b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")],)),
        ("headers=%r", ({"Authorization": "Digest QWxhZGRpbjpvcGVuIHNlc2FtZQ=="},)),
        ("< %s: %s", ("authorization", "Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==")),
    ],
)
def test_authorization_values_of_any_scheme_are_redacted(
    msg: str, args: tuple[object, ...]
) -> None:
    out = redact(msg, *args)

    assert "QWxhZGRpbjpvcGVuIHNlc2FtZQ" not in out
    assert "[redacted]" in out


@pytest.mark.parametrize(
    "msg",
    [
        "< host: 127.0.0.1:8000",
        "< sec-websocket-key: g7IKBlH610JAP6bJWT7XCQ==",
        "> x-cookie-hint: not-a-cookie-header",
        "headers=[(b'host', b'a'), (b'user-agent', b'curl/8')]",
        "refused a connection from 203.0.113.7: more than 5000 open connections",
    ],
)
def test_other_headers_and_messages_are_left_alone(msg: str) -> None:
    assert redact(msg) == msg
