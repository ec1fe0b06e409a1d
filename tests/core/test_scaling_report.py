from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controller.api.status import Condition, ConditionStatus, Signals
from controller.core.scaling_report import (
    ScalingOutcome,
    decision_status,
    metrics_condition,
    metrics_events,
    refreshed_signals,
)
from controller.core.signals import MetricsProblem, MetricsProblemKind, PoolSignals

T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Decided:
    current: int
    desired: int
    reason: str = "WithinTolerance"
    message: str = "held"
    ttft_seconds: float | None = None


def reading(queue: float | None = 3.0, kv: float | None = 0.42, at: datetime = T0) -> PoolSignals:
    return PoolSignals(queue_depth=queue, running_requests=5.0, kv_cache_utilization=kv, replicas_reporting=2,
                       observed_at=at)


PROBLEM = MetricsProblem(MetricsProblemKind.UNREACHABLE, "connection refused", T0)


def condition(status: ConditionStatus) -> Condition:
    return Condition(type="MetricsAvailable", status=status, reason="X", message="m",
                     last_transition_time="2026-11-22T09:00:00Z")


def test_the_condition_names_the_source_and_replicas_but_not_the_values() -> None:
    assert metrics_condition(reading(), "pods") == ("True", "SignalsRead", "read from 2 replicas via pods")
    status, reason, message = metrics_condition(PROBLEM, "prometheus")
    assert (status, reason) == ("False", "SourceUnreachable")
    assert "connection refused" in message and "holding" in message
    assert metrics_condition(reading(queue=None, kv=None), "pods")[:2] == ("False", "NoSignals")


def test_the_condition_says_when_one_signal_is_missing_and_what_that_holds_back() -> None:
    status, reason, message = metrics_condition(reading(kv=None), "prometheus")
    assert (status, reason) == ("True", "SignalMissing")
    assert "no KV-cache use" in message and "never down" in message
    assert "no queue depth" in metrics_condition(reading(queue=None), "pods")[2]


def test_one_warning_when_an_outage_starts_and_one_notice_when_it_ends() -> None:
    (warning,) = metrics_events(condition("True"), PROBLEM, "pods")
    assert (warning.type, warning.reason) == ("Warning", "MetricsUnavailable")
    assert metrics_events(condition("False"), PROBLEM, "pods") == []  # still down: quiet
    (recovered,) = metrics_events(condition("False"), reading(), "pods")
    assert (recovered.type, recovered.reason) == ("Normal", "MetricsRecovered")
    assert metrics_events(condition("True"), reading(), "pods") == []
    assert [e.reason for e in metrics_events(None, PROBLEM, "pods")] == ["MetricsUnavailable"]


def test_signals_refresh_when_the_count_changes_or_metrics_flip() -> None:
    shown = refreshed_signals(None, ScalingOutcome(reading(), "pods", Decided(2, 2)), metrics_flipped=False, now=T0,
                              refresh_seconds=15)
    assert shown is not None and (shown.queue_depth, shown.kv_cache_percent, shown.source) == (3.0, 42, "pods")
    later = T0 + timedelta(seconds=5)
    busier = ScalingOutcome(reading(queue=9.0, at=later), "pods", Decided(2, 2))
    assert refreshed_signals(shown, busier, metrics_flipped=False, now=later, refresh_seconds=15) == shown
    scaled = ScalingOutcome(reading(queue=9.0, at=later), "pods", Decided(2, 4))
    assert refreshed_signals(shown, scaled, metrics_flipped=False, now=later, refresh_seconds=15) != shown
    assert refreshed_signals(shown, busier, metrics_flipped=True, now=later, refresh_seconds=15) != shown


def test_signals_refresh_at_most_every_interval_and_only_when_the_shown_numbers_moved() -> None:
    shown = refreshed_signals(None, ScalingOutcome(reading(), "pods", Decided(2, 2)), metrics_flipped=False, now=T0,
                              refresh_seconds=15)
    much_later = T0 + timedelta(seconds=60)
    same_numbers = ScalingOutcome(reading(queue=3.2, at=much_later), "pods", Decided(2, 2))
    assert refreshed_signals(shown, same_numbers, metrics_flipped=False, now=much_later, refresh_seconds=15) == shown
    moved = ScalingOutcome(reading(queue=7.0, at=much_later), "pods", Decided(2, 2))
    fresh = refreshed_signals(shown, moved, metrics_flipped=False, now=much_later, refresh_seconds=15)
    assert fresh is not None and fresh.queue_depth == 7.0 and fresh.observed_time == "2026-11-22T10:01:00Z"


def test_a_problem_keeps_the_last_good_numbers_with_their_time() -> None:
    shown = Signals(queue_depth=1.0, kv_cache_percent=10, observed_time="2026-11-22T09:59:00Z")
    assert refreshed_signals(shown, ScalingOutcome(PROBLEM, "pods", Decided(2, 2)), metrics_flipped=True, now=T0,
                             refresh_seconds=15) == shown


def test_only_decisions_that_change_the_count_become_the_last_decision() -> None:
    assert decision_status(None, Decided(3, 3), T0) is None
    changed = decision_status(None, Decided(3, 7, "ScaledUp", "queue 42 across 3 ready replicas: 3 -> 7"), T0)
    assert changed is not None
    assert (changed.from_replicas, changed.to_replicas, changed.reason) == (3, 7, "ScaledUp")
    assert decision_status(changed, Decided(7, 7), T0 + timedelta(seconds=5)) == changed
