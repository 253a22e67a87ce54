"""Trust in this machine is not trust in every page its browser shows.

A node without API keys (the default of ``./dev.sh serve``) answers the HTTP API for
loopback clients, and without a JWT key lets any socket read any channel. A browser on
the same machine is a loopback client for every page it shows, so these tests send what
a hostile page can make a browser send: a ``text/plain`` POST (a CORS "simple request",
no preflight), a foreign ``Origin`` and ``Sec-Fetch-Site``, a DNS-rebinding ``Host``,
and WebSocket handshakes from foreign pages.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support import Client, PushhubNode, free_port

API_KEY = "no-key-mode-test-key-0123456789"
JWT_SECRET = "no-key-mode-test-secret-0123456789-abcdefgh"
DURABLE = """
[[channels]]
pattern = "log:*"
durable = true
presence = false
"""


@pytest.fixture
def node(tmp_path: Path, node_factory: Callable[..., PushhubNode]) -> PushhubNode:
    """A development node as ``./dev.sh serve`` starts one: no API keys, no JWT key, the
    memory engine; ``log:*`` channels keep history."""
    config = tmp_path / "pushhub.toml"
    config.write_text(DURABLE)
    return node_factory(args=["--config", str(config)])


def own_page(node: PushhubNode, host: str | None = None) -> dict[str, str]:
    """The headers of a fetch by the dashboard at http://<host>/ to its own origin."""
    host = host or f"127.0.0.1:{node.port}"
    return {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}


async def publish(
    http: httpx.AsyncClient, body: Any, content_type: str | None, **headers: str
) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await http.post("/api/publish", content=orjson.dumps(body), headers=headers)


def assert_refused(resp: httpx.Response, status: int, code: str, *words: str) -> None:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"]


async def test_a_publish_whose_body_is_not_declared_json_gets_415_and_reaches_no_one(
    node: PushhubNode,
) -> None:
    client = await Client.connect(node.ws_url)
    await client.subscribe("news")
    forged = {"channel": "news", "data": "forged"}

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        # What a <form> or a no-preflight fetch() of any page can send to 127.0.0.1.
        plain = await publish(http, forged, "text/plain")
        form = await publish(http, forged, "application/x-www-form-urlencoded")
        multipart = await publish(http, forged, "multipart/form-data; boundary=x")
        undeclared = await publish(http, forged, None)
        lookalike = await publish(http, forged, "application/jsonp")
        # A JSON body with parameters is what browsers and most clients send.
        genuine = await publish(
            http, {"channel": "news", "data": "genuine"}, "Application/JSON; charset=utf-8"
        )

    for refused in (plain, form, multipart, undeclared, lookalike):
        assert_refused(refused, 415, "bad_request", "Content-Type: application/json")
    assert genuine.status_code == 200, genuine.text
    assert (await client.recv())["data"] == "genuine"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a file: page
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "http://127.0.0.1.evil.example:8000"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of this machine is another app
        {"Origin": "http://127.0.0.1:3000", "Sec-Fetch-Site": "same-site"},
    ],
)
async def test_requests_from_pages_of_other_sites_are_refused_with_403(
    node: PushhubNode, headers: dict[str, str]
) -> None:
    client = await Client.connect(node.ws_url)
    await client.subscribe("news")
    forged = {"channel": "news", "data": "forged"}

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        posted = await publish(http, forged, "application/json", **headers)
        read = await http.get("/api/stats", headers=headers)
        deleted = await http.delete("/api/history/log:a", headers=headers)
        genuine = await publish(http, {"channel": "news", "data": "genuine"}, "application/json")

    for refused in (posted, read, deleted):
        assert_refused(refused, 403, "forbidden", "no API keys are configured")
    assert genuine.status_code == 200
    assert (await client.recv())["data"] == "genuine"


async def test_a_dns_rebinding_page_can_neither_read_nor_delete_channel_data(
    node: PushhubNode,
) -> None:
    # The page on evil.example:<port> re-resolved its name to 127.0.0.1: its requests are
    # same-origin to the browser, from a loopback peer, and name the attacker's host.
    rebound = {
        "Host": f"evil.example:{node.port}",
        "Origin": f"http://evil.example:{node.port}",
        "Sec-Fetch-Site": "same-origin",
    }
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        kept = await publish(http, {"channel": "log:a", "data": "kept"}, "application/json")
        assert kept.status_code == 200, kept.text
        refused = [
            await http.get("/api/stats", headers=rebound),
            await http.get("/api/presence", params={"channels": "log:a"}, headers=rebound),
            await http.get("/api/presence/log:a", headers=rebound),
            await http.get("/api/presence/log:a/count", headers=rebound),
            await http.get("/api/history/log:a", headers=rebound),
            await http.delete("/api/history/log:a", headers=rebound),
            await publish(http, {"channel": "log:a", "data": "x"}, "application/json", **rebound),
            # Without the Origin header too: the Host alone gives it away.
            await http.get("/api/stats", headers={"Host": f"evil.example:{node.port}"}),
        ]
        history = await http.get("/api/history/log:a")

    for resp in refused:
        assert_refused(resp, 403, "forbidden", "loopback name", "evil.example")
    assert [m["data"] for m in history.json()["messages"]] == ["kept"]


