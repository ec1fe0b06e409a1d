from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

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
    ScalingInputs,
    ScalingReason,
    ScalingState,
    decide_replicas,
    effective_min_replicas,
)
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FALLBACK = FallbackSpec(enabled=True, provider=FallbackProviderSpec(base_url="https://api.example.com/v1", model="m"))


@st.composite
def specs(draw: st.DrawFn, *, min_tolerance: float = 0.0) -> InferencePoolSpec:
    minimum = draw(st.integers(0, 5))
    return InferencePoolSpec(
        model=ModelSpec(name="m"),
        replicas=ReplicasSpec(min=minimum, max=draw(st.integers(max(1, minimum), 12))),
        scaling=ScalingSpec(
            target_queue_depth_per_replica=draw(st.floats(0.5, 50)),
            target_kv_cache_utilization=draw(st.floats(0.1, 1.0)),
            tolerance=draw(st.floats(min_tolerance, 0.5)),
            scale_up=ScaleDirectionSpec(
                stabilization_seconds=draw(st.sampled_from([0, 30, 120])), max_step_replicas=draw(st.integers(1, 6))
            ),
            scale_down=ScaleDirectionSpec(
                stabilization_seconds=draw(st.sampled_from([0, 60, 300])), max_step_replicas=draw(st.integers(1, 6))
            ),
        ),
        fallback=FALLBACK if draw(st.booleans()) else FallbackSpec(),
    )


queues = st.none() | st.just(0.0) | st.floats(0, 500)
kv_fractions = st.none() | st.just(0.0) | st.floats(0, 1)
running = st.none() | st.just(0.0) | st.floats(0, 100)


@st.composite
def pool_signals(draw: st.DrawFn) -> PoolSignals:
    return PoolSignals(
        queue_depth=draw(queues),
        running_requests=draw(running),
        kv_cache_utilization=draw(kv_fractions),
        replicas_reporting=1,
        observed_at=NOW,
    )


problems = st.builds(
    MetricsProblem, kind=st.sampled_from(MetricsProblemKind), message=st.just("gone"), observed_at=st.just(NOW)
)


@st.composite
def states(draw: st.DrawFn) -> ScalingState:
    ages = draw(st.lists(st.integers(0, 900), max_size=12))
    recommendations = tuple(
        (NOW - timedelta(seconds=age), draw(st.integers(0, 20))) for age in sorted(ages, reverse=True)
    )
    idle_for = draw(st.none() | st.integers(0, 900))
    return ScalingState(recommendations, None if idle_for is None else NOW - timedelta(seconds=idle_for))


# Counts drawn independently: the function must hold up even when they disagree (pods terminating, spec changed).
currents = st.integers(0, 20)
readies = st.integers(0, 15)
startings = st.integers(0, 4)


@given(specs(), st.one_of(pool_signals(), problems), currents, readies, startings, states())
def test_desired_is_always_within_the_effective_bounds(
    spec: InferencePoolSpec,
    signals: PoolSignals | MetricsProblem,
    current: int,
    ready: int,
    starting: int,
    state: ScalingState,
) -> None:
    decision, _ = decide_replicas(spec, ScalingInputs(signals, current, ready, starting), state, now=NOW)
    assert effective_min_replicas(spec) <= decision.desired <= spec.replicas.max


@given(specs(), st.one_of(pool_signals(), problems), currents, readies, startings, states())
def test_no_scale_down_below_a_higher_recommendation_inside_the_window(
    spec: InferencePoolSpec,
    signals: PoolSignals | MetricsProblem,
    current: int,
    ready: int,
    starting: int,
    state: ScalingState,
) -> None:
    decision, _ = decide_replicas(spec, ScalingInputs(signals, current, ready, starting), state, now=NOW)
    cutoff = NOW - timedelta(seconds=spec.scaling.scale_down.stabilization_seconds)
    for moment, recommended in state.recommendations:
        if moment > cutoff and current <= spec.replicas.max:
            assert decision.desired >= min(current, recommended)


