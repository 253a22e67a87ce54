"""Hostile payloads on every ingest path, across two real nodes sharing one redis-server.

The attack these tests replay: ``redis-cli PUBLISH order:updates "$(printf '[%.0s'
{1..254})$(printf ']%.0s' {1..254})"``, 508 bytes of valid JSON. The node used to decode
every payload and encode it again inside its message frame; orjson writes at most 254
levels, so the frame (one level more) could not be written, the exception ended the
Redis reader task, and every node subscribed to the channel stopped delivering anything,
for ever, with ``/readyz`` at 503. The same payload could come in through the HTTP API, a
client ``publish`` frame, the presence ``info`` of a ``connect`` frame, or a durable
channel's history (where the replay then closed the client with 4000 on every retry).

Now valid JSON nested at most ``max_json_depth`` (64) levels is spliced into frames as
its original bytes, deeper or invalid raw payloads are delivered as strings of their
text, and the HTTP API and the socket refuse deeper data with ``bad_request``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import Client, NodeGroup, PushhubNode, RedisServer

CONFIG = """
[[channels]]
pattern = "order:*"
client_publish = true
presence = false

[[channels]]
pattern = "ledger:*"
durable = true
presence = false
"""

#: The attack payloads: at orjson's limit and far beyond it (still within orjson's
#: parser limit of 1024, so they are valid JSON to the node).
DEPTHS = [254, 900]

#: The message that must still arrive after every attack.
NORMAL = '{"orderId":"123"}'


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.fixture(scope="module")
def nodes(module_nodes: NodeGroup, config: Path) -> tuple[PushhubNode, PushhubNode]:
    """Two nodes on one Redis, started side by side, for the module: each test attacks
    them and then checks that both still deliver."""
    a, b = module_nodes.start({}, {}, args=["--config", str(config)])
    return a, b


async def _subscribers(
    nodes: tuple[PushhubNode, PushhubNode], channel: str, per_node: int = 1
) -> list[Client]:
    clients = []
    for node in nodes:
        for _ in range(per_node):
            client = await Client.connect(node.ws_url)
            await client.subscribe(channel)
            clients.append(client)
    return clients


async def _get(node: PushhubNode, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{node.http}{path}")


async def _post_raw(node: PushhubNode, body: str) -> httpx.Response:
    """POST /api/publish with a body written by hand (json= could not write it)."""
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{node.http}/api/publish",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )


async def _stats(node: PushhubNode) -> dict[str, Any]:
    resp = await _get(node, "/api/stats")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _still_delivering(
    redis: RedisServer,
    nodes: tuple[PushhubNode, PushhubNode],
    subscribers: list[Client],
    channel: str,
) -> None:
    """A normal message published after the attack reaches every subscriber on every
    node, both nodes are ready, and neither caught a failure on its delivery path."""
    assert redis.cli("PUBLISH", channel, NORMAL).strip() == "2"  # both nodes hold it
    for client in subscribers:
        event = await client.recv()
        assert (event["type"], event["data"]) == ("message", {"orderId": "123"}), event
    for node in nodes:
        ready = await _get(node, "/readyz")
        assert ready.status_code == 200, ready.text
        assert (await _stats(node))["delivery_errors"] == 0


@pytest.mark.parametrize("payload", [deep_array(254), deep_array(900), deep_object(254)])
async def test_raw_publish_nested_beyond_the_limit_reaches_every_node_as_its_text(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode], payload: str
) -> None:
    """Old: the node re-encoded the payload, orjson refused 255 levels, the Redis reader
    task died: no node delivered anything on any channel again and /readyz went 503."""
    subscribers = await _subscribers(nodes, "order:updates", per_node=2)

    assert redis_server.cli("PUBLISH", "order:updates", payload).strip() == "2"

    for client in subscribers:
        event = await client.recv()
        assert event == {"type": "message", "channel": "order:updates", "data": payload}
    await _still_delivering(redis_server, nodes, subscribers, "order:updates")


async def test_a_raw_publish_posing_as_an_envelope_is_dropped_and_counted_on_every_node(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """A payload that starts with pushhub's envelope byte but is not an envelope pushhub
    writes is dropped by the engine, counted in ``engine_dropped``, and nothing else
    changes."""
    subscribers = await _subscribers(nodes, "order:forged")
    before = [(await _stats(node))["engine_dropped"] for node in nodes]

    assert redis_server.cli("PUBLISH", "order:forged", '\x1e{"t":"join","m":5}').strip() == "2"

    await _still_delivering(redis_server, nodes, subscribers, "order:forged")
    after = [(await _stats(node))["engine_dropped"] for node in nodes]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1]


async def test_raw_publish_at_exactly_max_json_depth_is_delivered_as_json(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """The boundary: 64 levels is JSON, 65 is text. (Old: both were JSON.)"""
    subscribers = await _subscribers(nodes, "order:edge")

    redis_server.cli("PUBLISH", "order:edge", deep_array(64))
    redis_server.cli("PUBLISH", "order:edge", deep_array(65))

    for client in subscribers:
        at_limit, beyond = await client.recv(), await client.recv()
        assert at_limit["data"] == orjson.loads(deep_array(64))
        assert beyond["data"] == deep_array(65)


async def test_invalid_deep_json_from_redis_cli_is_delivered_as_its_text(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """Unbalanced brackets, and nesting beyond orjson's parser limit (1024). (Old: also
    delivered as text; this guards the text fallback of the new pass-through path.)"""
    subscribers = await _subscribers(nodes, "order:junk")
    junk = ["[" * 2000, deep_array(1100), "{" * 300 + '"a"']

    for payload in junk:
        redis_server.cli("PUBLISH", "order:junk", payload)

    for client in subscribers:
        assert [(await client.recv())["data"] for _ in junk] == junk
    await _still_delivering(redis_server, nodes, subscribers, "order:junk")


@pytest.mark.parametrize("depth", [65, *DEPTHS])
async def test_http_publish_of_data_nested_deeper_than_max_json_depth_is_refused(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode], depth: int
) -> None:
    """Old: 254 levels were accepted (200) and published, and killed every subscribed
    node's reader; 900 levels failed to encode and answered 500."""
    subscribers = await _subscribers(nodes, "order:http")

    resp = await _post_raw(nodes[0], '{"channel":"order:http","data":' + deep_array(depth) + "}")

    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "bad_request"
    # Nothing was published: the next message anyone sees is the normal one.
    await _still_delivering(redis_server, nodes, subscribers, "order:http")


