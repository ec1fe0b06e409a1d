"""One simulation: a pool, a trace, a spot trace and the policies to compare, run in the same world.

Each policy gets a fresh :class:`~controller.sim.world.World` over the same requests and the same
reclaims. ``poolpilot`` is the operator's own ``plan``; the others are the baselines of
``controller/sim/baselines.py``. Runs are deterministic for a seed; with ``jobs`` above 1 the policies run
in parallel processes, which changes nothing in the results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from controller.api.spec import InferencePoolSpec
from controller.sim.baselines import make_policy
from controller.sim.operator import BaselineController, PoolPilotController
from controller.sim.policy import ABLATIONS, POLICY_NAMES, PolicyContext
from controller.sim.profiles import HostedApiProfile, ReplicaProfile
from controller.sim.sizing import saturated_throughput, sustainable_requests_per_second
from controller.sim.spot_traces import SpotTrace, no_capacity_spans
from controller.sim.timeline import Timeline
from controller.sim.traces import Trace
from controller.sim.world import Prices, World, WorldConfig

__all__ = ["ALL_POLICIES", "PolicyResult", "Simulation", "SimulationReport", "run_simulation"]

ALL_POLICIES = POLICY_NAMES
_HOUR = 3600.0


@dataclass(frozen=True)
class Simulation:
    """Everything one comparison runs on."""

    pool_name: str
    spec: InferencePoolSpec  # with its cost block filled in (from the profile where the spec gives no price)
    profile: ReplicaProfile
    api: HostedApiProfile
    trace: Trace
    spot: SpotTrace
    max_num_seqs: int
    max_model_len: int
    notice_seconds: float = 120.0
    seed: int = 0
    cold_start_seconds: float | None = None  # None: the profile's

    @property
    def prices(self) -> Prices:
        cost = self.spec.cost
        assert cost.spot_replica_hourly is not None and cost.on_demand_replica_hourly is not None
        assert cost.api_input_per_million_tokens is not None and cost.api_output_per_million_tokens is not None
        return Prices(cost.spot_replica_hourly, cost.on_demand_replica_hourly, cost.api_input_per_million_tokens,
                      cost.api_output_per_million_tokens)

    @property
    def cold_start(self) -> float:
        return self.profile.cold_start_seconds if self.cold_start_seconds is None else self.cold_start_seconds

    def world_config(self) -> WorldConfig:
        return WorldConfig(spec=self.spec, profile=self.profile, api=self.api, prices=self.prices,
                           cold_start_seconds=self.cold_start, max_num_seqs=self.max_num_seqs,
                           max_model_len=self.max_model_len, notice_seconds=self.notice_seconds)


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    requests: int
    served_by_pool: int
    served_by_api: int
    lost_requests: int
    rejected_requests: int  # longer than the model's context (vLLM answers 400): neither served nor lost
    slo_attainment: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    cost_usd: float
    cost_per_mtok: float | None
    api_token_share: float
    spot_replica_hours: float
    ondemand_replica_hours: float
    reclaims: int
    preemptions: int
    events: dict[str, int]
    wall_seconds: float
    timeline: Timeline = field(repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "cost_usd": round(self.cost_usd, 4), "cost_per_mtok": _rounded(self.cost_per_mtok, 4),
            "slo_attainment": round(self.slo_attainment, 5), "ttft_p50_s": _rounded(self.ttft_p50_s, 4),
            "ttft_p99_s": _rounded(self.ttft_p99_s, 4), "api_token_share": round(self.api_token_share, 5),
            "lost_requests": self.lost_requests, "spot_replica_hours": round(self.spot_replica_hours, 4),
            "ondemand_replica_hours": round(self.ondemand_replica_hours, 4), "requests": self.requests,
            "served_by_pool": self.served_by_pool, "served_by_api": self.served_by_api,
            "rejected_requests": self.rejected_requests, "reclaims": self.reclaims, "preemptions": self.preemptions,
            "events": dict(sorted(self.events.items())), "wall_seconds": round(self.wall_seconds, 3),
        }


@dataclass(frozen=True)
class SimulationReport:
    simulation: Simulation
    results: tuple[PolicyResult, ...]
    replica_requests_per_second: float
    wall_seconds: float

    def result(self, policy: str) -> PolicyResult:
        return next(r for r in self.results if r.policy == policy)

    def as_json(self) -> dict[str, Any]:
        sim = self.simulation
        return {
            "policies": {r.policy: r.as_json() for r in self.results},
            "pool": sim.pool_name,
            "profile": sim.profile.name,
            "trace": {"name": sim.trace.name, "source": sim.trace.source, "requests": len(sim.trace.requests),
                      "duration_s": sim.trace.duration_seconds},
            "spot_trace": {"name": sim.spot.name, "source": sim.spot.source},
            "slo": {"ttft_seconds": sim.spec.slo.ttft_seconds, "percentile": sim.spec.slo.ttft_percentile},
            "prices": {"spot_hourly": sim.prices.spot_hourly, "on_demand_hourly": sim.prices.on_demand_hourly,
                       "api_input_per_million": sim.prices.api_input_per_million,
                       "api_output_per_million": sim.prices.api_output_per_million},
            "replica_requests_per_second": round(self.replica_requests_per_second, 4),
            "seed": sim.seed, "notice_seconds": sim.notice_seconds, "cold_start_seconds": sim.cold_start,
            "wall_seconds": round(self.wall_seconds, 3),
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def policy_context(simulation: Simulation, replica_rps: float) -> PolicyContext:
    trace, prices = simulation.trace, simulation.prices
    reclaims = [max(0.0, e.t - simulation.notice_seconds) for e in simulation.spot.events if e.kind == "remove"]
    return PolicyContext(
        spec=simulation.spec, replica_requests_per_second=replica_rps, cold_start_seconds=simulation.cold_start,
        peak_requests_per_second=trace.peak_rate(60.0), duration_seconds=trace.duration_seconds,
        spot_hourly=prices.spot_hourly, on_demand_hourly=prices.on_demand_hourly,
        api_input_per_million=prices.api_input_per_million, api_output_per_million=prices.api_output_per_million,
        window_seconds=60.0, demand_per_window=tuple(trace.rate_per_window(60.0)), reclaims=tuple(reclaims),
        spot_missing=tuple(no_capacity_spans(simulation.spot)))


def run_policy(simulation: Simulation, policy: str, replica_rps: float,
               progress: Callable[[float], None] | None = None) -> PolicyResult:
    started = time.perf_counter()
    config = simulation.world_config()
    controller: PoolPilotController | BaselineController
    if policy.startswith("poolpilot"):
        controller = PoolPilotController(simulation.spec, without=policy.removeprefix("poolpilot-no-")
                                         if policy != "poolpilot" else None)
    else:
        trace = simulation.trace
        controller = BaselineController(make_policy(policy, policy_context(simulation, replica_rps),
                                                    mean_prompt_tokens=trace.mean_prompt_tokens,
                                                    mean_output_tokens=trace.mean_output_tokens), simulation.spec)
    world = World(config, simulation.trace.fresh_requests(), simulation.spot, controller=controller,
                  interval_seconds=controller.interval_seconds, on_notice=controller.on_notice,
                  name=policy, duration_seconds=simulation.trace.duration_seconds)
    totals = world.run(progress)
    prices = config.prices
    spot_hours = totals.spot_seconds / _HOUR
    on_demand_hours = totals.on_demand_seconds / _HOUR
    cost = spot_hours * prices.spot_hourly + on_demand_hours * prices.on_demand_hourly + totals.api_cost
    tokens = totals.pool_tokens + totals.api_tokens
    ttfts = sorted(totals.ttfts)
    return PolicyResult(
        policy=policy, requests=totals.requests, served_by_pool=totals.served_pool, served_by_api=totals.served_api,
        lost_requests=totals.lost, rejected_requests=totals.rejected,
        slo_attainment=totals.within_slo / totals.requests if totals.requests else 1.0,
        ttft_p50_s=_percentile(ttfts, 0.50), ttft_p99_s=_percentile(ttfts, 0.99), cost_usd=cost,
        cost_per_mtok=cost / (tokens / 1e6) if tokens else None,
        api_token_share=totals.api_tokens / tokens if tokens else 0.0, spot_replica_hours=spot_hours,
        ondemand_replica_hours=on_demand_hours, reclaims=totals.reclaims, preemptions=totals.preemptions,
        events=dict(totals.events), wall_seconds=time.perf_counter() - started, timeline=world.timeline)


def _run_one(arguments: tuple[Simulation, str, float]) -> PolicyResult:
    return run_policy(*arguments)


# A replica planned at its saturated rate queues without end on any burst: the baselines and the oracle plan
# for at most this share of it (the usual headroom of a rate-based autoscaler's target per replica).
PLANNING_UTILIZATION = 0.85


def replica_capacity(simulation: Simulation) -> float:
    """Requests per second one replica serves within the SLO on this trace's mix, with planning headroom."""
    trace = simulation.trace
    prompt, output = trace.mean_prompt_tokens, trace.mean_output_tokens
    sustainable = sustainable_requests_per_second(
        simulation.profile, prompt_tokens=prompt, output_tokens=output,
        ttft_slo_seconds=simulation.spec.slo.ttft_seconds, max_model_len=simulation.max_model_len,
        lengths=[(r.prompt_tokens, r.output_tokens) for r in trace.requests])
    saturated = saturated_throughput(simulation.profile, prompt_tokens=max(1, round(prompt)),
                                     output_tokens=max(1, round(output)),
                                     max_model_len=simulation.max_model_len).requests_per_second
    return min(sustainable, PLANNING_UTILIZATION * saturated)


def run_simulation(simulation: Simulation, policies: Sequence[str] = ALL_POLICIES, *, jobs: int = 1,
                   progress: Callable[[str, float], None] | None = None) -> SimulationReport:
    started = time.perf_counter()
    unknown = [p for p in policies if p not in (*ALL_POLICIES, *ABLATIONS)]
    if unknown:
        raise ValueError(f"unknown policies {', '.join(unknown)}; known: {', '.join((*ALL_POLICIES, *ABLATIONS))}")
    replica_rps = replica_capacity(simulation)
    if jobs > 1 and len(policies) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(policies))) as pool:
            results = list(pool.map(_run_one, [(simulation, p, replica_rps) for p in policies]))
    else:
        results = []
        for policy in policies:
            callback = (lambda t, name=policy: progress(name, t)) if progress is not None else None
            results.append(run_policy(simulation, policy, replica_rps, callback))
    return SimulationReport(simulation=simulation, results=tuple(results), replica_requests_per_second=replica_rps,
                            wall_seconds=time.perf_counter() - started)
