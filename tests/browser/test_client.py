"""The browser client against real pushhub processes, a real redis-server and redis-cli.

Each test opens the harness page (harness.html) on a node's origin; the page imports
/static/pushhub.js as an application would and records what the client reports.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext

from tests.browser.conftest import Tab
from tests.support import PushhubNode, RedisServer

pytestmark = pytest.mark.timeout(40)

DURABLE = """
[[channels]]
pattern = "user:*"
durable = true
"""

#: Reconnect quickly in tests: the default backoff starts at 0.5 s and grows to 20 s.
FAST = {"backoff": {"base": 100, "cap": 500}}


def _messages(tab: Tab, channel: str) -> list[dict[str, Any]]:
    return [e for e in tab.log() if e["kind"] == "message" and e["channel"] == channel]


def _publish_http(node: PushhubNode, channel: str, data: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{node.http}/api/publish", json={"channel": channel, "data": data}, timeout=5
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def test_a_page_receives_messages_published_with_redis_cli_and_over_http(
    redis_node: PushhubNode,
    redis_server: RedisServer,
    open_harness: Callable[[PushhubNode], Tab],
) -> None:
    tab = open_harness(redis_node)
    tab.js("harness.start({})")
    tab.js("harness.subscribe('order:updates')")
    tab.wait_log("subscribed", channel="order:updates")

    published = redis_server.cli("PUBLISH", "order:updates", '{"orderId":"123","status":"shipped"}')
    assert published.strip() == "1"
    tab.wait_log("message", channel="order:updates")
    _publish_http(redis_node, "order:updates", {"orderId": "124", "status": "packed"})
    tab.wait_log("message", 2, channel="order:updates")

    assert [m["data"] for m in _messages(tab, "order:updates")] == [
        {"orderId": "123", "status": "shipped"},
        {"orderId": "124", "status": "packed"},
    ]
    assert tab.page_errors == []
    assert tab.console_errors == []


def test_after_a_server_restart_the_page_reconnects_resubscribes_and_recovers_what_it_missed(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    start_again: Callable[[PushhubNode], PushhubNode],
    open_harness: Callable[[PushhubNode], Tab],
    tmp_path: Path,
) -> None:
    config = tmp_path / "pushhub.toml"
    config.write_text(DURABLE)
    node = node_factory(redis_url, args=["--config", str(config)])
    tab = open_harness(node)
    tab.js("options => harness.start(options)", FAST)
    tab.js("harness.subscribe('user:7'); harness.subscribe('order:updates')")
    tab.wait_log("subscribed", channel="user:7")
    tab.wait_log("subscribed", channel="order:updates")
    _publish_http(node, "user:7", {"n": 1})
    tab.wait_log("message", channel="user:7")

    node.stop()  # SIGTERM: the node closes its sockets with 1012 (service restart)
    tab.wait_log("disconnected", code=1012, reconnect=True)
    # Published while no node runs: the Redis Function keeps them in the channel's history.
    for n in (2, 3):
        assert redis_server.cli("FCALL", "pushhub_publish", "1", "user:7", f'{{"n":{n}}}')
    node = start_again(node)

    tab.wait_log("subscribed", channel="user:7", resubscribed=True)
    tab.wait_log("subscribed", channel="order:updates", resubscribed=True)
    durable = _messages(tab, "user:7")
    assert [(m["offset"], m["data"]) for m in durable] == [
        (1, {"n": 1}),
        (2, {"n": 2}),
        (3, {"n": 3}),
    ]
    resubscribed = {
        e["channel"]: e for e in tab.log() if e["kind"] == "subscribed" and e["resubscribed"]
    }
    assert resubscribed["user:7"]["recovered"] is True
    assert resubscribed["user:7"]["offset"] == 3
    # A channel that is not durable cannot say what it missed: reported as not recovered.
    assert resubscribed["order:updates"]["recovered"] is False

    # Live again on both channels, over both ways of publishing.
    _publish_http(node, "user:7", {"n": 4})
    assert redis_server.cli("PUBLISH", "order:updates", "back").strip() == "1"
    tab.wait_log("message", 4, channel="user:7")
    tab.wait_log("message", channel="order:updates")
    assert _messages(tab, "user:7")[-1]["offset"] == 4
    connected = [e for e in tab.log() if e["kind"] == "connected"]
    assert [c["reconnected"] for c in connected] == [False, True]
    assert connected[0]["client"] != connected[1]["client"]
    assert tab.page_errors == []


def test_a_second_page_joining_and_leaving_updates_the_first_pages_presence_list(
    redis_node: PushhubNode,
    open_harness: Callable[[PushhubNode], Tab],
) -> None:
    first = open_harness(redis_node)
    first.js("harness.start({user: 'alice', info: {name: 'Alice'}})")
    first.js("harness.subscribe('room:1')")
    first.wait_log("presence", channel="room:1")
    assert first.js("harness.members('room:1')") == ["alice"]

    second = open_harness(redis_node)
    second.js("harness.start({user: 'bob'})")
    second.js("harness.subscribe('room:1')")
    first.wait_log("join", channel="room:1", user="bob")
    assert first.js("harness.members('room:1')") == ["alice", "bob"]
    assert first.page.locator("#members li").all_inner_texts() == ["room:1 alice", "room:1 bob"]

    second.page.close()  # the tab goes away: its socket closes, bob leaves
    first.wait_log("leave", channel="room:1", user="bob")
    assert first.js("harness.members('room:1')") == ["alice"]
    assert first.page.locator("#members li").all_inner_texts() == ["room:1 alice"]
    assert first.page_errors == []
    assert first.console_errors == []


def test_a_server_that_stops_sending_pings_is_left_and_reconnected_to(
    redis_server: RedisServer,
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    open_harness: Callable[[PushhubNode], Tab],
) -> None:
    node = node_factory(redis_url, env={"PUSHHUB_PING_INTERVAL": "1", "PUSHHUB_PING_TIMEOUT": "4"})
    tab = open_harness(node)
    tab.js(
        "options => harness.start(options)",
        {**FAST, "pingMargin": 500, "connectTimeout": 1000},
    )
    tab.js("harness.subscribe('order:updates')")
    tab.wait_log("subscribed", channel="order:updates")
    assert [e["pingInterval"] for e in tab.log() if e["kind"] == "connected"] == [1]

    assert node.proc is not None
    # A frozen process keeps its sockets open but says nothing: a half-dead connection.
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        tab.wait(
            "() => harness.log.some(e => e.kind === 'disconnected' && /no ping/.test(e.reason))"
        )
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    tab.wait_log("subscribed", channel="order:updates", resubscribed=True)
    assert redis_server.cli("PUBLISH", "order:updates", "alive").strip() == "1"
    tab.wait_log("message", channel="order:updates")
    assert tab.page_errors == []


def test_the_client_waits_while_the_browser_is_offline_and_reconnects_when_it_is_online(
    redis_node: PushhubNode,
    open_harness: Callable[[PushhubNode], Tab],
    chromium: BrowserContext,
) -> None:
    tab = open_harness(redis_node)
    tab.js("options => harness.start(options)", FAST)
    tab.js("harness.subscribe('order:updates')")
    tab.wait_log("subscribed", channel="order:updates")

    chromium.set_offline(True)
    try:
        tab.wait_log("offline")
        tab.wait("() => window.hub.state === 'reconnecting'")
        dropped = [e for e in tab.log() if e["kind"] == "disconnected"]
        # No retry is scheduled while offline (delay null): it would only fail.
        assert [(e["reason"], e["delay"]) for e in dropped] == [("browser offline", None)]
    finally:
        chromium.set_offline(False)
    tab.wait_log("online")
    tab.wait_log("subscribed", channel="order:updates", resubscribed=True)
    _publish_http(redis_node, "order:updates", "online again")
    tab.wait_log("message", channel="order:updates")
    assert tab.page_errors == []
