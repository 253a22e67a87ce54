"""Every kind of bad input gets a clear answer; the node and other clients carry on."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.support import Client, NodeGroup, PushhubNode, RedisServer, publish_http


@pytest.fixture(scope="module")
def node(module_nodes: NodeGroup) -> PushhubNode:
    """One node for the module: every test here also shows it carries on after its input."""
    (started,) = module_nodes.start({"PUSHHUB_MAX_SUBSCRIPTIONS": "3"})
    return started


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"type":"subscribe",', "bad_json"),
        ("[1,2,3]", "bad_frame"),
        ('"subscribe"', "bad_frame"),
        ('{"channel":"a"}', "bad_frame"),
        ('{"type":"dance","id":4}', "unknown_type"),
        ('{"type":"subscribe","id":5}', "bad_channel"),
        ('{"type":"subscribe","channel":"","id":6}', "bad_channel"),
        ('{"type":"subscribe","channel":"a b","id":7}', "bad_channel"),
        ('{"type":"subscribe","channel":"news:*","id":8}', "bad_channel"),
        ('{"type":"subscribe","channel":"x{tag}","id":9}', "bad_channel"),
        ('{"type":"subscribe","channel":"__pushhub__.probe.x","id":10}', "bad_channel"),
        ('{"type":"subscribe","channel":"' + "c" * 256 + '","id":11}', "bad_channel"),
        ('{"type":"unsubscribe","channel":"never","id":12}', "not_subscribed"),
        ('{"type":"ping","id":-1}', "bad_request"),
    ],
)
async def test_bad_frame_gets_an_error_frame_and_the_connection_stays_usable(
    node: PushhubNode, frame: str, code: str
) -> None:
    client = await Client.connect(node.ws_url)

    await client.send(frame)
    error = await client.recv()

    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    if code not in ("bad_json", "bad_frame", "bad_request"):
        assert error["id"] is not None  # matched to the request that failed
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_channel_of_255_characters_is_accepted(node: PushhubNode) -> None:
    client = await Client.connect(node.ws_url)
    assert (await client.subscribe("c" * 255))["channel"] == "c" * 255


async def test_binary_frame_gets_an_error_frame(node: PushhubNode) -> None:
    client = await Client.connect(node.ws_url)

    await client.send(b'{"type":"ping"}')

    error = await client.recv()
    assert (error["type"], error["code"]) == ("error", "binary_frame")
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_subscribing_twice_is_refused(node: PushhubNode) -> None:
    client = await Client.connect(node.ws_url)
    await client.subscribe("twice")

    reply = await client.request({"type": "subscribe", "channel": "twice"})

    assert reply["code"] == "already_subscribed"


async def test_subscriptions_over_the_limit_are_refused(
    node: PushhubNode, redis_server: RedisServer
) -> None:
    client = await Client.connect(node.ws_url)
    for i in range(3):
        await client.subscribe(f"limit:{i}")

    reply = await client.request({"type": "subscribe", "channel": "limit:3"})

    assert reply["code"] == "too_many_subscriptions"
    assert "limit:3" not in redis_server.cli("PUBSUB", "CHANNELS").split()
    await client.request({"type": "unsubscribe", "channel": "limit:0"})
    assert (await client.subscribe("limit:3"))["type"] == "subscribed"


async def test_frame_over_the_size_limit_closes_with_1009_and_others_are_untouched(
    node: PushhubNode, redis_server: RedisServer
) -> None:
    bystander = await Client.connect(node.ws_url)
    await bystander.subscribe("calm")
    offender = await Client.connect(node.ws_url, max_size=None)
    await offender.subscribe("offender")

    big = '{"type":"ping","pad":"' + "x" * (64 * 1024) + '"}'
    with contextlib.suppress(ConnectionClosed):
        await offender.send(big)

    assert await offender.closed_code() == 1009
    redis_server.cli("PUBLISH", "calm", '"still here"')
    assert (await bystander.recv())["data"] == "still here"
    # The offender's subscription was released with it.
    assert "offender" not in redis_server.cli("PUBSUB", "CHANNELS").split()


async def test_frame_just_under_the_limit_is_handled(node: PushhubNode) -> None:
    client = await Client.connect(node.ws_url)
    frame = '{"type":"ping","id":1,"pad":"'
    frame += "x" * (64 * 1024 - len(frame) - 2) + '"}'
    assert len(frame.encode()) == 64 * 1024

    await client.send(frame)

    assert (await client.recv())["type"] == "pong"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "bad_json"),
        (b"[1]", 400, "bad_request"),
        (b'{"channel":"a"}', 400, "bad_request"),
        (b'{"data":1}', 400, "bad_request"),
        (b'{"channel":"a","channels":["b"],"data":1}', 400, "bad_request"),
        (b'{"chanel":"a","data":1}', 400, "bad_request"),
        (b'{"channel":"a b","data":1}', 400, "bad_channel"),
        (b'{"channel":7,"data":1}', 400, "bad_channel"),
        (b'{"channels":[],"data":1}', 400, "bad_request"),
        (b'{"channels":"a","data":1}', 400, "bad_request"),
        (b'{"channels":["a","b*"],"data":1}', 400, "bad_channel"),
    ],
)
async def test_bad_publish_body_gets_a_4xx_naming_the_problem(
    node: PushhubNode, body: bytes, status: int, code: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            f"{node.http}/api/publish", content=body, headers={"content-type": "application/json"}
        )

    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["message"]


async def test_publish_to_more_than_100_channels_is_refused(node: PushhubNode) -> None:
    resp = await publish_http(node, {"channels": [f"c{i}" for i in range(101)], "data": 1})
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "bad_request")


async def test_publish_body_over_the_size_limit_gets_413(node: PushhubNode) -> None:
    resp = await publish_http(node, {"channel": "a", "data": "x" * (64 * 1024)})
    assert (resp.status_code, resp.json()["error"]["code"]) == (413, "too_large")


async def test_chunked_publish_body_over_the_size_limit_gets_413(node: PushhubNode) -> None:
    async def body() -> object:
        for _ in range(80):
            yield b"x" * 1024

    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            f"{node.http}/api/publish",
            content=body(),  # type: ignore[arg-type]
            headers={"content-type": "application/json"},
        )

    assert (resp.status_code, resp.json()["error"]["code"]) == (413, "too_large")


async def test_unknown_route_and_wrong_method_are_refused(node: PushhubNode) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{node.http}/api/publish")).status_code == 405
        assert (await http.get(f"{node.http}/nope")).status_code == 404
