"""A node logging at debug dumps handshake headers; credentials in them never reach its log."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support import Client, PushhubNode

COOKIE_VALUE = "s3ss10n-0f-another-app-on-this-domain"
BASIC = "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


@pytest.mark.parametrize("level", ["debug", "trace"])
async def test_cookie_and_authorization_values_never_reach_a_debug_log(
    node_factory: Callable[..., PushhubNode], level: str
) -> None:
    node = node_factory(args=["--log-level", level])
    # A browser sends the cookies of the page's domain with every handshake and request.
    headers = {"Cookie": f"sid={COOKIE_VALUE}; theme=dark", "Authorization": f"Basic {BASIC}"}

    client = await Client.connect(node.ws_url, additional_headers=headers)
    await client.send({"type": "connect", "user": "logged"})
    assert (await client.recv())["type"] == "connected"
    await client.close()
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        assert (await http.get("/healthz", headers=headers)).status_code == 200
    node.stop()  # the log is complete once the process has exited
    log = node.log()

    # The log did dump the handshake's headers, the credentials' among them...
    assert "< host: 127.0.0.1" in log
    assert "< cookie: [redacted]" in log
    assert "< authorization: [redacted]" in log
    # ...and not one of their values.
    assert COOKIE_VALUE not in log
    assert "theme=dark" not in log
    assert BASIC not in log
