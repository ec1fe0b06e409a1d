from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from controller.api.spec import (
    FallbackProviderSpec,
    FallbackSpec,
    InferencePoolSpec,
    ModelSpec,
    ReplicasSpec,
    ScaleDirectionSpec,
    ScalingSpec,
)
from controller.core.scaling import (
    ScalingDecision,
    ScalingInputs,
    ScalingLimit,
    ScalingReason,
    ScalingSignal,
    ScalingState,
    decide_replicas,
)
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_spec(
    *,
    min_replicas: int = 1,
    max_replicas: int = 10,
    fallback: bool = False,
    tolerance: float = 0.1,
    queue_target: float = 4.0,
    kv_target: float = 0.8,
    up_window: int = 0,
    up_step: int = 4,
    down_window: int = 300,
    down_step: int = 1,
) -> InferencePoolSpec:
    return InferencePoolSpec(
        model=ModelSpec(name="m"),
        replicas=ReplicasSpec(min=min_replicas, max=max_replicas),
        scaling=ScalingSpec(
            tolerance=tolerance,
            target_queue_depth_per_replica=queue_target,
            target_kv_cache_utilization=kv_target,
            scale_up=ScaleDirectionSpec(stabilization_seconds=up_window, max_step_replicas=up_step),
            scale_down=ScaleDirectionSpec(stabilization_seconds=down_window, max_step_replicas=down_step),
        ),
        fallback=(
            FallbackSpec(enabled=True, provider=FallbackProviderSpec(base_url="https://api.example.com/v1", model="m"))
            if fallback
            else FallbackSpec()
        ),
    )


def load(queue: float | None = None, kv: float | None = None, running: float | None = None) -> PoolSignals:
    return PoolSignals(
        queue_depth=queue, running_requests=running, kv_cache_utilization=kv, replicas_reporting=1, observed_at=NOW
    )


def problem(kind: MetricsProblemKind = MetricsProblemKind.TIMEOUT) -> MetricsProblem:
    return MetricsProblem(kind=kind, message="no answer in 2 s", observed_at=NOW)


def remembered(*seconds_ago_and_recommended: tuple[int, int], idle_for: int | None = None) -> ScalingState:
    return ScalingState(
        recommendations=tuple((NOW - timedelta(seconds=ago), rec) for ago, rec in seconds_ago_and_recommended),
        idle_since=None if idle_for is None else NOW - timedelta(seconds=idle_for),
        seeded=True,
    )


IDLE = load(queue=0, running=0, kv=0)


@dataclass(frozen=True)
class Case:
    signals: PoolSignals | MetricsProblem
    current: int
    desired: int
    reason: ScalingReason
    limited_by: ScalingLimit | None = None
    ready: int | None = None  # defaults to current
    starting: int = 0
    spec: InferencePoolSpec = field(default_factory=make_spec)
    # A pool the scaler has seen before; a fresh memory (ScalingState()) is seeded with the current count.
    state: ScalingState = field(default_factory=lambda: ScalingState(seeded=True))
    used: tuple[ScalingSignal, ...] | None = None  # checked when given


QUEUE, KV = ScalingSignal.QUEUE_DEPTH, ScalingSignal.KV_CACHE
R, L = ScalingReason, ScalingLimit

