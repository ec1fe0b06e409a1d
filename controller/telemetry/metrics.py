"""PoolPilot's own metrics, prefix ``poolpilot_``, in the process' default registry.

Every label set is bounded: per pool ``namespace`` and ``pool``; otherwise enumerations the code defines
(capacity types, fallback modes, Event reasons, notice kinds and sources, HTTP verbs and status codes).
No request id, pod name or free text ever becomes a label.

What a pool's series say comes from the status an evaluation concluded (the same figures on-call reads
with kubectl), so metrics and status cannot disagree. Counters of things that happen (a decision, a
notice, a drain) count the change between the status before and after the evaluation. A pool's series go
when its loop ends (the pool was deleted or this replica stopped leading), so none freezes at its last value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram

from controller.api.status import InferencePoolStatus, InterruptionRecord
from controller.core.events import PoolEvent

__all__ = ["EVALUATION_SECONDS", "INTERRUPTION_MESSAGES", "KUBE_API_ERRORS", "LEADER", "POOLS",
           "forget_pool", "record_evaluation", "record_failed_evaluation", "record_kube_api_error"]

PoolKey = tuple[str, str]
POOL_LABELS = ("namespace", "pool")
SIGNALS = ("queue_depth", "running_requests", "kv_cache_utilization", "prompt_tokens_per_second",
           "generation_tokens_per_second", "ttft_seconds")
FALLBACK_MODES = ("Off", "Overflow", "Full")


def _version() -> str:
    try:
        return metadata.version("poolpilot")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO = Gauge("poolpilot_build_info", "The running PoolPilot version (always 1).", ["version"])
BUILD_INFO.labels(_version()).set(1)
LEADER = Gauge("poolpilot_leader", "1 on the operator replica that holds the Lease and acts, 0 on a standby.")
POOLS = Gauge("poolpilot_pools", "InferencePools this replica evaluates.")
EVALUATION_SECONDS = Histogram(
    "poolpilot_evaluation_duration_seconds", "One evaluation of one pool: observe, plan, apply, report.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
EVALUATIONS = Counter("poolpilot_pool_evaluations", "Evaluations of a pool, by whether they completed.",
                      [*POOL_LABELS, "result"])
LAST_EVALUATION = Gauge("poolpilot_pool_last_evaluation_timestamp_seconds",
                        "When the pool's last evaluation completed (Unix time).", POOL_LABELS)
REPLICAS = Gauge("poolpilot_pool_replicas", "Replicas by capacity type: wanted (desired) and ready to serve.",
                 [*POOL_LABELS, "capacity_type", "state"])
DECISIONS = Counter("poolpilot_pool_decisions", "Scaling decisions made, by reason (status.lastDecision.reason).",
                    [*POOL_LABELS, "reason"])
EVENTS = Counter("poolpilot_pool_events", "Kubernetes Events posted about the pool, by type and reason.",
                 [*POOL_LABELS, "type", "reason"])
FALLBACK_MODE = Gauge("poolpilot_pool_fallback_mode", "1 for the pool's current fallback mode, 0 for the others.",
                      [*POOL_LABELS, "mode"])
SIGNAL = Gauge("poolpilot_pool_signal", "The last vLLM load signals read for the pool (kv_cache_utilization in 0..1).",
               [*POOL_LABELS, "signal"])
SIGNALS_AGE = Gauge("poolpilot_pool_signals_age_seconds", "How old the signals were at the last evaluation.",
                    POOL_LABELS)
METRICS_AVAILABLE = Gauge("poolpilot_pool_metrics_available",
                          "1 while the pool's signals can be read (condition MetricsAvailable), else 0.", POOL_LABELS)
COST_PER_HOUR = Gauge("poolpilot_pool_cost_per_hour",
                      "What the pool's replicas cost per hour now (component=pool), and what its current load "
                      "would cost on the hosted API (component=api).", [*POOL_LABELS, "component", "currency"])
SPOT_MOVED = Gauge("poolpilot_pool_spot_moved_replicas",
                   "Replicas moved from spot to on-demand because spot capacity is missing (0 when spot is fine).",
                   POOL_LABELS)
NOTICES = Counter("poolpilot_notices", "Reclaim notices acted on, by kind and where they came from.",
                  ["kind", "source"])
DRAIN_SECONDS = Histogram("poolpilot_drain_duration_seconds",
                          "From a reclaim notice to the replica pod gone, by the capacity type it ran on.",
                          ["capacity_type"], buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600))
DRAIN_DEADLINE_MISSED = Counter("poolpilot_drain_deadline_missed",
                                "Replicas that outlived their reclaim deadline.", POOL_LABELS)
INTERRUPTION_MESSAGES = Counter("poolpilot_interruption_messages",
                                "Interruption queue (SQS) messages received, by what they were.", ["result"])
KUBE_API_ERRORS = Counter("poolpilot_kube_api_errors",
                          "Failed Kubernetes API calls of the operator's own client, by verb and HTTP status "
                          "(or timeout, connection).", ["verb", "code"])

# Each pool's series, to remove them with the pool; label values beyond namespace and pool, per metric.
_POOL_METRICS = (EVALUATIONS, LAST_EVALUATION, REPLICAS, DECISIONS, EVENTS, FALLBACK_MODE, SIGNAL, SIGNALS_AGE,
                 METRICS_AVAILABLE, COST_PER_HOUR, SPOT_MOVED, DRAIN_DEADLINE_MISSED)
_Metric = TypeVar("_Metric", Counter, Gauge)
_seen_labels: dict[PoolKey, set[tuple[Counter | Gauge, tuple[str, ...]]]] = {}


def _labels(metric: _Metric, key: PoolKey, *extra: str) -> _Metric:
    """The pool's child of a metric, remembered so that forget_pool can remove it."""
    _seen_labels.setdefault(key, set()).add((metric, extra))
    return metric.labels(*key, *extra)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def record_evaluation(key: PoolKey, previous: InferencePoolStatus, status: InferencePoolStatus,
                      events: Iterable[PoolEvent], *, seconds: float, now: datetime) -> None:
    """One completed evaluation: the pool's gauges from the status it concluded, counters for what changed."""
    EVALUATION_SECONDS.observe(seconds)
    _labels(EVALUATIONS, key, "ok").inc()
    _labels(LAST_EVALUATION, key).set(now.timestamp())
    replicas = status.replicas
    if replicas is not None:
        for capacity_type, desired, ready in (("spot", replicas.spot_desired, replicas.spot_ready),
                                              ("on-demand", replicas.on_demand_desired, replicas.on_demand_ready)):
            _labels(REPLICAS, key, capacity_type, "desired").set(desired)
            _labels(REPLICAS, key, capacity_type, "ready").set(ready)
    mode = status.fallback.mode if status.fallback else "Off"
    for candidate in FALLBACK_MODES:
        _labels(FALLBACK_MODE, key, candidate).set(1 if candidate == mode else 0)
    _record_signals(key, status, now)
    cost = status.cost
    if cost is not None:
        for component, hourly in (("pool", cost.hourly), ("api", cost.api_hourly)):
            if hourly is not None:
                _labels(COST_PER_HOUR, key, component, cost.currency).set(hourly)
    _labels(SPOT_MOVED, key).set(status.spot.moved_replicas if status.spot else 0)
    decision = status.last_decision
    if decision is not None and (previous.last_decision is None or previous.last_decision.time != decision.time):
        _labels(DECISIONS, key, decision.reason).inc()
    for event in events:
        _labels(EVENTS, key, event.type, event.reason).inc()
    _record_interruptions(key, previous.interruptions, status.interruptions)


