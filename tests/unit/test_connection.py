"""A connection's bounded queue and writer, driven through a stub transport we control."""

from __future__ import annotations

import asyncio

import pytest

from pushhub.connection import COALESCE_BYTES, Connection, ConnectionState
from pushhub.errors import CloseCode
from tests.support import Connect, RecordingSender


async def test_frames_are_sent_in_the_order_they_were_queued(connect: Connect) -> None:
    conn, sender = connect()
    frames = [f'{{"n":{i}}}' for i in range(200)]

    for f in frames:
        assert conn.send(f) is True

    async with asyncio.timeout(2):
        while len(sender.lines()) < len(frames):
            await sender.wait_sent(len(sender.sent) + 1)
    assert sender.lines() == frames
    assert conn.queued_bytes == 0


async def test_frame_sent_to_an_idle_writer_goes_out_alone(connect: Connect) -> None:
    conn, sender = connect()

    conn.send("one")
    await sender.wait_sent(1)
    conn.send("two")
    await sender.wait_sent(2)

    assert sender.sent == ["one", "two"]


async def test_frames_queued_while_the_writer_is_behind_go_out_as_one_joined_frame(
    connect: Connect,
) -> None:
    conn, sender = connect(open_gate=False)
    conn.send("first")
    await sender.wait_attempted(1)  # the writer is now stuck sending "first"

    for f in ("a", "b", "c"):
        assert conn.send(f) is True
    assert conn.queued_bytes == len("first") + 3

    sender.gate.set()
    await sender.wait_sent(2)

    assert sender.sent == ["first", "a\nb\nc"]
    assert conn.queued_bytes == 0