CASES = [
    # queue 24 over 3 ready, target 4 each: ratio 2, 6 replicas.
    pytest.param(Case(load(queue=24), 3, 6, R.SCALED_UP), id="queue_spike_scales_up_at_once"),
    pytest.param(Case(load(queue=40), 3, 7, R.SCALED_UP, L.SCALE_UP_STEP), id="scale_up_capped_by_step"),
    pytest.param(Case(load(queue=40), 3, 5, R.SCALED_UP, L.MAX, spec=make_spec(max_replicas=5)),
                 id="scale_up_capped_by_max"),
    pytest.param(Case(load(queue=40), 5, 5, R.AT_MAXIMUM, L.MAX, spec=make_spec(max_replicas=5)),
                 id="at_max_holds_while_load_wants_more"),
    # 3 ready carry a queue of 20 (needs 5); 2 more are starting: nothing more to order.
    pytest.param(Case(load(queue=20), 5, 5, R.CAPACITY_STARTING, ready=3, starting=2),
                 id="starting_replicas_count_as_capacity"),
    pytest.param(Case(load(queue=32), 5, 8, R.SCALED_UP, ready=3, starting=2),
                 id="load_beyond_starting_capacity_orders_only_the_difference"),
    pytest.param(Case(load(queue=20), 5, 5, R.CAPACITY_NOT_READY, ready=3, starting=0),
                 id="replicas_past_startup_are_not_ordered_again"),
    # A signal above target never asks for fewer than asked for: 1.2 x 3 ready = 4 < 5 asked.
    pytest.param(Case(load(kv=0.96), 5, 5, R.CAPACITY_STARTING, ready=3, starting=2),
                 id="kv_above_target_never_shrinks_starting_capacity"),
    pytest.param(Case(load(queue=12, kv=0.96), 3, 4, R.SCALED_UP, used=(QUEUE, KV)), id="kv_pressure_scales_up"),
    pytest.param(Case(load(queue=4, kv=0.96), 4, 5, R.SCALED_UP), id="the_highest_signal_wins"),
    pytest.param(Case(load(queue=4), 6, 6, R.STABILIZING_SCALE_DOWN, L.SCALE_DOWN_STABILIZATION,
                      state=remembered((100, 6))), id="scale_down_waits_for_the_window"),
    pytest.param(Case(load(queue=4, kv=0.2), 6, 5, R.SCALED_DOWN, L.SCALE_DOWN_STEP, state=remembered((300, 6))),
                 id="scale_down_after_the_window_steps_by_one"),
    pytest.param(Case(load(queue=4, kv=0.2), 6, 4, R.SCALED_DOWN, L.SCALE_DOWN_STABILIZATION,
                      spec=make_spec(down_step=10), state=remembered((100, 4), (400, 6))),
                 id="scale_down_goes_only_to_the_highest_recommendation_in_the_window"),
    pytest.param(Case(load(queue=24), 3, 3, R.STABILIZING_SCALE_UP, L.SCALE_UP_STABILIZATION,
                      spec=make_spec(up_window=60), state=remembered((30, 3))),
                 id="scale_up_window_waits_for_the_load_to_persist"),
    pytest.param(Case(load(queue=24), 3, 6, R.SCALED_UP, spec=make_spec(up_window=60), state=remembered((30, 7))),
                 id="scale_up_window_acts_once_every_recommendation_agrees"),
    pytest.param(Case(problem(), 4, 4, R.METRICS_UNAVAILABLE, state=remembered((10, 1))), id="metrics_problem_holds"),
    pytest.param(Case(load(running=3), 4, 4, R.METRICS_UNAVAILABLE), id="signals_without_queue_or_kv_hold"),
    pytest.param(Case(load(kv=0.5), 2, 2, R.METRICS_UNAVAILABLE, ready=0, starting=2),
                 id="kv_without_ready_replicas_measures_nothing"),
    pytest.param(Case(problem(), 12, 10, R.AT_MAXIMUM, L.MAX), id="metrics_problem_still_snaps_into_bounds"),
    pytest.param(Case(IDLE, 1, 1, R.AT_MINIMUM, L.MIN, spec=make_spec(min_replicas=0),
                      state=remembered((10, 0), idle_for=900)), id="min_zero_without_fallback_keeps_one"),
    pytest.param(Case(problem(MetricsProblemKind.NO_READY_REPLICAS), 0, 1, R.AT_MINIMUM, L.MIN,
                      spec=make_spec(min_replicas=0)), id="min_zero_without_fallback_starts_one"),
    pytest.param(Case(IDLE, 1, 0, R.SCALED_TO_ZERO, spec=make_spec(min_replicas=0, fallback=True),
                      state=remembered((200, 0), (100, 0), idle_for=300)),
                 id="scale_to_zero_with_fallback_after_window"),
    pytest.param(Case(IDLE, 1, 1, R.AT_MINIMUM, L.MIN, spec=make_spec(min_replicas=0, fallback=True),
                      state=remembered((100, 0), idle_for=120)), id="no_scale_to_zero_before_the_window"),
    pytest.param(Case(load(queue=0, running=3), 1, 1, R.AT_MINIMUM, L.MIN,
                      spec=make_spec(min_replicas=0, fallback=True)), id="no_scale_to_zero_while_requests_run"),
    pytest.param(Case(problem(MetricsProblemKind.NO_READY_REPLICAS), 0, 0, R.SCALED_TO_ZERO,
                      spec=make_spec(min_replicas=0, fallback=True)), id="at_zero_with_nothing_to_scrape_holds_zero"),
    pytest.param(Case(problem(MetricsProblemKind.UNREACHABLE), 0, 0, R.METRICS_UNAVAILABLE,
                      spec=make_spec(min_replicas=0, fallback=True)), id="at_zero_with_the_source_down_holds_zero"),
    # No ready replica: ceil(queue / target) = ceil(6 / 4).
    pytest.param(Case(load(queue=6), 0, 2, R.SCALED_UP, spec=make_spec(min_replicas=0, fallback=True)),
                 id="queue_at_zero_wakes_the_pool"),
    # 17 / 4 / 4 = 1.06 and 0.75 / 0.8 = 0.94: both inside 1 +- 0.1.
    pytest.param(Case(load(queue=17, kv=0.75), 4, 4, R.WITHIN_TOLERANCE), id="within_tolerance_holds"),
    pytest.param(Case(load(queue=16), 2, 4, R.SCALED_UP, used=(QUEUE,)), id="missing_kv_uses_queue_only"),
    # One signal read, the other not: up on what is read, never down (that would be down blind on the other).
    pytest.param(Case(load(queue=4), 6, 6, R.SIGNAL_MISSING, L.MISSING_SIGNAL, state=remembered((400, 6))),
                 id="missing_kv_never_scales_down"),
    pytest.param(Case(load(kv=0.2), 6, 6, R.SIGNAL_MISSING, L.MISSING_SIGNAL, state=remembered((400, 6))),
                 id="missing_queue_never_scales_down"),
    pytest.param(Case(load(queue=4), 12, 10, R.AT_MAXIMUM, L.MAX), id="missing_signal_still_snaps_into_bounds"),
    # A fresh memory (the operator restarted) is seeded with the current count, as the HPA does:
    # the scale-down window starts over instead of being skipped.
    pytest.param(Case(load(queue=4, kv=0.2), 6, 6, R.STABILIZING_SCALE_DOWN, L.SCALE_DOWN_STABILIZATION,
                      state=ScalingState()), id="a_fresh_memory_waits_out_the_scale_down_window"),
    pytest.param(Case(load(queue=40, kv=0.5), 3, 7, R.SCALED_UP, L.SCALE_UP_STEP, state=ScalingState()),
                 id="a_fresh_memory_still_scales_up_at_once"),
    pytest.param(Case(load(kv=0.4), 4, 4, R.STABILIZING_SCALE_DOWN, L.SCALE_DOWN_STABILIZATION,
                      state=remembered((60, 4)), used=(KV,)), id="missing_queue_uses_kv_only"),
    pytest.param(Case(load(queue=48), 12, 10, R.AT_MAXIMUM, L.MAX), id="out_of_bounds_snaps_back"),
    pytest.param(Case(load(queue=4), 1, 3, R.AT_MINIMUM, L.MIN, spec=make_spec(min_replicas=3)),
                 id="below_a_raised_minimum_snaps_up"),
    pytest.param(Case(load(queue=0), 12, 10, R.AT_MAXIMUM, L.MAX, state=remembered((10, 12))),
                 id="bounds_win_over_the_scale_down_window"),
]


