"""Fixtures for the in-process unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from pushhub.connection import Connection
from tests.support import Connect, RecordingSender


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Make started connections on recording senders; all are closed and awaited after
    the test."""
    made: list[Connection] = []

    def make(
        *,
        max_queue_bytes: int = 1024 * 1024,
        open_gate: bool = True,
        on_close: Callable[[Connection], None] | None = None,
        close_timeout: float = 2.0,
    ) -> tuple[Connection, RecordingSender]:
        sender = RecordingSender(open_gate=open_gate)
        conn = Connection(
            f"c{len(made)}",
            sender,
            max_queue_bytes,
            on_close=on_close,
            close_timeout=close_timeout,
        )
        made.append(conn)
        return conn, sender

    yield make
    for conn in made:
        conn.closed()
    async with asyncio.timeout(2):
        await asyncio.gather(*(conn.wait_closed() for conn in made))
