"""``poolpilot simulate POOL.yaml`` and ``poolpilot size POOL.yaml``: argument parsing, the pool file, the report."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TextIO

import yaml

from controller.api.spec import InferencePoolSpec
from controller.core.pool import describe_problems, validate_pool
from controller.kube.render import vllm_int_flag
from controller.sim.policy import ABLATIONS, POLICY_NAMES

if TYPE_CHECKING:  # the models load only when a command runs, not for every `poolpilot` invocation
    from controller.sim.profiles import HostedApiProfile, ReplicaProfile
    from controller.sim.run import Simulation, SimulationReport
    from controller.sim.spot_traces import SpotTrace
    from controller.sim.traces import Trace

__all__ = ["add_simulate_arguments", "add_size_arguments", "load_pool", "pick_profile", "render_report", "run_simulate",
           "run_size", "simulation_of"]


class PoolFileError(ValueError):
    """The pool file cannot be simulated: unreadable, not an InferencePool, or an invalid spec."""


def load_pool(path: str) -> tuple[str, InferencePoolSpec]:
    """The pool's name and parsed spec from an InferencePool manifest (or a bare spec), as the operator parses it."""
    try:
        text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PoolFileError(f"cannot read {path}: {error}") from error
    pools = [d for d in documents if isinstance(d, Mapping) and d.get("kind") == "InferencePool"]
    if len(pools) > 1:
        raise PoolFileError(f"{path} holds {len(pools)} InferencePools; simulate one at a time")
    document = pools[0] if pools else (documents[0] if len(documents) == 1 else None)
    if not isinstance(document, Mapping):
        raise PoolFileError(f"{path} holds no InferencePool")
    if "spec" in document:
        name = str((document.get("metadata") or {}).get("name") or "pool")
        raw_spec = document["spec"]
    else:
        name, raw_spec = "pool", document
    if not isinstance(raw_spec, Mapping):
        raise PoolFileError(f"{path}: spec is not a mapping")
    parsed = validate_pool(name, raw_spec)
    if not isinstance(parsed, InferencePoolSpec):
        raise PoolFileError(f"{path}: the spec is invalid (SpecValid=False on a cluster): {describe_problems(parsed)}")
    return name, parsed


def _with_prices(spec: InferencePoolSpec, profile: ReplicaProfile, api: HostedApiProfile) -> InferencePoolSpec:
    """The spec's prices where it gives them, the profile's cited ones where it does not."""
    cost = spec.cost
    filled = cost.model_copy(update={
        "spot_replica_hourly": cost.spot_replica_hourly if cost.spot_replica_hourly is not None
        else profile.spot_hourly,
        "on_demand_replica_hourly": cost.on_demand_replica_hourly if cost.on_demand_replica_hourly is not None
        else profile.on_demand_hourly,
        "api_input_per_million_tokens": cost.api_input_per_million_tokens
        if cost.api_input_per_million_tokens is not None else api.input_per_million,
        "api_output_per_million_tokens": cost.api_output_per_million_tokens
        if cost.api_output_per_million_tokens is not None else api.output_per_million,
    })
    return spec.model_copy(update={"cost": filled})


# Node labels that name the GPU a pool's replicas get (Karpenter's, GKE's, NVIDIA's GPU feature discovery).
GPU_LABELS = ("karpenter.k8s.aws/instance-gpu-name", "cloud.google.com/gke-accelerator", "nvidia.com/gpu.product")


def pick_profile(spec: InferencePoolSpec, name: str | None, *, derive: bool = False) -> ReplicaProfile:
    """``--profile``, else the model on the GPU the pool's node selectors name, else the model's default GPU.

    ``derive`` (for ``size``): a tensor-parallel size no profile measured gets one derived for its memory.
    """
    from controller.sim.profiles import profile_for, profile_named, sizing_profile

    if name:
        return profile_named(name)
    selectors = {**spec.capacity.on_demand.node_selector, **spec.capacity.spot.node_selector}
    gpu = next((selectors[label] for label in GPU_LABELS if label in selectors), None)
    return (sizing_profile if derive else profile_for)(spec.model.name, spec.model.gpus_per_replica, gpu)


def simulation_of(pool: str, trace: Trace, spot: SpotTrace | Callable[[InferencePoolSpec], SpotTrace], *,
                  profile: str | None = None, notice_seconds: float = 120.0, seed: int = 1,
                  cold_start_seconds: float | None = None) -> Simulation:
    """A simulation of the pool file on this trace: the profile, the prices and vLLM's limits as the spec gives
    them (``spot`` may be made from the spec, e.g. sized to its replicas.max)."""
    from controller.sim.profiles import hosted_api_for
    from controller.sim.run import Simulation

    name, spec = load_pool(pool)
    chosen = pick_profile(spec, profile)
    api = hosted_api_for(spec.model.name)
    model_args = list(spec.model.args)
    return Simulation(
        pool_name=name, spec=_with_prices(spec, chosen, api), profile=chosen, api=api, trace=trace,
        spot=spot(spec) if callable(spot) else spot,
        max_num_seqs=vllm_int_flag(model_args, "--max-num-seqs") or chosen.max_num_seqs,
        max_model_len=vllm_int_flag(model_args, "--max-model-len") or chosen.max_model_len,
        notice_seconds=notice_seconds, seed=seed, cold_start_seconds=cold_start_seconds)


