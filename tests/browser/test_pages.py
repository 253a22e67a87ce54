"""The pages served from static/: the dashboard at / and the order status board example."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.browser.conftest import ARTIFACTS, Tab
from tests.support import PushhubNode, RedisServer

pytestmark = pytest.mark.timeout(40)

#: Count the pixels of a canvas drawn in the chart's first series colour: a line exists.
SERIES_PIXELS = """canvas => {
    const ctx = canvas.getContext("2d");
    const probe = document.createElement("canvas").getContext("2d");
    probe.fillStyle = getComputedStyle(canvas).getPropertyValue("--series-1").trim();
    probe.fillRect(0, 0, 1, 1);
    const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
        const [dr, dg, db] = [data[i] - r, data[i + 1] - g, data[i + 2] - b];
        const distance = Math.abs(dr) + Math.abs(dg) + Math.abs(db);
        if (data[i + 3] > 200 && distance < 30) n++;
    }
    return n;
}"""


def _join(ws: ClientConnection, user: str, channel: str) -> None:
    """Join ``channel`` as ``user`` over a blocking WebSocket (Playwright's sync API owns
    this thread's event loop)."""
    for n, frame in enumerate(
        ({"type": "connect", "user": user}, {"type": "subscribe", "channel": channel}), 1
    ):
        ws.send(orjson.dumps({**frame, "id": n}).decode())
        while not any(orjson.loads(line).get("id") == n for line in str(ws.recv(10)).split("\n")):
            pass


def _text(tab: Tab, selector: str) -> str:
    return tab.page.locator(selector).inner_text()


def test_the_dashboard_connects_shows_live_counts_and_charts_without_console_errors(
    redis_node: PushhubNode,
    redis_server: RedisServer,
    open_tab: Callable[..., Tab],
) -> None:
    tab = open_tab(redis_node.http + "/")
    page = tab.page
    assert page.title() == "pushhub dashboard"
    page.select_option("#interval", "500")

    # Keyboard only: Tab to the user field, type, Enter submits the form.
    for _ in range(10):
        if page.evaluate("document.activeElement.id") == "user":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "user"
    page.keyboard.type("ops")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status[data-state=connected]")
    assert _text(tab, "#status") == "Connected as ops"

    page.focus("#channel")
    page.keyboard.type("order:updates")
    page.keyboard.press("Enter")
    page.wait_for_selector("#subscriptions .badge[data-state=subscribed]")
    tab.wait("() => document.querySelector('#subscriptions .members')?.innerText === 'ops'")

    # Live counts from GET /api/stats: this page's own connection and channel.
    tab.wait("() => document.querySelector('#stat-connections').textContent === '1'")
    tab.wait("() => document.querySelector('#stat-channels').textContent === '1'")

    # A message from redis-cli and one from the dashboard's own publish form reach the tail.
    assert redis_server.cli("PUBLISH", "order:updates", '{"orderId":"123","status":"shipped"}')
    tab.wait("() => document.querySelector('#tail').innerText.includes('\"status\":\"shipped\"')")
    page.fill("#pub-data", '{"orderId":"124","status":"packed"}')
    page.click("#publish-form button[type=submit]")
    page.wait_for_selector("#publish-result:has-text('Published to order:updates')")
    tab.wait("() => document.querySelector('#tail').innerText.includes('\"status\":\"packed\"')")

    # The charts have several samples and the first series is drawn on each.
    tab.wait("() => [...document.querySelectorAll('canvas')].every(c => +c.dataset.samples >= 4)")
    tab.wait("() => +document.querySelector('#stat-delivered').textContent >= 0")
    for chart in ("#chart-connections", "#chart-messages"):
        assert page.eval_on_selector(chart, SERIES_PIXELS) > 50, chart
    assert "Connections: 1 now" in (page.get_attribute("#chart-connections", "aria-label") or "")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    # Readable on a phone: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    tab.wait("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(ARTIFACTS / "dashboard-narrow.png"), full_page=True)

    assert tab.console_errors == [], tab.console_errors
    assert tab.page_errors == [], tab.page_errors


def test_the_dashboard_shows_counts_past_the_member_bound_and_the_list_again_below_it(
    redis_url: str,
    node_factory: Callable[..., PushhubNode],
    open_tab: Callable[..., Tab],
    tmp_path: Path,
) -> None:
    config = tmp_path / "pushhub.toml"
    config.write_text('[[channels]]\npattern = "big:*"\njoin_leave_max_members = 2\n')
    node = node_factory(redis_url, args=["--config", str(config)])
    tab = open_tab(node.http + "/")
    page = tab.page
    page.fill("#user", "ops")
    page.press("#user", "Enter")
    page.wait_for_selector("#status[data-state=connected]")
    page.fill("#channel", "big:1")
    page.press("#channel", "Enter")
    tab.wait("() => document.querySelector('#subscriptions .members')?.innerText === 'ops'")

    with contextlib.ExitStack() as stack:
        others = []
        for user in ("ann", "ben", "cat"):
            ws = stack.enter_context(connect(node.ws_url, open_timeout=10))
            _join(ws, user, "big:1")
            others.append(ws)
        # Past the bound of 2: counts, no list.
        tab.wait(
            "() => document.querySelector('#subscriptions p.muted')?.textContent"
            " === '4 users, 4 connections (too many to list live)'"
        )
        assert page.inner_text("#subscriptions .members") == "", "the stale list is gone"
        for ws in others[1:]:
            ws.close()
        # Back within the bound: the list is read again and kept live.
        tab.wait(
            "() => [...document.querySelectorAll('#subscriptions .members li')]"
            ".map(li => li.textContent).sort().join(',') === 'ann,ops'"
        )
    assert tab.console_errors == [], tab.console_errors
    assert tab.page_errors == [], tab.page_errors


def test_the_order_board_updates_when_a_backend_publishes_with_redis_cli(
    redis_node: PushhubNode,
    redis_server: RedisServer,
    open_tab: Callable[..., Tab],
) -> None:
    tab = open_tab(redis_node.http + "/static/examples/orders.html")
    tab.page.wait_for_selector("#status[data-state=live]")

    redis_server.cli("PUBLISH", "order:updates", '{"orderId":"123","status":"packed"}')
    tab.page.wait_for_selector("tr[data-order='123'] .badge:has-text('packed')")
    redis_server.cli("PUBLISH", "order:updates", '{"orderId":"123","status":"shipped"}')
    tab.page.wait_for_selector("tr[data-order='123'] .badge:has-text('shipped')")
    httpx.post(
        f"{redis_node.http}/api/publish",
        json={"channel": "order:updates", "data": {"orderId": 124, "status": "delivered"}},
        timeout=5,
    ).raise_for_status()
    tab.page.wait_for_selector("tr[data-order='124'] .badge:has-text('delivered')")

    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "orders.png"), full_page=True)
    rows = tab.page.locator("#orders tr").all_inner_texts()
    assert [row.split("\t")[:2] for row in rows] == [["124", "delivered"], ["123", "shipped"]]
    assert tab.console_errors == []
    assert tab.page_errors == []
