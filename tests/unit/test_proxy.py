"""Who the client is behind trusted proxies: X-Forwarded-For read from the right."""

from __future__ import annotations

from typing import Any

import pytest

from pushhub.config import load_settings
from pushhub.errors import ConfigError
from pushhub.proxy import TrustedProxies, parse_address, trusted_proxies

PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/24", "2001:db8:feed::/48"])


def client(peer: str | None, *xff: str) -> str | None:
    return PROXIES.client(peer, list(xff))


# -- the walk from the right -------------------------------------------------------------


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_sends() -> None:
    assert client("203.0.113.7", "127.0.0.1") == "203.0.113.7"
    assert client("203.0.113.7") == "203.0.113.7"


def test_behind_one_proxy_the_client_is_the_address_the_proxy_appended() -> None:
    assert client("127.0.0.1", "203.0.113.7") == "203.0.113.7"


def test_a_spoofed_left_most_entry_does_not_choose_the_client() -> None:
    # The client sent "X-Forwarded-For: 127.0.0.1"; the proxy appended the real peer.
    assert client("127.0.0.1", "127.0.0.1, 203.0.113.7") == "203.0.113.7"
    assert client("10.0.0.9", "127.0.0.1, 10.0.0.5, 203.0.113.7") == "203.0.113.7"


def test_a_chain_of_trusted_proxies_is_skipped_from_the_right() -> None:
    assert client("10.0.0.2", "198.51.100.1, 203.0.113.7, 10.0.0.1") == "203.0.113.7"


def test_when_every_entry_is_a_trusted_proxy_the_left_most_is_the_client() -> None:
    # A request made on the proxy hosts themselves.
    assert client("10.0.0.2", "127.0.0.1, 10.0.0.1") == "127.0.0.1"


def test_a_trusted_proxy_without_x_forwarded_for_leaves_the_client_unknown() -> None:
    assert client("127.0.0.1") is None
    assert client("127.0.0.1", "") is None
    assert client("127.0.0.1", " , ,") is None


def test_garbage_where_the_client_should_be_leaves_it_unknown() -> None:
    for entry in ("unknown", "_hidden", "not-an-ip", "1.2.3.4.5", "[::1", "1.2.3.4:http"):
        assert client("127.0.0.1", entry) is None, entry
    # Behind a trusted hop too: the trusted proxy vouched for garbage.
    assert client("127.0.0.1", "garbage, 10.0.0.1") is None


def test_garbage_left_of_the_client_is_never_reached() -> None:
    assert client("127.0.0.1", "garbage, 203.0.113.7") == "203.0.113.7"


def test_several_headers_are_one_list_in_order() -> None:
    assert client("127.0.0.1", "127.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert client("10.0.0.2", "198.51.100.1", "203.0.113.7, 10.0.0.1") == "203.0.113.7"


def test_empty_list_elements_are_skipped() -> None:
    assert client("127.0.0.1", "203.0.113.7, ,") == "203.0.113.7"


def test_ports_in_entries_are_dropped() -> None:
    assert client("127.0.0.1", "203.0.113.7:5555") == "203.0.113.7"
    assert client("127.0.0.1", "[2001:db8::7]:443") == "2001:db8::7"
    assert client("127.0.0.1", "203.0.113.7, 10.0.0.1:80") == "203.0.113.7"


def test_ipv6_proxies_and_clients() -> None:
    assert client("2001:db8:feed::1", "2001:db8::7") == "2001:db8::7"
    assert client("2001:db8:feed::1", "[2001:db8::7]") == "2001:db8::7"
    assert client("2001:db8:feed::1", "2001:db8::7, 2001:db8:feed::2") == "2001:db8::7"
    assert client("2001:db8:feed::1") is None
    # An IPv6 peer outside the trusted networks is the client.
    assert client("2001:db8::9", "203.0.113.7") == "2001:db8::9"


def test_ipv4_mapped_addresses_count_as_ipv4() -> None:
    # A dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d.
    assert client("::ffff:127.0.0.1", "::ffff:203.0.113.7") == "203.0.113.7"
    assert client("::ffff:127.0.0.1", "::ffff:127.0.0.1") == "127.0.0.1"


def test_an_unknown_peer_is_not_trusted() -> None:
    assert client(None, "127.0.0.1") is None
    assert client("not-an-address", "127.0.0.1") == "not-an-address"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:8080", "2001:db8::1"),
        ("192.0.2.1:", None),
        ("192.0.2.1:80:80", None),
        ("[2001:db8::1]x", None),
        ("", None),
        ("x" * 100, None),
    ],
)
def test_addresses_are_parsed_strictly(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


# -- X-Forwarded-Proto ------------------------------------------------------------------


def test_the_scheme_is_believed_only_from_a_trusted_proxy() -> None:
    assert PROXIES.scheme("127.0.0.1", ["https"], websocket=False) == "https"
    assert PROXIES.scheme("203.0.113.7", ["https"], websocket=False) is None


def test_the_right_most_scheme_counts_and_matches_the_scope_type() -> None:
    assert PROXIES.scheme("127.0.0.1", ["http, https"], websocket=False) == "https"
    assert PROXIES.scheme("127.0.0.1", ["https"], websocket=True) == "wss"
    assert PROXIES.scheme("127.0.0.1", ["wss"], websocket=False) == "https"
    assert PROXIES.scheme("127.0.0.1", ["gopher"], websocket=False) is None
    assert PROXIES.scheme("127.0.0.1", [], websocket=False) is None


# -- the scope rewrite PushhubApp applies -----------------------------------------------


def scope(kind: str, peer: tuple[str, int] | None, **headers: str) -> dict[str, Any]:
    raw = [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in headers.items()]
    return {"type": kind, "client": peer, "scheme": "ws", "headers": raw}


def test_rewrite_puts_the_client_and_scheme_in_the_scope() -> None:
    s = scope(
        "websocket", ("127.0.0.1", 5000), x_forwarded_for="203.0.113.7", x_forwarded_proto="https"
    )
    PROXIES.rewrite(s)
    assert (s["client"], s["scheme"]) == (("203.0.113.7", 0), "wss")


def test_rewrite_makes_an_unknown_client_asgi_none_never_the_proxy_address() -> None:
    # None is ASGI's "unknown client"; the HTTP API never takes it for loopback
    # (tests/integration/test_api_auth.py checks that end to end).
    s = scope("http", ("127.0.0.1", 5000))
    PROXIES.rewrite(s)
    assert s["client"] is None


def test_rewrite_leaves_a_direct_client_alone() -> None:
    s = scope("http", ("203.0.113.7", 5000), x_forwarded_for="127.0.0.1")
    PROXIES.rewrite(s)
    assert s["client"] == ("203.0.113.7", 5000)


def test_the_parsed_proxies_are_made_once_per_setting() -> None:
    assert trusted_proxies(("127.0.0.1",)) is trusted_proxies(("127.0.0.1",))
    assert not TrustedProxies([])


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0", "10.0.0.0/8, 0.0.0.0/0"])
def test_configuration_refuses_a_catch_all_network(network: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"PUSHHUB_TRUSTED_PROXIES": network})
    message = str(info.value)
    assert "PUSHHUB_TRUSTED_PROXIES" in message
    assert "a catch-all network would let any client choose its address" in message


def test_configuration_accepts_narrow_networks_and_normalizes_them() -> None:
    settings = load_settings({}, {"PUSHHUB_TRUSTED_PROXIES": "10.0.0.5/8, ::1, 0.0.0.0/1"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1", "0.0.0.0/1")