async def test_coalesced_frames_stay_under_the_coalescing_limit(connect: Connect) -> None:
    conn, sender = connect(max_queue_bytes=16 * COALESCE_BYTES, open_gate=False)
    conn.send("first")
    await sender.wait_attempted(1)
    big = ["x" * (COALESCE_BYTES // 2 - 100) for _ in range(6)]  # two fit, three do not
    huge = "y" * (COALESCE_BYTES + 1)

    for f in [*big, huge, "tail"]:
        conn.send(f)
    sender.gate.set()
    async with asyncio.timeout(2):
        while sender.lines() != ["first", *big, huge, "tail"]:
            await sender.wait_sent(len(sender.sent) + 1)

    # A frame over the limit goes out alone; the others are joined up to the limit.
    assert [len(s.split("\n")) for s in sender.sent] == [1, 2, 2, 2, 1, 1]
    assert all(len(s) <= COALESCE_BYTES for s in sender.sent if s != huge)


async def test_queue_over_its_byte_limit_closes_the_connection_as_slow(connect: Connect) -> None:
    conn, sender = connect(max_queue_bytes=10, open_gate=False)
    assert conn.send("aaaa") is True
    await sender.wait_attempted(1)  # in flight, still counted against the limit
    assert conn.send("bbbb") is True

    assert conn.send("cccc") is False

    assert conn.state is ConnectionState.CLOSING
    assert conn.close_code == CloseCode.SLOW
    assert conn.queued_bytes == 0
    async with asyncio.timeout(2):
        await sender.close_called.wait()
    assert sender.closes == [(CloseCode.SLOW, "slow consumer")]
    assert CloseCode(sender.closes[0][0]).reconnect

    # The queued frame was dropped, not sent, even once the socket drains.
    sender.gate.set()
    conn.closed()
    async with asyncio.timeout(2):
        await conn.wait_closed()
    assert sender.attempted == ["aaaa"]
    assert sender.sent == []


async def test_single_frame_larger_than_the_limit_goes_to_a_client_that_is_keeping_up(
    connect: Connect,
) -> None:
    conn, sender = connect(max_queue_bytes=10)

    assert conn.send("x" * 11) is True

    assert conn.close_code is None
    async with asyncio.timeout(2):
        while sender.attempted != ["x" * 11]:
            await asyncio.sleep(0)


async def test_frame_over_the_limit_behind_one_in_flight_closes_the_connection_as_slow(
    connect: Connect,
) -> None:
    conn, sender = connect(max_queue_bytes=10, open_gate=False)

    assert conn.send("x" * 5) is True  # in flight: the socket is not taking it yet
    assert conn.send("y" * 6) is False

    assert conn.close_code == CloseCode.SLOW
    async with asyncio.timeout(2):
        await sender.close_called.wait()
    assert sender.sent == []


async def test_send_after_close_is_refused(connect: Connect) -> None:
    conn, sender = connect()
    conn.close(CloseCode.NORMAL, "bye")

    assert conn.send("late") is False

    assert conn.queued_bytes == 0
    async with asyncio.timeout(2):
        await sender.close_called.wait()
    assert sender.closes == [(CloseCode.NORMAL, "bye")]
    assert sender.attempted == []


async def test_send_after_the_socket_is_gone_is_refused(connect: Connect) -> None:
    conn, _ = connect()
    conn.closed()

    assert conn.send("late") is False
    assert conn.state is ConnectionState.CLOSED


async def test_second_close_keeps_the_first_code(connect: Connect) -> None:
    conn, sender = connect()
    conn.close(CloseCode.SLOW, "slow consumer")
    conn.close(CloseCode.NORMAL, "bye")

    assert conn.close_code == CloseCode.SLOW
    conn.closed()
    async with asyncio.timeout(2):
        await conn.wait_closed()
    assert sender.closes == [(CloseCode.SLOW, "slow consumer")]


async def test_closed_connection_cannot_be_reopened(connect: Connect) -> None:
    conn, _ = connect()
    conn.closed()

    # No public method moves a connection back to open, so drive the state machine itself.
    with pytest.raises(RuntimeError, match="cannot go from closed to open") as info:
        conn._transition(ConnectionState.OPEN)
    assert "make a new one" in str(info.value)
    assert conn.id in str(info.value)
    assert conn.state is ConnectionState.CLOSED


async def test_a_frame_the_socket_can_take_goes_out_in_the_next_round_without_a_task(
    connect: Connect,
) -> None:
    conn, sender = connect()

    conn.send("one")
    assert sender.sent == []  # queued for the outbox's flush, right after this code
    await asyncio.sleep(0)

    assert sender.sent == ["one"]
    assert conn._writer is None
    assert conn.queued_bytes == 0


async def test_frames_sent_in_one_round_go_out_joined_as_one_frame(connect: Connect) -> None:
    conn, sender = connect()

    for frame in ("a", "b", "c"):
        conn.send(frame)
    await asyncio.sleep(0)

    assert sender.sent == ["a\nb\nc"]


async def test_a_send_that_must_wait_continues_in_a_writer_task_that_then_ends(
    connect: Connect,
) -> None:
    conn, sender = connect(open_gate=False)

    conn.send("one")
    await sender.wait_attempted(1)
    conn.send("two")
    assert conn._writer is not None
    assert sender.attempted == ["one"]

    sender.gate.set()
    await sender.wait_sent(2)
    async with asyncio.timeout(2):
        while conn._writer is not None:
            await asyncio.sleep(0)
    assert sender.sent == ["one", "two"]
    assert conn.queued_bytes == 0


@pytest.mark.parametrize("gate", ["open", "stuck"])
async def test_wait_closed_finishes_after_closed(connect: Connect, gate: str) -> None:
    conn, sender = connect(open_gate=gate == "open")
    conn.send("one")
    await sender.wait_attempted(1)

    conn.closed()
    async with asyncio.timeout(2):
        await conn.wait_closed()

    assert conn.state is ConnectionState.CLOSED
    assert conn.queued_bytes == 0


async def test_wait_closed_finishes_after_close_then_closed(connect: Connect) -> None:
    conn, sender = connect(open_gate=False)
    conn.send("one")
    await sender.wait_attempted(1)

    conn.close(CloseCode.GOING_AWAY, "shutdown")
    conn.closed()
    async with asyncio.timeout(2):
        await conn.wait_closed()

    assert conn.state is ConnectionState.CLOSED
    assert sender.closes == [(CloseCode.GOING_AWAY, "shutdown")]


async def test_failing_transport_stops_the_writer_without_raising() -> None:
    class BrokenSender(RecordingSender):
        async def send_text(self, text: str) -> None:
            await super().send_text(text)
            raise ConnectionResetError("peer went away")

    sender = BrokenSender()
    conn = Connection("broken", sender, max_queue_bytes=1024)
    conn.send("one")
    await sender.wait_sent(1)

    conn.closed()
    async with asyncio.timeout(2):
        await conn.wait_closed()
    assert sender.sent == ["one"]


# -- a decided close is final at once ------------------------------------------------------


async def test_a_decided_close_tells_the_owner_once_at_once(connect: Connect) -> None:
    told: list[Connection] = []
    conn, _ = connect(on_close=told.append)

    conn.close(CloseCode.SLOW, "slow consumer")
    conn.close(CloseCode.SLOW, "again")
    conn.closed()

    assert told == [conn]


async def test_a_socket_gone_without_a_decided_close_tells_the_owner_too(connect: Connect) -> None:
    told: list[Connection] = []
    conn, _ = connect(on_close=told.append)

    conn.closed()

    assert told == [conn]


async def test_a_close_frame_the_peer_never_takes_ends_in_an_abort_after_close_timeout(
    connect: Connect,
) -> None:
    conn, sender = connect(close_timeout=0.05)
    sender.close_gate.clear()

    conn.close(CloseCode.SLOW, "slow consumer")
    async with asyncio.timeout(2):
        while not sender.aborted:
            await asyncio.sleep(0.01)

    assert sender.closes == [(CloseCode.SLOW, "slow consumer")]
    assert sender.aborted == 1


async def test_a_flushing_close_spends_at_most_close_timeout_in_all(connect: Connect) -> None:
    conn, sender = connect(open_gate=False, close_timeout=0.1)
    sender.close_gate.clear()
    conn.send("stuck")
    await sender.wait_attempted(1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    conn.close(CloseCode.TOKEN_EXPIRED, "token expired", flush=True)
    async with asyncio.timeout(2):
        while not sender.aborted:
            await asyncio.sleep(0.01)

    assert loop.time() - started < 1.0


async def test_wait_below_returns_once_the_queue_drains(connect: Connect) -> None:
    conn, sender = connect(open_gate=False)
    conn.send("x" * 1000)
    await sender.wait_attempted(1)
    conn.send("y" * 1000)
    waiter = asyncio.create_task(conn.wait_below(100))
    await asyncio.sleep(0)
    assert not waiter.done()

    sender.gate.set()

    async with asyncio.timeout(2):
        assert await waiter is True
    assert conn.queued_bytes <= 100


async def test_wait_below_gives_false_when_the_connection_closes_meanwhile(
    connect: Connect,
) -> None:
    conn, sender = connect(open_gate=False)
    conn.send("x" * 1000)
    await sender.wait_attempted(1)
    conn.send("y" * 1000)
    waiter = asyncio.create_task(conn.wait_below(10))
    await asyncio.sleep(0)

    conn.closed()

    async with asyncio.timeout(2):
        assert await waiter is False


async def test_one_failing_flush_does_not_cost_the_other_connections_theirs(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pushhub.connection import Outbox

    outbox = Outbox()
    good_sender, bad_sender = RecordingSender(), RecordingSender()
    bad = Connection("bad", bad_sender, 1 << 20, outbox)
    good = Connection("good", good_sender, 1 << 20, outbox)

    original = Connection.flush

    def flush(self: Connection) -> None:
        if self.id == "bad":
            raise RuntimeError("a bug in one client's flush")
        original(self)

    monkeypatch.setattr(Connection, "flush", flush)
    bad.send("a")
    good.send("b")
    await good_sender.wait_sent(1)

    assert good_sender.sent == ["b"]
    # The failed one is not stuck "dirty": its next frame is flushed again.
    monkeypatch.undo()
    bad.send("c")
    await bad_sender.wait_sent(1)
    assert bad_sender.sent == ["a\nc"]
    for conn in (bad, good):
        conn.closed()
        await conn.wait_closed()


def test_held_frames_past_their_bound_keep_the_newest_and_say_so() -> None:
    from pushhub.recovery import Held

    held = Held(max_frames=3, max_bytes=1000)
    for offset in range(1, 4):
        held.add(offset, f"m{offset}")
    assert not held.overflowed

    held.add(4, "m4")

    assert held.overflowed
    assert held.frames == [(4, "m4")]
    assert held.first_offset() == 4
    big = Held(max_frames=100, max_bytes=10)
    big.add(None, "join")
    big.add(7, "x" * 20)
    assert big.overflowed
    assert big.first_offset() == 7
