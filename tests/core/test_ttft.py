"""The TTFT signal: the percentile of a histogram (Prometheus' histogram_quantile, by hand-computed figures),
and the scaler's third signal, which only ever pushes up against spec.slo."""

from __future__ import annotations

import dataclasses
import math

import pytest

from controller.api.spec import InferencePoolSpec, SLOSpec
from controller.core.scaling import (
    ScalingDecision,
    ScalingInputs,
    ScalingLimit,
    ScalingReason,
    ScalingSignal,
    ScalingState,
    decide_replicas,
)
from controller.core.scaling_report import ScalingOutcome, refreshed_signals
from controller.core.signals import MIN_TTFT_OBSERVATIONS, Histogram, PoolSignals, ttft_observations, ttft_quantile
from tests.core.test_scaling import NOW, make_spec, remembered

INF = math.inf

# 20 requests: 2 up to 0.5 s, 4 more up to 1 s, 4 more up to 2.5 s, 9 more up to 5 s, 1 slower.
TWENTY: Histogram = ((0.5, 2.0), (1.0, 6.0), (2.5, 10.0), (5.0, 19.0), (INF, 20.0))


# --- the quantile ---------------------------------------------------------------------------

@pytest.mark.parametrize(("percentile", "expected"), [
    (5, 0.25),  # rank 1 of the first bucket's 2, from 0: 0 + 0.5 * 1/2
    (40, 1.75),  # rank 8: 2 of the (1, 2.5] bucket's 4 -> 1 + 1.5 * 2/4
    (50, 2.5),  # rank 10: the (1, 2.5] bucket's last
    (90, 2.5 + 2.5 * 8 / 9),  # rank 18: 8 of the (2.5, 5] bucket's 9
    (95, 5.0),  # rank 19: the (2.5, 5] bucket's last
    (99, 5.0),  # rank 19.8 falls in +Inf: the highest finite bound
    (100, 5.0),
])
def test_the_quantile_interpolates_within_the_bucket_as_prometheus_does(percentile: float, expected: float) -> None:
    assert ttft_quantile(TWENTY, percentile) == pytest.approx(expected, rel=1e-12)


def test_non_integer_counts_and_any_order() -> None:
    extrapolated = ((2.0, 10.5), (INF, 11.25), (1.0, 4.5))  # Prometheus' increase() extrapolates; order is not kept
    # rank 5.625: 1.125 of the (1, 2] bucket's 6 -> 1 + 1 * 1.125/6
    assert ttft_quantile(extrapolated, 50) == pytest.approx(1.1875)


def test_counts_that_go_down_are_raised_to_the_running_maximum() -> None:
    # Replicas with different bucket layouts summed by le: 8 at 2 s is below the 10 at 1 s, read as 10.
    uneven = ((1.0, 10.0), (2.0, 8.0), (INF, 12.0))
    assert ttft_quantile(uneven, 50) == pytest.approx(0.6)  # rank 6 of the first bucket's 10
    assert ttft_quantile(uneven, 90) == 2.0  # rank 10.8: past the (fixed) 10 at 2 s, into +Inf


def test_too_few_requests_or_no_inf_bucket_is_not_read() -> None:
    nine = ((1.0, 5.0), (INF, 9.0))
    assert MIN_TTFT_OBSERVATIONS == 10
    assert ttft_quantile(nine, 50) is None
    assert ttft_quantile(((1.0, 5.0), (INF, 10.0)), 50) == 1.0  # ten: read (rank 5 of the first bucket's 5)
    assert ttft_quantile(nine, 50, min_observations=1) == pytest.approx(0.9)
    assert ttft_quantile(((1.0, 0.0), (INF, 0.0)), 95, min_observations=0) is None  # no request at all
    assert ttft_quantile(((1.0, 50.0), (2.0, 100.0)), 95) is None  # no +Inf bucket: not a whole histogram
    assert ttft_quantile(((INF, 100.0),), 95) is None  # no finite bound
    assert ttft_quantile(None, 95) is None and ttft_quantile((), 95) is None
    assert ttft_observations(TWENTY) == 20.0 and ttft_observations(None) == 0.0
    assert ttft_observations(((1.0, 50.0), (2.0, 100.0))) == 0.0


def test_all_in_the_inf_bucket_gives_the_highest_finite_bound() -> None:
    assert ttft_quantile(((0.5, 0.0), (2560.0, 0.0), (INF, 40.0)), 50) == 2560.0


# --- the scaler -----------------------------------------------------------------------------

def histogram(*bucket_counts: tuple[float, float]) -> Histogram:
    """Non-cumulative (bound, requests in that bucket) in, cumulative out, with +Inf."""
    cumulative, total = [], 0.0
    for bound, count in bucket_counts:
        total += count
        cumulative.append((bound, total))
    return (*cumulative, (INF, total))


