"""What tests share: real processes (redis-server, pushhub nodes, WebSocket clients), a
clock the test moves, and a recording transport for in-process connections.

Everything listens on 127.0.0.1 and free ports; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from pushhub.connection import Connection
from pushhub.engine.base import Engine, EngineEvents
from tests.engine_events import Ignore

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """Seconds, moved only by the test: the ``clock`` a unit under test takes."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def ms(self) -> int:
        return int(self.now * 1000)


class RecordingSender:
    """A connection's transport in process (``pushhub.connection.Sender``): records every
    frame and close, and can hold the writer mid-send.

    Each ``send_text`` is recorded when it starts (``attempted``) and when it completes
    (``sent``). With the gate closed, sends wait for the test to open it; with the close
    gate closed, the close frame never gets through (a peer that stopped reading).
    """

    def __init__(self, *, open_gate: bool = True) -> None:
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.attempted: list[str] = []
        self.sent: list[str] = []
        self.closes: list[tuple[int, str]] = []
        self.close_called = asyncio.Event()
        self.close_gate = asyncio.Event()
        self.close_gate.set()
        self.aborted = 0
        self._progress = asyncio.Condition()
        self._read = 0

    async def send_text(self, text: str) -> None:
        async with self._progress:
            self.attempted.append(text)
            self._progress.notify_all()
        await self.gate.wait()
        async with self._progress:
            self.sent.append(text)
            self._progress.notify_all()

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        self.close_called.set()
        await self.close_gate.wait()

    def abort(self) -> None:
        self.aborted += 1

    async def wait_attempted(self, count: int, timeout: float = 2) -> None:
        """Wait until the writer has started ``count`` sends."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: len(self.attempted) >= count)

    async def wait_sent(self, count: int, timeout: float = 2) -> None:
        """Wait until ``count`` sends have completed."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: len(self.sent) >= count)

    async def next_frame(self, timeout: float = 2) -> str:
        """The next sent frame this method has not returned yet, waiting for it."""
        await self.wait_sent(self._read + 1, timeout)
        self._read += 1
        return self.sent[self._read - 1]

    def unread(self) -> list[str]:
        """Sent frames ``next_frame`` has not returned yet."""
        return self.sent[self._read :]

    def lines(self) -> list[str]:
        """What the client got, with coalesced text frames split back apart."""
        return [line for text in self.sent for line in text.split("\n")]

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]


E = TypeVar("E", bound=Engine)


class Engines:
    """Starts engines (memory or Redis) for a test; the ``engines`` fixture closes every
    one it started after the test."""

    def __init__(self) -> None:
        self.started: list[Engine] = []

    async def start(self, engine: E, events: EngineEvents | None = None) -> E:
        """Start ``engine`` handing what it receives to ``events`` (by default, nothing)."""
        await engine.start(events or Ignore())
        self.started.append(engine)
        return engine


