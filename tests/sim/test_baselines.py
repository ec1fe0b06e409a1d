"""The baselines decide as their documented defaults say, on hand-built views of the pool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from controller.api.spec import (
    FallbackProviderSpec,
    FallbackSpec,
    InferencePoolSpec,
    ModelSpec,
    ReplicasSpec,
    ScalingSpec,
)
from controller.sim.baselines import (
    BASELINE_NAMES,
    HPA_SYNC_SECONDS,
    KedaHpa,
    Oracle,
    SkyServeFallback,
    make_policy,
)
from controller.sim.policy import Policy, PolicyContext, PoolView, Target

FALLBACK = FallbackSpec(enabled=True, provider=FallbackProviderSpec(base_url="https://api.example.com/v1", model="m"))


def make_spec(*, min_replicas: int = 1, max_replicas: int = 20, queue_target: float = 4.0,
              fallback: bool = False) -> InferencePoolSpec:
    return InferencePoolSpec(
        model=ModelSpec(name="m"),
        replicas=ReplicasSpec(min=min_replicas, max=max_replicas),
        scaling=ScalingSpec(target_queue_depth_per_replica=queue_target),
        fallback=FALLBACK if fallback else FallbackSpec(),
    )


def make_context(spec: InferencePoolSpec | None = None, **overrides: Any) -> PolicyContext:
    values: dict[str, Any] = {
        "spec": spec or make_spec(),
        "replica_requests_per_second": 1.0,
        "cold_start_seconds": 300.0,
        "peak_requests_per_second": 5.0,
        "duration_seconds": 3600.0,
        "spot_hourly": 1.0,
        "on_demand_hourly": 3.0,
        "api_input_per_million": 1.0,
        "api_output_per_million": 2.0,
    }
    values.update(overrides)
    return PolicyContext(**values)


def view(now: float, *, queue: float = 0.0, rate: float = 0.0, spot: int = 0, on_demand: int = 0,
         ready_spot: int | None = None, ready_on_demand: int | None = None, spot_pending: int = 0) -> PoolView:
    return PoolView(
        now=now, spot_replicas=spot, on_demand_replicas=on_demand,
        ready_spot=spot if ready_spot is None else ready_spot,
        ready_on_demand=on_demand if ready_on_demand is None else ready_on_demand,
        spot_pending=spot_pending, queue_depth=queue, running=0.0, kv_cache_utilization=None,
        arrivals_per_second=rate,
    )


def keda_run(policy: Policy, queue_at: Sequence[tuple[float, float]], until: float) -> dict[float, int]:
    """Replicas after each 15 s sync; ``queue_at`` is (from time, queue depth) steps."""
    replicas: dict[float, int] = {}
    now = 0.0
    while now <= until:
        queue = next(q for start, q in reversed(queue_at) if start <= now)
        target = policy.decide(view(now, queue=queue))
        replicas[now] = target.spot + target.on_demand
        now += policy.interval_seconds
    return replicas


# ------------------------------------------------------------------------------------------ KEDA / HPA


def test_keda_scales_up_in_one_sync_to_ceil_queue_over_target() -> None:
    policy = make_policy("keda", make_context(make_spec(min_replicas=2)))
    target = policy.decide(view(0.0, queue=22.0))  # ceil(22 / 4) = 6 = 2 + 4
    assert target == Target(spot=0, on_demand=6, fallback="Off")
    assert policy.interval_seconds == HPA_SYNC_SECONDS
    assert policy.drains_on_notice is False


def test_keda_scale_up_is_limited_to_4_pods_or_100_percent_per_sync() -> None:
    policy = make_policy("keda", make_context(make_spec(min_replicas=1, max_replicas=50)))
    replicas = keda_run(policy, [(0.0, 120.0)], until=45.0)  # wants ceil(120 / 4) = 30
    assert replicas[0.0] == 5  # 1 + 4 pods beats 1 * 200 %
    assert replicas[15.0] == 10  # 5 * 200 % beats 5 + 4
    assert replicas[30.0] == 20
    assert replicas[45.0] == 30


def test_keda_is_bounded_by_max_replicas() -> None:
    policy = make_policy("keda", make_context(make_spec(min_replicas=2, max_replicas=3)))
    assert policy.decide(view(0.0, queue=400.0)).on_demand == 3


def test_keda_ignores_a_change_within_the_tolerance() -> None:
    policy = make_policy("keda", make_context(make_spec(min_replicas=5)))
    replicas = keda_run(policy, [(0.0, 21.0), (30.0, 23.0)], until=30.0)
    assert replicas[0.0] == 5  # 21 / (4 * 5) = 1.05: within 0.1, ceil(21 / 4) = 6 is not taken
    assert replicas[15.0] == 5
    assert replicas[30.0] == 6  # 23 / 20 = 1.15: outside, ceil(23 / 4) = 6


def test_keda_does_not_scale_down_before_300_s_of_lower_recommendations() -> None:
    policy = make_policy("keda", make_context(make_spec(min_replicas=1)))
    # Queue 40 until the poll at 30 s reads 0: the syncs at 0 and 15 s recommend 10, later ones 0.
    replicas = keda_run(policy, [(0.0, 40.0), (20.0, 0.0)], until=330.0)
    assert replicas[15.0] == 10
    assert all(replicas[t] == 10 for t in replicas if 15.0 <= t <= 300.0)
    assert replicas[315.0] == 1  # the sync at 15 s left the 300 s window; 100 % per sync, down to min


def test_keda_sees_a_queue_change_only_at_its_30_s_poll() -> None:
    policy = make_policy("keda", make_context(make_spec(min_replicas=1)))
    replicas = keda_run(policy, [(0.0, 0.0), (5.0, 20.0)], until=30.0)
    assert replicas[0.0] == 1
    assert replicas[15.0] == 1  # the HPA syncs, but KEDA still serves the 0 it polled at 0 s
    assert replicas[30.0] == 5


def test_keda_spot_asks_for_spot_only_and_ignores_pending_spot() -> None:
    policy = make_policy("keda-spot", make_context(make_spec(min_replicas=2)))
    first = policy.decide(view(0.0, queue=22.0))
    assert first == Target(spot=6, on_demand=0, fallback="Off")
    # Four of them found no spot capacity: the queue is what it is, nothing moves to on-demand.
    later = policy.decide(view(15.0, queue=22.0, spot=6, ready_spot=2, spot_pending=4))
    assert later == Target(spot=6, on_demand=0, fallback="Off")
    assert policy.name == "keda-spot"
    assert policy.drains_on_notice is False


def test_keda_with_min_zero_activates_at_a_poll_and_goes_to_zero_after_the_cooldown() -> None:
    policy = KedaHpa(make_context(make_spec(min_replicas=0)), spot=False)
    assert policy.decide(view(0.0, queue=0.0)).on_demand == 0  # never active: to 0 at the first poll
    assert policy.decide(view(15.0, queue=3.0)).on_demand == 0  # the HPA is off at 0; KEDA polls at 30 s
    assert policy.decide(view(30.0, queue=3.0)).on_demand == 1  # active: KEDA scales 0 -> 1
    replicas = {t: policy.decide(view(t, queue=0.0)).on_demand for t in range(45, 361, 15)}
    assert replicas[315] == 1  # the HPA keeps its floor of 1; KEDA's cooldown runs from the last active poll
    assert replicas[330] == 0  # the poll at 330 s: cooldownPeriod (300 s) after the last active poll at 30 s


# ------------------------------------------------------------------------------------------ SkyServe


def skyserve_run(policy: Policy, rate_at: Sequence[tuple[float, float]], until: float,
                 start: float = 0.0) -> dict[float, Target]:
    """Targets at each of the world's calls; every spot replica asked for is ready."""
    targets: dict[float, Target] = {}
    now = start
    ready_spot = 0
    while now <= until:
        rate = next(r for at, r in reversed(rate_at) if at <= now)
        target = policy.decide(view(now, rate=rate, spot=ready_spot, ready_spot=ready_spot))
        targets[now] = target
        ready_spot = target.spot
        now += policy.interval_seconds
    return targets


