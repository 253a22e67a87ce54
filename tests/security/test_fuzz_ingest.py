"""Fuzzing every way a payload gets into a node, against two real nodes and Redis.

Random and adversarial payloads (nesting around orjson's 254-level limit and far beyond,
invalid UTF-8, lone surrogates as escapes, huge numbers, NaN and Infinity, lookalikes of
pushhub's 0x1E envelopes, empty payloads, newlines and control characters) go in through
a raw ``PUBLISH``, ``FCALL pushhub_publish`` on a durable channel, ``POST /api/publish``, a
client ``publish`` frame and the ``info`` of a ``connect`` frame (named and anonymous).

Every subscriber, on both nodes, must then receive exactly what the documented rules say
(valid JSON nested at most ``max_json_depth`` levels as JSON, anything else as its text;
refused publishes not at all), a normal message must still arrive everywhere, both nodes
must stay ready, and their logs may hold at most a few (rate-limited) tracebacks.

Before the fix, any payload nested 254 levels or more ended the Redis reader of every
node subscribed to its channel, after which nothing was delivered at all.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tests.security.harness import Nodes, write_config
from tests.support import Client, PushhubNode

CONFIG = """
[[channels]]
pattern = "fz:plain:*"
client_publish = true
presence = false

[[channels]]
pattern = "fz:durable:*"
durable = true
history_size = 100000
presence = false
"""

PLAIN, DURABLE, ENVELOPES, ROOM = "fz:plain:1", "fz:durable:1", "fz:env:1", "fz:room:1"
MAX_DEPTH = 64
MAX_MESSAGE = 64 * 1024
MAX_INFO = 1024
#: Tracebacks the two nodes may log over the whole module (rate-limited first lines).
MAX_TRACEBACKS = 2
#: Bigger than this, a payload is not sent over the socket (1009 is tested elsewhere).
SOCKET_MAX = 60_000

ENV = {
    # The fuzzer sends thousands of frames from one socket and one address.
    "PUSHHUB_MAX_FRAMES_PER_SECOND": "100000",
    "PUSHHUB_FRAME_BURST": "1000000",
    # Every payload waits for its join and its leave, each sent at a presence tick.
    "PUSHHUB_PRESENCE_TICK": "0.01",
}


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- the documented rules, written independently of pushhub -----------------------------


def depth(raw: bytes) -> int:
    """How deeply valid JSON ``raw`` nests arrays and objects."""
    level = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            level += 1
            deepest = max(deepest, level)
        elif byte in (0x5D, 0x7D):
            level -= 1
    return deepest


def delivered(raw: bytes) -> Any:
    """The ``data`` a raw payload is delivered as (docs/protocol.md)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
    return value if depth(raw) <= MAX_DEPTH else raw.decode()


def parsed(raw: bytes | str) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None


# -- payloads --------------------------------------------------------------------------


