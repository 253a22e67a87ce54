"""The processes a run starts and stops: redis-server and the server under test.

Everything listens on 127.0.0.1 on a free port. Each child is pinned with ``taskset``
(so every thread it starts inherits the CPUs) and asks the kernel to send it SIGTERM
if the tool dies, so no server outlives the run that started it.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; survives the exec of taskset and its exec.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


class Managed:
    """A child process with its output in a log file, pinned to ``cpus``."""

    def __init__(self, name: str, args: list[str], cpus: Collection[int] = ()) -> None:
        self.name = name
        self.args = args
        self.cpus = tuple(sorted(cpus))
        fd, path = tempfile.mkstemp(prefix=f"load-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def spawn(self, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        args = list(self.args)
        taskset = shutil.which("taskset")
        if self.cpus and taskset:
            args = [taskset, "-c", ",".join(map(str, self.cpus)), *args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                preexec_fn=_die_with_parent,
            )
        if self.cpus and not taskset:
            os.sched_setaffinity(self.proc.pid, set(self.cpus))

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StartError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.05)
        raise StartError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        died = self.proc.poll() is not None
        if not died:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code, self.proc = self.proc.returncode, None
        if died:  # it did not wait for us: keep its log for the post-mortem
            print(f"{self.name} exited by itself ({code}); log: {self.log_path}", file=sys.stderr)
        else:
            self.log_path.unlink(missing_ok=True)


class RedisProcess(Managed):
    def __init__(self, cpus: Collection[int] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StartError("redis-server is not installed (or pass --redis-url)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="load-redis-")
        args = [binary, "--port", str(self.port), "--bind", HOST, "--save", ""]
        args += ["--appendonly", "no", "--dir", self.dir, "--daemonize", "no"]
        args += ["--maxclients", "1000", "--loglevel", "warning"]
        super().__init__("redis-server", args, cpus)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        self.spawn()
        self.wait_until(self._pong, 10)

    def _pong(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 15) -> None:
        super().stop(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)


TARGETS = ("pushhub", "reference")


class ServerProcess(Managed):
    """The server under test: pushhub (``python -m pushhub serve``) or the reference."""

    def __init__(
        self,
        target: str,
        redis_url: str,
        cpus: Collection[int] = (),
        config: str | None = None,
    ) -> None:
        """``config``: TOML for pushhub's ``--config``."""
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}")
        self.target = target
        self.config_path: Path | None = None
        self.port = free_port()
        self.redis_url = redis_url
        module = "pushhub" if target == "pushhub" else "load.reference"
        args = [sys.executable, "-m", module]
        if target == "pushhub":
            args.append("serve")
        args += ["--host", HOST, "--port", str(self.port), "--redis-url", redis_url]
        if config is not None and target == "pushhub":
            fd, path = tempfile.mkstemp(prefix="load-pushhub-", suffix=".toml")
            with os.fdopen(fd, "w") as fh:
                fh.write(config)
            self.config_path = Path(path)
            args += ["--config", path]
        super().__init__(target, args, cpus)

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}" + ("/ws" if self.target == "pushhub" else "/")

    def start(self, timeout: float = 30) -> None:
        # The run's own settings only: nothing from the caller's PUSHHUB_* environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHHUB_")}
        for var in ("REDIS_URL", "PORT"):
            env.pop(var, None)
        env["PUSHHUB_LOG_LEVEL"] = "warning"
        self.spawn(env, cwd=ROOT)
        self.wait_until(self._ready, timeout)

    def restart(self, timeout: float = 30, stop_timeout: float = 30) -> tuple[float, float]:
        """SIGTERM, wait for the exit (SIGKILL after ``stop_timeout``), then start again
        on the same port with the same settings. Blocks (run it in a thread). Returns
        (seconds from SIGTERM to exit, seconds from SIGTERM to ready again)."""
        assert self.proc is not None, "not running"
        began = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        stopped = time.monotonic() - began
        self.start(timeout)
        return stopped, time.monotonic() - began

    def _ready(self) -> bool:
        if not _port_open(self.port):
            return False
        if self.target == "reference":
            return True  # it listens only once its Redis subscription is confirmed
        conn = http.client.HTTPConnection(HOST, self.port, timeout=1)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self, timeout: float = 15) -> None:
        super().stop(timeout)
        if self.config_path is not None:
            self.config_path.unlink(missing_ok=True)