def build_simulation(args: argparse.Namespace) -> Simulation:
    from controller.sim.spot_traces import load_spot_trace
    from controller.sim.traces import load_trace

    trace = load_trace(args.trace, duration_seconds=args.duration, rate_scale=args.rate_scale, seed=args.seed,
                       data_dir=args.data_dir, rate_mode=args.rate_mode)
    return simulation_of(
        args.pool, trace, lambda spec: load_spot_trace(args.spot_trace, duration_seconds=trace.duration_seconds,
                                                       seed=args.seed, nodes=max(spec.replicas.max, 1) * 2,
                                                       data_dir=args.data_dir),
        profile=args.profile, notice_seconds=args.notice_seconds, seed=args.seed, cold_start_seconds=args.cold_start)


def _money(value: float) -> str:
    return f"{value:,.2f}" if value >= 10 else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2f}" if value < 10 else f"{value:.0f}")


def render_report(report: SimulationReport) -> str:
    """The comparison as a person reads it: one row per policy, then what it means for PoolPilot."""
    sim = report.simulation
    lines = [
        f"Pool {sim.pool_name}: {sim.spec.model.name} on {sim.profile.name} "
        f"({sim.profile.instance}, spot ${sim.prices.spot_hourly:.3f}/h, on-demand ${sim.prices.on_demand_hourly:.3f}/h"
        f", API ${sim.prices.api_input_per_million:g}/{sim.prices.api_output_per_million:g} per M in/out)",
        f"Trace: {sim.trace.source}; {len(sim.trace.requests):,} requests over "
        f"{sim.trace.duration_seconds / 60:.1f} min",
        f"Spot: {sim.spot.source}; notice {sim.notice_seconds:g} s; cold start {sim.cold_start:g} s",
        f"SLO: TTFT within {sim.spec.slo.ttft_seconds:g} s; one replica holds "
        f"{report.replica_requests_per_second:.2f} req/s within it on this mix",
        "",
    ]
    header = ("policy", "cost $", "$/M tok", "SLO met", "TTFT p50", "TTFT p99", "API tok", "lost", "spot h",
              "on-dem h")
    rows = [header]
    for r in report.results:
        rows.append((r.policy, _money(r.cost_usd), "-" if r.cost_per_mtok is None else f"{r.cost_per_mtok:.3f}",
                     f"{r.slo_attainment:.2%}", _seconds(r.ttft_p50_s), _seconds(r.ttft_p99_s),
                     f"{r.api_token_share:.1%}", str(r.lost_requests), f"{r.spot_replica_hours:.1f}",
                     f"{r.ondemand_replica_hours:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", *verdict(report)]
    return "\n".join(lines)


def verdict(report: SimulationReport) -> list[str]:
    """PoolPilot against the static provisioning, the autoscalers and the hindsight oracle, in words."""
    names = {r.policy for r in report.results}
    if "poolpilot" not in names:
        return []
    ours = report.result("poolpilot")
    said = []
    if "static-ondemand" in names:
        static = report.result("static-ondemand")
        if static.cost_usd > 0:
            saving = 1 - ours.cost_usd / static.cost_usd
            than = f"{saving:.0%} less" if saving >= 0 else f"{-saving:.0%} more"
            said.append(f"PoolPilot costs {than} than on-demand provisioned for the peak (${_money(ours.cost_usd)} "
                        f"against ${_money(static.cost_usd)}), meeting the SLO for {ours.slo_attainment:.2%} of "
                        f"requests ({static.slo_attainment:.2%}).")
    for other in ("keda", "keda-spot", "skyserve"):
        if other in names:
            theirs = report.result(other)
            cheaper = "cheaper" if ours.cost_usd <= theirs.cost_usd else "dearer"
            said.append(f"Against {other}: {abs(1 - ours.cost_usd / theirs.cost_usd):.0%} {cheaper}, SLO "
                        f"{ours.slo_attainment:.2%} vs {theirs.slo_attainment:.2%}, lost {ours.lost_requests} vs "
                        f"{theirs.lost_requests}." if theirs.cost_usd > 0 else f"Against {other}: it cost nothing.")
    if "oracle" in names:
        oracle = report.result("oracle")
        if oracle.cost_usd > 0:
            said.append(f"The hindsight oracle pays ${_money(oracle.cost_usd)} (SLO {oracle.slo_attainment:.2%}): "
                        f"PoolPilot is {ours.cost_usd / oracle.cost_usd - 1:+.0%} from it.")
    if ours.lost_requests:
        said.append(f"PoolPilot lost {ours.lost_requests} request(s): in flight on a replica whose node went before "
                    f"it could drain, with no byte sent that the API could take over.")
    return said


def _print_progress(stream: TextIO, total: float) -> tuple[Callable[[str, float], None], Callable[[], None]]:
    """One progress bar per policy as the policies run one after another: (update, close)."""
    from controller.sim.progress import Progress

    bars: dict[str, Progress] = {}

    def update(policy: str, simulated: float) -> None:
        bar = bars.get(policy)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[policy] = Progress(total, label=policy, stream=stream, enabled=stream.isatty())
        bar.update(simulated)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def run_simulate(args: argparse.Namespace) -> int:
    from controller.sim.run import run_simulation

    try:
        simulation = build_simulation(args)
    except (ValueError, OSError) as error:
        print(f"poolpilot simulate: {error}", file=sys.stderr)
        return 2
    policies = [p.strip() for p in args.policies.split(",") if p.strip()] if args.policies else list(POLICY_NAMES)
    update, close = _print_progress(sys.stderr, simulation.trace.duration_seconds)
    try:
        report = run_simulation(simulation, policies, jobs=args.jobs, progress=None if args.json else update)
    except ValueError as error:
        print(f"poolpilot simulate: {error}", file=sys.stderr)
        return 2
    finally:
        close()
    if args.plot:
        from controller.sim.plot import plot_timelines

        try:
            plot_timelines([r.timeline for r in report.results], pathlib.Path(args.plot),
                           title=f"{simulation.pool_name} on {simulation.profile.name}: {simulation.trace.name}, "
                                 f"{len(simulation.trace.requests):,} requests, spot: {simulation.spot.name}")
        except RuntimeError as error:
            print(f"poolpilot simulate: {error}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(render_report(report))
        if args.plot:
            print(f"\nTimeline written to {args.plot}")
    return 0


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pool", help="an InferencePool manifest (YAML), or - for stdin")
    parser.add_argument("--trace", default="synthetic",
                        help="synthetic (default: a seeded diurnal load with bursts), azure-conv, azure-code, "
                             "mooncake, or a file: an Azure LLM 2023 CSV or a Mooncake JSONL")
    parser.add_argument("--rate-scale", type=float, default=1.0,
                        help="replay the trace at this many times its rate (default 1); see --rate-mode")
    parser.add_argument("--rate-mode", choices=("superimpose", "compress"), default="superimpose",
                        help="how a file's rate is raised: superimpose shifted copies, keeping its span (default), "
                             "or compress time")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of the trace to run (after --rate-scale); default: all of it "
                             "(synthetic: 3600)")
    parser.add_argument("--spot-trace", default="model",
                        help="model (default: Poisson reclaims with correlated bursts), none, spotserve-g4dn, "
                             "spotserve-As, spotserve-Bs, or a SpotServe trace file")
    parser.add_argument("--notice-seconds", type=float, default=120.0,
                        help="warning before a spot node goes (AWS: 120, GCP and Azure: 30)")
    parser.add_argument("--cold-start", type=float, default=None,
                        help="seconds from asking for a replica to its first served request; default: the profile's")
    parser.add_argument("--policies", default=None,
                        help=f"comma-separated; default all: {','.join(POLICY_NAMES)}; also "
                             f"{', '.join(ABLATIONS)}: PoolPilot without that signal, to see what it changes")
    parser.add_argument("--profile", default=None,
                        help="the replica profile (model on GPU); default: chosen from spec.model")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="policies run in this many processes (default 1)")
    parser.add_argument("--data-dir", type=pathlib.Path, default=None,
                        help="where the real traces are (default: ../shared/data beside the repository, "
                             "or POOLPILOT_DATA_DIR)")
    parser.add_argument("--plot", default=None, help="write a PNG timeline to this file (needs poolpilot[sim])")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"policies": {NAME: {cost_usd, cost_per_mtok, slo_attainment, '
                             'ttft_p50_s, ttft_p99_s, api_token_share, lost_requests, spot_replica_hours, '
                             'ondemand_replica_hours, requests, ...}}, ...}')
    parser.set_defaults(handler=run_simulate)


def run_size(args: argparse.Namespace) -> int:
    from controller.sim.profiles import hosted_api_for
    from controller.sim.sizing import render_size, size_as_json, size_replica

    try:
        _, spec = load_pool(args.pool)
        profile = pick_profile(spec, args.profile, derive=True)
    except (ValueError, OSError) as error:
        print(f"poolpilot size: {error}", file=sys.stderr)
        return 2
    api = hosted_api_for(spec.model.name)
    model_args = list(spec.model.args)
    report = size_replica(profile, max_model_len=vllm_int_flag(model_args, "--max-model-len") or profile.max_model_len,
                          prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens, api=api)
    print(json.dumps(size_as_json(report)) if args.json else render_size(report))
    return 0


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pool", help="an InferencePool manifest (YAML), or - for stdin")
    parser.add_argument("--profile", default=None, help="the replica profile; default: chosen from spec.model")
    parser.add_argument("--prompt-tokens", type=int, default=1000, help="a typical request's prompt (1000)")
    parser.add_argument("--output-tokens", type=int, default=250, help="a typical request's output (250)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.set_defaults(handler=run_size)
