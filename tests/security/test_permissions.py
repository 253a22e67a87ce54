"""The permission matrix: who may subscribe, publish, and read presence and history.

Users (alice, bob, mallory, an anonymous connection) try every operation on public,
authenticated, pattern-granted, user-limited, private and read-protected channels over
the socket; the HTTP API is tried with no key, wrong keys and the right key. The suite
counts unauthorized successes (there must be none) and checks every refusal's code.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from websockets.exceptions import ConnectionClosed

from tests.security.harness import (
    Nodes,
    bearer,
    connect_as,
    http_client,
    is_alive,
    open_client,
    pubsub_channels,
    until_closed,
    write_config,
)
from tests.security.tokens import ISSUED, OTHER_SECRET, SECRET, alg_none, claims, hs256
from tests.support import Client, PushhubNode, RedisServer

API_KEY = "perm-key-0123456789abcdef"
ISSUED.append(API_KEY)

CONFIG = """
[[channels]]
pattern = "pub:*"
subscribe = "public"
presence_read = true  # public channels keep members private unless a rule says so
client_publish = true
durable = true

[[channels]]
pattern = "auth:*"
subscribe = "authenticated"
client_publish = true
durable = true

[[channels]]
pattern = "team:*"
subscribe = "granted"
client_publish = true
durable = true

# The owner rule of user-limited channels wins even over "public".
[[channels]]
pattern = "inbox#*"
subscribe = "public"
client_publish = true
durable = true

[[channels]]
pattern = "vault:*"
client_publish = true
durable = true

