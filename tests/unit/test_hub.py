"""The local registry, with real connections whose transport is a recording stub."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pushhub.connection import Connection, ConnectionState
from pushhub.errors import CloseCode
from pushhub.hub import Hub
from tests.support import Connect, RecordingSender


@pytest.fixture
def connect(connect: Connect) -> Iterator[Connect]:
    """The suite's ``connect``; afterwards, no socket was aborted: a hub test never
    aborts one."""
    senders: list[RecordingSender] = []

    def make(**kwargs: Any) -> tuple[Connection, RecordingSender]:
        conn, sender = connect(**kwargs)
        senders.append(sender)
        return conn, sender

    yield make
    assert [s.aborted for s in senders] == [0] * len(senders)


async def test_first_subscriber_of_a_channel_is_reported_as_first(
    connect: Connect,
) -> None:
    hub = Hub()
    (a, _), (b, _) = connect(), connect()

    assert hub.add(a, "news") is True
    assert hub.add(b, "news") is False
    assert hub.add(a, "other") is True
    assert hub.has_subscribers("news")
    assert a.channels == {"news", "other"}
    assert hub.channel_count == 2


async def test_last_subscriber_leaving_a_channel_is_reported_as_last(
    connect: Connect,
) -> None:
    hub = Hub()
    (a, _), (b, _) = connect(), connect()
    hub.add(a, "news")
    hub.add(b, "news")

    assert hub.remove(a, "news") is False
    assert hub.has_subscribers("news")
    assert hub.remove(b, "news") is True
    assert not hub.has_subscribers("news")
    assert list(hub.channels()) == []
    assert b.channels == set()


async def test_removing_from_a_channel_never_subscribed_is_not_reported_as_last(
    connect: Connect,
) -> None:
    hub = Hub()
    a, _ = connect()

    assert hub.remove(a, "never") is False


async def test_channel_emptied_and_subscribed_again_reports_a_first_subscriber_again(
    connect: Connect,
) -> None:
    hub = Hub()
    a, _ = connect()
    hub.add(a, "news")
    hub.remove(a, "news")

    assert hub.add(a, "news") is True


async def test_broadcast_reaches_exactly_the_subscribers_of_the_channel(
    connect: Connect,
) -> None:
    hub = Hub()
    (a, sa), (b, sb), (c, sc) = connect(), connect(), connect()
    for conn in (a, b, c):
        hub.register(conn)
    hub.add(a, "news")
    hub.add(b, "news")
    hub.add(c, "sport")

    assert hub.broadcast("news", "N1") == 2
    # Broadcast never awaits: the frame is queued, for one flush of every connection.
    assert (a.queued_bytes, b.queued_bytes, c.queued_bytes) == (2, 2, 0)
    assert hub.broadcast("sport", "S1") == 1

    assert await sa.next_frame() == "N1"
    assert await sb.next_frame() == "N1"
    # c's first frame is the later one on its own channel: it never got N1.
    assert await sc.next_frame() == "S1"
    assert sa.unread() == []
    assert sb.unread() == []
    assert hub.connection_count == 3


async def test_broadcast_to_a_channel_nobody_holds_reaches_nobody(
    connect: Connect,
) -> None:
    hub = Hub()
    a, _ = connect()
    hub.add(a, "news")

    assert hub.broadcast("unknown", "x") == 0
    assert a.queued_bytes == 0


async def test_broadcast_after_the_last_subscriber_left_reaches_nobody(
    connect: Connect,
) -> None:
    hub = Hub()
    a, _ = connect()
    hub.add(a, "news")
    hub.remove(a, "news")

    assert hub.broadcast("news", "x") == 0
    assert a.queued_bytes == 0


@pytest.mark.parametrize("how", ["closing", "closed"])
async def test_broadcast_skips_connections_that_are_closed(connect: Connect, how: str) -> None:
    hub = Hub()
    (a, sa), (b, sb) = connect(), connect()
    hub.add(a, "news")
    hub.add(b, "news")
    if how == "closing":
        a.close(CloseCode.NORMAL)
        assert a.state is ConnectionState.CLOSING
    else:
        a.closed()
        assert a.state is ConnectionState.CLOSED

    assert hub.broadcast("news", "N1") == 1

    assert await sb.next_frame() == "N1"
    await a.wait_closed()
    assert sa.unread() == []


async def test_unregistered_connection_is_no_longer_counted(
    connect: Connect,
) -> None:
    hub = Hub()
    a, _ = connect()
    hub.register(a)
    hub.register(a)
    assert hub.connection_count == 1

    hub.unregister(a)
    hub.unregister(a)
    assert hub.connection_count == 0