def _record_signals(key: PoolKey, status: InferencePoolStatus, now: datetime) -> None:
    available = next((c for c in status.conditions if c.type == "MetricsAvailable"), None)
    if available is not None:
        _labels(METRICS_AVAILABLE, key).set(1 if available.status == "True" else 0)
    signals = status.signals
    if signals is None:
        return
    for name in SIGNALS:
        value = getattr(signals, name)
        if value is not None:
            _labels(SIGNAL, key, name).set(value)
    observed = _parse_time(signals.observed_time)
    if observed is not None:
        _labels(SIGNALS_AGE, key).set(max(0.0, (now - observed).total_seconds()))


def _record_interruptions(key: PoolKey, before: Iterable[InterruptionRecord],
                          after: Iterable[InterruptionRecord]) -> None:
    """A record new in the status is a notice acted on; one that gained a drained time or a missed deadline
    is a drain that ended. Records are keyed by pod and notice time: the same pod name can come back."""
    known = {(r.pod, r.noticed_time): r for r in before}
    for record in after:
        earlier = known.get((record.pod, record.noticed_time))
        if earlier is None:
            NOTICES.labels(record.kind, record.source).inc()
        if record.drained_time and (earlier is None or not earlier.drained_time):
            noticed, drained = _parse_time(record.noticed_time), _parse_time(record.drained_time)
            if noticed is not None and drained is not None:
                DRAIN_SECONDS.labels(record.capacity_type).observe(max(0.0, (drained - noticed).total_seconds()))
        if record.deadline_missed and (earlier is None or not earlier.deadline_missed):
            _labels(DRAIN_DEADLINE_MISSED, key).inc()


def record_failed_evaluation(key: PoolKey, *, seconds: float) -> None:
    EVALUATION_SECONDS.observe(seconds)
    _labels(EVALUATIONS, key, "error").inc()


def forget_pool(key: PoolKey) -> None:
    """The pool's loop ended: its series go with it."""
    for metric, extra in _seen_labels.pop(key, set()):
        with contextlib.suppress(KeyError):
            metric.remove(*key, *extra)


def record_kube_api_error(verb: str, code: int | str) -> None:
    KUBE_API_ERRORS.labels(verb, str(code)).inc()
