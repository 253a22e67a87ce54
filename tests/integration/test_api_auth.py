"""Who may use the HTTP API: API keys when configured, loopback clients when not."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.support import Client, PushhubNode

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


async def test_with_api_keys_publish_requires_one_of_them(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    node = node_factory(redis_url, env={"PUSHHUB_API_KEYS": f"{KEY_A},{KEY_B}"})
    client = await Client.connect(node.ws_url)
    await client.subscribe("keyed")
    body = {"channel": "keyed", "data": 1}

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        missing = await http.post("/api/publish", json=body)
        wrong = await http.post(
            "/api/publish", json=body, headers={"Authorization": "Bearer not-a-key"}
        )
        basic = await http.post(
            "/api/publish", json=body, headers={"Authorization": f"Basic {KEY_A}"}
        )
        stats = await http.get("/api/stats")
        ok_a = await http.post(
            "/api/publish", json=body, headers={"Authorization": f"Bearer {KEY_A}"}
        )
        ok_b = await http.post(
            "/api/publish", json=body, headers={"Authorization": f"bearer {KEY_B}"}
        )

    for refused in (missing, wrong, basic, stats):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"
    assert (ok_a.status_code, ok_b.status_code) == (200, 200)
    assert [(await client.recv())["data"] for _ in range(2)] == [1, 1]
    assert KEY_A not in node.log()
    assert KEY_B not in node.log()


async def test_without_api_keys_only_loopback_clients_may_publish(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    # 127.0.0.1 stands for a proxy on the node's host, trusted: the client is the
    # right-most X-Forwarded-For entry that is not itself a trusted proxy.
    node = node_factory(redis_url, env={"PUSHHUB_TRUSTED_PROXIES": "127.0.0.1"})
    body = {"channel": "open", "data": 1}

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        # A loopback client of the proxy: local.
        local = await http.post("/api/publish", json=body, headers={"X-Forwarded-For": "127.0.0.2"})
        # A request made on the proxy host itself: every entry is a trusted proxy, so the
        # left-most one is the client, and it is loopback.
        proxy_host = await http.post(
            "/api/publish", json=body, headers={"X-Forwarded-For": "127.0.0.1"}
        )
        remote = await http.post(
            "/api/publish", json=body, headers={"X-Forwarded-For": "203.0.113.7"}
        )

    assert local.status_code == 200
    assert proxy_host.status_code == 200
    assert remote.status_code == 403
    assert remote.json()["error"]["code"] == "forbidden"
    assert "no API keys configured" in node.log()


async def test_a_spoofed_left_most_x_forwarded_for_does_not_make_a_remote_client_local(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    node = node_factory(redis_url, env={"PUSHHUB_TRUSTED_PROXIES": "127.0.0.1"})

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        # The client sent "X-Forwarded-For: 127.0.0.1"; the proxy appended its address.
        spoofed = await http.post(
            "/api/publish",
            json={"channel": "open", "data": 1},
            headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.7"},
        )
        # Two headers are one list.
        split = await http.post(
            "/api/publish",
            json={"channel": "open", "data": 1},
            headers=[("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "203.0.113.7")],
        )

    assert spoofed.status_code == 403
    assert split.status_code == 403


async def test_a_trusted_proxy_that_names_no_client_is_not_a_loopback_client(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    # A proxy on the node's host that sends no usable X-Forwarded-For would otherwise
    # make every client look local.
    node = node_factory(redis_url, env={"PUSHHUB_TRUSTED_PROXIES": "127.0.0.1"})
    body = {"channel": "open", "data": 1}

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        missing = await http.post("/api/publish", json=body)
        garbage = await http.post("/api/publish", json=body, headers={"X-Forwarded-For": "unknown"})

    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "forbidden"
    assert garbage.status_code == 403


async def test_behind_a_trusted_proxy_per_ip_limits_count_the_forwarded_client(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    env = {"PUSHHUB_TRUSTED_PROXIES": "127.0.0.1", "PUSHHUB_MAX_CONNECTIONS_PER_IP": "1"}
    node = node_factory(redis_url, env=env)

    first = await Client.connect(node.ws_url, additional_headers={"X-Forwarded-For": "203.0.113.1"})
    with pytest.raises(InvalidStatus) as same:
        await Client.connect(node.ws_url, additional_headers={"X-Forwarded-For": "203.0.113.1"})
    other = await Client.connect(node.ws_url, additional_headers={"X-Forwarded-For": "203.0.113.2"})

    assert same.value.response.status_code == 429
    for client in (first, other):
        await client.subscribe("per-ip")


async def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    node = node_factory(redis_url)  # no trusted proxies
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        spoofed = await http.post(
            "/api/publish",
            json={"channel": "open", "data": 1},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
    # The header is not believed: the request is what it is, a loopback one.
    assert spoofed.status_code == 200


async def test_health_endpoints_need_no_key(
    redis_url: str, node_factory: Callable[..., PushhubNode]
) -> None:
    node = node_factory(redis_url, env={"PUSHHUB_API_KEYS": KEY_A})
    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert health.json()["status"] == "ok"
    assert ready.json() == {"status": "ready", "engine": "redis"}


async def test_memory_engine_node_serves_the_same_protocol(
    node_factory: Callable[..., PushhubNode],
) -> None:
    node = node_factory()  # no Redis URL: the embedded memory engine
    client = await Client.connect(node.ws_url)
    await client.subscribe("order:updates")

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        ready = await http.get("/readyz")
        resp = await http.post("/api/publish", json={"channel": "order:updates", "data": {"a": 1}})

    assert ready.json() == {"status": "ready", "engine": "memory"}
    assert resp.status_code == 200
    assert await client.recv() == {"type": "message", "channel": "order:updates", "data": {"a": 1}}