@pytest.mark.parametrize(
    ("name", "lookalike"),
    [
        ("127.0.0.1", "127.0.0.1.nip.io"),
        ("localhost", "localhost.evil.example"),
        ("dashboard.localhost", "dashboard.localhost.evil.example"),
        ("127.8.9.10", "128.0.0.1"),
        ("[::1]", "[::2]"),
    ],
)
async def test_every_loopback_name_is_answered_and_its_lookalikes_are_not(
    node: PushhubNode, name: str, lookalike: str
) -> None:
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        with_port = await http.get("/api/stats", headers=own_page(node, f"{name}:{node.port}"))
        without_port = await http.get("/api/stats", headers=own_page(node, name))
        posted = await publish(
            http,
            {"channel": "news", "data": 1},
            "application/json; charset=utf-8",
            **own_page(node, f"{name}:{node.port}"),
        )
        deleted = await http.delete(
            "/api/history/log:a", headers=own_page(node, f"{name}:{node.port}")
        )
        other = await http.get("/api/stats", headers={"Host": f"{lookalike}:{node.port}"})

    assert (with_port.status_code, without_port.status_code) == (200, 200)
    assert (posted.status_code, deleted.status_code) == (200, 200)
    assert_refused(other, 403, "forbidden", "loopback name")


async def test_with_api_keys_the_key_alone_decides_whatever_page_sent_it(
    node_factory: Callable[..., PushhubNode],
) -> None:
    # Guards the other side of the rule, so it passes before and after the change: a
    # Bearer header cannot leave a page for another site without a preflight, which
    # pushhub never answers, so the key is the protection and nothing else is checked.
    node = node_factory(env={"PUSHHUB_API_KEYS": API_KEY})
    client = await Client.connect(node.ws_url)
    await client.subscribe("news")
    anywhere = {
        "Host": "pushhub.internal:8000",
        "Origin": "https://ops.example",
        "Sec-Fetch-Site": "cross-site",
        "Authorization": f"Bearer {API_KEY}",
    }
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        posted = await publish(http, {"channel": "news", "data": "keyed"}, "text/plain", **anywhere)
        read = await http.get("/api/stats", headers=anywhere)

    assert (posted.status_code, read.status_code) == (200, 200)
    assert (await client.recv())["data"] == "keyed"


# -- readiness ------------------------------------------------------------------------------


#: A proxy on this machine: requests from it name their client in X-Forwarded-For, while
#: requests from 127.0.0.1 stay this machine's own.
PROXY = "127.0.0.2"
REMOTE = {"X-Forwarded-For": "203.0.113.7"}


def via_proxy(node: PushhubNode) -> httpx.AsyncClient:
    """A client whose requests come from the trusted proxy's address."""
    transport = httpx.AsyncHTTPTransport(local_address=PROXY)
    return httpx.AsyncClient(base_url=node.http, timeout=10, transport=transport)


async def test_the_readiness_failure_reason_goes_only_to_this_machine(
    node_factory: Callable[..., PushhubNode],
) -> None:
    dead = free_port()  # nothing listens: the engine cannot reach Redis
    node = node_factory(f"redis://127.0.0.1:{dead}/0", env={"PUSHHUB_TRUSTED_PROXIES": PROXY})

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        local = await http.get("/readyz")
        rebound = await http.get("/readyz", headers={"Host": f"evil.example:{node.port}"})
    async with via_proxy(node) as http:
        remote = await http.get("/readyz", headers=REMOTE)

    # The reason is the engine's own words; when Redis stops answering they name its
    # address ("Redis does not answer PING: Error connecting to 10.0.0.5:6379 ...").
    assert local.status_code == 503
    assert local.json()["reason"]
    for hidden in (remote, rebound):
        assert (hidden.status_code, hidden.json()) == (503, {"status": "unavailable"})


