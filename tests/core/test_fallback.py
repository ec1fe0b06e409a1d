"""Where traffic goes: Off, Overflow, Full, decided inside ``plan`` from the signals and the status alone."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core.capacity import CapacityType
from controller.core.conditions import find_condition
from controller.core.fallback import assess_saturation, replica_budget
from controller.core.plan import Observation, conclude, plan
from controller.core.pool import DeploymentState, PoolObservation, validate_pool
from controller.core.scaling import ScalingInputs, ScalingState, decide_replicas
from controller.core.signals import Histogram, MetricsProblem, MetricsProblemKind, PoolSignals

T0 = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)
PROVIDER = {"baseURL": "https://api.example.com/v1", "model": "llama-3.1-8b"}


def pool_spec(**fallback: Any) -> dict[str, Any]:
    return {"model": {"name": "m"}, "replicas": {"min": 1, "max": 4},
            "scaling": {"targetQueueDepthPerReplica": 4, "startupSeconds": 600},
            "capacity": {"onDemandBase": 1, "spotPercentage": 100},
            "fallback": {"enabled": True, "provider": PROVIDER, "recoverAfterSeconds": 120,
                         "saturation": {"queueDepthPerReplica": 8, "kvCacheUtilization": 0.95, "forSeconds": 30},
                         **fallback}}


@dataclass
class Pool:
    """One pool evaluated over time: each step's status is the next step's previous, as on a cluster."""

    raw_spec: dict[str, Any] = field(default_factory=pool_spec)
    status: InferencePoolStatus = field(default_factory=InferencePoolStatus)
    memory: ScalingState = field(default_factory=lambda: ScalingState(seeded=True))
    now: datetime = T0
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def step(self, seconds: float, *, replicas: int, ready: int, queue: float | None = 0.0, kv: float | None = 0.1,
             blind: bool = False) -> str:
        self.now += timedelta(seconds=seconds)
        parsed = validate_pool("pool", self.raw_spec)
        assert isinstance(parsed, InferencePoolSpec)
        on_demand = min(1, replicas)
        deployments = PoolObservation(deployments={
            CapacityType.ON_DEMAND: DeploymentState(replicas=on_demand, ready=min(on_demand, ready)),
            CapacityType.SPOT: DeploymentState(replicas=replicas - on_demand, ready=max(0, ready - on_demand)),
        })
        signals: PoolSignals | MetricsProblem = (
            MetricsProblem(MetricsProblemKind.UNREACHABLE, "connection refused", self.now) if blind else
            PoolSignals(queue_depth=queue, running_requests=ready * 4.0, kv_cache_utilization=kv,
                        replicas_reporting=ready, observed_at=self.now))
        observation = Observation(generation=1, spec=parsed, previous=self.status, deployments=deployments,
                                  signals=signals)
        planned = plan(observation, self.memory, now=self.now)
        self.memory = planned.memory
        self.status = conclude(observation, planned, [], now=self.now).status
        self.events += [(e.type, e.reason, e.message) for e in planned.events if e.reason.startswith("Fallback")]
        assert self.status.fallback is not None
        return self.status.fallback.mode

    def condition(self, kind: str) -> tuple[str, str]:
        found = find_condition(self.status.conditions, kind)
        assert found is not None
        return found.status, found.reason


def test_saturation_at_max_spills_after_for_seconds_and_says_so() -> None:
    pool = Pool()
    assert pool.step(0, replicas=4, ready=4, queue=10) == "Off"  # 2.5 per replica: not saturated
    assert pool.condition("Saturated") == ("False", "WithinCapacity")
    assert pool.step(10, replicas=4, ready=4, queue=40) == "Off"  # 10 per replica > 8, at max: the clock starts
    assert pool.condition("Saturated") == ("True", "AtMaximum")
    assert pool.step(20, replicas=4, ready=4, queue=40) == "Off"  # 20 of 30 s
    assert pool.condition("FallbackActive") == ("False", "PoolServing")
    assert pool.step(10, replicas=4, ready=4, queue=40) == "Overflow"  # 30 s
    assert pool.condition("FallbackActive") == ("True", "Overflow")
    assert pool.status.fallback is not None and pool.status.fallback.since == "2026-12-03T09:00:40Z"
    [(kind, reason, message)] = pool.events
    assert (kind, reason) == ("Warning", "FallbackOverflow")
    assert "Off -> Overflow" in message and "queue 40 over 4 ready replica(s) (10.0 per replica)" in message


def test_a_full_kv_cache_at_max_saturates_as_the_queue_does() -> None:
    pool = Pool(raw_spec=pool_spec(saturation={"forSeconds": 0}))
    assert pool.step(0, replicas=4, ready=4, queue=0, kv=0.96) == "Overflow"
    assert pool.condition("Saturated") == ("True", "AtMaximum")


def test_below_max_the_scaler_grows_the_pool_and_the_api_bridges_the_cold_start() -> None:
    pool = Pool()
    assert pool.step(0, replicas=2, ready=2, queue=40) == "Overflow"  # the scaler orders 2 more at once
    assert pool.condition("Saturated") == ("True", "ColdStart")
    assert pool.step(60, replicas=4, ready=2, queue=40) == "Overflow"
    assert pool.step(240, replicas=4, ready=4, queue=8) == "Overflow"  # up; 2 per replica: recovering
    assert pool.condition("Saturated") == ("False", "WithinCapacity")
    assert pool.step(120, replicas=4, ready=4, queue=8) == "Off"


def test_traffic_comes_back_only_after_recover_after_seconds_within_capacity() -> None:
    pool = Pool(raw_spec=pool_spec(saturation={"forSeconds": 0}))
    assert pool.step(0, replicas=4, ready=4, queue=40) == "Overflow"
    assert pool.step(10, replicas=4, ready=4, queue=4) == "Overflow"  # calm, the hysteresis window starts
    assert pool.condition("FallbackActive") == ("True", "Overflow")
    assert pool.step(100, replicas=4, ready=4, queue=40) == "Overflow"  # saturated again: window reset
    assert pool.step(10, replicas=4, ready=4, queue=4) == "Overflow"
    assert pool.step(119, replicas=4, ready=4, queue=4) == "Overflow"
    assert pool.step(1, replicas=4, ready=4, queue=4) == "Off"
    assert [reason for _, reason, _ in pool.events] == ["FallbackOverflow", "FallbackRecovered"]
    assert pool.events[-1][0] == "Normal"


def test_no_ready_replica_sends_everything_to_the_api_at_once_and_a_ready_one_takes_back_what_it_can() -> None:
    pool = Pool()
    assert pool.step(0, replicas=2, ready=2) == "Off"
    assert pool.step(5, replicas=2, ready=0, queue=None, kv=None) == "Full"  # every replica reclaimed
    assert pool.condition("Saturated") == ("True", "NoReadyReplicas")
    assert pool.condition("FallbackActive") == ("True", "AllToAPI")
    assert pool.step(60, replicas=2, ready=1, queue=1) == "Overflow"  # a replacement is ready
    assert pool.step(119, replicas=2, ready=2, queue=1) == "Overflow"
    assert pool.step(1, replicas=2, ready=2, queue=1) == "Off"
    assert [(kind, reason) for kind, reason, _ in pool.events] == [
        ("Warning", "FallbackFull"), ("Normal", "FallbackOverflow"), ("Normal", "FallbackRecovered")]


def test_a_cold_start_is_bridged_at_once_while_the_ordered_replicas_start() -> None:
    pool = Pool()
    assert pool.step(0, replicas=1, ready=1, queue=2) == "Off"
    # The scaler ordered a third replica; it takes minutes to load the model, and the queue is over target.
    assert pool.step(10, replicas=3, ready=1, queue=12) == "Overflow"
    assert pool.condition("Saturated") == ("True", "ColdStart")


def test_the_mode_comes_from_the_status_so_a_restart_changes_nothing() -> None:
    pool = Pool(raw_spec=pool_spec(saturation={"forSeconds": 0}))
    pool.step(0, replicas=4, ready=4, queue=40)
    pool.step(10, replicas=4, ready=4, queue=4)
    restarted = Pool(raw_spec=pool.raw_spec, status=pool.status, memory=ScalingState(), now=pool.now)
    assert restarted.step(60, replicas=4, ready=4, queue=4) == "Overflow"  # 60 of 120 s
    assert restarted.step(60, replicas=4, ready=4, queue=4) == "Off"  # the window counted across the restart
    assert restarted.events[0][1] == "FallbackRecovered"


def test_blind_the_mode_holds() -> None:
    pool = Pool(raw_spec=pool_spec(saturation={"forSeconds": 0}))
    assert pool.step(0, replicas=4, ready=4, queue=40) == "Overflow"
    for _ in range(10):
        assert pool.step(60, replicas=4, ready=4, blind=True) == "Overflow"  # never recover on no data
    assert pool.condition("Saturated") == ("Unknown", "MetricsUnavailable")
    calm = Pool()
    assert calm.step(0, replicas=4, ready=4, blind=True) == "Off"


def test_without_fallback_enabled_the_mode_stays_off_and_saturation_is_still_reported() -> None:
    pool = Pool(raw_spec=pool_spec(enabled=False, saturation={"forSeconds": 0}))
    assert pool.step(0, replicas=4, ready=4, queue=40) == "Off"
    assert pool.step(30, replicas=4, ready=0, queue=None, kv=None) == "Off"
    assert pool.condition("Saturated") == ("True", "NoReadyReplicas")
    assert pool.condition("FallbackActive") == ("False", "FallbackDisabled")
    assert pool.events == []


def test_the_replica_budget_is_what_the_kv_cache_was_seen_to_hold_plus_the_saturation_queue() -> None:
    pool = Pool()
    pool.step(0, replicas=2, ready=2, kv=0.1)  # running 4 per replica, cache 10 % full: too empty to tell
    assert pool.status.fallback is not None and pool.status.fallback.in_flight_per_replica is None
    pool.step(5, replicas=2, ready=2, kv=0.4)  # 4 sequences fill 40 %: the cache holds 10, plus a queue of 8
    assert pool.status.fallback is not None and pool.status.fallback.in_flight_per_replica == 10 + 8
    pool.step(5, replicas=2, ready=2, kv=0.05)  # nearly idle again: the last estimate stands
    assert pool.status.fallback is not None and pool.status.fallback.in_flight_per_replica == 18
    pool.step(5, replicas=2, ready=2, blind=True)  # blind: it stands too
    assert pool.status.fallback is not None and pool.status.fallback.in_flight_per_replica == 18


@pytest.mark.parametrize(("running", "ready", "kv", "expected"), [
    (300.0, 2, 0.75, 200 + 8),  # an 8B H100 replica: 1,024 sequences allowed, its cache holds 200 of this mix
    (10.0, 1, 1.0, 10 + 8),  # a full cache: what runs is what it holds
    (0.0, 1, 0.5, None),  # nothing running: nothing measured
])
def test_replica_budget_from_signals(running: float, ready: int, kv: float, expected: int | None) -> None:
    spec = validate_pool("pool", {"model": {"name": "m"}, "fallback": {
        "enabled": True, "provider": {"baseURL": "https://api.example.com/v1", "model": "m"}}})
    assert isinstance(spec, InferencePoolSpec)
    signals = PoolSignals(queue_depth=0.0, running_requests=running, kv_cache_utilization=kv,
                          replicas_reporting=ready, observed_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert replica_budget(spec, signals, ready, None) == expected


def test_the_budgets_queue_is_no_longer_than_a_replica_starts_within_the_slo() -> None:
    spec = validate_pool("pool", {"model": {"name": "m"}, "slo": {"ttftSeconds": 1.5}, "fallback": {
        "enabled": True, "provider": {"baseURL": "https://api.example.com/v1", "model": "m"}}})
    assert isinstance(spec, InferencePoolSpec)
    # An L4 replica of an 8B model: its cache holds 20 of this mix and it serves 0.9 requests/s; a queue of
    # 8 would wait 9 s. Within the 1.5 s SLO it starts 1.5 x 0.9 = 1.35 of them.
    slow = PoolSignals(queue_depth=4.0, running_requests=40.0, kv_cache_utilization=1.0, replicas_reporting=2,
                       observed_at=datetime(2026, 1, 1, tzinfo=UTC), router_arrivals_per_second=3.0,
                       router_spills_per_second=1.2)
    assert replica_budget(spec, slow, 2, None) == math.ceil(20 + 1.35)
    fast = dataclasses.replace(slow, router_arrivals_per_second=40.0, router_spills_per_second=0.0)
    assert replica_budget(spec, fast, 2, None) == 20 + 8  # 30 per second: the saturation queue is the bound


def test_a_ttft_over_the_slo_at_the_maximum_saturates_the_pool_even_under_the_queue_threshold() -> None:
    spec = validate_pool("pool", {"model": {"name": "m"}, "replicas": {"min": 1, "max": 2}, "slo": {"ttftSeconds": 1.5},
                                  "fallback": {"enabled": True,
                                               "provider": {"baseURL": "https://api.example.com/v1", "model": "m"}}})
    assert isinstance(spec, InferencePoolSpec)
    slow: Histogram = ((1.0, 10.0), (2.5, 20.0), (5.0, 60.0), (math.inf, 60.0))  # p95 4.8 s
    signals = PoolSignals(queue_depth=6.0, running_requests=40.0, kv_cache_utilization=0.7, replicas_reporting=2,
                          observed_at=datetime(2026, 1, 1, tzinfo=UTC), ttft_histogram=slow)
    decision = decide_replicas(spec, ScalingInputs(signals=signals, current_replicas=2, ready_replicas=2,
                                                   starting_replicas=0), ScalingState(seeded=True),
                               now=datetime(2026, 1, 1, tzinfo=UTC))[0]
    saturation = assess_saturation(spec, signals, decision, ready=2)
    assert (saturation.status, saturation.reason) == ("True", "AtMaximum")  # 3 waiting per replica: under 8
    assert "p95 TTFT 4.8 s" in saturation.message  # 2.5 + (57 - 20) / 40 x 2.5
    quick = dataclasses.replace(signals, ttft_histogram=((1.0, 60.0), (2.5, 60.0), (math.inf, 60.0)))
    assert assess_saturation(spec, quick, decision, ready=2).status == "False"
