"""A worker's accounting of what its clients receive: fed payloads directly, no sockets."""

from __future__ import annotations

import asyncio
from array import array
from typing import Any, cast

import orjson
import pytest

from load.client import LoadConnection
from load.histogram import LatencyHistogram
from load.ledger import OPEN
from load.worker import Receipts, Worker, WorkerSpec

NOW = 1_700_000_000_000_000_000


class FakeClient:
    def __init__(self, windowed: bool = False) -> None:
        self.pending: asyncio.Future[None] | None = None
        self.windowed = windowed
        self.confirmed_ns = 0
        self.window_start = OPEN if windowed else 0
        self.window_end = OPEN


def make_worker() -> Worker:
    return Worker(cast(Any, None), WorkerSpec(0, (), 0.0))


def message(seq: int, sent_ns: int) -> bytes:
    event = {"type": "message", "channel": "c", "data": {"s": seq, "t": sent_ns, "p": "x"}}
    return orjson.dumps(event)


def counts(receipts: Receipts) -> list[int]:
    out = array("I")
    out.frombytes(receipts.counts)
    return list(out)


def feed(worker: Worker, payload: bytes, client: FakeClient | None = None) -> None:
    worker.on_data(cast(LoadConnection, client or FakeClient()), payload)


def test_receipts_are_counted_per_sequence_number() -> None:
    worker = make_worker()
    for seq in (0, 1, 1, 3):
        feed(worker, message(seq, NOW))
    receipts = worker._collect(next_base=4)
    assert counts(receipts) == [1, 2, 0, 1]
    assert (receipts.base, receipts.messages, receipts.frames) == (0, 4, 4)


def test_a_coalesced_frame_counts_each_message_it_carries() -> None:
    worker = make_worker()
    feed(worker, b"\n".join(message(seq, NOW) for seq in range(3)))
    receipts = worker._collect(next_base=3)
    assert (receipts.messages, receipts.frames) == (3, 1)
    assert counts(receipts) == [1, 1, 1]


def test_collect_starts_afresh_and_earlier_sequence_numbers_count_as_late() -> None:
    worker = make_worker()
    feed(worker, message(0, NOW))
    worker._collect(next_base=10)
    feed(worker, message(4, NOW))
    feed(worker, message(12, NOW))
    receipts = worker._collect(next_base=20)
    assert (receipts.base, receipts.late, receipts.messages) == (10, 1, 2)
    assert counts(receipts) == [0, 0, 1]


def test_latency_is_receipt_time_minus_publish_time_in_microseconds() -> None:
    worker = make_worker()
    feed(worker, message(0, 0))  # published at the epoch: about 55 years ago
    latency = LatencyHistogram.from_state(worker._collect(next_base=1).latency)
    assert latency.total == 1
    assert latency.max > 50 * 365 * 86400 * 1_000_000


def test_unreadable_lines_and_foreign_messages_are_counted_as_bad() -> None:
    worker = make_worker()
    feed(worker, b"not json")
    feed(worker, orjson.dumps({"type": "message", "channel": "c", "data": "hello"}))
    feed(worker, orjson.dumps({"type": "message", "channel": "c", "data": {"s": "x", "t": 1}}))
    receipts = worker._collect(next_base=0)
    assert (receipts.bad, receipts.messages) == (3, 0)


async def test_subscribed_resolves_the_clients_pending_subscribe() -> None:
    worker, client = make_worker(), FakeClient()
    client.pending = asyncio.get_running_loop().create_future()
    feed(worker, orjson.dumps({"type": "subscribed", "channel": "c", "id": 1}), client)
    assert client.pending.done()
    assert client.pending.result() is None


async def test_an_error_reply_fails_the_clients_pending_subscribe() -> None:
    worker, client = make_worker(), FakeClient()
    client.pending = asyncio.get_running_loop().create_future()
    feed(worker, orjson.dumps({"type": "error", "code": "unavailable", "id": 1}), client)
    with pytest.raises(ConnectionError, match="refused"):
        client.pending.result()


def test_other_events_are_counted_apart() -> None:
    worker = make_worker()
    feed(worker, orjson.dumps({"type": "join", "channel": "c", "user": "u"}))
    receipts = worker._collect(next_base=0)
    assert (receipts.other, receipts.bad, receipts.messages) == (1, 0, 0)


def test_a_sequence_number_far_beyond_the_range_is_bad_not_counted() -> None:
    worker = make_worker()
    feed(worker, message(10**12, NOW))
    receipts = worker._collect(next_base=0)
    assert (receipts.bad, receipts.messages, receipts.counts) == (1, 0, b"")


def test_frames_and_presence_lines_are_counted_since_the_start() -> None:
    worker = make_worker()
    joins = [{"type": "join", "channel": "c", "client": str(i)} for i in range(3)]
    feed(worker, b"\n".join(orjson.dumps(j) for j in joins))
    feed(worker, orjson.dumps({"type": "presence_count", "channel": "c", "users": 9}))
    feed(worker, orjson.dumps({"type": "leave", "channel": "c", "client": "1"}))
    feed(worker, orjson.dumps({"type": "connected", "client": "x"}))
    worker._collect(next_base=0)
    peek = worker._peek()
    assert (peek.frames, peek.presence) == (4, 5)


async def test_a_windowed_client_counts_only_messages_published_in_its_window() -> None:
    worker, client = make_worker(), FakeClient(windowed=True)
    client.pending = asyncio.get_running_loop().create_future()
    feed(worker, message(0, NOW), client)  # before the subscribe is confirmed
    feed(worker, orjson.dumps({"type": "subscribed", "channel": "c", "id": 1}), client)
    start = client.window_start
    assert start == client.confirmed_ns > 0
    feed(worker, message(1, start - 1), client)  # published before the window
    feed(worker, message(2, start), client)
    client.window_end = start + 10  # the cut
    feed(worker, message(3, start + 9), client)
    feed(worker, message(4, start + 10), client)
    receipts = worker._collect(next_base=0)
    assert counts(receipts) == [0, 0, 1, 1]
    assert (receipts.messages, receipts.uncounted) == (2, 3)
    assert LatencyHistogram.from_state(receipts.latency).total == 2


async def test_a_subscribe_confirmed_between_the_cut_and_the_restart_counts_nothing() -> None:
    worker, client = make_worker(), FakeClient(windowed=True)
    client.pending = asyncio.get_running_loop().create_future()
    worker._cut(NOW, 2**62)  # the cut has passed, the restart is far ahead
    feed(worker, orjson.dumps({"type": "subscribed", "channel": "c", "id": 1}), client)
    assert client.window_end <= client.window_start
    feed(worker, message(0, client.window_start), client)
    assert worker._collect(next_base=0).uncounted == 1