def nested(levels: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * levels + b"]" * levels
    if kind == "object":
        return b'{"a":' * levels + b"1" + b"}" * levels
    return b'[{"a":' * (levels // 2) + b"null" + b"}]" * (levels // 2)


ADVERSARIAL: list[bytes] = [
    *(nested(n, k) for n in (64, 65, 253, 254, 255, 256, 1000) for k in ("array", "object")),
    nested(300, "mixed"),
    b"[" * 1100 + b"]" * 1100,  # beyond orjson's parser
    b"[" * 3000,  # unbalanced
    b"",
    b"\n",
    b'{"a":\n1}',
    b"[\r\n1,\n2]",
    b'"\x01\x02"',  # raw control characters in a string: not JSON
    b"\x00",
    b"\t 1 \t",
    b"\xff\xfe\xfd",
    b'{"a":"\xc3\x28"}',  # invalid UTF-8 inside JSON
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b'"\\ud800"',
    b'{"a":"\\udc00x"}',
    b'["\\ud83d"]',
    b"1" * 500,
    b"123456789012345678901234567890",
    b"-123456789012345678901234567890.5e10",
    b"1e400",
    b"-1e400",
    b"0.1e-99999",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'{"a":NaN}',
    b"\x1e",
    b"\x1e\n",
    b'\x1e{"t":"join","m":"u:x","i":' + nested(1000, "array") + b"}",
    b'\x1e{"t":"join","m":"u:x","i":' + nested(60, "object") + b"}",
    b'\x1e{"t":"join","m":"u:x","i":[[[1]]]}',
    b'\x1e{"t":"leave","m":5}',
    b'\x1e{"t":"msg","o":"x"}\n{"a":1}',
    b'\x1e{"t":"msg","o":1,"e":"x"}\n' + nested(900, "array"),
    b"\x1e" + nested(300, "object"),
    b'"' + b"x" * 70_000 + b'"',  # over max_message_size
]

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


def encode(value: Any) -> bytes:
    """Compact JSON with every integer (orjson refuses those beyond 64 bits) and
    non-ASCII and lone surrogates as escapes."""
    return json.dumps(value, separators=(",", ":")).encode()


#: The corpus without its one huge payload, whose repr would flood hypothesis's reports.
SMALL_ADVERSARIAL = [p for p in ADVERSARIAL if len(p) <= 4096]


def _with_whitespace(raw: bytes, where: int, space: bytes) -> bytes:
    """``raw`` with whitespace inserted before a structural character, if any."""
    spots = [i for i, b in enumerate(raw) if b in b"[]{},:"]
    if not spots:
        return raw
    at = spots[where % len(spots)]
    return raw[:at] + space + raw[at:]


PAYLOADS = st.one_of(
    st.sampled_from(SMALL_ADVERSARIAL),
    st.builds(
        nested,
        st.sampled_from([63, 64, 65, 253, 254, 255, 256, 1000]),
        st.sampled_from(["array", "object", "mixed"]),
    ),
    st.builds(encode, JSON_VALUES),
    st.builds(
        _with_whitespace,
        st.builds(encode, JSON_VALUES),
        st.integers(0, 50),
        st.sampled_from([b"\n", b"\r\n", b"\t", b" \n "]),
    ),
    st.binary(max_size=64),
    st.text(max_size=32).map(str.encode),
    st.builds(lambda a, b: a + b, st.sampled_from(SMALL_ADVERSARIAL), st.binary(max_size=8)),
)


# -- the rig: subscribers on both nodes, a publisher, Redis and HTTP ---------------------


@dataclass
class Subscriber:
    client: Client
    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    async def pump(self, done: Callable[[Subscriber], bool], timeout: float = 5) -> None:
        """Read events, filed by channel, until ``done(self)``."""
        while not done(self):
            event = await self.client.recv(timeout)
            self.events[str(event.get("channel"))].append(event)

    def take(self) -> dict[str, list[dict[str, Any]]]:
        taken, self.events = self.events, defaultdict(list)
        return taken


@dataclass
class Rig:
    nodes: tuple[PushhubNode, PushhubNode]
    subscribers: list[Subscriber]
    publisher: Client
    redis: Redis
    http: httpx.AsyncClient
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    #: What every subscriber must receive, per channel, in order.
    plain: list[Any] = field(default_factory=list)
    durable: list[tuple[int, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def pair(nodes: Nodes, module_dir: Path) -> tuple[PushhubNode, PushhubNode]:
    config = write_config(module_dir, CONFIG)
    a, b = nodes.start({**ENV, "PUSHHUB_CONFIG": config}, {**ENV, "PUSHHUB_CONFIG": config})
    return a, b


@pytest.fixture
async def rig(pair: tuple[PushhubNode, PushhubNode]) -> AsyncIterator[Rig]:
    subscribers: list[Subscriber] = []
    for node in pair:
        for _ in range(2):
            client = await Client.connect(node.ws_url, presence_events=True)
            # Named, so that the only anonymous members of the room are the fuzzer's.
            await client.request({"type": "connect", "user": f"watcher-{len(subscribers)}"})
            for channel in (PLAIN, DURABLE, ENVELOPES, ROOM):
                await client.subscribe(channel)
            subscribers.append(Subscriber(client))
    publisher = await Client.connect(pair[0].ws_url)
    redis = Redis.from_url(pair[0].redis_url or "")
    async with httpx.AsyncClient(base_url=pair[0].http, timeout=10) as http:
        try:
            yield Rig(pair, subscribers, publisher, redis, http)
        finally:
            await redis.aclose()


async def _raw_publish(rig: Rig, payload: bytes) -> None:
    channel = ENVELOPES if payload.startswith(b"\x1e") else PLAIN
    await rig.redis.publish(channel, payload)
    if channel == PLAIN and len(payload) <= MAX_MESSAGE:
        rig.plain.append(delivered(payload))


async def _fcall(rig: Rig, payload: bytes) -> None:
    refused: str | None = None
    try:
        offset, _ = await rig.redis.fcall("pushhub_publish", 1, DURABLE, payload)
    except ResponseError as exc:
        refused = str(exc)
    if refused is not None:
        assert len(payload) > MAX_MESSAGE, f"FCALL refused {payload[:80]!r}: {refused}"
        return
    assert len(payload) <= MAX_MESSAGE, "FCALL took a payload over max_message_size"
    rig.durable.append((int(offset), delivered(payload)))


async def _http_publish(rig: Rig, payload: bytes) -> None:
    body = b'{"channel":"' + PLAIN.encode() + b'","data":' + payload + b"}"
    resp = await rig.http.post(
        "/api/publish", content=body, headers={"content-type": "application/json"}
    )
    ok, value = parsed(body)
    if len(body) > MAX_MESSAGE:
        assert resp.status_code == 413, resp.text
    elif not ok:
        assert (resp.status_code, resp.json()["error"]["code"]) == (400, "bad_json")
    elif depth(body) > MAX_DEPTH + 1:
        assert (resp.status_code, resp.json()["error"]["code"]) == (400, "bad_request")
    elif isinstance(value, dict) and value.keys() == {"channel", "data"}:
        assert resp.status_code == 200, (payload[:80], resp.text)
    else:  # the payload rewrote the body's fields: any answer but a server error
        assert resp.status_code < 500, resp.text
    if resp.status_code == 200 and isinstance(value, dict) and value.get("channel") == PLAIN:
        rig.plain.append(value["data"])


async def _client_publish(rig: Rig, payload: bytes) -> None:
    rid = next(rig.ids)
    text = f'{{"type":"publish","channel":"{PLAIN}","id":{rid},"data":'
    text += payload.decode("utf-8", errors="replace") + "}"
    await rig.publisher.send(text)
    reply = await rig.publisher.recv()
    while reply["type"] == "ping":  # the server's heartbeat, every ping_interval
        reply = await rig.publisher.recv()
    ok, value = parsed(text)
    if not ok:
        assert (reply["type"], reply["code"]) == ("error", "bad_json"), reply
    elif depth(text.encode()) > MAX_DEPTH + 1:
        assert (reply["type"], reply["code"]) == ("error", "bad_request"), reply
    elif isinstance(value, dict) and value.keys() == {"type", "channel", "id", "data"}:
        assert (reply["type"], reply["id"]) == ("published", rid), reply
    else:
        assert reply["type"] in ("published", "error", "pong"), reply
    if reply["type"] == "published" and isinstance(value, dict) and value["channel"] == PLAIN:
        rig.plain.append(value["data"])


def _connect_outcome(text: str, named: bool) -> tuple[bool | None, Any]:
    """Whether a connect frame must be accepted (None: the payload rewrote the frame, so
    either is fine), and the info its join must show."""
    ok, value = parsed(text)
    if not ok or depth(text.encode()) > MAX_DEPTH + 1:
        return False, None
    keys = {"type", "id", "info"} | ({"user"} if named else set())
    if not isinstance(value, dict) or value.keys() != keys:
        return None, None
    info = value["info"]
    if info is not None and not isinstance(info, dict):
        return False, None
    if named and info is not None and len(orjson.dumps(info)) > MAX_INFO:
        return False, None
    return True, info if named else None


async def _connect_with_info(rig: Rig, payload: bytes, named: bool) -> None:
    """A connection states ``payload`` as its info, joins the room and leaves it; every
    subscriber sees the join (with the info only a named, accepted user may set) and
    the leave."""
    user = f"fz-{next(rig.ids)}"
    head = (
        f'{{"type":"connect","user":"{user}","id":1,"info":'
        if named
        else ('{"type":"connect","id":1,"info":')
    )
    text = head + payload.decode("utf-8", errors="replace") + "}"
    accepted, info = _connect_outcome(text, named)
    conn = await Client.connect(rig.nodes[0].ws_url, presence_events=True)
    await conn.send(text)
    reply = await conn.recv()
    if accepted is not None:
        assert reply["type"] == ("connected" if accepted else "error"), (text[:120], reply)
    if reply["type"] == "connected":
        assert reply["user"] == (user if named else None)
    else:
        info = None
    await conn.subscribe(ROOM)
    joined_as = reply["user"] if reply["type"] == "connected" else None
    client_id = reply.get("client")

    def mine(event: dict[str, Any], kind: str) -> bool:
        if event["type"] != kind or event.get("user") != joined_as:
            return False
        return joined_as is not None or client_id is None or event["client"] == client_id

    for sub in rig.subscribers:
        await sub.pump(lambda s: any(mine(e, "join") for e in s.events[ROOM]))
        join = next(e for e in sub.events[ROOM] if mine(e, "join"))
        if accepted is not None:
            assert join["info"] == info, (text[:120], join)
        else:
            assert join["info"] is None or isinstance(join["info"], dict)
    await conn.close()
    for sub in rig.subscribers:
        await sub.pump(lambda s: any(mine(e, "leave") for e in s.events[ROOM]))
        sub.events[ROOM].clear()
    Client.opened.remove(conn)


async def _check(rig: Rig, what: object) -> None:
    """Sentinels on every channel; then each subscriber must have received exactly the
    expected messages, and nodes must be ready and free of delivery errors."""
    sentinel = {"sentinel": next(rig.ids)}
    payload = orjson.dumps(sentinel)
    await rig.redis.publish(PLAIN, payload)
    await rig.redis.publish(ENVELOPES, payload)
    offset, _ = await rig.redis.fcall("pushhub_publish", 1, DURABLE, payload)
    rig.plain.append(sentinel)
    rig.durable.append((int(offset), sentinel))

    def ends(events: list[dict[str, Any]]) -> bool:
        return any(e["type"] == "message" and e["data"] == sentinel for e in events)

    for sub in rig.subscribers:
        await sub.pump(lambda s: all(ends(s.events[c]) for c in (PLAIN, DURABLE, ENVELOPES)))
        got = sub.take()
        plain = [(e["type"], e["data"]) for e in got[PLAIN]]
        assert plain == [("message", d) for d in rig.plain], what
        durable = [(e["type"], e["offset"], e["data"]) for e in got[DURABLE]]
        assert durable == [("message", o, d) for o, d in rig.durable], what
        assert all(e["type"] in ("message", "join", "leave") for e in got[ENVELOPES]), what
    rig.plain.clear()
    rig.durable.clear()
    for node in rig.nodes:
        ready = await rig.http.get(f"{node.http}/readyz")
        assert ready.status_code == 200, ready.text
        stats = (await rig.http.get(f"{node.http}/api/stats")).json()
        assert stats.get("delivery_errors", 0) == 0, (stats, node.log_path)
    tracebacks = sum(node.log().count("Traceback") for node in rig.nodes)
    assert tracebacks <= MAX_TRACEBACKS, [str(n.log_path) for n in rig.nodes]


async def _push(rig: Rig, payload: bytes) -> None:
    await _raw_publish(rig, payload)
    await _fcall(rig, payload)
    await _http_publish(rig, payload)
    if len(payload) <= SOCKET_MAX:
        await _client_publish(rig, payload)
        await _connect_with_info(rig, payload, named=True)
        await _connect_with_info(rig, payload, named=False)


async def test_every_adversarial_payload_on_every_path_leaves_delivery_intact(
    rig: Rig,
) -> None:
    """The whole corpus through every path, then the oversized raw payload counted as
    dropped on both nodes. Old: the first payload nested 254 levels ended both nodes'
    Redis readers (and anonymous info was shown to every member)."""
    dropped = [
        (await rig.http.get(f"{n.http}/api/stats")).json().get("messages_dropped", 0)
        for n in rig.nodes
    ]
    for payload in ADVERSARIAL:
        await _push(rig, payload)
    await _check(rig, "the adversarial corpus")

    oversized = sum(1 for p in ADVERSARIAL if len(p) > MAX_MESSAGE and not p.startswith(b"\x1e"))
    after = [
        (await rig.http.get(f"{n.http}/api/stats")).json().get("messages_dropped", 0)
        for n in rig.nodes
    ]
    assert after == [d + oversized for d in dropped]


@fuzz(60)
@given(batch=st.lists(PAYLOADS, min_size=1, max_size=4))
async def test_random_payloads_on_every_path_are_delivered_by_the_rules_or_refused(
    rig: Rig, batch: list[bytes]
) -> None:
    """Old: any payload nested 254 levels or more stopped all delivery, data nested
    deeper than 64 was accepted, and anonymous connections' info was shown to all."""
    for payload in batch:
        await _push(rig, payload)
    await _check(rig, batch)