# p95 = 3.75 s: 18 requests up to 2.5 s, 2 in (2.5, 5]; rank 19 -> 2.5 + 2.5 * 1/2.
SLOW = histogram((2.5, 18.0), (5.0, 2.0))
VERY_SLOW = histogram((1.0, 0.0), (10.0, 20.0))  # p95 = 1 + 9 * 19/20 = 9.55 s
FAST = histogram((1.0, 18.0), (2.5, 2.0))  # p95 = 1 + 1.5 * 1/2 = 1.75 s
NEAR = histogram((2.0, 18.0), (2.2, 2.0))  # p95 = 2 + 0.2 * 1/2 = 2.1 s: over 2 s, within 10% tolerance of it
SLOW_BUT_QUIET = histogram((2.5, 8.0), (5.0, 1.0))  # nine requests


def load(queue: float | None = None, kv: float | None = None, ttft: Histogram | None = None) -> PoolSignals:
    return PoolSignals(queue_depth=queue, running_requests=None, kv_cache_utilization=kv, replicas_reporting=1,
                       observed_at=NOW, ttft_histogram=ttft)


def decide(signals: PoolSignals, current: int, *, ready: int | None = None, starting: int = 0,
           spec: InferencePoolSpec | None = None, state: ScalingState | None = None) -> ScalingDecision:
    inputs = ScalingInputs(signals=signals, current_replicas=current,
                           ready_replicas=current if ready is None else ready, starting_replicas=starting)
    decision, _ = decide_replicas(spec or make_spec(), inputs, state or ScalingState(seeded=True), now=NOW)
    return decision


def test_ttft_over_the_slo_scales_up_with_the_queue_within_target() -> None:
    # Queue 16 over 4 ready (target 4) and KV 0.8: both on target. p95 3.75 s over the 2 s SLO: ratio 1.875.
    before = decide(load(queue=16, kv=0.8), 4)
    assert (before.desired, before.reason) == (4, ScalingReason.WITHIN_TOLERANCE)
    decision = decide(load(queue=16, kv=0.8, ttft=SLOW), 4)
    assert (decision.desired, decision.reason, decision.recommended) == (8, ScalingReason.SCALED_UP, 8)  # ceil(7.5)
    assert decision.signals_used == (ScalingSignal.QUEUE_DEPTH, ScalingSignal.KV_CACHE, ScalingSignal.TTFT)
    ttft = decision.per_signal[-1]
    assert (ttft.observed, ttft.target, ttft.ratio, ttft.position) == (3.75, 2.0, 1.875, "above")
    assert decision.ttft_seconds == 3.75
    assert decision.message == ("queue 16 across 4 ready replicas, target 4 per replica; KV cache 80% vs target 80%; "
                                "p95 TTFT 3.75 s over the 2 s SLO: 4 -> 8")


def test_ttft_at_most_doubles_and_the_step_and_max_still_apply() -> None:
    doubled = decide(load(queue=0, kv=0.1, ttft=VERY_SLOW), 3, spec=make_spec(up_step=10))
    assert (doubled.desired, doubled.recommended, doubled.limited_by) == (6, 6, None)  # 9.55/2 capped at 2
    assert doubled.per_signal[-1].ratio == pytest.approx(4.775)
    stepped = decide(load(queue=0, kv=0.1, ttft=VERY_SLOW), 3, spec=make_spec(up_step=2))
    assert (stepped.desired, stepped.limited_by) == (5, ScalingLimit.SCALE_UP_STEP)
    capped = decide(load(queue=0, kv=0.1, ttft=VERY_SLOW), 3, spec=make_spec(max_replicas=4))
    assert (capped.desired, capped.limited_by) == (4, ScalingLimit.MAX)
    at_max = decide(load(queue=0, kv=0.1, ttft=VERY_SLOW), 4, spec=make_spec(max_replicas=4))
    assert (at_max.desired, at_max.reason) == (4, ScalingReason.AT_MAXIMUM)


def test_the_slo_and_percentile_are_the_pools_own() -> None:
    strict = make_spec().model_copy(update={"slo": SLOSpec(ttft_seconds=1.0, ttft_percentile=50)})
    # FAST's p50: rank 10 of the first bucket's 18 -> 10/18 s, under 1 s; its p95 (1.75 s) would be over.
    assert decide(load(queue=4, kv=0.8, ttft=FAST), 1, spec=strict).desired == 1
    lenient = make_spec().model_copy(update={"slo": SLOSpec(ttft_seconds=1.5, ttft_percentile=95)})
    decision = decide(load(queue=4, kv=0.8, ttft=FAST), 2, spec=lenient)
    assert decision.desired == 3  # ceil(2 * 1.75 / 1.5)
    assert "p95 TTFT 1.75 s over the 1.5 s SLO" in decision.message