def test_skyserve_waits_300_s_of_consecutive_decisions_before_upscaling() -> None:
    policy = make_policy("skyserve", make_context(make_spec(min_replicas=1, max_replicas=10)))
    targets = skyserve_run(policy, [(0.0, 2.0), (10.0, 5.0)], until=320.0)
    # Warm start at 0 s: target 2, plus one overprovisioned spot, one of the three on-demand. No spot is
    # ready yet at 0 s, so on-demand stands in up to the target; from 20 s on the spot replicas are ready.
    assert targets[0.0] == Target(spot=2, on_demand=2, fallback="Off")
    assert targets[20.0] == Target(spot=2, on_demand=1, fallback="Off")
    # The need for 5 is seen at 20, 40, ... s; the 15th such decision (300 s / 20 s) is at 300 s.
    assert all(targets[t].spot == 2 for t in targets if t < 300.0)
    # Target 5: 5 spot (with the overprovision, less the base). Three are not ready yet: on-demand stands in.
    assert targets[300.0] == Target(spot=5, on_demand=4, fallback="Off")
    assert policy.interval_seconds == 5.0  # the world asks every 5 s; the decisions are every 20 s
    assert targets[305.0] == targets[300.0]
    assert targets[320.0] == Target(spot=5, on_demand=1, fallback="Off")


