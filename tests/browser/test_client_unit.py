"""Unit tests of the browser client (static/pushhub.js), run in Chromium.

The tests are in client_unit.js; each Python test runs one of its exports in a page whose
origin is served by Playwright from the repository's files, so no server is involved.
Where the client needs a server, the JavaScript side scripts a stand-in WebSocket.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Route

from tests.browser.conftest import HARNESS, Tab
from tests.support import ROOT

ORIGIN = "http://pushhub.test"
pytestmark = pytest.mark.timeout(30)


def _serve_repository(route: Route) -> None:
    path = route.request.url.removeprefix(ORIGIN).split("?")[0]
    if path == "/__test__/harness.html":
        route.fulfill(status=200, content_type="text/html", body=HARNESS)
        return
    if path.startswith("/__test__/"):
        file = ROOT / "tests" / "browser" / path.removeprefix("/__test__/")
    elif path.startswith("/static/"):
        file = ROOT / path.lstrip("/")
    else:
        route.fulfill(status=404, body="not found")
        return
    kind = "text/javascript" if file.suffix == ".js" else mimetypes.guess_type(file.name)[0]
    if not file.is_file():
        route.fulfill(status=404, body="not found")
        return
    route.fulfill(status=200, content_type=kind or "text/plain", body=file.read_bytes())


@pytest.fixture
def unit(open_tab: Callable[..., Tab]) -> Callable[[str], Any]:
    """Run one export of client_unit.js and return what it resolved to."""
    tab = open_tab()
    tab.page.route(f"{ORIGIN}/**", _serve_repository)
    tab.page.goto(f"{ORIGIN}/__test__/harness.html")

    def run(name: str) -> Any:
        result = tab.js(
            "name => import('/__test__/client_unit.js').then(tests => tests[name]())", name
        )
        assert tab.page_errors == [], tab.page_errors
        return result

    return run


def test_backoff_delays_are_fully_jittered_between_zero_and_a_doubling_ceiling(
    unit: Callable[[str], Any],
) -> None:
    result = unit("backoffSchedule")
    # About 0.5 s doubling to a 20 s cap.
    assert result["ceilings"] == [500, 1000, 2000, 4000, 8000, 16000] + [20000] * 6
    assert result["floors"] == [0] * 12
    for attempt, samples in result["samples"].items():
        ceiling = min(20000, 500 * 2 ** int(attempt))
        assert all(0 <= s <= ceiling for s in samples), attempt
        # Full jitter: spread over the whole range, not clustered at the ceiling.
        assert min(samples) < 0.05 * ceiling, attempt
        assert max(samples) > 0.95 * ceiling, attempt
        assert 0.4 * ceiling < sum(samples) / len(samples) < 0.6 * ceiling, attempt
        assert len(set(samples)) > 1990, attempt
    # Absurd attempt numbers stay within bounds (NaN and negatives count as the first
    # attempt, infinity as a late one); a fraction counts as its floor.
    assert result["odd"] == [20000, 20000, 500, 500, 2000]
    assert result["custom"] == [100, 200, 250, 250]


def test_close_codes_follow_the_protocols_reconnect_ranges(unit: Callable[[str], Any]) -> None:
    table = {int(code): again for code, again in unit("closeCodes").items()}
    assert {code for code, again in table.items() if again} == {
        1001,
        1006,
        1009,
        1011,
        1012,
        1013,
        1014,
        4000,
        4001,
        4002,
        4003,
        4004,
        4005,
        4499,
    }


def test_the_client_reconnects_only_after_close_codes_that_allow_it(
    unit: Callable[[str], Any],
) -> None:
    assert unit("closeCodesDecideWhetherTheClientReconnects") == {
        "4001": True,
        "1012": True,
        "1006": True,
        "4002": True,
        "4500": False,
        "4501": False,
        "1000": False,
        "1002": False,
        "4002 static token": False,
    }


def test_tokens_are_fetched_for_each_connection_and_refreshed_before_expiry(
    unit: Callable[[str], Any],
) -> None:
    result = unit("tokensAreFetchedForEachConnectionAndRefreshedBeforeExpiry")
    assert result == {"reasons": ["connect", "refresh", "connect"], "refreshed": 1}


def test_a_failing_token_callback_is_reported_and_retried(unit: Callable[[str], Any]) -> None:
    assert unit("aFailingTokenCallbackIsReportedAndRetried") == {"calls": 2}


def test_coalesced_frames_are_split_and_durable_channels_recover_from_their_last_position(
    unit: Callable[[str], Any],
) -> None:
    assert unit("coalescedFramesAreSplitAndDurableChannelsRecoverFromTheirLastPosition") == [
        {"recovered": None, "resubscribed": False, "offset": 0, "epoch": "e1"},
        {"recovered": True, "resubscribed": True, "offset": 4, "epoch": "e1"},
        {"recovered": False, "resubscribed": True, "offset": 9, "epoch": "e2"},
    ]


def test_server_pings_keep_a_connection_and_silence_drops_it(unit: Callable[[str], Any]) -> None:
    # ping_interval 0.1 s plus a 0.1 s margin: dropped after about 0.2 s of silence.
    assert unit("serverPingsKeepTheConnectionAndSilenceDropsIt")["detectedAfterMs"] < 1000


def test_requests_fail_fast_without_a_connection(unit: Callable[[str], Any]) -> None:
    assert unit("requestsFailFastWithoutAConnection") == ["disconnected", "disconnected"]


def test_unsubscribe_and_close_stop_everything_and_connect_resumes(
    unit: Callable[[str], Any],
) -> None:
    assert unit("unsubscribeAndCloseStopEverything") == "ok"


def test_a_refused_connect_follows_the_close_code_the_server_sends_after_it(
    unit: Callable[[str], Any],
) -> None:
    assert unit("aRefusedConnectFollowsTheServersCloseCode") == {
        # Expired: fetch a fresh token and connect again; too many connections: back off.
        "token_expired 4002": {"state": "connected", "code": 4002, "sockets": 2},
        "unauthorized 4004": {"state": "connected", "code": 4004, "sockets": 2},
        # An invalid token, or a connect frame the server cannot accept: stop.
        "unauthorized 4501": {"state": "failed", "code": 4501, "sockets": 1},
        "bad_request null": {"state": "failed", "code": 4500, "sockets": 1},
    }


def test_a_ticks_presence_events_in_one_frame_and_counts_past_the_bound_reach_the_app(
    unit: Callable[[str], Any],
) -> None:
    assert unit("presenceEventsComeInOneFrameAndCountsPastTheBound") == [
        ["join", "ada"],
        ["join", "n.9"],
        ["leave", "ada"],
        ["count", 1001, 1200, False],
        ["count", 999, 1000, True],
    ]
