"""fallback.preferCheaper: to the API and to zero when the API is cheaper for long enough, back when the pool is.

Prices from reference/vllm-replica-model.md: an 8B model on one L4 (4.1: g6.xlarge $0.8048/h on demand, spot from
$0.349/h in us-east-1), gpt-4o-mini as the hosted API (4.3: $0.15 / $0.60 per million input / output tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.api.spec import InferencePoolSpec
from controller.api.status import InferencePoolStatus
from controller.core.capacity import CapacityType
from controller.core.cheaper import api_hourly
from controller.core.conditions import find_condition
from controller.core.plan import Observation, Plan, conclude, plan
from controller.core.pool import DeploymentState, PoolObservation, validate_pool
from controller.core.scaling import ScalingInputs, ScalingState, decide_replicas
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals

T0 = datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC)
PROVIDER = {"baseURL": "https://api.example.com/v1", "model": "gpt-4o-mini"}
PRICES = {"spotReplicaHourly": 0.349, "onDemandReplicaHourly": 0.8048,
          "apiInputPerMillionTokens": 0.15, "apiOutputPerMillionTokens": 0.60}
# 150 prompt + 50 generated tokens/s: (150 x 0.15 + 50 x 0.60) $/M per second x 3600 / 1e6 = 0.189 $/h.
LIGHT = (150.0, 50.0)
# Ten times that: 1.89 $/h, more than one spot replica (0.349 $/h).
HEAVY = (1500.0, 500.0)
WINDOW = 1800


def pool_spec(prefer: bool = True, **fallback: Any) -> dict[str, Any]:
    return {"model": {"name": "m"}, "replicas": {"min": 0, "max": 4},
            "scaling": {"targetQueueDepthPerReplica": 4},
            # Every replica on spot: two of them cost 2 x 0.349 = 0.698 $/h.
            "capacity": {"onDemandBase": 0, "spotPercentage": 100},
            "fallback": {"enabled": True, "provider": PROVIDER, "recoverAfterSeconds": 120,
                         "preferCheaper": prefer, **fallback},
            "cost": PRICES}


@dataclass
class Pool:
    """One pool evaluated over time: each step's status is the next step's previous, as on a cluster."""

    raw_spec: dict[str, Any] = field(default_factory=pool_spec)
    status: InferencePoolStatus = field(default_factory=InferencePoolStatus)
    memory: ScalingState = field(default_factory=lambda: ScalingState(seeded=True))
    now: datetime = T0
    events: list[tuple[str, str, str]] = field(default_factory=list)
    last: Plan | None = None

    def step(self, seconds: float, *, replicas: int, ready: int, tokens: tuple[float, float] = LIGHT,
             blind: bool = False) -> int:
        """Evaluate with the pool serving ``tokens`` itself (ready > 0) or the router sending them to the API
        (no ready replica); the replicas it asks for next are returned."""
        self.now += timedelta(seconds=seconds)
        parsed = validate_pool("pool", self.raw_spec)
        assert isinstance(parsed, InferencePoolSpec), parsed
        deployments = PoolObservation(deployments={
            CapacityType.SPOT: DeploymentState(replicas=replicas, ready=ready),
            CapacityType.ON_DEMAND: DeploymentState(replicas=0, ready=0),
        })
        signals: PoolSignals | MetricsProblem
        if blind:
            signals = MetricsProblem(MetricsProblemKind.UNREACHABLE, "connection refused", self.now)
        elif ready:  # KV at the scaler's target: the scaler holds the count whatever the price
            signals = PoolSignals(queue_depth=0.0, running_requests=4.0 * ready, kv_cache_utilization=0.8,
                                  replicas_reporting=ready, observed_at=self.now, prompt_tokens_per_second=tokens[0],
                                  generation_tokens_per_second=tokens[1], router_arrivals_per_second=2.0,
                                  router_in_flight=2.0, router_spills_per_second=0.0,
                                  router_api_prompt_tokens_per_second=0.0,
                                  router_api_generation_tokens_per_second=0.0)
        else:  # at zero the router is the only reading: everything it gets goes to the API
            signals = PoolSignals(queue_depth=None, running_requests=None, kv_cache_utilization=None,
                                  replicas_reporting=0, observed_at=self.now, router_arrivals_per_second=2.0,
                                  router_in_flight=2.0, router_spills_per_second=2.0,
                                  router_api_prompt_tokens_per_second=tokens[0],
                                  router_api_generation_tokens_per_second=tokens[1])
        observation = Observation(generation=1, spec=parsed, previous=self.status, deployments=deployments,
                                  signals=signals)
        self.last = plan(observation, self.memory, now=self.now)
        self.memory = self.last.memory
        self.status = conclude(observation, self.last, [], now=self.now).status
        self.events += [(e.type, e.reason, e.message) for e in self.last.events
                        if e.reason.startswith(("Fallback", "Cheaper"))]
        assert self.last.split is not None
        return self.last.split.total

    @property
    def mode(self) -> str:
        assert self.status.fallback is not None
        return self.status.fallback.mode

    def active(self) -> tuple[str, str, str]:
        found = find_condition(self.status.conditions, "FallbackActive")
        assert found is not None
        return found.status, found.reason, found.message

    def timers(self) -> tuple[str | None, str | None, str | None]:
        cost = self.status.cost
        assert cost is not None
        return cost.api_cheaper_since, cost.on_api_since, cost.pool_cheaper_since


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_api_charge_by_hand() -> None:
    parsed = validate_pool("pool", pool_spec())
    assert isinstance(parsed, InferencePoolSpec)
    assert api_hourly(parsed.cost, *LIGHT) == 0.189  # (22.5 + 30) $/M per s x 3600 s / 1e6
    assert round(api_hourly(parsed.cost, *HEAVY) or 0, 6) == 1.89
    assert api_hourly(parsed.cost, None, 50.0) is None  # a rate not formed yet is unknown, never free


def test_cheaper_on_the_api_for_the_whole_window_goes_full_and_to_zero() -> None:
    pool = Pool()
    assert pool.step(0, replicas=2, ready=2) == 2  # 0.189 $/h on the API < 0.698 $/h: the window starts
    assert pool.status.cost is not None and pool.status.cost.cheaper == "api" and pool.status.cost.hourly == 0.698
    assert pool.timers() == (at(0), None, None) and pool.mode == "Off"
    assert pool.step(WINDOW - 1, replicas=2, ready=2) == 2
    assert pool.mode == "Off" and pool.events == []
    assert pool.step(1, replicas=2, ready=2) == 0  # 1800 s: all to the API, and to zero at once
    assert pool.mode == "Full"
    status, reason, message = pool.active()
    assert (status, reason) == ("True", "CheaperOnAPI") and "0.189 USD/h" in message and "0.698 USD/h" in message
    assert pool.timers() == (None, at(WINDOW), None)
    [(kind, event, words)] = pool.events  # one Normal Event with the numbers, no FallbackFull Warning
    assert (kind, event) == ("Normal", "CheaperOnAPI")
    assert "0.189 USD/h for the pool's 150 prompt + 50 generated tokens/s" in words
    assert "2 replica(s) cost (0.698 USD/h: 2 spot, 0 on-demand), for 1800 s" in words and "2 -> 0" in words
    assert pool.last is not None and pool.last.scaling is not None
    decision = pool.last.scaling.decision
    assert (decision.current, decision.desired, decision.reason) == (2, 0, "ScaledToZero")
    assert pool.status.last_decision is not None and "fallback.preferCheaper" in pool.status.last_decision.message


def test_the_window_restarts_when_the_pool_is_cheaper_and_holds_while_blind() -> None:
    pool = Pool()
    pool.step(0, replicas=2, ready=2)
    pool.step(1000, replicas=2, ready=2, tokens=HEAVY)  # 1.89 $/h > 0.698 $/h: the pool is cheaper, restart
    assert pool.timers() == (None, None, None)
    pool.step(10, replicas=2, ready=2)  # cheaper on the API again from 1010 s
    assert pool.timers()[0] == at(1010)
    pool.step(500, replicas=2, ready=2, blind=True)  # no signals: the window holds (neither restarts nor ends)
    assert pool.timers()[0] == at(1010)
    pool.step(500, replicas=2, ready=2, tokens=(150.0, None))  # type: ignore[arg-type]  # a rate not formed yet
    assert pool.timers()[0] == at(1010)
    assert pool.step(WINDOW - 1001, replicas=2, ready=2) == 2
    assert pool.step(1, replicas=2, ready=2) == 0 and pool.mode == "Full"


def test_at_zero_the_pool_stays_there_while_the_api_is_cheaper_whatever_the_router_demand() -> None:
    pool = Pool()
    pool.step(0, replicas=2, ready=2)
    pool.step(WINDOW, replicas=2, ready=2)
    assert pool.step(5, replicas=0, ready=0) == 0  # the router still sees 2 requests/s: held at zero
    assert pool.mode == "Full" and pool.active()[1] == "CheaperOnAPI"
    assert pool.last is not None and pool.last.scaling is not None
    assert "the scaler alone would ask for 1" in pool.last.scaling.decision.message
    assert pool.step(3600, replicas=0, ready=0) == 0
    assert pool.timers() == (None, at(WINDOW), None)
    assert [reason for _, reason, _ in pool.events] == ["CheaperOnAPI"]


def test_back_to_the_pool_when_one_replica_is_cheaper_for_the_window_then_the_normal_way_out_of_full() -> None:
    pool = Pool()
    pool.step(0, replicas=2, ready=2)
    pool.step(WINDOW, replicas=2, ready=2)
    pool.step(5, replicas=0, ready=0)
    back_from = WINDOW + 5 + 60
    assert pool.step(60, replicas=0, ready=0, tokens=HEAVY) == 0  # 1.89 $/h on the API > 0.349 $/h: window starts
    assert pool.timers() == (None, at(WINDOW), at(back_from))
    assert pool.step(WINDOW - 1, replicas=0, ready=0, tokens=HEAVY) == 0
    assert pool.step(1, replicas=0, ready=0, tokens=HEAVY) == 1  # one spot replica; the scaler goes on from there
    assert pool.timers() == (None, None, None) and pool.mode == "Full"
    assert pool.active()[1] == "AllToAPI"  # no longer for the price: nothing is ready yet
    kind, reason, words = pool.events[-1]
    assert (kind, reason) == ("Normal", "CheaperOnPool")
    assert "charged 1.89 USD/h for the router's 1500 prompt + 500 generated tokens/s" in words
    assert "one spot replica's 0.349 USD/h, for 1800 s" in words
    assert pool.step(5, replicas=1, ready=0, tokens=HEAVY) >= 1  # starting: the scaler keeps it
    assert pool.step(300, replicas=1, ready=1, tokens=HEAVY) >= 1 and pool.mode == "Overflow"
    pool.step(120, replicas=1, ready=1, tokens=HEAVY)
    assert pool.mode == "Off"
    assert [reason for _, reason, _ in pool.events] == ["CheaperOnAPI", "CheaperOnPool", "FallbackOverflow",
                                                        "FallbackRecovered"]


def test_a_short_burst_does_not_bring_the_pool_back() -> None:
    pool = Pool()
    pool.step(0, replicas=2, ready=2)
    pool.step(WINDOW, replicas=2, ready=2)
    pool.step(60, replicas=0, ready=0, tokens=HEAVY)
    pool.step(600, replicas=0, ready=0, tokens=HEAVY)
    assert pool.step(10, replicas=0, ready=0) == 0  # light again: the window restarts
    assert pool.timers()[2] is None
    assert pool.step(WINDOW, replicas=0, ready=0, tokens=HEAVY) == 0  # started again just now


def test_a_restart_changes_nothing_the_timers_are_in_the_status() -> None:
    pool = Pool()
    pool.step(0, replicas=2, ready=2)
    pool.step(1000, replicas=2, ready=2)
    pool.memory = ScalingState()  # the operator restarted: a fresh memory, the same status
    assert pool.step(WINDOW - 1000, replicas=2, ready=2) == 0 and pool.mode == "Full"
    pool.step(5, replicas=0, ready=0, tokens=HEAVY)
    pool.memory = ScalingState()
    assert pool.step(WINDOW - 1, replicas=0, ready=0, tokens=HEAVY) == 0  # still held at zero after a restart
    pool.memory = ScalingState()
    assert pool.step(1, replicas=0, ready=0, tokens=HEAVY) == 1


def test_the_replica_it_comes_back_on_follows_the_capacity_split() -> None:
    # The first replica on on-demand (onDemandBase 1): 0.8048 $/h, so 0.5 $/h on the API keeps the pool at zero.
    raw = pool_spec()
    raw["capacity"] = {"onDemandBase": 1, "spotPercentage": 100}
    pool = Pool(raw_spec=raw)
    pool.status = InferencePoolStatus.model_validate(
        {"cost": {"currency": "USD", "onApiSince": at(0)}, "fallback": {"mode": "Full"}})
    moderate = (1000.0, 200.0)  # 1000 x 0.15 + 200 x 0.60 = 270 $/M per s: 0.972 $/h
    pool.step(0, replicas=0, ready=0, tokens=moderate)
    assert pool.timers()[2] == at(0)  # 0.972 > 0.8048: the pool would be cheaper even on on-demand
    light = (1000.0, 50.0)  # 180 $/M per s: 0.648 $/h, below on-demand, above spot
    pool.step(10, replicas=0, ready=0, tokens=light)
    assert pool.timers()[2] is None
    assert "one on-demand replica (0.8048 USD/h)" in pool.active()[2]


def test_default_off_changes_nothing() -> None:
    """Off, the pool is the scaler's and the fallback's alone, however much cheaper the API is."""
    off, bare = pool_spec(prefer=False), pool_spec(prefer=False)
    del bare["fallback"]["preferCheaper"]
    for raw in (off, bare):
        pool = Pool(raw_spec=raw)
        memory = pool.memory
        for _ in range(5):
            replicas = pool.step(WINDOW, replicas=2, ready=2)
            assert pool.last is not None and pool.last.scaling is not None
            # The very decision the scaler makes without preferCheaper in the picture.
            parsed = validate_pool("pool", raw)
            assert isinstance(parsed, InferencePoolSpec)
            reading = pool.last.scaling.reading
            own, memory = decide_replicas(parsed, ScalingInputs(reading, 2, 2, 0), memory, now=pool.now)
            assert pool.last.scaling.decision == own and replicas == own.desired == 2
            assert pool.mode == "Off" and pool.active()[1] == "PoolServing"
        assert pool.timers() == (None, None, None) and pool.events == []
        assert pool.status.cost is not None and pool.status.cost.cheaper == "api"  # the figures are still shown


def test_turned_off_at_zero_the_scaler_takes_over() -> None:
    pool = Pool(raw_spec=pool_spec(prefer=False))
    pool.status = InferencePoolStatus.model_validate(
        {"cost": {"currency": "USD", "onApiSince": at(0)}, "fallback": {"mode": "Full"}})
    assert pool.step(10, replicas=0, ready=0) == 1  # the router's demand scales it from zero, as without the feature
    assert pool.timers() == (None, None, None) and pool.active()[1] == "AllToAPI"


def test_the_router_api_tokens_show_in_the_status_signals() -> None:
    pool = Pool()
    pool.status = InferencePoolStatus.model_validate(
        {"cost": {"currency": "USD", "onApiSince": at(0)}, "fallback": {"mode": "Full"}})
    pool.step(10, replicas=0, ready=0, tokens=(1234.5678, 50.0))
    assert pool.status.signals is not None
    assert pool.status.signals.router_api_prompt_tokens_per_second == 1230  # 3 significant digits, as token rates
    assert pool.status.signals.router_api_generation_tokens_per_second == 50