@pytest.mark.parametrize("case", CASES)
def test_decide_replicas(case: Case) -> None:
    ready = case.current if case.ready is None else case.ready
    inputs = ScalingInputs(case.signals, case.current, ready, case.starting)
    decision, _ = decide_replicas(case.spec, inputs, case.state, now=NOW)
    assert (decision.desired, decision.reason, decision.limited_by) == (case.desired, case.reason, case.limited_by), (
        decision.message
    )
    assert decision.direction == (
        "up" if case.desired > case.current else "down" if case.desired < case.current else "hold"
    )
    if case.used is not None:
        assert decision.signals_used == case.used


def test_message_shows_the_arithmetic() -> None:
    # queue 42 / 3 / 4 = 3.5 -> 11; KV 0.91 / 0.8 = 1.14 -> 4; max 11, step limit 4 -> 7.
    decision, _ = decide_replicas(make_spec(), ScalingInputs(load(queue=42, kv=0.91), 3, 3, 0), ScalingState(), now=NOW)
    assert decision.message == (
        "queue 42 across 3 ready replicas, target 4 per replica; KV cache 91% vs target 80%: "
        "3 -> 7 (recommended 11; scale-up step limit 4)"
    )
    queue, kv = decision.per_signal
    assert (queue.signal, queue.observed, queue.target, queue.ratio, queue.position, queue.recommended) == (
        QUEUE, 42, 4, 3.5, "above", 11)
    assert (kv.signal, kv.recommended, kv.position) == (KV, 4, "above")
    assert (decision.recommended, decision.ready_replicas, decision.observed_at, decision.decided_at) == (
        11, 3, NOW, NOW)


