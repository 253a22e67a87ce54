"""A node in process, on the memory engine: what a decided close releases, and when."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from pushhub.config import Settings
from pushhub.connection import Connection
from pushhub.engine.memory import MemoryEngine
from pushhub.errors import CloseCode
from pushhub.hub import Hub
from pushhub.node import Node
from pushhub.protocol import Subscribe


class StuckSender:
    """A peer that stops reading after ``accept`` frames: later sends never finish."""

    def __init__(self, accept: int = 1_000_000) -> None:
        self.accept = accept
        self.sent: list[str] = []
        self.closes: list[int] = []
        self.aborted = False
        self._never = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if len(self.sent) >= self.accept:
            await self._never.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closes.append(code)
        await self._never.wait()  # the close frame cannot get through either

    def abort(self) -> None:
        self.aborted = True

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for text in self.sent for line in text.split("\n")]


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    settings = Settings(
        node_id="t", outbound_queue_bytes=256 * 1024, close_timeout=0.2, max_message_size=1024
    )
    node = Node(settings, MemoryEngine())
    await node.start()
    yield node
    await node.close()


async def until(condition: object, what: str) -> None:
    async with asyncio.timeout(3):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_a_client_closed_as_slow_inside_a_broadcast_costs_the_others_nothing(
    node: Node,
) -> None:
    released: list[str] = []
    slow_sender = StuckSender(accept=1)
    slow = node.open(slow_sender, "10.0.0.1", released.append)
    readers = [StuckSender() for _ in range(3)]
    conns = [node.open(s, "10.0.0.2") for s in readers]
    for conn in [slow, *conns]:
        await conn.execute(Subscribe("room"))

    # 1 KiB messages: the slow one passes its 256 KiB queue inside a broadcast.
    for i in range(400):
        await node.engine.publish("room", orjson.dumps({"n": i, "pad": "x" * 1000}))
        await asyncio.sleep(0)

    await until(lambda: not node.hub.holds(slow.conn), "the slow client detached")
    assert slow.conn.close_code == CloseCode.SLOW
    assert released == ["10.0.0.1"]
    assert slow.conn not in node.hub.subscribers("room")
    await until(lambda: all(len(r.events()) >= 401 for r in readers), "every message")
    for reader in readers:
        assert [e["data"]["n"] for e in reader.events() if e["type"] == "message"] == list(
            range(400)
        )
    assert node.delivery_errors == 0
    await until(lambda: slow_sender.aborted, "the close frame's timeout to abort the socket")


async def test_a_decided_close_releases_presence_before_the_socket_is_gone(node: Node) -> None:
    watcher_sender = StuckSender()
    watcher = node.open(watcher_sender, "10.0.0.3")
    leaving = node.open(StuckSender(), "10.0.0.4")
    for conn in (watcher, leaving):
        await conn.execute(Subscribe("lobby"))
    assert (await node.engine.presence_counts(["lobby"]))[0].connections == 2

    leaving.conn.close(CloseCode.RATE_LIMITED, "too many frames")

    await until(lambda: not node._releasing and not node.hub.holds(leaving.conn), "release")
    assert (await node.engine.presence_counts(["lobby"]))[0].connections == 1

    def leaves() -> list[str]:
        return [e["client"] for e in watcher_sender.events() if e["type"] == "leave"]

    await until(lambda: bool(leaves()), "the leave, at the next presence tick")
    assert leaves() == [leaving.id]


async def test_a_payload_that_breaks_delivery_is_counted_and_the_next_one_arrives(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = StuckSender()
    conn = node.open(sender, "10.0.0.5")
    await conn.execute(Subscribe("news"))
    original = Hub.broadcast

    def broken(hub: Hub, channel: str, frame: str, offset: int | None = None) -> int:
        if "poison" in frame:
            raise RuntimeError("a bug triggered by one message")
        return original(hub, channel, frame, offset)

    monkeypatch.setattr(Hub, "broadcast", broken)

    await node.engine.publish("news", b'"poison"')
    await node.engine.publish("news", b'{"ok":1}')

    await until(lambda: len(sender.events()) >= 2, "the next message")
    assert sender.events()[-1]["data"] == {"ok": 1}
    assert node.delivery_errors == 1


def test_connection_ids_are_random_after_the_node_id(node: Node) -> None:
    a = node.open(StuckSender(), None)
    b = node.open(StuckSender(), None)

    assert a.id.split(".")[0] == b.id.split(".")[0] == "t"
    assert a.id != b.id
    assert len(a.id.split(".", 1)[1]) >= 12
    assert isinstance(a.conn, Connection)
    assert a.conn.id == a.id
