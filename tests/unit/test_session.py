"""A session in process: identity, timers, dispatch and the one request-id edge, on a
Node with the memory engine and a recording sender; clocks injected where a token's
expiry is concerned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import orjson
import pytest

from pushhub import protocol
from pushhub.channels import ChannelOptions, ChannelRule
from pushhub.config import Settings
from pushhub.engine.base import HistoryRead
from pushhub.engine.memory import MemoryEngine
from pushhub.errors import CloseCode
from pushhub.node import Node
from pushhub.session import Session, SessionState
from pushhub.stream import Position

SECRET = "session-tests-secret-0123456789abcdef"
RULES = (
    ChannelRule("user:*", ChannelOptions(durable=True)),
    ChannelRule("room:*", ChannelOptions(presence=True, presence_read=True, join_leave=True)),
)


class Recorder:
    """A sender that records every frame and close, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.log.extend(("frame", orjson.loads(line)) for line in text.split("\n"))

    async def close(self, code: int, reason: str) -> None:
        self.log.append(("close", code))

    def abort(self) -> None:
        raise AssertionError("nothing here should need an abort")

    def events(self) -> list[dict[str, Any]]:
        return [value for kind, value in self.log if kind == "frame"]

    def closes(self) -> list[int]:
        return [value for kind, value in self.log if kind == "close"]

    def reply(self, request_id: int) -> dict[str, Any]:
        (found,) = [e for e in self.events() if e.get("id") == request_id]
        return found


def token(user: str, expires_in: float = 60, **claims: Any) -> str:
    claims = {"sub": user, "exp": int(time.time() + expires_in), **claims}
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(3):
        while not condition():
            await asyncio.sleep(0.005)