@pytest.mark.parametrize(
    ("inputs", "spec", "state", "words"),
    [
        (ScalingInputs(load(queue=20), 5, 3, 2), make_spec(), ScalingState(seeded=True),
         ["3 ready + 2 starting cover it"]),
        (ScalingInputs(load(queue=4, kv=0.2), 6, 6, 0), make_spec(), remembered((100, 6)),
         ["holding 6", "highest recommendation in the last 300 s is 6"]),
        (ScalingInputs(load(queue=4), 6, 6, 0), make_spec(), remembered((400, 6)),
         ["holding 6", "the queue alone asks for 5", "not scaling down blind on the missing KV cache signal"]),
        (ScalingInputs(problem(), 4, 4, 0), make_spec(), ScalingState(),
         ["SourceTimeout", "no answer in 2 s", "holding 4", "never scaling down blind"]),
        (ScalingInputs(problem(MetricsProblemKind.NO_READY_REPLICAS), 0, 0, 0),
         make_spec(min_replicas=0, fallback=True), ScalingState(seeded=True), ["holding 0", "API fallback"]),
        (ScalingInputs(IDLE, 1, 1, 0), make_spec(min_replicas=0), ScalingState(seeded=True),
         ["replicas.min 0 needs fallback.enabled"]),
        (ScalingInputs(IDLE, 1, 1, 0), make_spec(min_replicas=0, fallback=True), remembered(idle_for=40),
         ["until the load is zero for 300 s", "zero for 40 s so far"]),
        (ScalingInputs(load(kv=0.9), 2, 2, 0), make_spec(), ScalingState(seeded=True),
         ["KV cache 90% on 2 ready replicas", "no queue signal"]),
    ],
    ids=["capacity_starting", "stabilizing", "signal_missing", "metrics_problem", "at_zero",
         "min_zero_without_fallback", "zero_pending", "kv_only"],
)
def test_message_says_why(inputs: ScalingInputs, spec: InferencePoolSpec, state: ScalingState,
                          words: list[str]) -> None:
    message = decide_replicas(spec, inputs, state, now=NOW)[0].message
    for word in words:
        assert word in message


def test_state_keeps_the_longest_window_and_adds_the_new_recommendation() -> None:
    spec = make_spec(up_window=60, down_window=300)
    state = remembered((500, 9), (299, 5), (30, 4))
    _, new_state = decide_replicas(spec, ScalingInputs(load(queue=8), 2, 2, 0), state, now=NOW)
    assert new_state.recommendations == (
        (NOW - timedelta(seconds=299), 5), (NOW - timedelta(seconds=30), 4), (NOW, 2))
    assert state == remembered((500, 9), (299, 5), (30, 4))  # untouched


