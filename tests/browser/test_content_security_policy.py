"""The dashboard and the example page work under pushhub's Content-Security-Policy, which
Chromium enforces: their own code triggers no violation, injected code does not run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import Tab
from tests.support import PushhubNode, RedisServer

pytestmark = pytest.mark.timeout(40)

#: Runs before any script of the page: records every violation the page reports.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push({ directive: e.effectiveDirective, blocked: e.blockedURI });
});
"""


def open_recording(open_tab: Callable[..., Tab], url: str) -> Tab:
    """Open ``url`` recording policy violations; the page must come with a policy that
    allows no inline code but by hash."""
    tab = open_tab()
    tab.page.add_init_script(RECORD_VIOLATIONS)
    response = tab.page.goto(url)
    assert response is not None
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy, policy
    assert "unsafe-inline" not in policy
    return tab


def violations(tab: Tab) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = tab.js("window.cspViolations")
    return found


def csp_console_errors(tab: Tab) -> list[str]:
    return [e for e in tab.console_errors if "Content Security Policy" in e]


def test_the_dashboard_works_without_a_policy_violation_and_injected_code_is_refused(
    redis_node: PushhubNode,
    redis_server: RedisServer,
    open_tab: Callable[..., Tab],
) -> None:
    tab = open_recording(open_tab, redis_node.http + "/")
    page = tab.page
    page.select_option("#interval", "500")

    # Everything the dashboard does: WebSocket, presence, statistics, an HTTP publish.
    page.fill("#user", "ops")
    page.click("#connect")
    page.wait_for_selector("#status[data-state=connected]")
    page.fill("#channel", "csp:updates")
    page.click("#subscribe-form button[type=submit]")
    page.wait_for_selector("#subscriptions .badge[data-state=subscribed]")
    tab.wait("() => document.querySelector('#stat-connections').textContent === '1'")
    page.fill("#pub-data", '{"via":"http"}')
    page.click("#publish-form button[type=submit]")
    page.wait_for_selector("#publish-result:has-text('Published to csp:updates')")
    tab.wait("() => document.querySelector('#tail').innerText.includes('\"via\":\"http\"')")
    tab.wait("() => [...document.querySelectorAll('canvas')].every(c => +c.dataset.samples >= 2)")

    assert violations(tab) == []
    assert csp_console_errors(tab) == []
    assert tab.page_errors == []

    # What an injection into the page would try: an inline script, an inline handler.
    tab.js(
        """() => {
        const script = document.createElement("script");
        script.textContent = "window.injected = true";
        document.body.append(script);
        const img = document.createElement("img");
        img.setAttribute("onerror", "window.injected = true");
        img.src = "data:,not-an-image";
        document.body.append(img);
    }"""
    )
    tab.wait("() => window.cspViolations.length >= 2")

    assert {v["directive"] for v in violations(tab)} == {"script-src-elem", "script-src-attr"}
    assert tab.js("window.injected") is None
    assert page.locator("#status").get_attribute("data-state") == "connected"


def test_the_order_board_runs_its_inline_script_and_style_under_the_policy(
    redis_node: PushhubNode,
    redis_server: RedisServer,
    open_tab: Callable[..., Tab],
) -> None:
    tab = open_recording(open_tab, redis_node.http + "/static/examples/orders.html")
    page = tab.page
    page.wait_for_selector("#status[data-state=live]")  # the inline module script ran
    redis_server.cli("PUBLISH", "order:updates", '{"orderId":"7","status":"shipped"}')
    page.wait_for_selector("tr[data-order='7'] .badge:has-text('shipped')")

    # The inline <style> applied: main is 46rem wide at most.
    assert page.eval_on_selector("main", "m => getComputedStyle(m).maxWidth") == "736px"
    assert violations(tab) == []
    assert csp_console_errors(tab) == []
    assert tab.page_errors == []
