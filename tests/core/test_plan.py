"""The pure pipeline stages: ``plan`` (what to do) and ``conclude`` (what the server's answers mean)."""

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import cast

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core.capacity import CapacitySplit, CapacityType
from controller.core.conditions import find_condition
from controller.core.drain import EvictionResult
from controller.core.notices import InterruptionNotice, NoticeKind
from controller.core.plan import AppliedChange, Observation, conclude, plan
from controller.core.pool import DeploymentState, PoolObservation, validate_pool
from controller.core.replicas import ReplicaPod
from controller.core.scaling import ScalingDecision, ScalingState
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
SPEC = {"model": {"name": "m"}, "replicas": {"min": 1, "max": 6},
        "capacity": {"onDemandBase": 1, "spotPercentage": 100}}


def observation(raw_spec: dict[str, object] | None = None, *, replicas: int | None = 2, ready: int = 2,
                signals: PoolSignals | MetricsProblem | None = None,
                previous: InferencePoolStatus | None = None, generation: int = 1) -> Observation:
    parsed = validate_pool("pool", raw_spec if raw_spec is not None else SPEC)
    deployments = PoolObservation(deployments={} if replicas is None else {
        CapacityType.ON_DEMAND: DeploymentState(replicas=1, ready=min(1, ready)),
        CapacityType.SPOT: DeploymentState(replicas=replicas - 1, ready=max(0, ready - 1)),
    })
    return Observation(generation=generation, spec=parsed if isinstance(parsed, InferencePoolSpec) else tuple(parsed),
                       previous=previous or InferencePoolStatus(), deployments=deployments, signals=signals)


def load(queue: float, kv: float) -> PoolSignals:
    return PoolSignals(queue_depth=queue, running_requests=1, kv_cache_utilization=kv, replicas_reporting=2,
                       observed_at=T0)


def test_a_new_pool_is_planned_at_its_minimum_and_nothing_is_read_yet() -> None:
    planned = plan(observation(replicas=None), ScalingState(), now=T0)
    assert planned.split == CapacitySplit(spot=0, on_demand=1)
    assert planned.scaling is None and planned.events == ()


def test_load_is_planned_into_replicas_per_capacity_type_with_an_event() -> None:
    planned = plan(observation(signals=load(queue=24, kv=0.5)), ScalingState(), now=T0)
    assert planned.split == CapacitySplit(spot=5, on_demand=1)
    assert [e.reason for e in planned.events] == ["ScaledUp"]
    assert planned.memory.seeded


def test_an_invalid_spec_plans_no_write_and_warns_once_per_generation() -> None:
    bad = observation({"model": {"name": "m"}, "replicas": {"min": 3, "max": 1}})
    planned = plan(bad, ScalingState(), now=T0)
    assert planned.split is None and [e.reason for e in planned.events] == ["InvalidSpec"]
    reported = conclude(bad, planned, [], now=T0).status
    again = observation({"model": {"name": "m"}, "replicas": {"min": 3, "max": 1}}, previous=reported)
    assert plan(again, ScalingState(), now=T0 + timedelta(seconds=5)).events == ()


def test_a_metrics_outage_warns_once_and_holds() -> None:
    outage = MetricsProblem(MetricsProblemKind.UNREACHABLE, "connection refused", T0)
    first = observation(signals=outage)
    planned = plan(first, ScalingState(seeded=True), now=T0)
    assert planned.split is not None and planned.split.total == 2
    assert [e.reason for e in planned.events] == ["MetricsUnavailable"]
    status = conclude(first, planned, [], now=T0).status
    assert plan(observation(signals=outage, previous=status), planned.memory, now=T0).events == ()


def test_conclude_reports_each_refused_object_once_and_what_was_created() -> None:
    obs = observation(signals=load(queue=8, kv=0.5))
    planned = plan(obs, ScalingState(seeded=True), now=T0)
    applied = [AppliedChange("Deployment", "pool-spot", "created", detail="1 replica"),
               AppliedChange("Service", "pool", "failed", message="spec.ports[0].port: Invalid value")]
    first = conclude(obs, planned, applied, now=T0)
    ready = find_condition(first.status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "ApplyFailed")
    assert "Service pool (spec.ports[0].port: Invalid value)" in ready.message
    assert [e.reason for e in first.events] == ["Created", "ApplyFailed"]
    assert "1 replica" in first.events[0].message
    # The same refusal on the next evaluation: no second Warning.
    later = conclude(observation(signals=load(queue=8, kv=0.5), previous=first.status), planned, applied[1:],
                     now=T0 + timedelta(seconds=5))
    assert [e.reason for e in later.events] == []


def test_conclude_reports_a_conflict_once() -> None:
    obs = observation()
    planned = plan(obs, ScalingState(), now=T0)
    conflict = [AppliedChange("Service", "pool", "conflict")]
    first = conclude(obs, planned, conflict, now=T0)
    assert [e.reason for e in first.events] == ["ObjectConflict"]
    again = conclude(observation(previous=first.status), planned, conflict, now=T0)
    assert again.events == ()


