"""The browser client against a node that enforces JWT authentication.

Tokens come from ``pushhub gentoken``, the way a backend's operator would make them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from tests.browser.conftest import Tab
from tests.support import ROOT, PushhubNode

pytestmark = pytest.mark.timeout(40)

SECRET = "browser-tests-jwt-secret-0123456789abcdef"


def _token(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHHUB_")}
    result = subprocess.run(
        [sys.executable, "-m", "pushhub", "gentoken", *args],
        env={**env, "PUSHHUB_JWT_SECRET": SECRET},
        capture_output=True,
        check=True,
        cwd=ROOT,
        timeout=20,
    )
    return result.stdout.decode().strip()


def test_the_client_connects_with_a_token_callback_and_refreshes_the_token_before_it_expires(
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    open_harness: Callable[[PushhubNode], Tab],
) -> None:
    node = node_factory(redis_url, env={"PUSHHUB_JWT_SECRET": SECRET})
    # A first token that lives 3 s, then a long one: only a refresh keeps the connection.
    tokens = [
        _token("--user", "alice", "--channels", "room:*", "--ttl", "3s"),
        _token("--user", "alice", "--channels", "room:*", "--ttl", "1h"),
    ]
    secret_channel = _token("--user", "alice", "--channel", "secret:9")
    tab = open_harness(node)
    tab.js(
        """tokens => harness.start({
            token: async ({ reason }) => {
                harness.log.push({ kind: "token", reason });
                return tokens.shift();
            },
        })""",
        tokens,
    )
    tab.wait_log("connected")
    connected = next(e for e in tab.log() if e["kind"] == "connected")
    assert connected["user"] == "alice"
    first_expiry = connected["expiresAt"]
    assert isinstance(first_expiry, int)

    tab.js("harness.subscribe('room:1')")  # granted by the token's room:* pattern
    tab.js("token => harness.subscribe('secret:9', { token })", secret_channel)
    tab.js("harness.subscribe('secret:10')")  # neither granted nor tokened
    tab.wait_log("subscribed", channel="room:1")
    tab.wait_log("subscribed", channel="secret:9")
    tab.wait_log("sub-error", channel="secret:10", code="forbidden")

    tab.wait_log("refreshed")
    refreshed = next(e for e in tab.log() if e["kind"] == "refreshed")
    assert refreshed["expiresAt"] > first_expiry + 3000
    # Past the first token's expiry the connection is still the same one, and live.
    tab.wait("expiry => Date.now() / 1000 > expiry + 0.5", first_expiry)
    httpx.post(
        f"{node.http}/api/publish", json={"channel": "room:1", "data": "still here"}, timeout=5
    ).raise_for_status()
    tab.wait_log("message", channel="room:1")
    kinds = [e["kind"] for e in tab.log()]
    assert kinds.count("connected") == 1
    assert [e["reason"] for e in tab.log() if e["kind"] == "token"] == ["connect", "refresh"]
    assert "disconnected" not in kinds
    assert tab.page_errors == []


def test_without_a_token_an_enforcing_server_refuses_and_the_client_does_not_retry(
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    open_harness: Callable[[PushhubNode], Tab],
) -> None:
    node = node_factory(redis_url, env={"PUSHHUB_JWT_SECRET": SECRET})
    tab = open_harness(node)
    tab.js("harness.start({})")
    tab.wait("() => window.hub.state === 'failed'")
    closed = [e for e in tab.log() if e["kind"] == "disconnected"]
    assert [(e["code"], e["reconnect"]) for e in closed] == [(4501, False)]
    assert [e["code"] for e in tab.log() if e["kind"] == "error"] == ["unauthorized"]
    assert tab.page_errors == []
