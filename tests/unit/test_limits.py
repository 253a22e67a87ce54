"""The in-process limits as units (pushhub/limits.py): the token bucket and the per-IP
connection gate on a clock the test moves, and the origin policy's decisions.

tests/security/test_floods.py and test_origins.py check the same rules end to end on
real nodes; here every edge is exact and instant.
"""

from __future__ import annotations

import logging

import pytest

from pushhub.config import Settings
from pushhub.limits import SWEEP_EVERY, ConnectionGate, OriginPolicy, TokenBucket
from tests.support import Clock

# -- TokenBucket ---------------------------------------------------------------------------


def test_a_bucket_starts_full_and_gives_exactly_its_burst() -> None:
    bucket = TokenBucket(rate=1, burst=3, clock=Clock())

    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_a_bucket_refills_at_its_rate_and_a_refused_take_spends_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=4, burst=1, clock=clock)
    assert bucket.take()

    clock.advance(0.125)  # half a token
    assert not bucket.take()
    clock.advance(0.125)  # the other half: the refusal did not cost the first
    assert bucket.take()
    assert not bucket.take()


def test_a_bucket_idle_for_long_holds_no_more_than_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    assert bucket.take()
    assert bucket.take()

    clock.advance(3600)

    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_full_tells_whether_the_bucket_has_refilled_without_spending() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=2, clock=clock)
    assert bucket.full()
    assert bucket.take()
    assert not bucket.full()

    clock.advance(0.4)  # 0.8 of a token back: not yet
    assert not bucket.full()
    clock.advance(0.1)
    assert bucket.full()
    assert bucket.full()  # asking again spends nothing
    assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]


def test_a_bucket_slower_than_one_a_second_still_gives_one_at_start() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=0.5, burst=1, clock=clock)

    assert bucket.take()
    clock.advance(1.999)
    assert not bucket.take()
    clock.advance(0.001)
    assert bucket.take()


# -- ConnectionGate ------------------------------------------------------------------------


def gate(max_open: int = 1000, rate: float = 1000.0, clock: Clock | None = None) -> ConnectionGate:
    settings = Settings(max_connections_per_ip=max_open, connections_per_second_per_ip=rate)
    return ConnectionGate(settings, clock or Clock())


def test_open_connections_are_capped_per_address_and_other_addresses_are_not() -> None:
    limits = gate(max_open=2)

    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") == "more than 2 open connections from this address"
    assert limits.admit("10.0.0.2") is None


def test_a_released_connection_frees_its_slot() -> None:
    limits = gate(max_open=1)
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is not None

    limits.release("10.0.0.1")

    assert limits.admit("10.0.0.1") is None


def test_new_connections_a_second_are_limited_per_address_and_refill() -> None:
    clock = Clock()
    limits = gate(rate=2, clock=clock)

    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") == "more than 2 new connections a second from this address"
    assert limits.admit("10.0.0.2") is None  # its own budget
    clock.advance(0.5)
    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") is not None


def test_a_rate_below_one_a_second_admits_one_then_waits_for_a_whole_token() -> None:
    clock = Clock()
    limits = gate(rate=0.5, clock=clock)

    assert limits.admit("10.0.0.1") is None
    assert limits.admit("10.0.0.1") == "more than 0.5 new connections a second from this address"
    clock.advance(2)
    assert limits.admit("10.0.0.1") is None


def test_a_connection_refused_for_the_open_cap_spends_none_of_the_rate() -> None:
    limits = gate(max_open=1, rate=2)  # two new connections a second, the clock stands still
    assert limits.admit("10.0.0.1") is None
    for _ in range(5):
        assert limits.admit("10.0.0.1") == "more than 1 open connections from this address"

    limits.release("10.0.0.1")

    assert limits.admit("10.0.0.1") is None  # the second token was still there


def test_releasing_an_address_the_gate_never_saw_is_harmless() -> None:
    limits = gate(max_open=1)

    limits.release("10.9.9.9")

    assert limits.admit("10.9.9.9") is None
    assert limits.admit("10.9.9.9") is not None


def test_a_sweep_forgets_idle_refilled_addresses_and_keeps_the_rest() -> None:
    clock = Clock()
    limits = gate(rate=1, clock=clock)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert limits.admit(ip) is None
    limits.release("10.0.0.1")  # idle, and refilled below
    limits.release("10.0.0.2")  # idle, but opens again just before the sweep
    # 10.0.0.3 stays open
    clock.advance(1.5)
    assert limits.admit("10.0.0.2") is None
    limits.release("10.0.0.2")

    limits.sweep()

    assert set(limits._ips) == {"10.0.0.2", "10.0.0.3"}


def test_an_address_that_opens_and_closes_in_turn_still_spends_its_rate_across_a_sweep() -> None:
    clock = Clock()
    limits = gate(rate=1, clock=clock)
    assert limits.admit("10.0.0.1") is None
    limits.release("10.0.0.1")

    limits.sweep()  # not refilled: remembered

    assert limits.admit("10.0.0.1") == "more than 1 new connections a second from this address"
    clock.advance(1)
    assert limits.admit("10.0.0.1") is None