def _pod(name: str, capacity_type: CapacityType, *, ready: bool, age_seconds: float, node: str | None = "n1",
         unschedulable_for: float | None = None) -> ReplicaPod:
    return ReplicaPod(name=name, uid=name, capacity_type=capacity_type, node=node,
                      phase="Running" if node else "Pending", ready=ready,
                      created_at=T0 - timedelta(seconds=age_seconds),
                      unschedulable_since=T0 - timedelta(seconds=unschedulable_for) if unschedulable_for else None)


def test_replicas_not_ready_past_startup_seconds_are_no_capacity_on_its_way() -> None:
    # 1 ready on-demand, 3 spot asked for and not ready: young ones cover the load, stuck ones do not.
    young = (_pod("od", CapacityType.ON_DEMAND, ready=True, age_seconds=3600),
             *(_pod(f"s{i}", CapacityType.SPOT, ready=False, age_seconds=60) for i in range(3)))
    base = observation({**SPEC, "scaling": {"startupSeconds": 600}}, replicas=4, ready=1,
                       signals=load(queue=30, kv=0.5))
    starting = plan(dataclasses.replace(base, pods=young), ScalingState(), now=T0)
    assert starting.scaling is not None and cast(ScalingDecision, starting.scaling.decision).starting_replicas == 3
    stuck = tuple(dataclasses.replace(p, created_at=T0 - timedelta(seconds=900)) for p in young)
    not_ready = plan(dataclasses.replace(base, pods=stuck), ScalingState(), now=T0)
    assert not_ready.scaling is not None and cast(ScalingDecision, not_ready.scaling.decision).starting_replicas == 0


def test_spot_pending_too_long_moves_the_split_to_on_demand_and_the_status_says_so() -> None:
    pods = (_pod("od", CapacityType.ON_DEMAND, ready=True, age_seconds=3600),
            *(_pod(f"s{i}", CapacityType.SPOT, ready=False, age_seconds=400, node=None, unschedulable_for=400)
              for i in range(3)))
    base = dataclasses.replace(observation(replicas=4, ready=1, signals=load(queue=2, kv=0.3)), pods=pods)
    planned = plan(base, ScalingState(), now=T0)
    assert planned.split == CapacitySplit(spot=1, on_demand=3)
    assert "SpotCapacityUnavailable" in [e.reason for e in planned.events]
    status = conclude(base, planned, [], now=T0).status
    disrupted = find_condition(status.conditions, "SpotDisrupted")
    assert disrupted is not None and (disrupted.status, disrupted.reason) == ("True", "SpotCapacityUnavailable")
    assert status.spot is not None and status.spot.moved_replicas == 2
    assert status.replicas is not None and (status.replicas.spot_desired, status.replicas.on_demand_desired) == (1, 3)


def test_a_reclaim_notice_is_planned_and_the_eviction_answer_lands_in_the_status() -> None:
    pods = (_pod("od", CapacityType.ON_DEMAND, ready=True, age_seconds=3600, node="od-1"),
            _pod("s0", CapacityType.SPOT, ready=True, age_seconds=3600, node="spot-1"))
    warning = InterruptionNotice(NoticeKind.SPOT_INTERRUPTION, "aws-sqs", "e1", node="spot-1",
                                 deadline=T0 + timedelta(seconds=120))
    base = dataclasses.replace(observation(replicas=2, ready=2, signals=load(queue=0, kv=0.3)), pods=pods,
                               notices=(warning,))
    planned = plan(base, ScalingState(), now=T0)
    assert [r.pod for r in planned.drain.releases] == ["s0"] and [e.pod for e in planned.drain.evictions] == ["s0"]
    assert planned.split == CapacitySplit(spot=1, on_demand=1)  # the Deployment's count does not change
    status = conclude(base, planned, [], now=T0, evictions=[EvictionResult("s0", "blocked", "budget")]).status
    assert [(r.pod, r.outcome, r.eviction_attempts) for r in status.interruptions] == [("s0", "Draining", 1)]
    disrupted = find_condition(status.conditions, "SpotDisrupted")
    assert disrupted is not None and disrupted.reason == "ReplicasDraining" and "s0" in disrupted.message


def test_the_status_carries_the_cost_of_the_replicas_asked_for_at_the_token_load_shown() -> None:
    priced = {**SPEC, "cost": {"spotReplicaHourly": 0.32, "onDemandReplicaHourly": 0.8048,
                               "apiInputPerMillionTokens": 0.15, "apiOutputPerMillionTokens": 0.60}}
    signals = dataclasses.replace(load(queue=2, kv=0.5), prompt_tokens_per_second=1500.0,
                                  generation_tokens_per_second=500.0)
    obs = observation(priced, replicas=4, ready=4, signals=signals)
    status = conclude(obs, plan(obs, ScalingState(seeded=True), now=T0), [], now=T0).status
    assert status.signals is not None and status.signals.prompt_tokens_per_second == 1500
    assert status.cost is not None
    assert (status.cost.spot_replicas, status.cost.on_demand_replicas, status.cost.hourly) == (3, 1, 1.765)
    assert status.cost.tokens_per_second == 2000 and status.cost.cheaper == "pool"
    unpriced = conclude(observation(signals=signals), plan(observation(signals=signals), ScalingState(seeded=True),
                                                           now=T0), [], now=T0).status
    assert unpriced.cost is None
