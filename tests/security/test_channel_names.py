"""Hostile channel names are refused before they reach Redis, on the socket and over HTTP.

Every hostile name carries the marker ``zq7``; after all the attempts, Redis holds no
Pub/Sub channel, no pattern subscription and no key with the marker in it. A valid
control channel shows that the same probes do see what reaches Redis.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.security.harness import (
    Nodes,
    http_client,
    is_alive,
    open_client,
    pubsub_channels,
    redis_keys,
)
from tests.support import PushhubNode, RedisServer

MARKER = "zq7"
CONTROL = "ctl.valid-name"

HOSTILE: dict[str, str] = {
    "star": "zq7*",
    "question-mark": "zq7?",
    "brackets": "zq7[ab]",
    "braces": "zq7{tag}",
    "hash-tag": "{zq7}x",
    "space": "zq7 space",
    "crlf-command": "zq7\r\nPUBLISH x y",
    "lf": "zq7\n",
    "tab": "zq7\t",
    "nul": "zq7\x00nul",
    "del": "zq7\x7f",
    "slash": "zq7/slash",
    "comma": "zq7,comma",
    "non-ascii": "zq7\u00e9",
    "bidi-override": "zq7\u202e",
    "emoji": "zq7\U0001f600",
    "fullwidth": "zq7\uff41",
    "reserved-prefix": "__zq7",
    "256-chars": "zq7" + "a" * 253,
    "10-kb": "zq7" + "a" * 10240,
}

OPERATIONS = ["subscribe", "unsubscribe", "publish", "presence", "history"]


@pytest.fixture(scope="module")
def node(nodes: Nodes) -> PushhubNode:
    (started,) = nodes.start({"PUSHHUB_MAX_MESSAGE_SIZE": str(64 * 1024)})
    return started


def _assert_nothing_reached_redis(redis: RedisServer) -> None:
    assert not [c for c in pubsub_channels(redis) if MARKER in c]
    assert redis.cli("PUBSUB", "NUMPAT").strip() == "0"
    assert redis_keys(redis, f"*{MARKER}*") == []


def _frame(op: str, channel: object, rid: int) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": op, "channel": channel, "id": rid}
    if op == "publish":
        frame["data"] = "x"
    return frame


async def test_hostile_channel_names_are_refused_on_the_socket(
    node: PushhubNode, redis_server: RedisServer
) -> None:
    client = await open_client(node)
    await client.subscribe(CONTROL)
    names: list[object] = [*HOSTILE.values(), 7, None, ["zq7"], {"zq7": 1}, True]
    rid = 0
    for name in names:
        for op in OPERATIONS:
            rid += 1
            reply = await client.request(_frame(op, name, rid))
            assert (reply["type"], reply["code"]) == ("error", "bad_channel"), (op, name)

    assert await is_alive(client)
    assert CONTROL in pubsub_channels(redis_server)
    assert redis_keys(redis_server, f"*{CONTROL}*")  # the probe does see what got there
    _assert_nothing_reached_redis(redis_server)


async def test_lone_surrogate_and_non_utf8_frames_are_refused(
    node: PushhubNode, redis_server: RedisServer
) -> None:
    client = await open_client(node)
    # JSON text with an escaped lone surrogate: not a Unicode string at all.
    for op in OPERATIONS:
        await client.send('{"type":"' + op + '","channel":"zq7\\ud800","data":1,"id":1}')
        reply = await client.recv()
        assert (reply["type"], reply["code"]) == ("error", "bad_json"), op
    # Bytes that are not UTF-8 can only come as a binary frame, which is refused whole.
    await client.send(b'{"type":"subscribe","channel":"zq7\xff\xfe","id":2}')
    reply = await client.recv()
    assert (reply["type"], reply["code"]) == ("error", "binary_frame")

    assert await is_alive(client)
    _assert_nothing_reached_redis(redis_server)


def _http_attempts(name: str) -> list[tuple[str, str, Any]]:
    path = quote(name, safe="")
    attempts: list[tuple[str, str, Any]] = [
        ("POST", "/api/publish", {"channel": name, "data": 1}),
        ("POST", "/api/publish", {"channels": [f"{CONTROL}", name], "data": 1}),
        ("GET", f"/api/history/{path}", None),
        ("DELETE", f"/api/history/{path}", None),
        ("GET", f"/api/presence/{path}", None),
        ("GET", f"/api/presence/{path}/count", None),
    ]
    if "," not in name:  # a comma separates names in ?channels=
        attempts.append(("GET", f"/api/presence?channels={path}", None))
    return attempts


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_channel_names_are_refused_over_http(
    node: PushhubNode, redis_server: RedisServer, case: str
) -> None:
    name = HOSTILE[case]
    listener = await open_client(node)
    await listener.subscribe(CONTROL)
    async with http_client(node) as http:
        for method, url, body in _http_attempts(name):
            resp = await http.request(method, url, json=body)
            if "/" in name and url.startswith(("/api/history/", "/api/presence/")):
                # The decoded '/' splits the path: no route has a channel like that.
                assert resp.status_code == 404, (method, url)
                continue
            assert resp.status_code == 400, (method, url, resp.text)
            assert resp.json()["error"]["code"] == "bad_channel", (method, url)
        ok = await http.post("/api/publish", json={"channel": CONTROL, "data": "after"})
        assert ok.status_code == 200

    # The list publish naming the control channel was refused whole: nothing came first.
    assert (await listener.recv())["data"] == "after"
    _assert_nothing_reached_redis(redis_server)


@pytest.mark.parametrize(
    ("url", "content"),
    [
        ("/api/history/zq7%FF", None),
        ("/api/presence/zq7%C3%28", None),
        ("/api/publish", b'{"channel":"zq7\\ud800","data":1}'),
        ("/api/publish", b'{"channel":"zq7\xff","data":1}'),
    ],
)
async def test_non_utf8_channel_names_over_http_are_refused(
    node: PushhubNode, redis_server: RedisServer, url: str, content: bytes | None
) -> None:
    async with http_client(node) as http:
        if content is None:
            resp = await http.get(url)
        else:
            resp = await http.post(
                url, content=content, headers={"content-type": "application/json"}
            )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] in ("bad_channel", "bad_json")
    _assert_nothing_reached_redis(redis_server)