def test_metrics_problem_remembers_nothing_and_forgets_idleness() -> None:
    state = remembered((30, 4), idle_for=100)
    _, new_state = decide_replicas(make_spec(), ScalingInputs(problem(), 4, 4, 0), state, now=NOW)
    assert new_state == ScalingState(recommendations=state.recommendations, seeded=True)


def test_negative_counts_are_a_bug() -> None:
    with pytest.raises(ValueError, match="ready_replicas"):
        ScalingInputs(load(queue=1), 1, -1, 0)


# ----------------------------------------------------------------------------------------- sequences


def run_sequence(
    spec: InferencePoolSpec,
    steps: list[tuple[int, PoolSignals | MetricsProblem]],
    *,
    start: int,
    startup_seconds: int = 0,
) -> list[ScalingDecision]:
    """Feed (seconds, signals) in order; a replica ordered at t is ready at t + startup_seconds."""
    ready_at = [-startup_seconds] * start
    state = ScalingState()
    decisions = []
    for seconds, signals in steps:
        now = NOW + timedelta(seconds=seconds)
        ready = sum(1 for t in ready_at if t <= seconds)
        stamped = dataclasses.replace(signals, observed_at=now)
        inputs = ScalingInputs(stamped, len(ready_at), ready, len(ready_at) - ready)
        decision, state = decide_replicas(spec, inputs, state, now=now)
        decisions.append(decision)
        if decision.desired > len(ready_at):
            ready_at += [seconds + startup_seconds] * (decision.desired - len(ready_at))
        # The newest replicas go first, as the ones still starting are the cheapest to drop.
        ready_at = sorted(ready_at)[: decision.desired]
    return decisions


def test_spike_then_quiet_holds_for_the_window_then_steps_down() -> None:
    steps: list[tuple[int, PoolSignals | MetricsProblem]] = [
        (0, load(queue=32, kv=0.5)), (15, load(queue=4, kv=0.2)), (150, problem()), (299, load(queue=4, kv=0.2)),
        (300, load(queue=4, kv=0.2)), (315, load(queue=4, kv=0.2)), (330, load(queue=4, kv=0.2)),
    ]
    decisions = run_sequence(make_spec(up_step=10), steps, start=2)
    assert [d.desired for d in decisions] == [8, 8, 8, 8, 7, 6, 5]


def test_cold_start_does_not_order_the_same_replicas_twice() -> None:
    steps: list[tuple[int, PoolSignals | MetricsProblem]] = [(t, load(queue=20)) for t in (0, 15, 30, 45, 60, 75)]
    decisions = run_sequence(make_spec(), steps, start=3, startup_seconds=60)
    assert [d.desired for d in decisions] == [5, 5, 5, 5, 5, 5]
    assert [d.reason for d in decisions] == [R.SCALED_UP, *[R.CAPACITY_STARTING] * 3, *[R.WITHIN_TOLERANCE] * 2]


def test_scale_to_zero_needs_an_unbroken_idle_window() -> None:
    spec = make_spec(min_replicas=0, fallback=True)
    steps: list[tuple[int, PoolSignals | MetricsProblem]] = [
        (0, IDLE), (150, problem()), (160, IDLE), (300, IDLE), (459, IDLE), (460, IDLE), (475, load(queue=3)),
    ]
    decisions = run_sequence(spec, steps, start=1)
    assert [d.desired for d in decisions] == [1, 1, 1, 1, 1, 0, 1]
    assert decisions[-2].reason == R.SCALED_TO_ZERO
    assert decisions[-1].reason == R.SCALED_UP


def test_noisy_level_load_does_not_flap() -> None:
    # 4 replicas at target 4 each serve 16; +-10 % tolerance.
    queues = [15, 17.5, 14.5, 16, 17.6, 14.4, 16.2, 15.1]
    steps: list[tuple[int, PoolSignals | MetricsProblem]] = [(i * 5, load(queue=q)) for i, q in enumerate(queues)]
    assert [d.desired for d in run_sequence(make_spec(), steps, start=4)] == [4] * len(queues)


# ------------------------------------------------------------------------ the router's demand


