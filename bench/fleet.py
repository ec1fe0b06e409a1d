"""The real operator process over a fleet of pools: time to converge, and its steady cost, at 1, 100 and 1,000 pools.

``poolpilot run`` (Kopf and all, logging as in production) runs against the embedded API server;
the world (``python -m bench.world --fleet``: API server, stand-in Deployment controller, a fake
vLLM replica at every pool pod's IP, and for the prometheus source the real Prometheus scraping
those pods) runs in a process of its own, so the CPU and memory measured are the operator's alone.
Each pool is held at 4 replicas (min = max) and evaluated every 5 s (the default). Per metrics
source and fleet size it reports:

* converge: seconds from creating the pools until every pool is Ready=True and MetricsAvailable=True,
  and until every pool's status shows signals from all 4 replicas (Prometheus may not have scraped
  them all yet, and the status refreshes its signals every 15 s): the steady window starts then;
* steady CPU of the operator over a steady window after convergence, in cores, per pool, and per
  pool against the smallest fleet of the same run (machines are noisy: quote ratios measured in one
  run). It is the nanoseconds each of its threads spent on a CPU (``/proc/<pid>/task/*/schedstat``);
  ``/proc/<pid>/stat`` utime + stime (all threads) is printed beside it, but counts 10 ms ticks,
  too coarse for an operator that idles at a thousandth of a core;
* peak RSS (VmHWM) of the operator;
* API requests per minute the operator makes in the window (counted at the API server: gets,
  lists, watches, writes). The embedded server sends watch bookmarks once a minute, as a real
  one does, so Kopf's quiet watches stay open and are not listed again;
* replica scrapes per minute (pods source) and PromQL queries per minute (prometheus source).

    python -m bench.fleet [--pools 1,100,1000] [--sources pods,prometheus] [--steady-seconds 30]

``--profile DIR`` runs the operator under cProfile during the steady windows only (its CPU figures
are then inflated) and writes ``DIR/<source>-<pools>.prof`` with a summary of where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pstats
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from devkube.localrun import OperatorProcess

SOURCES = ("pods", "prometheus")
REPLICAS_PER_POOL = 4
WORLD_START_TIMEOUT_SECONDS = 120.0
REPLY_TIMEOUT_SECONDS = 60.0  # a world command other than create/converge
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Imported by the operator (PYTHONPATH) with --profile: cProfile on its main thread (Kopf's event loop),
# switched on by SIGUSR1 and dumped by SIGUSR2, so that only the steady window is profiled.
_PROFILE_HOOK = textwrap.dedent("""\
    import cProfile, os, signal
    _profile = cProfile.Profile()
    def _start(*_):
        _profile.enable()
    def _dump(*_):
        _profile.disable()
        _profile.dump_stats(os.environ["POOLPILOT_BENCH_PROFILE_OUT"])
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _dump)
    """)


@dataclass
class Row:
    source: str
    pools: int
    converged: bool = False
    converge_s: float = 0.0
    all_read_s: float | None = None
    create_s: float | None = None  # of converge_s, how long the world took to create the pools
    ready: int = 0
    reading: int = 0
    cpu_cores: float | None = None  # from the threads' nanoseconds (else the ticks)
    cpu_ticks_cores: float | None = None  # from utime + stime, for comparison
    peak_rss_mib: float | None = None
    api_per_minute: float | None = None
    api_by_verb: dict[str, float] = field(default_factory=dict)
    scrapes_per_minute: float | None = None
    queries_per_minute: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_per_pool(self) -> float | None:
        return None if self.cpu_cores is None else self.cpu_cores / self.pools


# --- the world process --------------------------------------------------------------------------


class WorldError(RuntimeError):
    """The world did not answer in time, or exited."""


class World:
    """``python -m bench.world --fleet``: commands on its stdin, one JSON line back for each."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name="world-stdout", daemon=True).start()
        self.info = self._reply(WORLD_START_TIMEOUT_SECONDS)

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WorldError(f"the world did not answer within {timeout:.0f} s") from None
        if line is None:
            raise WorldError(f"the world exited ({self._process.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, command: str, timeout: float = REPLY_TIMEOUT_SECONDS) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._reply(timeout)


@contextmanager
def world(source: str, pools: int, scrape_interval_seconds: float) -> Iterator[World]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.world", "--fleet", source, "--pools", str(pools),
         "--replicas", str(REPLICAS_PER_POOL), "--scrape-interval", str(scrape_interval_seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield World(process)
    finally:
        assert process.stdin is not None
        try:
            process.stdin.close()  # the world exits at the end of its input
            process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait(timeout=10)


# --- the operator's process ---------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    """The CPU time a process has used so far, two ways."""

    time: float  # time.monotonic() when read
    ticks_seconds: float  # utime + stime of /proc/<pid>/stat: every thread, live or gone, in clock ticks
    threads_ns: dict[int, int]  # per live thread, nanoseconds on a CPU (/proc/<pid>/task/<tid>/schedstat)


def cpu_sample(pid: int) -> CpuSample:
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; fields[0] is the state
    threads: dict[int, int] = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            threads[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile; no schedstat here
            continue
    return CpuSample(time.monotonic(), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, threads)


def cpu_cores(before: CpuSample, after: CpuSample) -> tuple[float, float | None]:
    """Cores used between two samples: from the clock ticks, and (None if a thread ended in between, for its
    time would be missing) from the threads' nanoseconds. A tick is 10 ms: an operator idling at a
    thousandth of a core uses 3 ticks in 30 s, so the ticks alone make a poor baseline for a ratio."""
    seconds = after.time - before.time
    ticks = (after.ticks_seconds - before.ticks_seconds) / seconds
    if not before.threads_ns or not before.threads_ns.keys() <= after.threads_ns.keys():
        return ticks, None
    used = sum(after.threads_ns[tid] - before.threads_ns.get(tid, 0) for tid in after.threads_ns)
    return ticks, used / 1e9 / seconds


def peak_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def _rate(before: dict[str, Any], after: dict[str, Any], key: str) -> float:
    return float(after[key] - before[key]) * 60 / (float(after["time"]) - float(before["time"]))


def measure(source: str, pools: int, args: argparse.Namespace) -> Row:
    row = Row(source, pools)
    with world(source, pools, args.scrape_interval) as fleet_world, tempfile.TemporaryDirectory() as hook_dir:
        # As deployed for one namespace: POOLPILOT_NAMESPACES also narrows the PromQL to it.
        env = {"POOLPILOT_NAMESPACES": json.dumps([fleet_world.info["namespace"]])}
        if fleet_world.info["prometheus"]:
            env["POOLPILOT_PROMETHEUS_URL"] = fleet_world.info["prometheus"]
        profile_out = None
        if args.profile is not None:
            profile_out = pathlib.Path(args.profile).resolve() / f"{source}-{pools}.prof"
            profile_out.parent.mkdir(parents=True, exist_ok=True)
            (pathlib.Path(hook_dir) / "sitecustomize.py").write_text(_PROFILE_HOOK)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [hook_dir, os.environ.get("PYTHONPATH")]))
            env["POOLPILOT_BENCH_PROFILE_OUT"] = str(profile_out)
        operator = OperatorProcess(fleet_world.info["kubeconfig"], env=env, verbose=False)
        operator.start()
        keep_log = False
        try:
            pid = operator.pid
            assert pid is not None
            try:
                _steady(fleet_world, pid, row, args, profile_out)
            except WorldError as e:  # the world is too busy to answer, or failed: report, go on with the next
                row.notes.append(str(e))
            row.peak_rss_mib = peak_rss_mib(pid)
            if not operator.running:
                row.notes.append("the operator exited")
            keep_log = bool(row.notes)
        finally:
            operator.stop()
            if keep_log:
                row.notes.append(f"operator log: {operator.log_path}")
            else:
                shutil.rmtree(operator.log_path.parent, ignore_errors=True)
        if profile_out is not None:
            _summarise_profile(profile_out)
    return row


def _steady(fleet_world: World, pid: int, row: Row, args: argparse.Namespace,
            profile_out: pathlib.Path | None) -> None:
    """Create the pools, wait for them to converge, then measure a steady window (into ``row``)."""
    row.create_s = fleet_world.ask("create", timeout=args.converge_timeout)["seconds"]
    state = fleet_world.ask(f"converge {args.converge_timeout}", timeout=args.converge_timeout + 60)
    row.converged = state["converged"]
    row.converge_s, row.all_read_s = state["seconds"] or 0.0, state["all_read_seconds"]
    row.ready, row.reading = state["ready"], state["reading"]
    if not row.converged:
        row.notes.append(f"did not converge in {args.converge_timeout:g} s ({row.ready} Ready, "
                         f"{row.reading} reading signals)")
        return
    if row.all_read_s is None:
        row.notes.append(f"only {state['all_read']} pools showed signals from all replicas in "
                         f"{args.converge_timeout:g} s: the window may hold their status writes")
    time.sleep(args.settle_seconds)
    if profile_out is not None:
        os.kill(pid, signal.SIGUSR1)
    before, cpu_before = fleet_world.ask("counters"), cpu_sample(pid)
    time.sleep(args.steady_seconds)
    after, cpu_after = fleet_world.ask("counters"), cpu_sample(pid)
    if profile_out is not None:
        os.kill(pid, signal.SIGUSR2)
    row.cpu_ticks_cores, precise = cpu_cores(cpu_before, cpu_after)
    row.cpu_cores = precise if precise is not None else row.cpu_ticks_cores
    if precise is None:
        row.notes.append("a thread ended in the window: CPU from clock ticks only")
    minutes = (after["time"] - before["time"]) / 60
    row.api_by_verb = {verb: (count - before["api_requests"].get(verb, 0)) / minutes
                       for verb, count in sorted(after["api_requests"].items())
                       if count != before["api_requests"].get(verb, 0)}
    row.api_per_minute = sum(row.api_by_verb.values())
    if row.source == "pods":
        row.scrapes_per_minute = _rate(before, after, "scrapes")
    else:
        row.queries_per_minute = _rate(before, after, "promql_queries")


def _summarise_profile(path: pathlib.Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not path.exists():
        print(f"  (no profile was written to {path})", flush=True)
        return
    with path.with_suffix(".txt").open("w") as out:
        stats = pstats.Stats(str(path), stream=out)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
    print(f"  profile: {path} (summary: {path.with_suffix('.txt')})", flush=True)


# --- the table ----------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"Operator process over N pools of {REPLICAS_PER_POOL} replicas, evaluated every 5 s; steady window "
        f"{args.steady_seconds:.0f} s after convergence (+{args.settle_seconds:.0f} s settle); "
        f"Prometheus scrapes every {args.scrape_interval:g} s"
        + ("; the operator ran under cProfile in the windows (its CPU is inflated)" if args.profile else ""),
        "",
        "| source | pools | converge s | all replicas read s | CPU cores | CPU/pool mcores | CPU/pool vs smallest "
        "| peak RSS MiB | API req/min | replica scrapes/min | PromQL queries/min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for source in dict.fromkeys(row.source for row in rows):
        mine = [row for row in rows if row.source == source]
        baseline = next((row for row in sorted(mine, key=lambda r: r.pools) if row.cpu_per_pool), None)
        for row in mine:
            converge = f"{row.converge_s:.1f}" if row.converged else "did not converge"
            per_pool = row.cpu_per_pool
            ratio = "-" if per_pool is None or baseline is None or baseline.cpu_per_pool is None else \
                f"{per_pool / baseline.cpu_per_pool:.3f}x (vs {baseline.pools})"
            lines.append(
                f"| {row.source} | {row.pools:,} | {converge} | {_number(row.all_read_s, 1)} "
                f"| {_number(row.cpu_cores, 3)} "
                f"| {_number(None if per_pool is None else per_pool * 1000, 2)} | {ratio} "
                f"| {_number(row.peak_rss_mib)} | {_number(row.api_per_minute, 1)} "
                f"| {_number(row.scrapes_per_minute)} | {_number(row.queries_per_minute, 1)} |")
    lines.append("")
    for row in rows:
        facts = [] if row.create_s is None else [f"pools created in {row.create_s:.1f} s"]
        if row.api_per_minute is not None:
            verbs = ", ".join(f"{verb} {rate:.1f}" for verb, rate in row.api_by_verb.items()) or "none"
            facts.append(f"API requests/min by verb: {verbs}")
        if row.cpu_ticks_cores is not None:
            facts.append(f"CPU from utime+stime {row.cpu_ticks_cores:.3f} cores")
        lines.append(f"- {row.source}, {row.pools:,} pools: " + "; ".join(facts + row.notes))
    return "\n".join(lines)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the operator and world stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default="1,100,1000", help="fleet sizes, comma-separated")
    parser.add_argument("--sources", default=",".join(SOURCES), help="metrics sources, comma-separated")
    parser.add_argument("--steady-seconds", type=_positive, default=30.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0,
                        help="after convergence, before the steady window starts")
    parser.add_argument("--converge-timeout", type=_positive, default=600.0,
                        help="seconds; a fleet that is not converged by then is reported and skipped")
    parser.add_argument("--scrape-interval", type=_positive, default=15.0,
                        help="Prometheus' scrape interval in the world (prometheus source)")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="cProfile the operator during the steady windows; profiles go to DIR")
    args = parser.parse_args(argv)
    sources = args.sources.split(",")
    unknown = [source for source in sources if source not in SOURCES]
    if unknown:
        parser.error(f"unknown sources {unknown}; choose from {', '.join(SOURCES)}")
    sizes = [int(n) for n in args.pools.split(",")]
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    rows = []
    for source in sources:
        for pools in sizes:
            started = time.monotonic()
            rows.append(row := measure(source, pools, args))
            print(f"  {source}, {pools} pools: {'done' if row.converged else 'did not converge'} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
    print()
    print(table(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