async def test_with_api_keys_the_readiness_failure_reason_needs_the_key_or_this_machine(
    node_factory: Callable[..., PushhubNode],
) -> None:
    dead = free_port()
    node = node_factory(
        f"redis://127.0.0.1:{dead}/0",
        env={"PUSHHUB_TRUSTED_PROXIES": PROXY, "PUSHHUB_API_KEYS": API_KEY},
    )

    async with via_proxy(node) as http:
        keyed = await http.get("/readyz", headers={**REMOTE, "Authorization": f"Bearer {API_KEY}"})
        wrong = await http.get("/readyz", headers={**REMOTE, "Authorization": "Bearer nope"})
        keyless = await http.get("/readyz", headers=REMOTE)
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        local = await http.get("/readyz")

    for shown in (keyed, local):
        assert shown.status_code == 503
        assert shown.json()["reason"]
    for hidden in (wrong, keyless):
        assert (hidden.status_code, hidden.json()) == (503, {"status": "unavailable"})


# -- WebSocket handshakes in development mode ----------------------------------------------


async def handshake(
    node: PushhubNode, origin: str | None = None, host: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Open a socket to the node with this Origin and Host; (101, connected reply) when
    accepted, else the HTTP status and JSON body of the refusal. A Host other than the
    node's goes over a socket already connected to the node, as after DNS rebinding."""
    uri, sock = node.ws_url, None
    if host is not None:
        uri = f"ws://{host}/ws"
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    headers = {"Origin": origin} if origin is not None else None
    try:
        async with connect(
            uri, sock=sock, additional_headers=headers, proxy=None, open_timeout=5
        ) as ws:
            await ws.send('{"type":"connect","user":"probe"}')
            reply: dict[str, Any] = orjson.loads(await ws.recv(decode=True))
            return 101, reply
    except InvalidStatus as exc:
        body: dict[str, Any] = orjson.loads(exc.response.body or b"{}")
        return exc.response.status_code, body


async def test_in_development_mode_only_pages_of_this_machine_may_open_a_socket(
    node: PushhubNode,
) -> None:
    foreign = [
        await handshake(node, "http://evil.example"),
        await handshake(node, "https://evil.example"),
        await handshake(node, "null"),
        await handshake(node, "http://localhost.evil.example"),
    ]
    own = [
        await handshake(node, f"http://127.0.0.1:{node.port}"),  # the dashboard
        await handshake(node, "http://localhost:3000"),  # a front-end dev server
        await handshake(node, "http://[::1]:5173"),
        await handshake(node),  # no Origin: a backend, a CLI, the load tool
    ]

    for status, body in foreign:
        assert status == 403
        assert body["error"]["code"] == "forbidden"
        assert "origin not allowed" in body["error"]["message"]
    for status, reply in own:
        assert (status, reply["type"], reply["user"]) == (101, "connected", "probe")


async def test_in_development_mode_a_dns_rebinding_page_cannot_open_a_socket(
    node: PushhubNode,
) -> None:
    rebound = f"evil.example:{node.port}"
    with_origin = await handshake(node, f"http://{rebound}", host=rebound)
    without_origin = await handshake(node, host=rebound)
    by_loopback_name = await handshake(node, host=f"localhost:{node.port}")

    for status, body in (with_origin, without_origin):
        assert status == 403
        assert body["error"]["code"] == "forbidden"
        assert "loopback name" in body["error"]["message"]
    assert by_loopback_name[0] == 101
    # The developer can see why their socket was refused.
    assert "refused a WebSocket" in node.log()


async def test_an_operator_allowlist_or_enforced_tokens_keep_deciding_origins_as_before(
    node_factory: Callable[..., PushhubNode],
) -> None:
    # Guards the other side of the rule (passes before and after the change): the
    # loopback rule only stands in for a missing allowlist in development mode.
    listed = node_factory(env={"PUSHHUB_ALLOWED_ORIGINS": "https://app.example.com"})
    tokens = node_factory(env={"PUSHHUB_JWT_SECRET": JWT_SECRET})

    allowed = await handshake(listed, "https://app.example.com", host="app.example.com")
    unlisted = await handshake(listed, f"http://127.0.0.1:{listed.port}")
    any_origin = await handshake(tokens, "https://elsewhere.example", host="pushhub.example")

    assert allowed[0] == 101
    assert unlisted[0] == 403
    assert unlisted[1]["error"]["message"] == "origin not allowed"
    # With tokens enforced the socket opens and the token decides (none here).
    assert any_origin[0] == 101
    assert any_origin[1]["type"] == "error"