def router_reading(*, queue: float | None, kv: float | None, replicas: int, arrivals: float, in_flight: float,
                   spills: float = 0.0) -> PoolSignals:
    return PoolSignals(queue_depth=queue, running_requests=None if queue is None else 0.0, kv_cache_utilization=kv,
                       replicas_reporting=replicas, observed_at=NOW, router_arrivals_per_second=arrivals,
                       router_in_flight=in_flight, router_spills_per_second=spills)


def decide_with(reading: PoolSignals, *, current: int, ready: int) -> ScalingDecision:
    spec = make_spec(min_replicas=0, fallback=True)
    inputs = ScalingInputs(signals=reading, current_replicas=current, ready_replicas=ready, starting_replicas=0)
    return decide_replicas(spec, inputs, ScalingState(seeded=True), now=NOW)[0]


def test_at_zero_replicas_demand_at_the_router_scales_the_pool_up_from_zero() -> None:
    decision = decide_with(router_reading(queue=None, kv=None, replicas=0, arrivals=2.5, in_flight=10),
                           current=0, ready=0)
    assert (decision.desired, decision.reason) == (3, ScalingReason.SCALED_UP)  # ceil(10 in flight / 4)
    assert decision.signals_used == (ScalingSignal.ROUTER_DEMAND,)
    assert decision.message.startswith("router: 2.5 requests/s arriving with no ready replica: 0 -> 3")
    one = decide_with(router_reading(queue=None, kv=None, replicas=0, arrivals=0.2, in_flight=0), current=0, ready=0)
    assert one.desired == 1  # any arrival asks for one


def test_from_zero_the_replicas_asked_for_hold_what_is_in_flight_by_what_one_was_seen_to_take() -> None:
    spec = make_spec(min_replicas=0, fallback=True)
    reading = router_reading(queue=None, kv=None, replicas=0, arrivals=16, in_flight=88)
    inputs = ScalingInputs(signals=reading, current_replicas=0, ready_replicas=0, starting_replicas=0,
                           in_flight_per_replica=50)  # status.fallback.inFlightPerReplica, from when replicas ran
    decision = decide_replicas(spec, inputs, ScalingState(seeded=True), now=NOW)[0]
    assert decision.desired == 2  # ceil(88 / 50), not ceil(88 / 4) = 22


def test_at_zero_replicas_a_quiet_router_keeps_the_pool_at_zero() -> None:
    decision = decide_with(router_reading(queue=None, kv=None, replicas=0, arrivals=0, in_flight=0),
                           current=0, ready=0)
    assert (decision.desired, decision.reason) == (0, ScalingReason.SCALED_TO_ZERO)


def test_requests_the_router_spilled_count_as_demand_vllm_never_saw() -> None:
    # vLLM's queue is within target (what it holds it serves), but half of what arrives is spilled.
    decision = decide_with(router_reading(queue=8, kv=0.5, replicas=2, arrivals=10, in_flight=20, spills=5),
                           current=2, ready=2)
    assert decision.desired == 4  # ceil(2 ready x 10 arriving / 5 served)
    assert "router: 10 requests/s arriving, 5/s of them spilled to the API" in decision.message


def test_arrivals_at_the_router_keep_a_pool_from_counting_as_idle() -> None:
    spec = make_spec(min_replicas=0, fallback=True, down_window=0)
    busy = router_reading(queue=0, kv=0.0, replicas=1, arrivals=1.0, in_flight=1)
    inputs = ScalingInputs(signals=busy, current_replicas=1, ready_replicas=1, starting_replicas=0)
    assert decide_replicas(spec, inputs, ScalingState(seeded=True), now=NOW)[0].desired == 1
    quiet = dataclasses.replace(busy, router_arrivals_per_second=0.0, router_in_flight=0.0)
    inputs = dataclasses.replace(inputs, signals=quiet)
    assert decide_replicas(spec, inputs, ScalingState(seeded=True), now=NOW)[0].desired == 0


def with_tokens(signals: PoolSignals, prompt: float, generation: float) -> PoolSignals:
    return dataclasses.replace(signals, prompt_tokens_per_second=prompt, generation_tokens_per_second=generation)