#: Makes a started connection on a RecordingSender (tests/unit/conftest.py's ``connect``).
Connect = Callable[..., tuple[Connection, RecordingSender]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true, or fail naming ``what``. For cross-process state
    that offers no event to wait on (a port opening, a process exiting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A real redis-server on a free loopback port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run ./dev.sh test, which installs it"
            )
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="pushhub-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.cli("PING").strip() == "PONG", 10, f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def cli(self, *args: str, timeout: float = 5) -> str:
        """Run redis-cli itself against this server and return its output."""
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return result.stdout.decode()


class PushhubNode:
    """A pushhub node run as a real process: ``python -m pushhub serve`` on a free port."""

    def __init__(
        self,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.extra_args = list(args or [])
        self.log_path = Path(tempfile.mkstemp(prefix="pushhub-node-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 20) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHHUB_")}
        env.pop("REDIS_URL", None)
        env.pop("PORT", None)
        env.update(self.extra_env)
        args = [sys.executable, "-m", "pushhub", "serve", "--port", str(self.port)]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        args += self.extra_args
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        wait_for(self._healthy, timeout, f"pushhub on port {self.port} (log: {self.log_path})")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"pushhub exited with {self.proc.returncode}:\n{self.log()}")
        if not _port_open(self.port):
            return False
        try:
            return httpx.get(f"{self.http}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 15) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.http}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, f"pushhub on port {self.port} to be ready", interval=0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code


class NodeGroup:
    """Nodes shared by the tests of one module (a module-scoped fixture owns the group),
    on one Redis, started concurrently; ``stop_all`` at the module's end."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.nodes: list[PushhubNode] = []

    def start(self, *envs: Mapping[str, str], args: list[str] | None = None) -> list[PushhubNode]:
        """One node per environment, each with ``args``, started side by side."""
        made = [PushhubNode(self.redis_url, env=env, args=args) for env in envs]
        self.nodes += made
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(lambda node: node.start(), made))
        return made

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop()


class Client:
    """A real ``websockets`` client that speaks pushhub's protocol.

    Server frames may carry several newline-separated JSON objects (see docs/protocol.md);
    ``recv`` hands them out one at a time.
    """

    #: Every client opened by the current test; conftest closes them all afterwards.
    opened: ClassVar[list[Client]] = []

    def __init__(self, ws: ClientConnection, presence_events: bool = False) -> None:
        self.ws = ws
        #: Whether recv() hands out join/leave events; when False they are set aside
        #: in ``self.presence_events`` so tests about messages need not skip them.
        self.wants_presence_events = presence_events
        self.presence_events: list[dict[str, Any]] = []
        Client.opened.append(self)
        self._pending: deque[dict[str, Any]] = deque()
        self._next_id = 0

    @classmethod
    async def connect(cls, url: str, presence_events: bool = False, **kwargs: Any) -> Client:
        kwargs.setdefault("close_timeout", 1)
        ws = await connect(url, open_timeout=10, **kwargs)
        return cls(ws, presence_events)

    async def close(self) -> None:
        await self.ws.close()

    async def send(self, frame: Any) -> None:
        await self.ws.send(
            frame if isinstance(frame, str | bytes) else orjson.dumps(frame).decode()
        )

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        while not self._pending:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(raw, str), f"server sent a binary frame: {raw!r}"
            for line in raw.split("\n"):
                event = orjson.loads(line)
                if not self.wants_presence_events and event.get("type") in ("join", "leave"):
                    self.presence_events.append(event)
                else:
                    self._pending.append(event)
        return self._pending.popleft()

    async def recv_type(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """The next event of type ``kind``; any other event first fails the test."""
        event = await self.recv(timeout)
        assert event["type"] == kind, f"expected {kind!r}, got {event}"
        return event

    async def request(self, frame: dict[str, Any], timeout: float = 5) -> dict[str, Any]:
        """Send a frame with a fresh id and return the reply carrying that id. Events
        that arrive first (messages, joins) stay queued, in order, for later ``recv``."""
        self._next_id += 1
        rid = self._next_id
        await self.send({**frame, "id": rid})
        skipped: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await self.recv(timeout)
                    if event.get("id") == rid:
                        return event
                    skipped.append(event)
        finally:
            self._pending.extendleft(reversed(skipped))

    async def subscribe(self, channel: str) -> dict[str, Any]:
        reply = await self.request({"type": "subscribe", "channel": channel})
        assert reply["type"] == "subscribed", reply
        return reply

    async def recover(
        self, channel: str, since: dict[str, Any] | None = None, timeout: float = 30
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Subscribe to a durable channel, with ``since`` to recover from a position: the
        replayed messages, in order, and the ``subscribed`` reply. Anything else before
        the reply fails the test."""
        frame: dict[str, Any] = {"type": "subscribe", "channel": channel, "id": 99}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        replayed: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.recv()
                if event["type"] == "subscribed" and event.get("id") == 99:
                    return replayed, event
                assert event["type"] == "message", event
                replayed.append(event)

    async def closed_code(self, timeout: float = 10) -> int | None:
        """Read until the server closes; return the close code."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                async for _ in self.ws:
                    pass
        assert self.ws.close_code is not None, "the server did not close the connection"
        return self.ws.close_code


async def stalled_client(node: PushhubNode, query: str = "") -> tuple[Client, int]:
    """A client whose socket takes in almost nothing once it stops reading (it reads only
    when the test calls recv), and its local port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    port: int = sock.getsockname()[1]
    client = await Client.connect(node.ws_url + query, sock=sock, max_queue=1)
    return client, port


async def publish_http(
    node: PushhubNode, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{node.http}/api/publish", json=body, headers=headers)
