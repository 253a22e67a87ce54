"""No token and no API key reaches a log, even at debug level.

This module runs last in the suite (files run in name order): its first test drives
every way a token or key can reach a node, on a node logging at debug level (uvicorn
then logs handshake URLs, request headers and frames), then reads the log of every node
the security suite started and looks for every token and key it made.
"""

from __future__ import annotations

import pytest

from tests.security.harness import (
    STARTED,
    Nodes,
    authenticate,
    bearer,
    http_client,
    open_client,
    until_closed,
)
from tests.security.tokens import (
    ISSUED,
    OTHER_SECRET,
    SECRET,
    alg_none,
    claims,
    hs256,
    tampered,
)
from tests.support import Client, PushhubNode

API_KEY = "log-key-0123456789abcdef"
WRONG_KEY = "log-wrong-key-0123456789"
OPAQUE_TOKEN = "opaque-token-0123456789abcdef"
ISSUED.extend([API_KEY, WRONG_KEY, OPAQUE_TOKEN])
#: Sent only by the last two tests: where a node's debug log records them.
HEADER_KEY = "log-header-key-0123456789"
FRAME_TOKEN = "opaque-frame-token-0123456789"


@pytest.fixture(scope="module")
def node(nodes: Nodes) -> PushhubNode:
    (started,) = nodes.start(
        {
            "PUSHHUB_JWT_SECRET": SECRET,
            "PUSHHUB_LOG_LEVEL": "debug",
            "PUSHHUB_API_KEYS": f"{API_KEY},{HEADER_KEY}",
        }
    )
    return started


def _leaks(secrets: list[str], logs: dict[str, str]) -> list[tuple[str, str]]:
    """(log, what leaked) for each secret, or each signature or payload segment of a
    token, found in a log. A segment alone is part of a credential."""
    needles = set(secrets)
    for secret in secrets:
        parts = secret.split(".")
        if len(parts) == 3:
            needles.update(p for p in parts[1:] if len(p) >= 16)
    return [
        (name, needle[:24]) for name, text in logs.items() for needle in needles if needle in text
    ]


async def _refused_by_frame(node: PushhubNode, token: str) -> None:
    client = await open_client(node)
    await client.send({"type": "connect", "token": token, "id": 1})
    _, close_code = await until_closed(client)
    assert close_code in (4002, 4501)


async def test_token_flows_at_debug_level_leave_no_token_or_key_in_any_log(
    node: PushhubNode,
) -> None:
    user = "logged-user"
    token = hs256(claims(user, channels=["log.*"]))

    # The connect frame, a subscription token, a refresh.
    client = await open_client(node)
    await authenticate(client, token)
    await client.subscribe("log.open")
    grant = hs256(claims(user, channel="private.log"))
    reply = await client.request({"type": "subscribe", "channel": "private.log", "token": grant})
    assert reply["type"] == "subscribed"
    bad_grant = hs256(claims("someone-else", channel="private.log2"))
    reply = await client.request(
        {"type": "subscribe", "channel": "private.log2", "token": bad_grant}
    )
    assert reply["code"] == "forbidden"
    reply = await client.request({"type": "refresh", "token": hs256(claims(user, ttl=900))})
    assert reply["type"] == "refreshed"

    # ?token= on the handshake URL, which uvicorn logs, alone and among other parameters.
    for url in (
        f"{node.ws_url}?token={token}",
        f"{node.ws_url}?lang=en&token={token}&v=2",
    ):
        query_client = await Client.connect(url, proxy=None)
        assert (await query_client.recv_type("connected"))["user"] == user
    for bad in (
        hs256(claims(user, ttl=-3600)),
        tampered(hs256(claims(user)), sub="root"),
        OPAQUE_TOKEN,
    ):
        refused = await open_client(node, token=bad)
        await until_closed(refused)

    # Refused tokens in connect frames.
    for bad in (
        hs256(claims(user), OTHER_SECRET),
        hs256(claims(user, ttl=-3600)),
        alg_none(claims(user)),
        hs256(claims(user), headers={"crit": ["x-unknown"], "x-unknown": 1}),
    ):
        await _refused_by_frame(node, bad)
    # A token where a user id goes, and a JWT in a cookie and an Authorization header.
    confused = await open_client(node)
    reply = await confused.request({"type": "connect", "user": hs256(claims(user))})
    assert reply["type"] == "error"
    cookie_token = hs256(claims(user))
    headed = await open_client(
        node,
        additional_headers={
            "Cookie": f"session={cookie_token}",
            "Authorization": f"Bearer {cookie_token}",
        },
    )
    await authenticate(headed, cookie_token)

    # API keys: right, wrong, in the wrong scheme, in a query string.
    async with http_client(node) as http:
        body = {"channel": "log.open", "data": 1}
        assert (await http.post("/api/publish", json=body, headers=bearer(API_KEY))).is_success
        wrong = await http.post("/api/publish", json=body, headers=bearer(WRONG_KEY))
        basic = await http.post(
            "/api/publish", json=body, headers={"Authorization": f"Basic {API_KEY}"}
        )
        query = await http.get(f"/api/stats?api_key={API_KEY}")
        assert (wrong.status_code, basic.status_code, query.status_code) == (401, 401, 401)

    logs = {str(n.log_path): n.log() for n in STARTED}
    assert str(node.log_path) in logs
    # The debug log did record the handshake URL, with the token redacted.
    assert "token=[redacted]" in logs[str(node.log_path)]
    assert _leaks(ISSUED, logs) == []


async def test_api_key_sent_on_a_websocket_handshake_is_not_logged_at_debug_level(
    node: PushhubNode,
) -> None:
    # A backend that reuses its HTTP client's headers for the socket sends its API key.
    client = await open_client(node, additional_headers=bearer(HEADER_KEY))
    await authenticate(client, hs256(claims("header-user")))
    await client.close()

    assert _leaks([HEADER_KEY], {"debug log": node.log()}) == []


async def test_token_that_is_not_a_jwt_is_not_logged_at_debug_level(node: PushhubNode) -> None:
    # A short frame is logged whole at debug level; only JWT-shaped tokens are redacted.
    await _refused_by_frame(node, FRAME_TOKEN)

    assert _leaks([FRAME_TOKEN], {"debug log": node.log()}) == []