def test_skyserve_a_decision_at_the_current_target_resets_the_upscale_counter() -> None:
    policy = SkyServeFallback(make_context(make_spec(min_replicas=1, max_replicas=10)))
    # 5 wanted from 20 s, except the decision at 200 s, which sees the old rate.
    targets = skyserve_run(policy, [(0.0, 2.0), (10.0, 5.0), (190.0, 2.0), (210.0, 5.0)], until=500.0)
    assert targets[480.0].spot == 2  # counting restarted at 220 s: its 15th decision is at 500 s
    assert targets[500.0].spot == 5


def test_skyserve_waits_1200_s_before_downscaling() -> None:
    policy = make_policy("skyserve", make_context(make_spec(min_replicas=1, max_replicas=10)))
    targets = skyserve_run(policy, [(0.0, 6.0), (100.0, 2.0)], until=1320.0)
    assert targets[0.0].spot == 6  # 6 + 1 overprovisioned - 1 on-demand base
    # Lower from the decision at 100 s: the 60th decision (1,200 s / 20 s) is at 100 + 59 * 20 = 1,280 s.
    assert all(targets[t].spot == 6 for t in targets if t < 1280.0)
    assert targets[1280.0] == Target(spot=2, on_demand=1, fallback="Off")


def test_skyserve_keeps_one_on_demand_base_and_replaces_missing_spot_with_on_demand() -> None:
    policy = make_policy("skyserve", make_context(make_spec(min_replicas=1, max_replicas=10)))
    # Target 3: final 4 with the overprovision; spot 4 - 1 base = 3.
    assert policy.decide(view(0.0, rate=3.0, spot=3, ready_spot=3)) == Target(spot=3, on_demand=1)
    # Two spot replicas are not ready (pending: no capacity): on-demand stands in, up to the target 3.
    assert policy.decide(view(20.0, rate=3.0, spot=3, ready_spot=1, spot_pending=2)) == Target(spot=3, on_demand=3)
    assert policy.decide(view(40.0, rate=3.0, spot=3, ready_spot=2, spot_pending=1)) == Target(spot=3, on_demand=2)
    assert policy.drains_on_notice is False


def test_skyserve_never_uses_the_api() -> None:
    policy = make_policy("skyserve", make_context(make_spec(fallback=True)))
    assert policy.decide(view(0.0, rate=50.0)).fallback == "Off"


# ------------------------------------------------------------------------------------------ static, API


def test_static_ondemand_buys_the_peak_beyond_max_replicas() -> None:
    context = make_context(make_spec(min_replicas=1, max_replicas=2), peak_requests_per_second=7.5,
                           replica_requests_per_second=2.0)
    policy = make_policy("static-ondemand", context)
    expected = Target(spot=0, on_demand=4, fallback="Off")  # ceil(7.5 / 2), above replicas.max = 2
    assert policy.decide(view(0.0)) == expected
    assert policy.decide(view(1800.0, rate=0.0, queue=100.0, on_demand=4)) == expected


def test_static_ondemand_keeps_at_least_min_replicas() -> None:
    context = make_context(make_spec(min_replicas=6, max_replicas=8), peak_requests_per_second=2.0)
    assert make_policy("static-ondemand", context).decide(view(0.0)).on_demand == 6


def test_api_only_sends_everything_to_the_api_with_zero_replicas() -> None:
    policy = make_policy("api-only", make_context())
    assert policy.decide(view(0.0, rate=10.0, queue=5.0)) == Target(spot=0, on_demand=0, fallback="Full")
    assert policy.decide(view(900.0, rate=0.0)) == Target(spot=0, on_demand=0, fallback="Full")


# ------------------------------------------------------------------------------------------ oracle


def oracle(demand: Sequence[float], *, spec: InferencePoolSpec | None = None, **overrides: Any) -> Oracle:
    context = make_context(spec, demand_per_window=tuple(demand), **overrides)
    policy = make_policy("oracle", context, mean_prompt_tokens=1000.0, mean_output_tokens=200.0)
    assert isinstance(policy, Oracle)
    return policy


def grid(policy: Oracle, until: float) -> dict[float, Target]:
    return {k * policy.interval_seconds: policy.decide(view(k * policy.interval_seconds))
            for k in range(int(until / policy.interval_seconds) + 1)}