async def test_http_publish_of_data_nested_exactly_max_json_depth_is_delivered(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """The boundary of the refusal above: 64 levels of data (65 with the body) pass.
    (Old: also accepted; this guards against refusing what the limit allows.)"""
    subscribers = await _subscribers(nodes, "order:http64")

    resp = await _post_raw(nodes[1], '{"channel":"order:http64","data":' + deep_array(64) + "}")

    assert resp.status_code == 200, resp.text
    for client in subscribers:
        assert (await client.recv())["data"] == orjson.loads(deep_array(64))


@pytest.mark.parametrize("depth", [65, *DEPTHS])
async def test_client_publish_of_data_nested_deeper_than_max_json_depth_is_refused(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode], depth: int
) -> None:
    """Old: 65 and 254 levels were published (254 then took every subscribed node's
    reader down); 900 levels failed to encode and closed the publisher with 4000."""
    subscribers = await _subscribers(nodes, "order:client")
    publisher = subscribers[0]

    await publisher.send(
        '{"type":"publish","channel":"order:client","id":7,"data":' + deep_array(depth) + "}"
    )
    error = await publisher.recv()

    assert (error["type"], error["code"], error["id"]) == ("error", "bad_request", 7)
    assert (await publisher.request({"type": "ping"}))["type"] == "pong"
    await _still_delivering(redis_server, nodes, subscribers, "order:client")


@pytest.mark.parametrize("depth", DEPTHS)
async def test_anonymous_connect_with_deep_info_is_refused_and_presence_keeps_working(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode], depth: int
) -> None:
    """Old: the info was kept, written into the join envelope, and the join event could
    not be encoded on the other node: its reader died (900 levels failed already on
    the connecting node)."""
    a, b = nodes
    watcher = await Client.connect(b.ws_url, presence_events=True)
    await watcher.request({"type": "connect", "user": "watcher"})
    await watcher.subscribe("room:deep")
    assert (await watcher.recv())["user"] == "watcher"  # its own join
    anon = await Client.connect(a.ws_url)

    await anon.send('{"type":"connect","id":1,"info":' + deep_object(depth) + "}")
    refused = await anon.recv()
    await anon.subscribe("room:deep")
    joined = await watcher.recv()

    assert (refused["type"], refused["code"], refused["id"]) == ("error", "bad_request", 1)
    assert joined["type"] == "join"
    assert (joined["user"], joined["info"]) == (None, None)
    assert joined["client"]
    members = (await _get(b, "/api/presence/room:deep")).json()["members"]
    assert sorted(m["info"] is None for m in members) == [True, True]
    subscribers = await _subscribers(nodes, "order:after-info")
    await _still_delivering(redis_server, nodes, subscribers, "order:after-info")


