"""The HTTP API in process: the app through Starlette's TestClient on the memory engine.

Refusals are raised by the routes and answered in one place (``api.exception_handlers``);
these tests pin each kind of answer without starting a server process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from pushhub.app import create_app
from pushhub.channels import ChannelOptions, ChannelRule
from pushhub.config import Settings
from pushhub.engine.memory import MemoryEngine
from pushhub.errors import EngineUnavailable

KEY = "in-process-key-0123456789"
RULES = (ChannelRule("user:*", ChannelOptions(durable=True)),)
AUTH = {"Authorization": f"Bearer {KEY}"}


class FailingEngine(MemoryEngine):
    """A memory engine whose publishes fail as an unreachable Redis would."""

    async def publish(self, channel: str, payload: bytes) -> None:
        raise EngineUnavailable("Redis is down (in a test)")


def client_for(engine: MemoryEngine) -> TestClient:
    settings = Settings(api_keys=(KEY,), channels=RULES, node_id="inproc")
    return TestClient(create_app(settings, engine=engine))


@pytest.fixture
def http() -> Iterator[TestClient]:
    with client_for(MemoryEngine(rules=RULES)) as client:
        yield client


def test_a_publish_answers_each_channels_position(http: TestClient) -> None:
    resp = http.post(
        "/api/publish", json={"channels": ["news", "user:1"], "data": {"n": 1}}, headers=AUTH
    )

    assert resp.status_code == 200
    news, user = resp.json()["results"]
    assert news == {"channel": "news"}
    assert (user["channel"], user["offset"]) == ("user:1", 1)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-key-0123456789"}, 401, "unauthorized"),
    ],
)
def test_a_refused_request_gets_its_code_and_status(
    http: TestClient, headers: dict[str, str], status: int, code: str
) -> None:
    resp = http.get("/api/stats", headers=headers)

    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert resp.headers["www-authenticate"] == "Bearer"


def test_refusals_raised_deep_in_a_route_are_answered_with_their_code(http: TestClient) -> None:
    bad_json = http.post("/api/publish", content=b"{", headers=AUTH)
    bad_channel = http.get("/api/history/a%20b", headers=AUTH)
    not_durable = http.get("/api/history/news", headers=AUTH)
    bad_limit = http.get("/api/presence/room?limit=0", headers=AUTH)

    assert (bad_json.status_code, bad_json.json()["error"]["code"]) == (400, "bad_json")
    assert (bad_channel.status_code, bad_channel.json()["error"]["code"]) == (400, "bad_channel")
    assert (not_durable.status_code, not_durable.json()["error"]["code"]) == (404, "not_found")
    assert (bad_limit.status_code, bad_limit.json()["error"]["code"]) == (400, "bad_request")
    # The security headers are on error answers too (the handlers are inside them).
    assert bad_json.headers["x-content-type-options"] == "nosniff"


def test_an_engine_failure_is_a_503_unavailable_with_retry_after() -> None:
    with client_for(FailingEngine(rules=RULES)) as http:
        resp = http.post("/api/publish", json={"channel": "news", "data": 1}, headers=AUTH)

    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "unavailable"
    assert resp.headers["retry-after"] == "1"


def test_presence_counts_come_from_the_node(http: TestClient) -> None:
    one = http.get("/api/presence/room/count", headers=AUTH)
    many = http.get("/api/presence?channels=room,user:1", headers=AUTH)

    assert one.json() == {"channel": "room", "users": 0, "connections": 0}
    assert many.json()["channels"] == {
        "room": {"users": 0, "connections": 0},
        "user:1": {"users": 0, "connections": 0},
    }


def test_readiness_names_the_engine(http: TestClient) -> None:
    resp = http.get("/readyz")

    assert (resp.status_code, resp.json()) == (200, {"status": "ready", "engine": "memory"})
