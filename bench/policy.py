"""PoolPilot's policy against the baselines and the hindsight oracle on the real traces, with real reclaims.

    python -m bench.policy [--rate-scale 3] [--traces azure-conv,azure-code,mooncake] [--spot-trace spotserve-g4dn]
                           [--pool bench/policy-pool.yaml] [--jobs 2] [--json] [--ablations]

Each trace (../shared/data/traces: Azure LLM 2023 conv and code, CC-BY-4.0; Mooncake conversation,
Apache-2.0) is replayed at ``--rate-scale`` times its rate (time compressed) against the SpotServe g4dn
preemption trace (../shared/data/spot/spotserve, Apache-2.0), started where its 24 nodes are up (its first
15 minutes only bring nodes in). Every policy runs on the same requests and the same reclaims, through
``poolpilot simulate``'s own code. Prints one table per trace, the goals of issue 10 met or not, and the
simulator's own speed (wall seconds for all policies, against the trace's simulated seconds).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

from controller.api.spec import InferencePoolSpec
from controller.sim.cli import render_report, simulation_of
from controller.sim.policy import ABLATIONS, POLICY_NAMES
from controller.sim.run import Simulation, SimulationReport, run_simulation
from controller.sim.spot_traces import SpotTrace, load_spot_trace, shifted
from controller.sim.traces import load_trace

POOL = pathlib.Path(__file__).with_name("policy-pool.yaml")
SPOT_START_SECONDS = 900.0  # the g4dn trace's 24 nodes are all up from here (its first 15 minutes only add nodes)


def _simulation(pool: pathlib.Path, trace_name: str, args: argparse.Namespace) -> Simulation:
    trace = load_trace(trace_name, duration_seconds=None, rate_scale=args.rate_scale, seed=args.seed, data_dir=None)

    def spot(spec: InferencePoolSpec) -> SpotTrace:
        found = load_spot_trace(args.spot_trace, duration_seconds=trace.duration_seconds + SPOT_START_SECONDS,
                                seed=args.seed, nodes=2 * spec.replicas.max, data_dir=None)
        return shifted(found, SPOT_START_SECONDS) if args.spot_trace == "spotserve-g4dn" else found

    return simulation_of(str(pool), trace, spot, notice_seconds=args.notice_seconds, seed=args.seed)


def goals(report: SimulationReport) -> list[tuple[str, bool, str]]:
    """Issue 10's goals for one trace: (goal, met, the figures)."""
    ours = report.result("poolpilot")
    static = report.result("static-ondemand")
    found = [
        ("at least 60 % cheaper than static-ondemand", ours.cost_usd <= 0.4 * static.cost_usd,
         f"{1 - ours.cost_usd / static.cost_usd:.1%} cheaper"),
        ("at least 99 % SLO attainment", ours.slo_attainment >= 0.99, f"{ours.slo_attainment:.2%}"),
        ("no lost requests", ours.lost_requests == 0, f"{ours.lost_requests} lost"),
    ]
    for other in ("keda", "keda-spot", "skyserve"):
        theirs = report.result(other)
        found.append((f"cheaper than {other} at equal or better SLO",
                      ours.cost_usd < theirs.cost_usd and ours.slo_attainment >= theirs.slo_attainment,
                      f"${ours.cost_usd:.2f} vs ${theirs.cost_usd:.2f}, SLO {ours.slo_attainment:.2%} vs "
                      f"{theirs.slo_attainment:.2%}"))
    oracle = report.result("oracle")
    found.append(("within 25 % of oracle", ours.cost_usd <= 1.25 * oracle.cost_usd,
                  f"{ours.cost_usd / oracle.cost_usd - 1:+.1%} (oracle ${oracle.cost_usd:.2f}, SLO "
                  f"{oracle.slo_attainment:.2%})"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", default="azure-conv,azure-code,mooncake")
    parser.add_argument("--rate-scale", type=float, default=3.0)
    parser.add_argument("--spot-trace", default="spotserve-g4dn")
    parser.add_argument("--notice-seconds", type=float, default=120.0)
    parser.add_argument("--pool", type=pathlib.Path, default=POOL)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ablations", action="store_true",
                        help="also PoolPilot without its TTFT signal and without its throughput signal")
    args = parser.parse_args(argv)
    everything: dict[str, Any] = {}
    for trace_name in [t for t in args.traces.split(",") if t]:
        simulation = _simulation(args.pool, trace_name, args)
        started = time.perf_counter()
        report = run_simulation(simulation, (*POLICY_NAMES, *(ABLATIONS if args.ablations else ())), jobs=args.jobs)
        wall = time.perf_counter() - started
        met = goals(report)
        everything[trace_name] = {**report.as_json(), "goals": [
            {"goal": goal, "met": ok, "figures": figures} for goal, ok, figures in met]}
        if not args.json:
            print(f"\n=== {trace_name} at {args.rate_scale:g}x ===")
            print(render_report(report))
            for goal, ok, figures in met:
                print(f"  [{'met' if ok else 'MISSED'}] {goal}: {figures}")
            print(f"  simulator: {len(simulation.trace.requests):,} requests, {len(report.results)} policies, "
                  f"{simulation.trace.duration_seconds / 60:.0f} simulated minutes in {wall:.1f} s wall "
                  f"({args.jobs} process(es))")
    if args.json:
        print(json.dumps(everything))
    return 0


if __name__ == "__main__":
    sys.exit(main())
