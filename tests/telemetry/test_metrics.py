"""The operator's metrics from the statuses an evaluation goes between: gauges as the status says, counters
for what changed, and nothing left behind when a pool goes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from controller.api.status import InferencePoolStatus
from controller.core.events import PoolEvent
from controller.telemetry import metrics

NOW = datetime(2026, 12, 3, 10, 5, tzinfo=UTC)


def status(**fields: Any) -> InferencePoolStatus:
    return InferencePoolStatus.model_validate(fields)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def record(key: tuple[str, str], before: InferencePoolStatus, after: InferencePoolStatus,
           events: tuple[PoolEvent, ...] = ()) -> None:
    metrics.record_evaluation(key, before, after, events, seconds=0.02, now=NOW)


def drain(pod: str, *, drained: str | None = None, missed: bool = False) -> dict[str, Any]:
    return {"pod": pod, "kind": "spot-interruption", "source": "node-taint", "capacityType": "spot",
            "outcome": "Drained" if drained else "Draining", "noticedTime": "2026-12-03T10:00:00Z",
            "deadline": "2026-12-03T10:02:00Z", "drainedTime": drained, "deadlineMissed": missed}


def test_gauges_follow_the_status() -> None:
    key = ("ns-gauges", "p")
    labels = {"namespace": "ns-gauges", "pool": "p"}
    after = status(
        replicas={"desired": 3, "ready": 2, "spotDesired": 2, "spotReady": 1, "onDemandDesired": 1,
                  "onDemandReady": 1},
        signals={"queueDepth": 7, "kvCacheUtilization": 0.4, "observedTime": "2026-12-03T10:04:50Z"},
        fallback={"mode": "Overflow"},
        cost={"currency": "USD", "hourly": 5.5, "apiHourly": 9.0},
        spot={"unavailableSince": "2026-12-03T09:00:00Z", "movedReplicas": 2},
        conditions=[{"type": "MetricsAvailable", "status": "False", "reason": "Unreachable", "message": "m",
                     "lastTransitionTime": "2026-12-03T10:00:00Z"}])
    record(key, status(), after)
    assert sample("poolpilot_pool_replicas", **labels, capacity_type="spot", state="desired") == 2
    assert sample("poolpilot_pool_replicas", **labels, capacity_type="spot", state="ready") == 1
    assert sample("poolpilot_pool_replicas", **labels, capacity_type="on-demand", state="desired") == 1
    assert sample("poolpilot_pool_fallback_mode", **labels, mode="Overflow") == 1
    assert sample("poolpilot_pool_fallback_mode", **labels, mode="Off") == 0
    assert sample("poolpilot_pool_signal", **labels, signal="queue_depth") == 7
    assert sample("poolpilot_pool_signal", **labels, signal="ttft_seconds") is None  # never read: no series
    assert sample("poolpilot_pool_signals_age_seconds", **labels) == 10
    assert sample("poolpilot_pool_metrics_available", **labels) == 0
    assert sample("poolpilot_pool_cost_per_hour", **labels, component="pool", currency="USD") == 5.5
    assert sample("poolpilot_pool_cost_per_hour", **labels, component="api", currency="USD") == 9.0
    assert sample("poolpilot_pool_spot_moved_replicas", **labels) == 2
    assert sample("poolpilot_pool_last_evaluation_timestamp_seconds", **labels) == NOW.timestamp()
    assert sample("poolpilot_pool_evaluations_total", **labels, result="ok") == 1


def test_a_decision_counts_once_and_events_by_reason() -> None:
    key = ("ns-decisions", "p")
    labels = {"namespace": "ns-decisions", "pool": "p"}
    decided = status(lastDecision={"time": "2026-12-03T10:00:00Z", "fromReplicas": 1, "toReplicas": 3,
                                   "reason": "ScaledUp", "message": "m"})
    scaled = (PoolEvent("Normal", "ScaledUp", "1 -> 3"),)
    record(key, status(), decided, scaled)
    record(key, decided, decided)  # the same decision, seen again: not a new one
    assert sample("poolpilot_pool_decisions_total", **labels, reason="ScaledUp") == 1
    assert sample("poolpilot_pool_events_total", **labels, type="Normal", reason="ScaledUp") == 1


def test_a_notice_a_drain_and_a_missed_deadline_are_each_counted_once() -> None:
    key = ("ns-drains", "p")
    labels = {"namespace": "ns-drains", "pool": "p"}
    notices_before = sample("poolpilot_notices_total", kind="spot-interruption", source="node-taint") or 0
    drains_before = sample("poolpilot_drain_duration_seconds_count", capacity_type="spot") or 0
    draining = status(interruptions=[drain("a")])
    drained = status(interruptions=[drain("a", drained="2026-12-03T10:00:45Z", missed=True)])
    record(key, status(), draining)
    record(key, draining, draining)
    record(key, draining, drained)
    record(key, drained, drained)
    assert sample("poolpilot_notices_total", kind="spot-interruption", source="node-taint") == notices_before + 1
    assert sample("poolpilot_drain_duration_seconds_count", capacity_type="spot") == drains_before + 1
    assert sample("poolpilot_drain_duration_seconds_bucket", capacity_type="spot", le="45.0") == drains_before + 1
    assert sample("poolpilot_drain_deadline_missed_total", **labels) == 1


def test_a_pools_series_go_with_it() -> None:
    key = ("ns-forget", "p")
    labels = {"namespace": "ns-forget", "pool": "p"}
    record(key, status(), status(replicas={"desired": 1, "ready": 1, "spotDesired": 1, "spotReady": 1}))
    metrics.record_failed_evaluation(key, seconds=0.1)
    assert sample("poolpilot_pool_evaluations_total", **labels, result="error") == 1
    metrics.forget_pool(key)
    names = [s for family in REGISTRY.collect() for s in family.samples if s.labels.get("namespace") == "ns-forget"]
    assert names == []


def test_api_errors_are_counted_by_verb_and_code() -> None:
    before = sample("poolpilot_kube_api_errors_total", verb="patch", code="409") or 0
    metrics.record_kube_api_error("patch", 409)
    assert sample("poolpilot_kube_api_errors_total", verb="patch", code="409") == before + 1