def test_every_sweep_every_releases_the_table_is_swept() -> None:
    clock = Clock()
    limits = gate(clock=clock)
    ips = [f"10.1.{i // 256}.{i % 256}" for i in range(SWEEP_EVERY)]
    for ip in ips:
        assert limits.admit(ip) is None
    clock.advance(60)
    for ip in ips[:-1]:
        limits.release(ip)
    assert len(limits._ips) == SWEEP_EVERY

    limits.release(ips[-1])

    assert limits._ips == {}


# -- OriginPolicy: allows ------------------------------------------------------------------


def test_without_an_allowlist_every_origin_is_allowed_and_a_missing_one_as_configured() -> None:
    assert OriginPolicy((), allow_missing=True).allows("https://anything.example")
    assert OriginPolicy((), allow_missing=True).allows(None)
    assert not OriginPolicy((), allow_missing=False).allows(None)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("HTTPS://APP.Example.COM", True),  # origins compare in lower case
        ("http://app.example.com", False),  # another scheme
        ("https://app.example.com:8443", False),  # another port
        ("https://app.example.com.evil.test", False),
        ("https://other.example.com", False),
        ("null", False),
    ],
)
def test_an_exact_entry_allows_that_origin_only(origin: str, allowed: bool) -> None:
    policy = OriginPolicy(("https://app.example.com",), allow_missing=False)

    assert policy.allows(origin) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.com", True),
        ("https://a-b.c9.example.com", True),  # several labels
        ("https://example.com", False),  # the wildcard needs a label
        ("https://.example.com", False),
        ("https://a..example.com", False),  # an empty label
        ("http://a.example.com", False),  # another scheme
        ("https://evil.test/.example.com", False),  # a path smuggled into the label
        ("https://user@a.example.com", False),
        ("https://evil.test:1.example.com", False),  # a port smuggled into the label
        ("https://a_b.example.com", False),
        ("https://a.example.com:8443", False),
        ("https://a.example.community", False),
    ],
)
def test_a_wildcard_entry_allows_one_or_more_dns_labels_and_nothing_else(
    origin: str, allowed: bool
) -> None:
    policy = OriginPolicy(("https://*.example.com",), allow_missing=False)

    assert policy.allows(origin) is allowed


def test_a_wildcard_entry_with_a_port_needs_that_port() -> None:
    policy = OriginPolicy(("https://*.example.com:8443",), allow_missing=False)

    assert policy.allows("https://a.example.com:8443")
    assert not policy.allows("https://a.example.com")
    assert not policy.allows("https://a.example.com:9443")


def test_with_an_allowlist_a_missing_origin_is_decided_by_allow_missing() -> None:
    assert OriginPolicy(("https://a.test",), allow_missing=True).allows(None)
    assert not OriginPolicy(("https://a.test",), allow_missing=False).allows(None)


# -- OriginPolicy: handshake_refusal -------------------------------------------------------

DEV = Settings()
ENFORCING = Settings(jwt_secret="unit-secret-0123456789abcdef-0123")


def test_an_allowlist_decides_whatever_the_host() -> None:
    policy = OriginPolicy(("https://app.example.com",), allow_missing=False)

    assert policy.handshake_refusal("https://app.example.com", "pushhub.example.com", DEV) is None
    assert policy.handshake_refusal("https://evil.test", "127.0.0.1:8000", DEV) == (
        "origin not allowed"
    )
    assert policy.handshake_refusal(None, "127.0.0.1:8000", DEV) == "origin not allowed"


def test_with_tokens_enforced_and_no_allowlist_any_origin_and_host_may_connect() -> None:
    policy = OriginPolicy((), allow_missing=False)

    assert policy.handshake_refusal("https://evil.test", "pushhub.example.com", ENFORCING) is None
    assert policy.handshake_refusal(None, "pushhub.example.com", ENFORCING) == (
        "origin not allowed"
    )


@pytest.mark.parametrize(
    ("origin", "host", "refused"),
    [
        ("http://localhost:3000", "localhost:8000", None),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", None),
        ("http://[::1]:5173", "[::1]:8000", None),
        (None, "127.0.0.1:8000", None),  # a non-browser client, allow_missing_origin on
        ("https://evil.test", "127.0.0.1:8000", "origin not allowed"),
        ("null", "localhost", "origin not allowed"),
        ("http://localhost", "evil.test", "development mode"),  # DNS rebinding
        (None, "pushhub.example.com", "development mode"),
        (None, None, "development mode"),
    ],
)
def test_in_development_mode_only_this_machines_pages_on_a_loopback_host_connect(
    origin: str | None, host: str | None, refused: str | None
) -> None:
    policy = OriginPolicy((), allow_missing=True)

    reason = policy.handshake_refusal(origin, host, DEV)

    if refused is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason.startswith(refused), reason


def test_in_development_mode_a_missing_origin_is_refused_when_configured() -> None:
    policy = OriginPolicy((), allow_missing=False)

    assert policy.handshake_refusal(None, "127.0.0.1:8000", DEV) == "origin not allowed"
    assert policy.handshake_refusal("http://localhost", "127.0.0.1:8000", DEV) is None


def test_development_mode_refusals_are_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = OriginPolicy((), allow_missing=True)

    with caplog.at_level(logging.WARNING, logger="pushhub.limits"):
        for _ in range(3):
            assert policy.handshake_refusal("https://evil.test", "localhost", DEV) is not None

    refusals = [r.getMessage() for r in caplog.records if r.name == "pushhub.limits"]
    assert len(refusals) == 1
    assert "Host 'localhost', Origin 'https://evil.test'" in refusals[0]
