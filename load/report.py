"""Results: one record per run or ramp step, as JSON lines and as markdown tables.

Every field is a plain number, string or list, so a JSON line is the record itself and
docs/benchmarks.md can be rebuilt from the lines alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class Result:
    scenario: str
    target: str
    #: "run" (a whole run), "step" (one ramp step) or "ramp" (the ramp's summary).
    kind: str = "run"
    step: int | None = None
    clients: int = 0
    channels: int = 0
    workers: int = 0
    publish: str = "redis"
    #: Whether pushhub's presence was on for the load channels (None: the reference).
    presence: bool | None = None
    #: The scheduled publish rate in messages per second, when the scenario publishes.
    rate: float | None = None
    #: The measured window in seconds: first publish to last receipt, or the connect phase.
    duration_s: float = 0.0
    published: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    #: None where delivery speed is not what the scenario measures (idle, storm).
    delivered_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    connected: int = 0
    connect_failures: int = 0
    connect_per_s: float | None = None
    connect_p99_ms: float | None = None
    #: Clients the server closed during the run (for pushhub: slow consumers).
    disconnects: int = 0
    server_cpu_pct: float | None = None
    server_rss_mib: float | None = None
    server_rss_peak_mib: float | None = None
    #: idle: (RSS with the clients connected - RSS before) / clients.
    rss_per_conn_kib: float | None = None
    #: CPU of everything on the generator's cores (workers, publisher, redis-server).
    generator_cpu_pct: float | None = None
    worker_cpu_max_pct: float | None = None
    #: The generator's parts: all client workers, the publisher process, redis-server.
    worker_cpu_pct: float | None = None
    publisher_cpu_pct: float | None = None
    redis_cpu_pct: float | None = None
    #: CPU used by anything else on the machine meanwhile (other work, kernel threads).
    other_cpu_pct: float | None = None
    publisher_max_lag_ms: float | None = None
    generator_bottleneck: bool = False
    #: The ramp's answer: the highest rate that passed.
    best_rate: float | None = None
    #: storm, stormload, restart: seconds from the start of the connect phase until the
    #: last client was subscribed (retries and backoff included).
    all_subscribed_s: float | None = None
    #: Connect attempts refused with HTTP 503 (pushhub's max_handshakes), and failed
    #: attempts retried after the browser client's backoff.
    connect_refused: int | None = None
    connect_retries: int | None = None
    #: storm: data frames and presence lines (join, leave, presence_count) the clients
    #: received from the start of the storm until the frames stopped.
    frames_received: int | None = None
    presence_events_received: int | None = None
    #: restart: SIGTERM to exit, SIGTERM to ready again, SIGTERM to every client
    #: subscribed again; per client, SIGTERM to its new subscription (p50, p99).
    restart_stop_s: float | None = None
    outage_s: float | None = None
    all_back_s: float | None = None
    reconnected: int | None = None
    reconnect_failures: int | None = None
    reconnect_p50_ms: float | None = None
    reconnect_p99_ms: float | None = None
    #: Receipts outside their connection's counting window (published while it was
    #: down, or in the guard before the restart): received, not counted.
    uncounted: int | None = None
    #: stormload: the storm of new clients while the stream runs; the latency fields are
    #: the stream's during the storm, this one its p99 before the storm.
    storm_clients: int | None = None
    storm_connected: int | None = None
    storm_failures: int | None = None
    storm_connect_per_s: float | None = None
    baseline_latency_p99_ms: float | None = None
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: _round(v) for k, v in dataclasses.asdict(self).items()}

    def json_line(self) -> str:
        return orjson.dumps(self.to_dict()).decode()


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3) if abs(value) < 100 else round(value, 1)
    return value


#: Ratios reported as pushhub / reference: (label, attribute).
RATIO_METRICS = (
    ("delivered msg/s", "delivered_per_s"),
    ("highest zero-loss rate", "best_rate"),
    ("latency p50", "latency_p50_ms"),
    ("latency p99", "latency_p99_ms"),
    ("connect rate", "connect_per_s"),
    ("time until all subscribed", "all_subscribed_s"),
    ("time until all back", "all_back_s"),
    ("reconnect p99", "reconnect_p99_ms"),
    ("storm connect rate", "storm_connect_per_s"),
    ("server CPU", "server_cpu_pct"),
    ("server RSS", "server_rss_mib"),
    ("RSS per connection", "rss_per_conn_kib"),
)


def ratios(reference: Result, pushhub: Result) -> dict[str, Any]:
    """pushhub / reference for every metric both runs measured, as one JSON-ready record."""
    out: dict[str, Any] = {"kind": "ratio", "scenario": pushhub.scenario}
    for _, attr in RATIO_METRICS:
        ref, ours = getattr(reference, attr), getattr(pushhub, attr)
        if ref and ours is not None:
            out[attr] = {
                "reference": _round(ref),
                "pushhub": _round(ours),
                "ratio": round(ours / ref, 3),
            }
    out["generator_bottleneck"] = reference.generator_bottleneck or pushhub.generator_bottleneck
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


Column = tuple[str, Callable[[Result], str]]

COLUMNS: Sequence[Column] = (
    ("target", lambda r: r.target),
    ("scenario", lambda r: r.scenario + (f" #{r.step}" if r.step is not None else "")),
    ("clients", lambda r: _fmt(r.clients)),
    ("rate msg/s", lambda r: _fmt(r.best_rate if r.kind == "ramp" else r.rate)),
    ("delivered msg/s", lambda r: _fmt(r.delivered_per_s)),
    ("p50 ms", lambda r: _fmt(r.latency_p50_ms, 2)),
    ("p99 ms", lambda r: _fmt(r.latency_p99_ms, 2)),
    ("max ms", lambda r: _fmt(r.latency_max_ms, 2)),
    ("lost", lambda r: _fmt(r.lost)),
    ("conn/s", lambda r: _fmt(r.connect_per_s)),
    ("conn fail", lambda r: _fmt(r.connect_failures)),
    ("srv CPU %", lambda r: _fmt(r.server_cpu_pct, 0)),
    ("srv RSS MiB", lambda r: _fmt(r.server_rss_mib)),
    ("KiB/conn", lambda r: _fmt(r.rss_per_conn_kib)),
    ("gen CPU %", lambda r: _fmt(r.generator_cpu_pct, 0)),
    ("other CPU %", lambda r: _fmt(r.other_cpu_pct, 0)),
    ("ok", lambda r: "yes" if r.ok else "NO"),
    ("notes", lambda r: "; ".join(_notes(r))),
)


#: The connect-and-reconnect table, for the scenarios that measure connecting.
CONNECT_COLUMNS: Sequence[Column] = (
    ("target", lambda r: r.target),
    ("scenario", lambda r: r.scenario),
    ("clients", lambda r: _fmt(r.clients)),
    ("channels", lambda r: _fmt(r.channels)),
    ("presence", lambda r: _fmt(r.presence)),
    ("all subscribed s", lambda r: _fmt(r.all_subscribed_s, 2)),
    ("conn/s", lambda r: _fmt(r.connect_per_s)),
    ("refused (503)", lambda r: _fmt(r.connect_refused)),
    ("frames", lambda r: _fmt(r.frames_received)),
    ("presence lines", lambda r: _fmt(r.presence_events_received)),
    ("storm conn/s", lambda r: _fmt(r.storm_connect_per_s)),
    ("outage s", lambda r: _fmt(r.outage_s, 2)),
    ("all back s", lambda r: _fmt(r.all_back_s, 2)),
    ("reconnect p50 / p99 ms", lambda r: _pair(r.reconnect_p50_ms, r.reconnect_p99_ms)),
    ("stream p99 ms", lambda r: _fmt(r.latency_p99_ms, 2)),
    ("srv CPU %", lambda r: _fmt(r.server_cpu_pct, 0)),
    ("ok", lambda r: "yes" if r.ok else "NO"),
)

#: Scenarios whose records also go into the connect-and-reconnect table.
CONNECT_SCENARIOS = ("storm", "stormload", "restart")


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None and b is None else f"{_fmt(a, 0)} / {_fmt(b, 0)}"


def connect_table(results: Iterable[Result]) -> str:
    """Connect and reconnect figures of the storm, stormload and restart records
    (empty when there are none)."""
    rows = [r for r in results if r.scenario in CONNECT_SCENARIOS]
    if not rows:
        return ""
    return _table(
        [c[0] for c in CONNECT_COLUMNS], ([f(r) for _, f in CONNECT_COLUMNS] for r in rows)
    )


def _notes(result: Result) -> list[str]:
    notes = list(result.notes)
    if result.generator_bottleneck:
        notes.insert(0, "GENERATOR-BOUND")
    return notes


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(results: Iterable[Result]) -> str:
    return _table([c[0] for c in COLUMNS], ([fmt(r) for _, fmt in COLUMNS] for r in results))


def ratio_table(records: Iterable[dict[str, Any]]) -> str:
    rows = []
    for record in records:
        flag = " (generator-bound)" if record.get("generator_bottleneck") else ""
        for label, attr in RATIO_METRICS:
            if attr in record:
                m = record[attr]
                rows.append(
                    [
                        record["scenario"] + flag,
                        label,
                        _fmt(m["reference"], 2),
                        _fmt(m["pushhub"], 2),
                        f"{m['ratio']:.2f}",
                    ]
                )
    return _table(["scenario", "metric", "reference", "pushhub", "pushhub / reference"], rows)
