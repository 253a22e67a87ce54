"""Fixtures for the browser tests: a real headless Chromium driven by Playwright for Python.

The browser is Debian's ``chromium`` package (``./dev.sh test`` installs it), never a
browser build downloaded by ``playwright install``. Without it these tests fail with a
message saying so: a silent skip would let CI pass without ever running them.

Playwright's synchronous API keeps the tests plain functions; every wait in it is bounded
by the context's default timeout or an explicit one.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.support import ROOT, PushhubNode

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots land here; the directory is gitignored.
ARTIFACTS = ROOT / "artifacts"
#: Milliseconds any single browser operation or wait may take.
TIMEOUT_MS = 10_000
HARNESS = Path(__file__).with_name("harness.html").read_text()


class Tab:
    """A page, and the console errors and uncaught exceptions it produced."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def wait(self, predicate: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS) -> Any:
        """Wait until the JavaScript ``predicate`` (a function of ``arg``) is truthy."""
        return self.page.wait_for_function(predicate, arg=arg, timeout=timeout_ms).json_value()

    def log(self) -> list[dict[str, Any]]:
        """What the harness recorded (harness pages only)."""
        entries: list[dict[str, Any]] = self.js("window.harness.log")
        return entries

    def wait_log(
        self, kind: str, count: int = 1, timeout_ms: int = TIMEOUT_MS, **match: Any
    ) -> None:
        """Wait until the harness has recorded ``count`` ``kind`` entries matching ``match``."""
        try:
            self.wait(
                "([kind, match, count]) => window.harness.count(kind, match) >= count",
                [kind, match, count],
                timeout_ms,
            )
        except Exception as exc:
            raise AssertionError(
                f"no {count} x {kind} {match} within {timeout_ms} ms; log: {self.log()}"
            ) from exc


@pytest.fixture(autouse=True)
def _close_clients() -> None:
    """Replaces the suite's async fixture of this name: browser tests open no Python
    WebSocket clients, and Playwright's sync API keeps an event loop running in this
    thread, where pytest-asyncio could not run one of its own."""


@pytest.fixture(scope="package")
def chromium() -> Iterator[BrowserContext]:
    """One headless Chromium for the browser tests, on a fresh profile directory. Package
    scope: Playwright's sync API runs a loop in the main thread, which must be gone
    before the asyncio tests of the other packages run."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package. "
            "Run ./dev.sh test (it installs it) or: apt-get install chromium",
            pytrace=False,
        )
    profile = tempfile.mkdtemp(prefix="pushhub-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                timeout=30_000,
                viewport={"width": 1280, "height": 900},
            )
            context.set_default_timeout(TIMEOUT_MS)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def open_tab(chromium: BrowserContext) -> Iterator[Callable[..., Tab]]:
    """Open pages in the shared browser; each is closed after the test."""
    pages: list[Page] = []

    def open_(url: str | None = None) -> Tab:
        page = chromium.new_page()
        pages.append(page)
        tab = Tab(page)
        if url is not None:
            page.goto(url)
        return tab

    yield open_
    for page in pages:
        if not page.is_closed():
            page.close()


@pytest.fixture
def open_harness(open_tab: Callable[..., Tab]) -> Callable[[PushhubNode], Tab]:
    """Open the harness page on a node's origin, with pushhub.js imported and ready.

    The page is a real document from the node (``/healthz``) rewritten with the harness:
    Chromium's local network access checks block a document that Playwright made up
    (``page.route``) from opening sockets to loopback, as they would a public site.
    """

    def open_(node: PushhubNode) -> Tab:
        tab = open_tab()
        # /healthz is JSON: the browser also asks for a favicon, which pushhub does not have.
        tab.page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        tab.page.goto(f"{node.http}/healthz")
        tab.page.set_content(HARNESS)
        tab.wait("() => document.body.dataset.ready === '1'")
        return tab

    return open_


@pytest.fixture
def start_again(
    node_factory: Callable[..., PushhubNode],
) -> Callable[[PushhubNode], PushhubNode]:
    """Start a new node process on a stopped node's port, with the same Redis, environment
    and arguments: a restart as a deploy does it. New nodes are stopped after the test."""

    def start(node: PushhubNode) -> PushhubNode:
        assert node.proc is None, "stop the node first"
        new: PushhubNode = node_factory(
            node.redis_url, env=node.extra_env, args=node.extra_args, port=node.port
        )
        return new

    return start