@given(
    specs(),
    pool_signals(),
    st.floats(0, 200),
    st.floats(0, 1),
    st.floats(0, 50),
    currents,
    readies,
    startings,
    states(),
)
def test_more_load_never_gives_fewer_replicas(
    spec: InferencePoolSpec,
    signals: PoolSignals,
    more_queue: float,
    more_kv: float,
    more_running: float,
    current: int,
    ready: int,
    starting: int,
    state: ScalingState,
) -> None:
    heavier = PoolSignals(
        queue_depth=None if signals.queue_depth is None else signals.queue_depth + more_queue,
        running_requests=None if signals.running_requests is None else signals.running_requests + more_running,
        kv_cache_utilization=(
            None if signals.kv_cache_utilization is None else min(1.0, signals.kv_cache_utilization + more_kv)
        ),
        replicas_reporting=1,
        observed_at=NOW,
    )
    lighter_decision, _ = decide_replicas(spec, ScalingInputs(signals, current, ready, starting), state, now=NOW)
    heavier_decision, _ = decide_replicas(spec, ScalingInputs(heavier, current, ready, starting), state, now=NOW)
    assert heavier_decision.desired >= lighter_decision.desired


@settings(max_examples=60)
@given(specs(min_tolerance=0.02), st.data())
def test_noisy_level_load_never_changes_the_count(spec: InferencePoolSpec, data: st.DataObject) -> None:
    level = data.draw(st.integers(max(1, effective_min_replicas(spec)), spec.replicas.max), label="level")
    scaling = spec.scaling
    band = st.floats(1 - scaling.tolerance, 1 + scaling.tolerance)
    use_queue, use_kv = data.draw(st.sampled_from([(True, False), (False, True), (True, True)]), label="signals")
    state = ScalingState()
    now = NOW
    for _ in range(40):
        now += timedelta(seconds=data.draw(st.integers(1, 30)))
        signals = PoolSignals(
            queue_depth=level * scaling.target_queue_depth_per_replica * data.draw(band) if use_queue else None,
            running_requests=None,
            kv_cache_utilization=min(1.0, scaling.target_kv_cache_utilization * data.draw(band)) if use_kv else None,
            replicas_reporting=level,
            observed_at=now,
        )
        decision, state = decide_replicas(spec, ScalingInputs(signals, level, level, 0), state, now=now)
        assert (decision.desired, decision.reason) == (level, ScalingReason.WITHIN_TOLERANCE), decision.message


@given(specs(), problems, currents, readies, startings, states())
def test_a_metrics_problem_never_lowers_the_count_nor_is_remembered(
    spec: InferencePoolSpec,
    problem: MetricsProblem,
    current: int,
    ready: int,
    starting: int,
    state: ScalingState,
) -> None:
    decision, new_state = decide_replicas(spec, ScalingInputs(problem, current, ready, starting), state, now=NOW)
    assert decision.desired == min(max(current, effective_min_replicas(spec)), spec.replicas.max)
    # A fresh memory is seeded with the current count (as the HPA does), nothing lower.
    seed = set() if state.seeded else {(NOW, current)}
    assert set(new_state.recommendations) <= set(state.recommendations) | seed
    assert new_state.idle_since is None


@given(specs(), pool_signals(), currents, readies, startings, states())
def test_the_returned_state_holds_only_the_longest_window(
    spec: InferencePoolSpec,
    signals: PoolSignals,
    current: int,
    ready: int,
    starting: int,
    state: ScalingState,
) -> None:
    _, new_state = decide_replicas(spec, ScalingInputs(signals, current, ready, starting), state, now=NOW)
    longest = max(spec.scaling.scale_up.stabilization_seconds, spec.scaling.scale_down.stabilization_seconds)
    assert all(NOW - moment < timedelta(seconds=longest) for moment, _ in new_state.recommendations)
