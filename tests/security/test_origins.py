"""The origin allowlist: only the configured origins reach the application.

Every refused handshake carries a valid token in ``?token=``: the refusal is an HTTP 403
before the WebSocket is accepted, so no token is checked and no Redis work is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from websockets.typing import Origin

from tests.security.harness import Nodes, authenticate, open_client, refused_handshake
from tests.security.tokens import SECRET, claims, hs256
from tests.support import PushhubNode

ALLOWED = "https://app.example.com,https://*.example.org"
ENV = {"PUSHHUB_JWT_SECRET": SECRET, "PUSHHUB_ALLOWED_ORIGINS": ALLOWED}


@dataclass(frozen=True)
class OriginNodes:
    default: PushhubNode  # a missing Origin is accepted (the default)
    strict: PushhubNode  # PUSHHUB_ALLOW_MISSING_ORIGIN=false


@pytest.fixture(scope="module")
def origin_nodes(nodes: Nodes) -> OriginNodes:
    return OriginNodes(*nodes.start(ENV, {**ENV, "PUSHHUB_ALLOW_MISSING_ORIGIN": "false"}))


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "https://a.example.org",
        "https://deep.sub.example.org",
        "https://x-1.example.org",
    ],
)
@pytest.mark.parametrize("node_name", ["default", "strict"])
async def test_allowed_origin_reaches_the_application(
    origin_nodes: OriginNodes, origin: str, node_name: str
) -> None:
    node: PushhubNode = getattr(origin_nodes, node_name)
    client = await open_client(node, origin=Origin(origin))
    reply = await authenticate(client, hs256(claims("origin-ok")))
    assert reply["user"] == "origin-ok"


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "",
        "https://app.example.com.evil.example",
        "https://evilapp.example.com",
        "https://evil-example.org",
        "https://evilexample.org",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com/",
        "https://example.org",
        "http://a.example.org",
        "https://a.example.org:8443",
        "https://a.example.org/path",
        "https://.example.org",
        "https://a..example.org",
        "https://user@a.example.org",
        "https://*.example.org",
        "https://app.example.com, https://evil.example",
        "chrome-extension://abcdefghijklmnop",
        "file://",
    ],
)
async def test_foreign_origin_is_refused_with_403_before_authentication(
    origin_nodes: OriginNodes, origin: str
) -> None:
    token = hs256(claims("origin-refused"))
    status, body = await refused_handshake(
        origin_nodes.default, token=token, additional_headers={"Origin": origin}
    )
    assert status == 403
    assert body["error"]["code"] == "forbidden"


async def test_missing_origin_is_accepted_by_default(origin_nodes: OriginNodes) -> None:
    client = await open_client(origin_nodes.default)  # websockets sends no Origin
    assert (await authenticate(client, hs256(claims("no-origin"))))["user"] == "no-origin"


async def test_missing_origin_is_refused_when_configured(origin_nodes: OriginNodes) -> None:
    status, body = await refused_handshake(origin_nodes.strict, token=hs256(claims("no-origin")))
    assert status == 403
    assert body["error"]["code"] == "forbidden"