def test_ttft_under_the_slo_or_within_tolerance_recommends_nothing() -> None:
    spec = make_spec()
    for case in [  # (signals without TTFT, current, ready, state): each decided as before
        (load(queue=16, kv=0.8), 4, 4, ScalingState(seeded=True)),
        (load(queue=4, kv=0.2), 6, 6, remembered((300, 6))),  # a scale-down after its window
        (load(queue=24, kv=0.5), 3, 3, ScalingState(seeded=True)),  # a scale-up on the queue
        (load(queue=20), 5, 3, ScalingState(seeded=True)),  # capacity starting; KV missing
    ]:
        signals, current, ready, state = case
        without = decide(signals, current, ready=ready, starting=current - ready, spec=spec, state=state)
        for ttft in (FAST, NEAR):
            with_ttft = decide(dataclasses.replace(signals, ttft_histogram=ttft), current, ready=ready,
                               starting=current - ready, spec=spec, state=state)
            assert dataclasses.replace(with_ttft, message=without.message, ttft_seconds=None) == without
    down = decide(load(queue=4, kv=0.2, ttft=FAST), 6, state=remembered((300, 6)))
    assert (down.desired, down.reason) == (5, ScalingReason.SCALED_DOWN)  # a pool meeting its SLO still shrinks
    assert down.message.startswith("queue 4 across 6 ready replicas, target 4 per replica; KV cache 20% vs target 80%; "
                                   "p95 TTFT 1.75 s within the 2 s SLO: 6 -> 5")
    assert "p95 TTFT 2.1 s within tolerance of the 2 s SLO" in decide(load(queue=16, kv=0.8, ttft=NEAR), 4).message


def test_without_a_readable_histogram_the_scaler_decides_as_before() -> None:
    signals = load(queue=4, kv=0.2)
    for unread in (None, SLOW_BUT_QUIET, ((2.5, 50.0), (5.0, 60.0))):  # none, nine requests, no +Inf bucket
        for current, state in ((6, remembered((300, 6))), (4, ScalingState(seeded=True))):
            without = decide(signals, current, state=state)
            assert decide(dataclasses.replace(signals, ttft_histogram=unread), current, state=state) == without
            assert without.ttft_seconds is None


def test_ttft_with_no_ready_replica_is_ignored() -> None:
    spec = make_spec(min_replicas=0, fallback=True)
    without = decide(load(queue=3), 2, ready=0, starting=2, spec=spec)
    assert decide(load(queue=3, ttft=VERY_SLOW), 2, ready=0, starting=2, spec=spec) == without


def test_ttft_never_orders_the_replicas_already_starting_again() -> None:
    # 2 ready, 2 starting: ceil(2 * 1.875) = 4 is what is asked for already.
    decision = decide(load(queue=8, kv=0.8, ttft=SLOW), 4, ready=2, starting=2)
    assert (decision.desired, decision.reason) == (4, ScalingReason.CAPACITY_STARTING)
    assert "p95 TTFT 3.75 s over the 2 s SLO" in decision.message


def test_ttft_keeps_a_pool_over_its_slo_from_shrinking() -> None:
    # The queue and KV would take 6 down to 5 after the window; users wait 3.75 s for a 2 s SLO.
    decision = decide(load(queue=4, kv=0.2, ttft=SLOW), 6, state=remembered((300, 6)), spec=make_spec(max_replicas=20))
    assert (decision.desired, decision.reason) == (10, ScalingReason.SCALED_UP)  # 6 + the step of 4 (ceil(11.25))
    assert decision.limited_by is ScalingLimit.SCALE_UP_STEP


def test_ttft_is_not_the_missing_signal() -> None:
    # KV missing: never down, as before; TTFT read or not changes nothing of that rule.
    held = decide(load(queue=4, ttft=FAST), 6, state=remembered((300, 6)))
    assert (held.desired, held.reason) == (6, ScalingReason.SIGNAL_MISSING)
    assert held == dataclasses.replace(decide(load(queue=4), 6, state=remembered((300, 6))), message=held.message,
                                       ttft_seconds=1.75)
    up = decide(load(queue=4, ttft=SLOW), 2)  # up on TTFT with the KV cache unread: scaling up is never blind
    assert (up.desired, up.reason) == (4, ScalingReason.SCALED_UP)
    assert up.message == "queue 4 across 2 ready replicas, target 4 per replica; p95 TTFT 3.75 s over the 2 s SLO; " \
                         "no KV cache signal: 2 -> 4"


def test_the_status_shows_the_decisions_ttft() -> None:
    decision = decide(load(queue=16, kv=0.8, ttft=SLOW), 4)
    shown = refreshed_signals(None, ScalingOutcome(load(queue=16, kv=0.8, ttft=SLOW), "prometheus", decision),
                              metrics_flipped=False, now=NOW, refresh_seconds=15)
    assert shown is not None and shown.ttft_seconds == 3.75
    assert shown.model_dump(by_alias=True, exclude_none=True)["ttftSeconds"] == 3.75
    quiet = decide(load(queue=16, kv=0.8), 4)
    unread = refreshed_signals(None, ScalingOutcome(load(queue=16, kv=0.8), "pods", quiet), metrics_flipped=False,
                               now=NOW, refresh_seconds=15)
    assert unread is not None and unread.ttft_seconds is None
