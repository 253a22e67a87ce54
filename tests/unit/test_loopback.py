"""Which Host headers, origins and fetch metadata count as this machine's own pages."""

from __future__ import annotations

import pytest

from pushhub.loopback import (
    browser_refusal,
    is_loopback_address,
    is_loopback_host,
    is_loopback_origin,
)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8000",
        "LOCALHOST:8000",
        "dashboard.localhost",
        "a-b.c.localhost:1",
        "127.0.0.1",
        "127.0.0.1:8000",
        "127.255.0.9:65535",
        "[::1]",
        "[::1]:8000",
        "[::ffff:127.0.0.1]:8000",  # how a browser writes an IPv4-mapped address
    ],
)
def test_loopback_names_with_or_without_a_port_are_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "evil.example",
        "localhost.evil.example",
        "localhost.",  # a DNS name, resolved like any other
        "evillocalhost",
        "a_b.localhost",
        "-a.localhost",
        "127.0.0.1.nip.io",
        "127.1",  # browsers write the dotted form; anything else is not an address here
        "0x7f.0.0.1",
        "2130706433",
        "0.0.0.0",
        "128.0.0.1",
        "::1",  # an IPv6 Host is bracketed
        "[::1",
        "[::2]",
        "[::1]x",
        "localhost:",
        "localhost:123456",
        "localhost:80:80",
        "localhost:\uff18\uff10",  # fullwidth digits: str.isdigit() would take them
        "user@localhost",
        "localhost/path",
    ],
)
def test_anything_else_is_not_a_loopback_host(host: str | None) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("origin", "loopback"),
    [
        ("http://127.0.0.1:8000", True),
        ("https://localhost", True),
        ("http://[::1]:5173", True),
        ("HTTP://LOCALHOST:3000", True),
        ("null", False),
        ("file://", False),
        ("ws://localhost", False),
        ("chrome-extension://localhost", False),
        ("http://localhost.evil.example", False),
        ("http://localhost:3000/", False),
        ("http://evil.example", False),
    ],
)
def test_an_origin_is_loopback_when_an_http_page_on_a_loopback_name_sent_it(
    origin: str, loopback: bool
) -> None:
    assert is_loopback_origin(origin) is loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # a dual-stack socket's IPv4 loopback peer
        ("203.0.113.7", False),
        ("::ffff:203.0.113.7", False),
        ("unknown", False),
        (None, False),
    ],
)
def test_loopback_client_addresses(address: str | None, loopback: bool) -> None:
    assert is_loopback_address(address) is loopback


@pytest.mark.parametrize(
    ("host", "origin", "fetch_site", "refused_for"),
    [
        ("127.0.0.1:8000", None, None, None),  # curl, a backend, the load tool
        ("127.0.0.1:8000", "http://127.0.0.1:8000", "same-origin", None),  # the dashboard
        ("localhost:8000", None, "none", None),  # typed into the address bar
        ("evil.example:8000", "http://evil.example:8000", "same-origin", "Host"),
        ("127.0.0.1:8000", "http://evil.example", None, "Origin"),
        ("127.0.0.1:8000", "null", None, "Origin"),
        ("127.0.0.1:8000", None, "cross-site", "Sec-Fetch-Site"),
        ("127.0.0.1:8000", "http://localhost:3000", "same-site", "Sec-Fetch-Site"),
        ("127.0.0.1:8000", None, "something-new", "Sec-Fetch-Site"),
    ],
)
def test_browser_refusal_names_the_header_that_gave_a_foreign_page_away(
    host: str, origin: str | None, fetch_site: str | None, refused_for: str | None
) -> None:
    refusal = browser_refusal(host, origin, fetch_site)

    if refused_for is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refused_for in refusal