async def test_anonymous_connect_info_is_ignored_even_when_shallow(
    nodes: tuple[PushhubNode, PushhubNode],
) -> None:
    """Old: an anonymous connection's info was shown to every member."""
    a, b = nodes
    watcher = await Client.connect(b.ws_url, presence_events=True)
    await watcher.subscribe("room:shallow")
    assert (await watcher.recv())["type"] == "join"  # its own
    anon = await Client.connect(a.ws_url)

    connected = await anon.request({"type": "connect", "info": {"name": "Mallory", "n": [[1]]}})
    await anon.subscribe("room:shallow")
    joined = await watcher.recv()

    assert connected["type"] == "connected"
    assert (joined["type"], joined["user"], joined["info"]) == ("join", None, None)


async def test_raw_payload_over_max_message_size_is_dropped_and_counted_on_every_node(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """Old: a 70 KB PUBLISH went to every subscriber (a copy in every socket buffer),
    and there was no ``messages_dropped`` counter."""
    subscribers = await _subscribers(nodes, "order:big")
    before = [(await _stats(node))["messages_dropped"] for node in nodes]

    big = '"' + "x" * 70_000 + '"'
    assert redis_server.cli("PUBLISH", "order:big", big).strip() == "2"

    # The next message each subscriber sees is the normal one: the big one was dropped.
    await _still_delivering(redis_server, nodes, subscribers, "order:big")
    after = [(await _stats(node))["messages_dropped"] for node in nodes]
    assert after == [n + 1 for n in before]


async def test_durable_deep_payload_is_delivered_read_and_recovered_as_its_text(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """Old: live delivery killed the reader; GET /api/history answered 500; a client
    recovering across the message was closed with 4000 on every resubscribe."""
    a, b = nodes
    live = await _subscribers(nodes, "ledger:1")
    first = redis_server.cli("FCALL", "pushhub_publish", "1", "ledger:1", '{"n":1}').split()
    epoch = first[1]
    for client in live:
        assert (await client.recv())["offset"] == 1
    late = await Client.connect(a.ws_url)
    await late.subscribe("ledger:1")
    await late.close()

    payloads = [deep_array(254), deep_array(900)]
    for payload in payloads:
        redis_server.cli("FCALL", "pushhub_publish", "1", "ledger:1", payload)

    for client in live:
        events = [await client.recv(), await client.recv()]
        assert [(e["offset"], e["data"]) for e in events] == [(2, payloads[0]), (3, payloads[1])]

    http = await _get(b, "/api/history/ledger:1?since=1")
    assert http.status_code == 200, http.text
    assert http.json()["messages"] == [
        {"offset": 2, "data": payloads[0]},
        {"offset": 3, "data": payloads[1]},
    ]
    reader = live[0]
    history = await reader.request({"type": "history", "channel": "ledger:1", "since": 1})
    assert history["type"] == "history", history
    assert [m["data"] for m in history["messages"]] == payloads

    back = await Client.connect(a.ws_url)
    await back.send(
        {"type": "subscribe", "channel": "ledger:1", "since": {"offset": 1, "epoch": epoch}}
    )
    replayed = [await back.recv(), await back.recv()]
    reply = await back.recv()
    assert [(m["type"], m["offset"], m["data"]) for m in replayed] == [
        ("message", 2, payloads[0]),
        ("message", 3, payloads[1]),
    ]
    assert (reply["type"], reply["recovered"], reply["offset"]) == ("subscribed", True, 3)
    assert (await back.request({"type": "ping"}))["type"] == "pong"  # not closed (4000)

    redis_server.cli("FCALL", "pushhub_publish", "1", "ledger:1", NORMAL)
    for client in [*live, back]:
        event = await client.recv()
        assert (event["offset"], event["data"]) == (4, {"orderId": "123"})


async def test_valid_json_with_a_newline_arrives_as_json_in_one_frame_line(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """Server frames are split on newlines, and payloads are now spliced as their bytes:
    a newline between JSON tokens must not reach the wire. (Old: re-encoding removed
    it; this guards the splicing that replaced it.)"""
    subscribers = await _subscribers(nodes, "order:nl")

    redis_server.cli("PUBLISH", "order:nl", '{"a":\n1}')

    for client in subscribers:
        raw = await asyncio.wait_for(client.ws.recv(), 5)
        assert isinstance(raw, str)
        assert "\n" not in raw
        assert orjson.loads(raw)["data"] == {"a": 1}


async def test_a_big_integer_keeps_all_its_digits(
    redis_server: RedisServer, nodes: tuple[PushhubNode, PushhubNode]
) -> None:
    """Old: decoded to a float and written as 1.2345678901234568e+29."""
    subscribers = await _subscribers(nodes, "order:bigint")

    redis_server.cli("PUBLISH", "order:bigint", "123456789012345678901234567890")

    for client in subscribers:
        raw = await asyncio.wait_for(client.ws.recv(), 5)
        assert isinstance(raw, str)
        assert '"data":123456789012345678901234567890' in raw, raw
