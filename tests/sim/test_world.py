"""The simulated world end to end: every policy on the same requests and reclaims, through the operator's plan."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from controller.api.spec import InferencePoolSpec
from controller.core.pool import validate_pool
from controller.sim.cli import _with_prices
from controller.sim.profiles import hosted_api_for, profile_named
from controller.sim.request import SimRequest
from controller.sim.run import PolicyResult, Simulation, SimulationReport, run_policy, run_simulation
from controller.sim.spot_traces import SpotEvent, SpotTrace, load_spot_trace
from controller.sim.traces import Trace, load_trace

POOL: dict[str, Any] = {
    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "gpusPerReplica": 1, "args": ["--max-model-len=8192"]},
    "replicas": {"min": 1, "max": 12},
    "capacity": {"onDemandBase": 1, "spotPercentage": 100},
    "interruption": {"drainSeconds": 110, "preStopSeconds": 5},
    "fallback": {"enabled": True, "provider": {"baseURL": "https://api.example.com/v1", "model": "llama-8b"},
                 "saturation": {"queueDepthPerReplica": 8, "forSeconds": 30}, "recoverAfterSeconds": 60},
    "slo": {"ttftSeconds": 2},
}


def pool_spec(overrides: Mapping[str, Any] | None = None) -> InferencePoolSpec:
    raw = {**POOL, **(overrides or {})}
    spec = validate_pool("llama-8b", raw)
    assert isinstance(spec, InferencePoolSpec), spec
    return spec


def simulation(trace: Trace, spot: SpotTrace, *, spec: InferencePoolSpec | None = None,
               profile: str = "llama-3.1-8b-h100", notice_seconds: float = 120.0, seed: int = 1) -> Simulation:
    chosen = profile_named(profile)
    api = hosted_api_for("meta-llama/Llama-3.1-8B-Instruct")
    return Simulation(pool_name="llama-8b", spec=_with_prices(spec or pool_spec(), chosen, api), profile=chosen,
                      api=api, trace=trace, spot=spot, max_num_seqs=chosen.max_num_seqs, max_model_len=8192,
                      notice_seconds=notice_seconds, seed=seed)


def synthetic(minutes: float = 20, rate_scale: float = 2.0, seed: int = 1) -> Trace:
    return load_trace("synthetic", duration_seconds=minutes * 60, rate_scale=rate_scale, seed=seed)


def one_reclaim(at: float, nodes: int = 20) -> SpotTrace:
    """Spot nodes node-0..; node-0 (the first one placed) goes at ``at``; nothing else happens."""
    return SpotTrace(name="one", source="one reclaim", events=(SpotEvent(at, "remove", "node-00"),),
                     initial_nodes=tuple(f"node-{i:02d}" for i in range(nodes)), duration_seconds=3600)


def steady(rate: float, seconds: float, prompt: int = 800, output: int = 200) -> Trace:
    gap = 1.0 / rate
    requests = tuple(SimRequest(id=i, arrival=i * gap, prompt_tokens=prompt, output_tokens=output)
                     for i in range(int(seconds * rate)))
    return Trace(name="steady", requests=requests, duration_seconds=seconds, source=f"steady {rate:g} req/s")


@pytest.fixture(scope="module")
def report() -> SimulationReport:
    spot = load_spot_trace("model", duration_seconds=1200, seed=4, nodes=20)
    return run_simulation(simulation(synthetic(), spot))


def test_every_request_is_served_by_the_pool_or_the_api_or_counted_lost(report: SimulationReport) -> None:
    requests = len(report.simulation.trace.requests)
    assert requests > 1000
    for result in report.results:
        assert result.requests == requests, result.policy
        accounted = result.served_by_pool + result.served_by_api + result.lost_requests + result.rejected_requests
        assert accounted == requests, result.policy


def test_a_seeded_run_is_deterministic(report: SimulationReport) -> None:
    again = run_simulation(report.simulation)

    def figures(r: SimulationReport) -> dict[str, Any]:
        return {name: {k: v for k, v in fields.items() if k != "wall_seconds"}
                for name, fields in r.as_json()["policies"].items()}

    assert figures(again) == figures(report)


def test_parallel_policies_give_the_same_figures(report: SimulationReport) -> None:
    parallel = run_simulation(report.simulation, ("poolpilot", "keda"), jobs=2)
    for result in parallel.results:
        serial = report.result(result.policy)
        assert (result.cost_usd, result.slo_attainment, result.lost_requests) == (
            serial.cost_usd, serial.slo_attainment, serial.lost_requests)


def test_poolpilot_decides_through_the_operators_plan(report: SimulationReport) -> None:
    ours = report.result("poolpilot")
    # The Events are the operator's own (controller/core/events.py), posted as on a cluster.
    assert ours.events.get("ScaledUp", 0) > 0
    assert ours.events.get("ScaledDown", 0) > 0
    replicas = [s.spot_replicas + s.on_demand_replicas for s in ours.timeline.samples]
    assert max(replicas) > min(replicas)
    # onDemandBase 1 runs the whole time on on-demand; what the load adds runs on spot.
    assert ours.ondemand_replica_hours == pytest.approx(report.simulation.trace.duration_seconds / 3600, rel=0.01)
    assert ours.spot_replica_hours > 0


def test_the_oracle_is_never_dearer_than_a_policy_that_meets_the_slo_as_well(report: SimulationReport) -> None:
    oracle = report.result("oracle")
    for result in report.results:
        if result.policy != "oracle" and result.slo_attainment >= oracle.slo_attainment:
            assert oracle.cost_usd <= result.cost_usd * 1.001, result.policy


def test_api_only_sends_everything_to_the_api_and_pays_per_token(report: SimulationReport) -> None:
    api_only = report.result("api-only")
    sim = report.simulation
    assert api_only.served_by_api == len(sim.trace.requests)
    assert api_only.spot_replica_hours == api_only.ondemand_replica_hours == 0
    charge = sum(sim.prices.api_charge(r.prompt_tokens, r.output_tokens) for r in sim.trace.requests)
    assert api_only.cost_usd == pytest.approx(charge)
    assert api_only.api_token_share == 1.0


def test_static_ondemand_pays_for_the_peak_all_the_time(report: SimulationReport) -> None:
    static = report.result("static-ondemand")
    sim = report.simulation
    hours = sim.trace.duration_seconds / 3600
    replicas = static.ondemand_replica_hours / hours
    assert replicas == pytest.approx(round(replicas))
    assert static.cost_usd == pytest.approx(static.ondemand_replica_hours * sim.prices.on_demand_hourly)
    assert static.spot_replica_hours == 0


def _run(policy: str, sim: Simulation) -> PolicyResult:
    return run_policy(sim, policy, replica_rps=4.0)


def test_poolpilot_drains_a_reclaimed_replica_and_loses_nothing() -> None:
    # Two replicas at least: the on-demand base and one on spot node-00, which goes at 400 s.
    sim = simulation(steady(rate=6.0, seconds=900, output=400), one_reclaim(at=400.0),
                     spec=pool_spec({"replicas": {"min": 2, "max": 12}}))
    ours = _run("poolpilot", sim)
    assert ours.reclaims == 1
    assert ours.lost_requests == 0
    assert ours.events.get("SpotInterruptionNotice", 0) == 1
    assert ours.events.get("ReplicaDrained", 0) == 1
    # A plain Deployment is evicted at the notice and vLLM's default --shutdown-timeout 0 aborts it.
    plain = _run("keda-spot", sim)
    assert plain.reclaims == 1
    assert plain.lost_requests > 0


def test_a_notice_shorter_than_the_requests_loses_those_in_flight() -> None:
    # 5 s of warning, 3,000-token answers (tens of seconds each): the replica cannot finish what it holds.
    sim = simulation(steady(rate=3.0, seconds=600, output=3000), one_reclaim(at=300.0), notice_seconds=5.0,
                     spec=pool_spec({"replicas": {"min": 2, "max": 12}}))
    ours = _run("poolpilot", sim)
    assert ours.reclaims == 1
    assert ours.lost_requests > 0
    assert ours.served_by_pool + ours.served_by_api + ours.lost_requests == ours.requests


def test_without_spot_capacity_poolpilot_moves_the_spot_share_to_on_demand() -> None:
    no_spot = SpotTrace(name="none", source="no spot nodes", events=(), initial_nodes=(), duration_seconds=3600)
    sim = simulation(steady(rate=4.0, seconds=1200), no_spot, spec=pool_spec({"replicas": {"min": 3, "max": 12}}))
    ours = _run("poolpilot", sim)
    assert ours.events.get("SpotCapacityUnavailable", 0) >= 1
    assert ours.spot_replica_hours == 0
    # After spotUnavailableAfterSeconds (300 s), on-demand runs the base and one of the two spot replicas; the
    # other stays asked for on spot as the probe (pending: not billed).
    assert ours.ondemand_replica_hours >= (300 * 1 + 900 * 2) / 3600 * 0.98
    assert ours.lost_requests == 0


def test_an_ablation_is_poolpilot_without_one_signal(report: SimulationReport) -> None:
    sim = report.simulation
    for name in ("poolpilot-no-ttft", "poolpilot-no-throughput"):
        result = run_policy(sim, name, report.replica_requests_per_second)
        assert result.policy == name
        assert result.served_by_pool + result.served_by_api + result.lost_requests + result.rejected_requests == (
            result.requests)
    with pytest.raises(ValueError, match="unknown policies poolpilot-no-cost"):
        run_simulation(sim, ("poolpilot-no-cost",))
