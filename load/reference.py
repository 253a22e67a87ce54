"""The reference: the smallest raw ``websockets`` broadcast server speaking pushhub's
minimal protocol, so pushhub's overhead is always a ratio measured in the same run.

``python -m load.reference --port P --redis-url URL`` (127.0.0.1 only). One Redis
Pub/Sub connection holds one pattern subscription to every channel; each message is
decoded and encoded once and written to every local subscriber with
``websockets.broadcast``. Clients send ``{"type": "subscribe", "channel": c, "id": n}``
(and ``unsubscribe``) and get ``{"type": "subscribed", "channel": c, "id": n}``;
messages arrive as ``{"type": "message", "channel": c, "data": ...}``, one per frame.

Settings match pushhub's defaults where they affect the measurement: no compression,
64 KiB frames, pings every 25 s, a listen backlog of 2048 (uvicorn's), uvloop.
There is deliberately nothing else: no queues, no limits, no slow-client handling
(``broadcast`` buffers without bound), no reconnection to Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, broadcast, serve

from load import runtime
from load.options import LOOPBACK_HOSTS, UsageError, check_redis_url

channels: dict[str, set[ServerConnection]] = {}


def _frame(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


async def handler(ws: ServerConnection) -> None:
    mine: set[str] = set()
    try:
        async for text in ws:
            try:
                frame = orjson.loads(text)
                kind, channel = frame["type"], frame["channel"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            if not isinstance(channel, str):
                continue
            if kind == "subscribe":
                channels.setdefault(channel, set()).add(ws)
                mine.add(channel)
                await ws.send(
                    _frame({"type": "subscribed", "channel": channel, "id": frame.get("id")})
                )
            elif kind == "unsubscribe" and channel in mine:
                mine.discard(channel)
                _leave(ws, channel)
                await ws.send(
                    _frame({"type": "unsubscribed", "channel": channel, "id": frame.get("id")})
                )
    finally:
        for channel in mine:
            _leave(ws, channel)


def _leave(ws: ServerConnection, channel: str) -> None:
    subs = channels.get(channel)
    if subs is not None:
        subs.discard(ws)
        if not subs:
            del channels[channel]


def _data(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")


async def relay(redis: Redis) -> None:
    async with redis.pubsub() as pubsub:
        await pubsub.psubscribe("*")
        await pubsub.get_message(timeout=5)  # the psubscribe confirmation
        ready.set()
        async for msg in pubsub.listen():
            if msg["type"] != "pmessage":
                continue
            channel = msg["channel"].decode()
            subs = channels.get(channel)
            if subs:
                frame = _frame({"type": "message", "channel": channel, "data": _data(msg["data"])})
                broadcast(subs, frame)


ready = asyncio.Event()


async def main_async(host: str, port: int, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    relay_task = asyncio.create_task(relay(redis))
    await asyncio.wait_for(ready.wait(), 10)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(
        handler,
        host,
        port,
        compression=None,
        max_size=64 * 1024,
        ping_interval=25,
        ping_timeout=20,
        server_header=None,
        backlog=2048,
    ):
        with contextlib.suppress(asyncio.CancelledError):
            await stop
    relay_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relay_task
    await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.reference", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args(argv)
    try:
        if args.host not in LOOPBACK_HOSTS:
            raise UsageError(f"--host: the reference listens on 127.0.0.1 only, not {args.host!r}")
        check_redis_url(args.redis_url)
    except UsageError as exc:
        print(f"reference: {exc}", file=sys.stderr)
        return 2
    runtime.raise_nofile_limit()
    runtime.run(main_async(args.host, args.port, args.redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
