"""Who may use the HTTP API: API keys when configured, loopback clients when not."""

from __future__ import annotations

from collections.abc import Callable

import httpx

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
    # 127.0.0.1 is a trusted proxy here, so X-Forwarded-For names the real client.
    node = node_factory(redis_url, env={"PUSHHUB_TRUSTED_PROXIES": "127.0.0.1"})
    body = {"channel": "open", "data": 1}

    async with httpx.AsyncClient(base_url=node.http, timeout=10) as http:
        local = await http.post("/api/publish", json=body)
        remote = await http.post(
            "/api/publish", json=body, headers={"X-Forwarded-For": "203.0.113.7"}
        )

    assert local.status_code == 200
    assert remote.status_code == 403
    assert remote.json()["error"]["code"] == "forbidden"
    assert "no API keys configured" in node.log()


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
