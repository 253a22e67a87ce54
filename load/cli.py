"""The command line: ``python -m load <scenario> [options]``.

Runs the scenario against each target in turn (``--target both``: the reference, then
pushhub, with identical parameters), prints one JSON line per run or ramp step as it
finishes, then a markdown table, and with both targets the ratios pushhub / reference.
Progress goes to stderr. Exit status: 0 all runs passed (for a ramp: some rate passed),
1 a run lost messages or clients, 2 bad options, 3 the run could not be carried out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from load import runtime
from load.harness import Harness, log
from load.options import Options, UsageError, check, parse_cpus, pinning
from load.processes import StartError
from load.report import Result, connect_table, markdown_table, ratio_table, ratios
from load.scenarios import REGISTRY

#: File descriptors a run needs besides one per client (server, Redis, pipes, logs).
SPARE_FDS = 200


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load",
        description="Load pushhub (and a raw websockets reference) on 127.0.0.1.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        default="pushhub",
        choices=["pushhub", "reference", "both"],
        help="server under test; both: reference then pushhub, with ratios",
    )
    common.add_argument(
        "--clients", type=int, default=1000, help="WebSocket clients (default 1000)"
    )
    common.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of publishing, per ramp step, or of idling (default 10)",
    )
    common.add_argument(
        "--publish",
        default="redis",
        choices=["redis", "http"],
        help="PUBLISH into Redis, or POST /api/publish (default redis)",
    )
    common.add_argument(
        "--workers",
        type=int,
        default=None,
        help="client worker processes (default: 2 per generator CPU)",
    )
    common.add_argument(
        "--server-cpu",
        type=int,
        default=None,
        help="CPU for the server (default: the first available)",
    )
    common.add_argument(
        "--client-cpus",
        default=None,
        help="CPUs for workers, publisher and redis-server, e.g. 1 or 1-3 (default: the others)",
    )
    common.add_argument("--no-pin", action="store_true", help="pin nothing")
    common.add_argument(
        "--redis-url",
        default=None,
        help="a running Redis on 127.0.0.1 (default: start a redis-server)",
    )
    common.add_argument("--json-out", default=None, help="also append the JSON lines to this file")
    common.add_argument(
        "--max-duration",
        type=float,
        default=900.0,
        help="hard cap on the whole invocation, seconds (default 900)",
    )
    common.add_argument(
        "--payload-bytes",
        type=int,
        default=100,
        help="approximate size of each message's data (default 100)",
    )
    common.add_argument(
        "--connect-concurrency",
        type=int,
        default=500,
        help="connections opening at once (default 500; storm: all)",
    )
    common.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to connect and subscribe one client",
    )
    common.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="idle: seconds to let the server settle before the baseline RSS",
    )
    common.add_argument(
        "--progress-every", type=float, default=5.0, help="seconds between progress lines on stderr"
    )
    common.add_argument(
        "--seed", type=int, default=1, help="seed of the targeted scenario's channel choice"
    )
    common.add_argument(
        "--http-connections",
        type=int,
        default=8,
        help="keep-alive connections of the HTTP publisher",
    )
    common.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each connect or publish phase, wait up to this many seconds for other "
        "processes to use under 15%% CPU (default 0: do not wait)",
    )
    common.add_argument(
        "--presence",
        action="store_true",
        help="keep pushhub's presence and join/leave events on the load channels "
        "(default: off, as the reference has none)",
    )
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="scenario")
    for scenario in REGISTRY.values():
        p = sub.add_parser(
            scenario.name, parents=[common], help=scenario.help, description=scenario.help
        )
        scenario.add_arguments(p)
    return parser


def options_from(args: argparse.Namespace) -> Options:
    allowed = runtime.allowed_cpus()
    client_cpus = parse_cpus(args.client_cpus) if args.client_cpus else None
    server_cpus, gen_cpus = pinning(allowed, args.server_cpu, client_cpus, enabled=not args.no_pin)
    workers = args.workers or max(2, 2 * len(gen_cpus))
    ns: dict[str, Any] = vars(args)
    return check(
        Options(
            scenario=args.scenario,
            targets=("reference", "pushhub") if args.target == "both" else (args.target,),
            clients=args.clients,
            channels=ns.get("channels"),
            rate=ns.get("rate") or 100.0,
            duration=args.duration,
            ramp=bool(ns.get("ramp")),
            ramp_factor=ns.get("ramp_factor") or 1.5,
            ramp_refine=ns.get("ramp_refine", 2),
            max_rate=ns.get("max_rate") or 100_000.0,
            max_p99_ms=ns.get("max_p99_ms"),
            publish=args.publish,
            workers=min(workers, args.clients),
            server_cpus=server_cpus,
            client_cpus=gen_cpus,
            redis_url=args.redis_url,
            json_out=args.json_out,
            max_duration=args.max_duration,
            payload_bytes=args.payload_bytes,
            connect_concurrency=args.connect_concurrency,
            connect_timeout=args.connect_timeout,
            settle=args.settle,
            progress_every=args.progress_every,
            seed=args.seed,
            http_connections=args.http_connections,
            presence=args.presence,
            wait_quiet=args.wait_quiet,
            retry_for=ns.get("retry_for", 120.0),
            storm_clients=ns.get("storm_clients") or 5000,
            max_handshakes=ns.get("max_handshakes"),
        )
    )


def check_system(opts: Options) -> None:
    """Refuse runs this machine cannot carry, before starting anything."""
    limit = runtime.raise_nofile_limit()
    clients = opts.clients + (opts.storm_clients if opts.scenario == "stormload" else 0)
    if clients + SPARE_FDS > limit:
        raise UsageError(
            f"{clients} clients need {clients + SPARE_FDS} open files; "
            f"the limit here is {limit} (raise the hard limit: ulimit -Hn)"
        )
    with contextlib.suppress(OSError, ValueError):
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        if clients > hi - lo - 1000:
            raise UsageError(
                f"{clients} clients: only {hi - lo} local ports ({lo}-{hi}) for connections"
            )


class Output:
    """JSON lines to stdout (and --json-out) as records arrive; tables at the end."""

    def __init__(self, json_out: str | None) -> None:
        self.results: list[Result] = []
        self.ratios: list[dict[str, Any]] = []
        self._file = Path(json_out) if json_out else None

    def line(self, record: dict[str, Any]) -> None:
        text = orjson.dumps(record).decode()
        print(text, flush=True)
        if self._file is not None:
            with self._file.open("a") as fh:
                fh.write(text + "\n")

    def result(self, result: Result) -> None:
        self.results.append(result)
        self.line(result.to_dict())

    def ratio(self, record: dict[str, Any]) -> None:
        self.ratios.append(record)
        self.line(record)

    def tables(self) -> str:
        text = "\n" + markdown_table(self.results) + "\n"
        connects = connect_table(self.results)
        if connects:
            text += "\n" + connects + "\n"
        if self.ratios:
            text += "\n" + ratio_table(self.ratios) + "\n"
        return text


async def run(opts: Options, out: Output) -> None:
    scenario = REGISTRY[opts.scenario]
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    runtime.pin(opts.client_cpus)  # the publisher shares the generator's CPUs
    server_cpus, gen_cpus = list(opts.server_cpus) or "any", list(opts.client_cpus) or "any"
    log(
        f"{opts.scenario}: {opts.clients:,} clients, {opts.workers} workers, "
        f"server CPUs {server_cpus}, generator CPUs {gen_cpus}"
    )
    end = time.monotonic() + opts.max_duration
    summaries: dict[str, Result] = {}
    async with asyncio.timeout(opts.max_duration):
        for i, target in enumerate(opts.targets):
            # Each remaining target gets an equal share of the time that is left.
            share = (end - time.monotonic()) / (len(opts.targets) - i)
            async with Harness(
                opts, target, deadline=time.monotonic() + share, emit=out.result
            ) as h:
                summaries[target] = await scenario.run(h)
    if "reference" in summaries and "pushhub" in summaries:
        out.ratio(ratios(summaries["reference"], summaries["pushhub"]))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = options_from(args)
        check_system(opts)
    except UsageError as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 2
    out = Output(opts.json_out)
    try:
        runtime.run(run(opts, out))
    except TimeoutError:
        log(f"load: stopped by --max-duration {opts.max_duration:g}s")
        print(out.tables())
        return 3
    except (StartError, RuntimeError, OSError) as exc:
        log(f"load: the run failed: {exc}")
        print(out.tables())
        return 3
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("load: interrupted; everything it started is stopped")
        print(out.tables())
        return 130
    print(out.tables())
    # A ramp's failing steps are how it finds its limit; its summary says whether it passed.
    return 0 if all(r.ok for r in out.results if r.kind != "step") else 1