[[channels]]
pattern = "quiet:*"
subscribe = "public"
presence_read = false
history_read = false
durable = true
"""

#: The users and the patterns their tokens grant (None: an anonymous connection).
USERS: dict[str, list[str] | None] = {
    "alice": ["team:*"],
    "bob": [],
    # Tries to grant herself alice's inbox by pattern and by name.
    "mallory": ["inbox#*", "inbox#alice"],
    "anonymous": None,
}

#: Channel -> the users who may subscribe (and so publish, read presence and history).
SUBSCRIBERS = {
    "pub:m": {"alice", "bob", "mallory", "anonymous"},
    "auth:m": {"alice", "bob", "mallory"},
    "team:m": {"alice"},
    "inbox#alice": {"alice"},
    "vault:m": set(),  # private: granted to nobody
    "quiet:m": {"alice", "bob", "mallory", "anonymous"},
}
#: Channels whose options forbid one operation to everyone.
CLOSED_OPS = {
    ("quiet:m", "publish"),
    ("quiet:m", "presence"),
    ("quiet:m", "history"),
    # A public rule without presence_read: members are private by default.
    ("inbox#alice", "presence"),
}
SUCCESS = {
    "subscribe": "subscribed",
    "publish": "published",
    "presence": "presence",
    "history": "history",
}


@pytest.fixture(scope="module")
def node(nodes: Nodes, module_dir: Path) -> PushhubNode:
    env = {
        "PUSHHUB_JWT_SECRET": SECRET,
        "PUSHHUB_ALLOW_ANONYMOUS": "true",
        "PUSHHUB_API_KEYS": API_KEY,
        "PUSHHUB_CONFIG": write_config(module_dir, CONFIG),
    }
    (started,) = nodes.start(env)
    return started


async def _connect(node: PushhubNode, user: str) -> Client:
    granted = USERS[user]
    if granted is None:
        client = await open_client(node)
        reply = await client.request({"type": "connect"})
        assert (reply["type"], reply["user"]) == ("connected", None), reply
        return client
    return await connect_as(node, hs256(claims(user, channels=granted)))


def _expected(user: str, channel: str, op: str) -> str:
    """The reply type, or the error code, the matrix must produce."""
    member = user in SUBSCRIBERS[channel]
    if op == "subscribe":
        return SUCCESS[op] if member else "forbidden"
    if (channel, op) in CLOSED_OPS and (op == "publish" or member):
        return "forbidden"
    if op == "publish":
        return SUCCESS[op] if member else "forbidden"
    return SUCCESS[op] if member else "not_subscribed"


def _frame(channel: str, op: str, user: str) -> dict[str, Any]:
    if op == "publish":
        return {"type": "publish", "channel": channel, "data": {"from": user}}
    return {"type": op, "channel": channel}


@dataclass(frozen=True)
class Outcome:
    user: str
    channel: str
    op: str
    got: str
    expected: str


async def test_socket_permission_matrix_has_no_unauthorized_success(
    node: PushhubNode, redis_server: RedisServer
) -> None:
    clients = {user: await _connect(node, user) for user in USERS}
    outcomes: list[Outcome] = []
    for user, client in clients.items():
        for channel in SUBSCRIBERS:
            for op in ("subscribe", "publish", "presence", "history"):
                reply = await client.request(_frame(channel, op, user))
                got = reply["code"] if reply["type"] == "error" else reply["type"]
                outcomes.append(Outcome(user, channel, op, got, _expected(user, channel, op)))

    unauthorized = [
        o for o in outcomes if o.got in SUCCESS.values() and o.expected not in SUCCESS.values()
    ]
    wrong = [o for o in outcomes if o.got != o.expected]
    assert unauthorized == [], f"{len(unauthorized)} unauthorized successes"
    assert wrong == []
    assert len(outcomes) == 4 * 6 * 4
    # 13 subscribes, then 9 each of publish, presence and history (none on quiet:m),
    # less alice's presence query on her public-rule inbox (members private by default).
    assert sum(o.got in SUCCESS.values() for o in outcomes) == 13 + 3 * 9 - 1
    # Nobody holds the private channel, so it never reached Redis.
    assert "vault:m" not in pubsub_channels(redis_server)

    # A message on every channel reaches exactly the users allowed on it. The sentinel
    # comes last on a channel everyone holds: after it, nothing else is on its way.
    async with http_client(node) as http:
        for channel in SUBSCRIBERS:
            body = {"channel": channel, "data": {"probe": channel}}
            assert (await http.post("/api/publish", json=body, headers=bearer(API_KEY))).is_success
        sentinel = {"channel": "pub:m", "data": {"sentinel": True}}
        assert (await http.post("/api/publish", json=sentinel, headers=bearer(API_KEY))).is_success
    for user, client in clients.items():
        probed = set()
        while True:
            event = await client.recv()
            data = event.get("data")
            if event["type"] != "message" or not isinstance(data, dict):
                continue
            if data.get("sentinel"):
                break
            if "probe" in data:
                probed.add(data["probe"])
        allowed = {c for c, users in SUBSCRIBERS.items() if user in users}
        assert probed == allowed, user


async def test_anonymous_connection_cannot_declare_itself_a_user(node: PushhubNode) -> None:
    client = await open_client(node)
    await client.send({"type": "connect", "user": "alice", "id": 1})
    with contextlib.suppress(ConnectionClosed):
        await client.send({"type": "subscribe", "channel": "inbox#alice", "id": 2})

    frames, close_code = await until_closed(client)

    assert close_code == 4501
    assert not any(f["type"] in ("connected", "subscribed") for f in frames)


def _sub_token(user: str | None, channel: str | None, **extra: Any) -> str:
    return hs256(claims(user, channel=channel, **extra))


#: (connecting user, channel subscribed to, the subscription token presented)
BAD_SUBSCRIPTION_TOKENS: dict[str, tuple[str, str, Any]] = {
    "another-users-grant": ("alice", "vault:granted", lambda: _sub_token("bob", "vault:granted")),
    "grant-for-another-channel": ("bob", "vault:other", lambda: _sub_token("bob", "vault:granted")),
    "expired-grant": (
        "bob",
        "vault:granted",
        lambda: _sub_token("bob", "vault:granted", exp=int(time.time()) - 3600),
    ),
    "grant-signed-with-another-secret": (
        "bob",
        "vault:granted",
        lambda: hs256(claims("bob", channel="vault:granted"), OTHER_SECRET),
    ),
    "unsigned-grant": (
        "bob",
        "vault:granted",
        lambda: alg_none(claims("bob", channel="vault:granted")),
    ),
    "connection-token-as-grant": ("bob", "vault:granted", lambda: hs256(claims("bob"))),
    "grant-of-alices-inbox": ("bob", "inbox#alice", lambda: _sub_token("bob", "inbox#alice")),
    "anonymous-with-bobs-grant": (
        "anonymous",
        "vault:granted",
        lambda: _sub_token("bob", "vault:granted"),
    ),
    "grant-without-sub": ("anonymous", "vault:granted", lambda: _sub_token(None, "vault:granted")),
    "grant-with-a-glob-channel": ("bob", "vault:granted", lambda: _sub_token("bob", "vault:*")),
}


@pytest.mark.parametrize("case", sorted(BAD_SUBSCRIPTION_TOKENS))
async def test_bad_subscription_token_is_forbidden_and_the_connection_stays(
    node: PushhubNode, redis_server: RedisServer, case: str
) -> None:
    user, channel, make = BAD_SUBSCRIPTION_TOKENS[case]
    client = await _connect(node, user)

    reply = await client.request({"type": "subscribe", "channel": channel, "token": make()})

    assert (reply["type"], reply["code"]) == ("error", "forbidden"), reply
    assert await is_alive(client)
    assert channel not in pubsub_channels(redis_server)


async def test_subscription_token_grants_one_private_channel_to_one_user(
    node: PushhubNode,
) -> None:
    bob = await _connect(node, "bob")
    token = _sub_token("bob", "vault:bob-only")

    reply = await bob.request({"type": "subscribe", "channel": "vault:bob-only", "token": token})
    other = await bob.request({"type": "subscribe", "channel": "vault:m", "token": token})
    async with http_client(node) as http:
        body = {"channel": "vault:bob-only", "data": "for bob"}
        assert (await http.post("/api/publish", json=body, headers=bearer(API_KEY))).is_success

    assert reply["type"] == "subscribed", reply
    assert (other["type"], other["code"]) == ("error", "forbidden")
    assert (await bob.recv())["data"] == "for bob"
    # The grant covers the channel's history and presence too, and nothing else.
    assert (await bob.request({"type": "history", "channel": "vault:bob-only"}))["type"] == (
        "history"
    )
    assert (await bob.request({"type": "presence", "channel": "vault:bob-only"}))["type"] == (
        "presence"
    )


WRONG_CREDENTIALS = {
    "none": {},
    "wrong-key": bearer("perm-key-wrong-0123456789"),
    "key-prefix": bearer(API_KEY[:-1]),
    "key-with-suffix": bearer(API_KEY + "x"),
    "key-other-case": bearer(API_KEY.upper()),
    "basic-scheme": {"Authorization": f"Basic {API_KEY}"},
    "token-scheme": {"Authorization": f"Token {API_KEY}"},
    "key-in-query": {},  # the key as ?api_key= is not a credential
    "bearer-without-key": {"Authorization": "Bearer"},
}


def _http_requests(channel: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    path = quote(channel, safe="")
    return [
        ("POST", "/api/publish", {"channel": channel, "data": {"http": True}}),
        ("POST", "/api/publish", {"channels": [channel, "pub:m"], "data": {"http": True}}),
        ("GET", f"/api/history/{path}", None),
        ("GET", f"/api/history/{path}?reverse=true&limit=5", None),
        # Clearing a history sends its subscribers to recover: keep alice's inbox out of it.
        ("DELETE", "/api/history/pub%3Acleared", None),
        ("GET", f"/api/presence/{path}", None),
        ("GET", f"/api/presence/{path}/count", None),
        ("GET", f"/api/presence?channels={path},pub%3Am", None),
        ("GET", "/api/stats", None),
    ]


async def test_http_api_matrix_answers_only_the_right_key(node: PushhubNode) -> None:
    alice = await _connect(node, "alice")
    await alice.subscribe("inbox#alice")
    refusals = []
    successes = []
    async with http_client(node) as http:
        for channel in ("inbox#alice", "vault:m", "pub:m"):
            for method, url, body in _http_requests(channel):
                for name, headers in WRONG_CREDENTIALS.items():
                    target = url
                    if name == "key-in-query":
                        target += ("&" if "?" in url else "?") + f"api_key={API_KEY}"
                    resp = await http.request(method, target, json=body, headers=headers)
                    refusals.append((name, method, target, resp))
                resp = await http.request(method, url, json=body, headers=bearer(API_KEY))
                successes.append((method, url, resp))
        done = {"channel": "inbox#alice", "data": "done"}
        assert (await http.post("/api/publish", json=done, headers=bearer(API_KEY))).is_success

    unauthorized_successes = [r for r in refusals if r[3].is_success]
    assert unauthorized_successes == []
    for name, method, url, resp in refusals:
        assert resp.status_code == 401, (name, method, url, resp.text)
        assert resp.json()["error"]["code"] == "unauthorized"
        assert resp.headers["www-authenticate"] == "Bearer"
    for method, url, resp in successes:
        assert resp.status_code == 200, (method, url, resp.text)
    # Alice's inbox got the two keyed publishes and the last one, none of the refused.
    received = [(await alice.recv())["data"] for _ in range(3)]
    assert received == [{"http": True}, {"http": True}, "done"]
