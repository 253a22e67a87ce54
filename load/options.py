"""The options of one invocation, checked before anything starts.

Every run is bounded: counts and times have ceilings, the whole invocation has a hard
time cap, and the only address it ever connects to is the loopback interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

TARGETS = ("pushhub", "reference")
PUBLISH_PATHS = ("redis", "http")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

MAX_CLIENTS = 50_000
MAX_RATE = 1_000_000.0
MAX_DURATION = 3_600.0
MAX_HARD_CAP = 7_200.0
MAX_WORKERS = 64
#: Messages one publish phase (a run, or one ramp step) may schedule.
MAX_MESSAGES = 10_000_000


class UsageError(ValueError):
    """A bad option: the message names it and says what is accepted."""


@dataclass(frozen=True, slots=True)
class Options:
    scenario: str
    targets: tuple[str, ...] = ("pushhub",)
    clients: int = 1000
    #: Distinct channels the clients spread over; None lets the scenario choose.
    channels: int | None = None
    rate: float = 100.0
    duration: float = 10.0
    ramp: bool = False
    ramp_factor: float = 1.5
    ramp_refine: int = 2
    max_rate: float = 100_000.0
    #: A run (or ramp step) whose p99 latency exceeds this has not kept up.
    max_p99_ms: float | None = None
    publish: str = "redis"
    workers: int = 2
    server_cpus: tuple[int, ...] = ()
    client_cpus: tuple[int, ...] = ()
    redis_url: str | None = None
    json_out: str | None = None
    max_duration: float = 900.0
    payload_bytes: int = 100
    connect_concurrency: int = 500
    connect_timeout: float = 30.0
    settle: float = 2.0
    progress_every: float = 5.0
    seed: int = 1
    http_connections: int = 8
    #: Seconds to wait, before each connect or publish phase, for other work on the
    #: machine to quieten down (0: do not wait).
    wait_quiet: float = 0.0
    #: pushhub's presence (members, join/leave events) on the load channels. Off by
    #: default: the reference has none, and fan-out is what these scenarios measure.
    presence: bool = False
    #: storm, stormload, restart: seconds a client keeps retrying a refused or failed
    #: connect with the browser client's backoff before it counts as failed.
    retry_for: float = 120.0
    #: stormload: the new clients that connect at once while the stream runs.
    storm_clients: int = 5000
    #: pushhub's max_handshakes for the run (None: pushhub's default, 2,000).
    max_handshakes: int | None = None


def parse_cpus(text: str) -> tuple[int, ...]:
    """``"1"``, ``"1,3"`` or ``"1-3"`` -> sorted CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise UsageError(f"--client-cpus: {text!r} is not a CPU list like 1 or 1,2 or 1-3")
        start, stop = int(lo), int(hi) if sep else int(lo)
        if stop < start:
            raise UsageError(f"--client-cpus: empty range {part!r}")
        cpus.update(range(start, stop + 1))
    return tuple(sorted(cpus))


def pinning(
    allowed: Sequence[int],
    server_cpu: int | None = None,
    client_cpus: Sequence[int] | None = None,
    enabled: bool = True,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The server's CPUs and the generator's CPUs.

    By default the server gets the first CPU this process may use and the generator
    (client workers, publisher, redis-server) the others, so they never compete. With
    fewer than two CPUs, or pinning disabled, nothing is pinned.
    """
    if not enabled or (len(allowed) < 2 and server_cpu is None and not client_cpus):
        return (), ()
    server = server_cpu if server_cpu is not None else min(allowed)
    clients = (
        tuple(sorted(client_cpus)) if client_cpus else tuple(c for c in allowed if c != server)
    )
    for cpu in (server, *clients):
        if cpu not in allowed:
            raise UsageError(f"CPU {cpu} is not available here (available: {list(allowed)})")
    if server in clients:
        raise UsageError(f"--server-cpu {server} is also in --client-cpus")
    if not clients:
        raise UsageError("no CPU is left for the generator; give --client-cpus")
    return (server,), clients


def check_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise UsageError(f"--redis-url: {url!r} must be a redis:// URL")
    if parts.hostname not in LOOPBACK_HOSTS:
        raise UsageError(
            f"--redis-url: the load tool only targets 127.0.0.1, not {parts.hostname!r}"
        )
    return url


def _within(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise UsageError(f"{name}: {value:g} is outside {lo:g}..{hi:g}")


def check(opts: Options) -> Options:
    """Return ``opts`` if every option is within bounds, else raise UsageError."""
    for target in opts.targets:
        if target not in TARGETS:
            raise UsageError(f"--target: {target!r} is not one of pushhub, reference, both")
    if opts.publish not in PUBLISH_PATHS:
        raise UsageError(f"--publish: {opts.publish!r} is not redis or http")
    if opts.publish == "http" and "reference" in opts.targets:
        raise UsageError("--publish http: the reference server has no HTTP API; use redis")
    _within("--clients", opts.clients, 1, MAX_CLIENTS)
    if opts.channels is not None:
        _within("--channels", opts.channels, 1, opts.clients)
    _within("--rate", opts.rate, 0.1, MAX_RATE)
    if opts.ramp:
        _within("--max-rate", opts.max_rate, opts.rate, MAX_RATE)
    _within("--duration", opts.duration, 0.5, MAX_DURATION)
    _within("--max-duration", opts.max_duration, 5, MAX_HARD_CAP)
    _within("--workers", opts.workers, 1, MAX_WORKERS)
    top_rate = opts.max_rate if opts.ramp else opts.rate
    if top_rate * opts.duration > MAX_MESSAGES:
        raise UsageError(
            f"--duration {opts.duration:g} at up to {top_rate:g} msg/s would publish more than "
            f"{MAX_MESSAGES:,} messages in one phase; shorten it or lower the rate"
        )
    _within("--payload-bytes", opts.payload_bytes, 0, 60_000)
    _within("--ramp-factor", opts.ramp_factor, 1.05, 10)
    _within("--ramp-refine", opts.ramp_refine, 0, 10)
    _within("--connect-concurrency", opts.connect_concurrency, 1, MAX_CLIENTS)
    _within("--connect-timeout", opts.connect_timeout, 1, 600)
    _within("--settle", opts.settle, 0, 600)
    _within("--progress-every", opts.progress_every, 0.5, 3600)
    _within("--http-connections", opts.http_connections, 1, 256)
    _within("--wait-quiet", opts.wait_quiet, 0, 3600)
    _within("--retry-for", opts.retry_for, 0, 3600)
    if opts.max_handshakes is not None:
        _within("--max-handshakes", opts.max_handshakes, 1, 1_000_000)
    if opts.scenario == "stormload":
        _within("--storm-clients", opts.storm_clients, 1, MAX_CLIENTS)
        if opts.clients + opts.storm_clients > MAX_CLIENTS:
            raise UsageError(f"--clients plus --storm-clients: more than {MAX_CLIENTS:,}")
    if opts.scenario == "restart":
        if opts.publish != "redis":
            raise UsageError(
                "restart: the stream goes through Redis (--publish redis), since "
                "the server's HTTP API is down while it restarts"
            )
        if opts.retry_for <= 0:
            raise UsageError("restart: clients must come back; give --retry-for > 0")
    if opts.max_p99_ms is not None:
        _within("--max-p99-ms", opts.max_p99_ms, 0.1, 600_000)
    if opts.redis_url is not None:
        check_redis_url(opts.redis_url)
    return opts