NodeFactory = Callable[..., Any]


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    nodes: list[Node] = []

    async def make(
        engine: MemoryEngine | None = None,
        clock: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> Node:
        settings = Settings(node_id="s", channels=RULES, **overrides)
        node = Node(settings, engine or MemoryEngine(rules=RULES), clock=clock)
        await node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.close()


def open_session(node: Node) -> tuple[Session, Recorder]:
    sender = Recorder()
    return node.open(sender, "10.1.0.1"), sender


# -- the request-id edge ---------------------------------------------------------------


async def test_an_error_answers_with_the_id_of_the_command_that_caused_it(
    make_node: NodeFactory,
) -> None:
    node = await make_node()
    session, sender = open_session(node)

    await session.execute(protocol.Unsubscribe("room:a", 5))
    await session.execute(protocol.Subscribe("room:a", 6))
    await session.execute(protocol.Subscribe("room:a", 7))
    await settle()

    assert (sender.reply(5)["type"], sender.reply(5)["code"]) == ("error", "not_subscribed")
    assert sender.reply(6)["type"] == "subscribed"
    assert sender.reply(7)["code"] == "already_subscribed"


async def test_an_engine_failure_is_answered_unavailable_with_the_command_id(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await make_node()
    session, sender = open_session(node)

    async def down(*args: Any) -> None:
        from pushhub.errors import EngineUnavailable

        raise EngineUnavailable("down (in a test)")

    monkeypatch.setattr(node.engine, "publish", down)
    await session.execute(protocol.Publish("room:a", {"n": 1}, id=11))
    await settle()

    assert sender.reply(11)["code"] == "forbidden"  # clients may not publish by default
    node.rules = type(node.rules)((ChannelRule("*", ChannelOptions(client_publish=True)),))
    await session.execute(protocol.Publish("room:a", {"n": 1}, id=12))
    await settle()
    assert sender.reply(12)["code"] == "unavailable"


async def test_a_frame_that_does_not_parse_keeps_the_id_it_carried(
    make_node: NodeFactory,
) -> None:
    node = await make_node()
    session, sender = open_session(node)

    await session.handle('{"type":"subscribe","id":9,"channel":""}')
    await session.handle("not json")
    await settle()

    assert sender.reply(9)["code"] == "bad_channel"
    assert sender.events()[-1]["id"] is None


# -- identity and state ----------------------------------------------------------------


async def test_with_tokens_a_command_before_connect_is_refused_then_the_socket_closed(
    make_node: NodeFactory,
) -> None:
    node = await make_node(jwt_secret=SECRET)
    session, sender = open_session(node)

    await session.execute(protocol.Subscribe("room:a", 3))
    await until(lambda: bool(sender.closes()))

    assert sender.reply(3)["code"] == "unauthorized"
    # flush=True: the error frame went out before the close frame.
    assert sender.log[-1] == ("close", CloseCode.UNAUTHORIZED)
    assert session.state is SessionState.CLOSED
    assert "room:a" not in session.conn.channels


async def test_connect_identifies_once_and_a_second_connect_is_refused(
    make_node: NodeFactory,
) -> None:
    node = await make_node(jwt_secret=SECRET)
    session, sender = open_session(node)
    assert session.state is SessionState.UNIDENTIFIED

    await session.execute(protocol.Connect(token=token("ada"), id=1))
    await session.execute(protocol.Connect(token=token("ada"), id=2))
    await settle()

    assert sender.reply(1)["type"] == "connected"
    assert sender.reply(1)["user"] == "ada"
    assert sender.reply(2)["code"] == "bad_request"
    assert (session.state, session.user) == (SessionState.IDENTIFIED, "ada")
    assert not sender.closes()


async def test_the_authentication_deadline_closes_an_unidentified_session(
    make_node: NodeFactory,
) -> None:
    node = await make_node(jwt_secret=SECRET, auth_timeout=0.05)
    session, sender = open_session(node)
    late, late_sender = open_session(node)
    await late.execute(protocol.Connect(token=token("bo"), id=1))

    await until(lambda: bool(sender.closes()))
    await asyncio.sleep(0.1)

    assert sender.closes() == [CloseCode.AUTH_TIMEOUT]
    assert session.timer is None
    assert late_sender.closes() == []  # identified in time: the deadline was disarmed


async def test_an_expired_token_closes_the_session_with_an_error_first(
    make_node: NodeFactory,
) -> None:
    expires_in = 60
    # The node's clock is already past the expiry plus leeway: the timer fires at once.
    node = await make_node(
        jwt_secret=SECRET, jwt_leeway=1, clock=lambda: time.time() + expires_in + 5
    )
    session, sender = open_session(node)

    await session.execute(protocol.Connect(token=token("cy", expires_in), id=1))
    await until(lambda: bool(sender.closes()))

    kinds = [(e["type"], e.get("code")) for e in sender.events()]
    assert kinds == [("connected", None), ("error", "token_expired")]
    assert sender.closes() == [CloseCode.TOKEN_EXPIRED]


async def test_refresh_moves_the_expiry_and_a_token_for_another_user_closes(
    make_node: NodeFactory,
) -> None:
    node = await make_node(jwt_secret=SECRET)
    session, sender = open_session(node)
    await session.execute(protocol.Connect(token=token("di", 60), id=1))
    first = session.expires_at

    await session.execute(protocol.Refresh(token("di", 600), id=2))
    await settle()
    assert session.expires_at is not None
    assert first is not None
    assert session.expires_at > first
    assert sender.reply(2)["type"] == "refreshed"

    await session.execute(protocol.Refresh(token("eve", 600), id=3))
    await until(lambda: bool(sender.closes()))
    assert sender.reply(3)["code"] == "unauthorized"
    assert sender.closes() == [CloseCode.UNAUTHORIZED]


async def test_refresh_without_tokens_is_a_bad_request_and_nothing_closes(
    make_node: NodeFactory,
) -> None:
    node = await make_node()
    session, sender = open_session(node)

    await session.execute(protocol.Refresh("whatever", id=4))
    await settle()

    assert sender.reply(4)["code"] == "bad_request"
    assert sender.closes() == []


async def test_anonymous_sessions_cannot_set_presence_info(make_node: NodeFactory) -> None:
    node = await make_node()
    named, _ = open_session(node)
    anonymous, _ = open_session(node)

    await named.execute(protocol.Connect(user="fay", info={"name": "Fay"}))
    await anonymous.execute(protocol.Connect(info={"name": "I am the admin"}))

    assert named.info == b'{"name":"Fay"}'
    assert (anonymous.user, anonymous.info) == (None, None)


async def test_a_user_slot_is_given_back_when_the_session_closes(
    make_node: NodeFactory,
) -> None:
    node = await make_node(jwt_secret=SECRET, max_connections_per_user=1)
    first, _ = open_session(node)
    second, second_sender = open_session(node)
    third, third_sender = open_session(node)

    await first.execute(protocol.Connect(id=1, token=token("gus")))
    await second.execute(protocol.Connect(id=1, token=token("gus")))
    await until(lambda: bool(second_sender.closes()))
    assert second_sender.closes() == [CloseCode.TOO_MANY_CONNECTIONS]

    await node.disconnect(first)
    await third.execute(protocol.Connect(id=1, token=token("gus")))
    await settle()
    assert third_sender.reply(1)["type"] == "connected"


async def test_a_query_over_the_rate_is_refused_with_its_id(make_node: NodeFactory) -> None:
    node = await make_node(query_rate=0.001, query_burst=1)
    session, sender = open_session(node)
    await session.execute(protocol.Subscribe("room:q", 1))

    await session.execute(protocol.Presence("room:q", id=2))
    await session.execute(protocol.Presence("room:q", id=3))
    await settle()

    assert sender.reply(2)["type"] == "presence"
    assert sender.reply(3)["code"] == "rate_limited"


# -- set-up bounds -----------------------------------------------------------------------


class PausedReads(MemoryEngine):
    """A memory engine whose first history read answers what it read, then waits for
    the test before returning it: live messages arrive in between."""

    def __init__(self) -> None:
        super().__init__(rules=RULES)
        self.read_done = asyncio.Event()
        self.go = asyncio.Event()
        self.reads = 0

    async def read_history(self, *args: Any, **kwargs: Any) -> HistoryRead:
        read = await super().read_history(*args, **kwargs)
        self.reads += 1
        if self.reads == 1:
            self.read_done.set()
            await self.go.wait()
        return read


async def test_live_messages_past_the_held_bound_are_read_from_the_history_instead(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pushhub.node.MAX_HELD", 5)
    engine = PausedReads()
    node = await make_node(engine=engine)
    first = await engine.publish_durable("user:h", b'{"n":1}')
    for n in (2, 3):
        await engine.publish_durable("user:h", b'{"n":%d}' % n)
    session, sender = open_session(node)

    subscribing = asyncio.create_task(
        session.execute(protocol.Subscribe("user:h", 1, Position(first.offset, first.epoch)))
    )
    await engine.read_done.wait()
    # 20 live messages while the replay's first page is in hand: 5 may be held.
    for n in range(4, 24):
        await engine.publish_durable("user:h", b'{"n":%d}' % n)
    await settle()
    held = session.conn.held
    assert held is not None
    assert held["user:h"].overflowed
    engine.go.set()
    await subscribing
    await settle()

    offsets = [e["offset"] for e in sender.events() if e["type"] == "message"]
    assert offsets == list(range(2, 24))
    reply = sender.reply(1)
    assert (reply["type"], reply["recovered"]) == ("subscribed", True)
    assert engine.reads >= 2  # the replay read on from the history
    assert session.conn.held is None