def test_oracle_starts_replicas_one_cold_start_before_the_load_and_drops_them_after() -> None:
    # 1 request/s for 20 minutes, then 5/s for 40 minutes (a long run: no spike), then 1/s.
    policy = oracle([1.0] * 20 + [5.0] * 40 + [1.0] * 20)
    targets = grid(policy, 4800.0)
    assert targets[840.0] == Target(spot=1, on_demand=0, fallback="Overflow")
    assert targets[900.0] == Target(spot=5, on_demand=0, fallback="Overflow")  # 1,200 s - 300 s cold start
    assert targets[3540.0].spot == 5  # still serving the window [3540, 3600)
    assert targets[3600.0].spot == 1
    assert policy.drains_on_notice is True
    assert policy.interval_seconds == 60.0


def test_oracle_uses_on_demand_exactly_around_the_spans_without_spot() -> None:
    policy = oracle([2.0] * 60, spot_missing=((1800.0, 2400.0),))
    targets = grid(policy, 3540.0)
    # On-demand is ready as the span begins (asked a cold start before) and stays until the spot replicas
    # asked at the span's end are ready (a cold start after).
    for at, target in targets.items():
        assert target.on_demand == (2 if 1800.0 - 300.0 <= at < 2400.0 + 300.0 else 0), at
        assert target.spot == (0 if 1800.0 <= at < 2400.0 else 2), at


def test_oracle_adds_a_replacement_a_cold_start_before_each_reclaim() -> None:
    policy = oracle([2.0] * 60, reclaims=(1830.0,))
    targets = grid(policy, 3540.0)
    extra = [at for at, target in targets.items() if target.spot == 3]
    assert extra[0] <= 1830.0 - 300.0 < extra[0] + policy.interval_seconds  # ready by the notice, not earlier
    assert extra[-1] < 1830.0
    assert all(targets[at].spot == 2 for at in targets if at not in extra)
    assert all(target.on_demand == 0 for target in targets.values())
    assert policy.decide(view(1830.0)).spot == 2  # at the notice the replacement stands in for the drained one


def test_oracle_adds_no_replacement_for_a_reclaim_while_it_runs_on_demand() -> None:
    policy = oracle([2.0] * 60, reclaims=(2000.0,), spot_missing=((1800.0, 2400.0),))
    without = oracle([2.0] * 60, spot_missing=((1800.0, 2400.0),))
    assert grid(policy, 3540.0) == grid(without, 3540.0)


def test_oracle_sends_a_short_spike_to_the_api_when_the_api_is_cheaper() -> None:
    demand = [1.0] * 30 + [3.0] * 2 + [1.0] * 30  # a two-minute spike of 2 replicas' worth
    spec = make_spec(fallback=True)
    # Each extra replica would cost (120 s + 300 s cold start) at $1/h = $0.117; its 120 requests cost
    # 120 * (1000 * $1 + 200 * $2) / 1M = $0.168 on the API: the replicas are cheaper.
    provisioned = grid(oracle(demand, spec=spec), 3600.0)
    assert max(target.spot for target in provisioned.values()) == 3
    # At $4/h a replica costs $0.467 for the spike: the API is cheaper, the pool stays at 1 and overflows.
    to_api = grid(oracle(demand, spec=spec, spot_hourly=4.0, on_demand_hourly=12.0), 3600.0)
    assert all(target == Target(spot=1, on_demand=0, fallback="Overflow") for target in to_api.values())


def test_oracle_provisions_every_spike_without_an_api_provider() -> None:
    demand = [1.0] * 30 + [3.0] * 2 + [1.0] * 30
    targets = grid(oracle(demand, spec=make_spec(fallback=False), spot_hourly=4.0, on_demand_hourly=12.0), 3600.0)
    assert max(target.spot for target in targets.values()) == 3


def test_oracle_keeps_long_loads_on_replicas_even_when_the_api_is_cheaper() -> None:
    demand = [1.0] * 10 + [3.0] * 20 + [1.0] * 10  # 20 minutes: longer than cold start + 10 min useful life
    targets = grid(oracle(demand, spec=make_spec(fallback=True), spot_hourly=50.0, on_demand_hourly=150.0), 2400.0)
    assert max(target.spot for target in targets.values()) == 3


# ------------------------------------------------------------------------------------------ factory


def test_make_policy_builds_every_baseline_by_name() -> None:
    context = make_context(demand_per_window=(1.0,) * 10)
    for name in BASELINE_NAMES:
        policy = make_policy(name, context, mean_prompt_tokens=100.0, mean_output_tokens=10.0)
        assert policy.name == name
        assert policy.interval_seconds > 0
        assert isinstance(policy.decide(view(0.0, rate=1.0)), Target)


def test_make_policy_refuses_unknown_names_and_an_unpriced_oracle() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        make_policy("hpa", make_context())
    with pytest.raises(ValueError, match="mean_prompt_tokens"):
        make_policy("oracle", make_context())
    with pytest.raises(ValueError, match="replica_requests_per_second"):
        make_policy("keda", replace(make_context(), replica_requests_per_second=0.0))