def test_a_replicas_throughput_is_learned_while_the_pool_is_at_a_target() -> None:
    spec = make_spec(down_window=0)
    at_queue_target = with_tokens(load(queue=8, kv=0.3), prompt=1500, generation=500)  # 4 waiting per replica
    inputs = ScalingInputs(signals=at_queue_target, current_replicas=2, ready_replicas=2, starting_replicas=0)
    _, state = decide_replicas(spec, inputs, ScalingState(seeded=True), now=NOW)
    assert state.replica_tokens_per_second == 1000  # 2,000 tokens/s over 2 ready replicas
    # A second reading moves the average a fifth of the way.
    faster = with_tokens(load(queue=8, kv=0.3), prompt=2500, generation=500)
    _, state = decide_replicas(spec, dataclasses.replace(inputs, signals=faster), state, now=NOW)
    assert state.replica_tokens_per_second == pytest.approx(0.8 * 1000 + 0.2 * 1500)
    # Under the targets, or with replicas starting, nothing is learned.
    quiet = with_tokens(load(queue=0, kv=0.1), prompt=100, generation=50)
    assert decide_replicas(spec, dataclasses.replace(inputs, signals=quiet), state, now=NOW)[1] \
        .replica_tokens_per_second == state.replica_tokens_per_second
    starting = dataclasses.replace(inputs, current_replicas=3, starting_replicas=1)
    assert decide_replicas(spec, starting, ScalingState(seeded=True), now=NOW)[1].replica_tokens_per_second is None


def test_the_throughput_keeps_a_busy_pool_from_scaling_down_on_an_empty_queue_and_cache() -> None:
    # An 8B model on H100s: the cache holds hundreds of sequences, so queue and KV read near zero while the
    # replicas are busy. Each served 1,000 tokens/s at its targets; 1,900 tokens/s arrive.
    spec = make_spec(down_window=0)
    busy = with_tokens(load(queue=0, kv=0.05), prompt=1400, generation=500)
    inputs = ScalingInputs(signals=busy, current_replicas=2, ready_replicas=2, starting_replicas=0)
    decision, _ = decide_replicas(spec, inputs, ScalingState(seeded=True, replica_tokens_per_second=1000), now=NOW)
    assert decision.desired == 2  # the KV cache alone would say 1
    assert ScalingSignal.THROUGHPUT in decision.signals_used
    assert "1900 tokens/s at 1000 per replica (served at its targets)" in decision.message
    without, _ = decide_replicas(spec, inputs, ScalingState(seeded=True), now=NOW)
    assert without.desired == 1  # unknown throughput: queue and KV decide, as before
    more = with_tokens(load(queue=0, kv=0.05), prompt=3500, generation=500)
    up, _ = decide_replicas(spec, dataclasses.replace(inputs, signals=more),
                            ScalingState(seeded=True, replica_tokens_per_second=1000), now=NOW)
    assert up.desired == 4  # 4,000 tokens/s need four such replicas


def test_with_the_throughput_known_a_backlog_asks_for_at_most_twice_what_the_tokens_need() -> None:
    # A reclaim left a backlog of 42 on two replicas; the tokens arriving need 2 at what one served at target.
    spec = make_spec(down_window=0, max_replicas=20)
    backlog = with_tokens(load(queue=42, kv=0.5), prompt=15000, generation=4000)
    inputs = ScalingInputs(signals=backlog, current_replicas=2, ready_replicas=2, starting_replicas=0)
    capped, _ = decide_replicas(spec, inputs, ScalingState(seeded=True, replica_tokens_per_second=17000), now=NOW)
    assert capped.desired == 4  # not ceil(42 / 4) = 11
    queue = next(s for s in capped.per_signal if s.signal is ScalingSignal.QUEUE_DEPTH)
    assert queue.recommended == 4
    unknown, _ = decide_replicas(spec, inputs, ScalingState(seeded=True), now=NOW)
    assert unknown.desired == 2 + 4  # throughput unknown: the queue alone, one scale-up step (4) at a time
