"""PoolPilot's own metrics, prefix ``poolpilot_``.

Every label set is bounded: per pool ``namespace`` and ``pool``; otherwise enumerations the code defines
(capacity types, fallback modes, Event reasons, notice kinds and sources, HTTP verbs and status codes).
No request id, pod name or free text ever becomes a label.

What a pool's series say comes from the status an evaluation concluded (the same figures on-call reads
with kubectl), so metrics and status cannot disagree. Counters of things that happen (a decision, a
notice, a drain) count the change between the status before and after the evaluation. A pool's series go
when its loop ends (the pool was deleted or this replica stopped leading), so none freezes at its last value.

``OPERATOR`` holds them in the process' default registry, which ``/metrics`` serves; the module's functions
record there. Another registry gets the same metrics from ``OperatorMetrics(registry)`` (the monitoring
tests serve one to a real Prometheus for the alerts and the dashboard).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from controller.api.status import InferencePoolStatus, InterruptionRecord
from controller.core.events import PoolEvent

__all__ = ["OPERATOR", "OperatorMetrics", "forget_pool", "record_evaluation", "record_failed_evaluation",
           "record_kube_api_error"]

PoolKey = tuple[str, str]
POOL_LABELS = ("namespace", "pool")
SIGNALS = ("queue_depth", "running_requests", "kv_cache_utilization", "prompt_tokens_per_second",
           "generation_tokens_per_second", "ttft_seconds")
FALLBACK_MODES = ("Off", "Overflow", "Full")
EVALUATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A drain is the preStop sleep plus vLLM finishing what it holds, within a 2-minute AWS notice (or longer).
DRAIN_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)
_Metric = TypeVar("_Metric", Counter, Gauge)


def _version() -> str:
    try:
        return metadata.version("poolpilot")
    except metadata.PackageNotFoundError:
        return "unknown"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY, *, version: str | None = None) -> None:
        pool = POOL_LABELS
        self.build_info = Gauge("poolpilot_build_info", "The running PoolPilot version (always 1).", ["version"],
                                registry=registry)
        self.build_info.labels(version or _version()).set(1)
        self.leader = Gauge("poolpilot_leader", "1 on the operator replica that holds the Lease and acts, 0 on a "
                                                "standby.", registry=registry)
        self.pools = Gauge("poolpilot_pools", "InferencePools this replica evaluates.", registry=registry)
        self.evaluation_seconds = Histogram(
            "poolpilot_evaluation_duration_seconds", "One evaluation of one pool: observe, plan, apply, report.",
            buckets=EVALUATION_BUCKETS, registry=registry)
        self.evaluations = Counter("poolpilot_pool_evaluations", "Evaluations of a pool, by whether they completed.",
                                   [*pool, "result"], registry=registry)
        self.evaluation_interval = Gauge("poolpilot_pool_evaluation_interval_seconds",
                                         "The pool's evaluation interval (spec.scaling.evaluationIntervalSeconds): "
                                         "how often its last evaluation time should move.", pool, registry=registry)
        self.last_evaluation = Gauge("poolpilot_pool_last_evaluation_timestamp_seconds",
                                     "When the pool's last evaluation completed (Unix time).", pool, registry=registry)
        self.replicas = Gauge("poolpilot_pool_replicas",
                              "Replicas by capacity type: wanted (desired) and ready to serve.",
                              [*pool, "capacity_type", "state"], registry=registry)
        self.decisions = Counter("poolpilot_pool_decisions",
                                 "Scaling decisions made, by reason (status.lastDecision.reason).", [*pool, "reason"],
                                 registry=registry)
        self.events = Counter("poolpilot_pool_events", "Kubernetes Events posted about the pool, by type and reason.",
                              [*pool, "type", "reason"], registry=registry)
        self.fallback_mode = Gauge("poolpilot_pool_fallback_mode",
                                   "1 for the pool's current fallback mode, 0 for the others.", [*pool, "mode"],
                                   registry=registry)
        self.signal = Gauge("poolpilot_pool_signal",
                            "The last vLLM load signals read for the pool (kv_cache_utilization in 0..1).",
                            [*pool, "signal"], registry=registry)
        self.signals_age = Gauge("poolpilot_pool_signals_age_seconds",
                                 "How old the signals were at the last evaluation.", pool, registry=registry)
        self.metrics_available = Gauge("poolpilot_pool_metrics_available",
                                       "1 while the pool's signals can be read (condition MetricsAvailable), else 0.",
                                       pool, registry=registry)
        self.cost_per_hour = Gauge("poolpilot_pool_cost_per_hour",
                                   "What the pool's replicas cost per hour now (component=pool), and what its current "
                                   "load would cost on the hosted API (component=api).",
                                   [*pool, "component", "currency"], registry=registry)
        self.spot_moved = Gauge("poolpilot_pool_spot_moved_replicas",
                                "Replicas moved from spot to on-demand because spot capacity is missing (0 when spot "
                                "is fine).", pool, registry=registry)
        self.notices = Counter("poolpilot_notices", "Reclaim notices acted on, by kind and where they came from.",
                               ["kind", "source"], registry=registry)
        self.drain_seconds = Histogram("poolpilot_drain_duration_seconds",
                                       "From a reclaim notice to the replica pod gone, by the capacity type it ran on.",
                                       ["capacity_type"], buckets=DRAIN_BUCKETS, registry=registry)
        self.drain_deadline_missed = Counter("poolpilot_drain_deadline_missed",
                                             "Replicas that outlived their reclaim deadline.", pool, registry=registry)
        self.interruption_messages = Counter("poolpilot_interruption_messages",
                                             "Interruption queue (SQS) messages received, by what they were.",
                                             ["result"], registry=registry)
        self.kube_api_errors = Counter("poolpilot_kube_api_errors",
                                       "Failed Kubernetes API calls of the operator's own client, by verb and HTTP "
                                       "status (or timeout, connection).", ["verb", "code"], registry=registry)
        # Each pool's children, to remove them with the pool.
        self._children: dict[PoolKey, set[tuple[Counter | Gauge, tuple[str, ...]]]] = {}

    def _labels(self, metric: _Metric, key: PoolKey, *extra: str) -> _Metric:
        """The pool's child of a metric, remembered so that forget_pool can remove it."""
        self._children.setdefault(key, set()).add((metric, extra))
        return metric.labels(*key, *extra)

    def record_evaluation(self, key: PoolKey, previous: InferencePoolStatus, status: InferencePoolStatus,
                          events: Iterable[PoolEvent], *, seconds: float, now: datetime,
                          interval_seconds: float | None = None) -> None:
        """One completed evaluation: the pool's gauges from the status it concluded, counters for what changed."""
        self.evaluation_seconds.observe(seconds)
        self._labels(self.evaluations, key, "ok").inc()
        self._labels(self.last_evaluation, key).set(now.timestamp())
        if interval_seconds is not None:
            self._labels(self.evaluation_interval, key).set(interval_seconds)
        replicas = status.replicas
        if replicas is not None:
            for capacity_type, desired, ready in (
                    ("spot", replicas.spot_desired, replicas.spot_ready),
                    ("on-demand", replicas.on_demand_desired, replicas.on_demand_ready)):
                self._labels(self.replicas, key, capacity_type, "desired").set(desired)
                self._labels(self.replicas, key, capacity_type, "ready").set(ready)
        mode = status.fallback.mode if status.fallback else "Off"
        for candidate in FALLBACK_MODES:
            self._labels(self.fallback_mode, key, candidate).set(1 if candidate == mode else 0)
        self._record_signals(key, status, now)
        cost = status.cost
        if cost is not None:
            for component, hourly in (("pool", cost.hourly), ("api", cost.api_hourly)):
                if hourly is not None:
                    self._labels(self.cost_per_hour, key, component, cost.currency).set(hourly)
        self._labels(self.spot_moved, key).set(status.spot.moved_replicas if status.spot else 0)
        decision = status.last_decision
        if decision is not None and (previous.last_decision is None or previous.last_decision.time != decision.time):
            self._labels(self.decisions, key, decision.reason).inc()
        for event in events:
            self._labels(self.events, key, event.type, event.reason).inc()
        self._record_interruptions(key, previous.interruptions, status.interruptions)

    def _record_signals(self, key: PoolKey, status: InferencePoolStatus, now: datetime) -> None:
        available = next((c for c in status.conditions if c.type == "MetricsAvailable"), None)
        if available is not None:
            self._labels(self.metrics_available, key).set(1 if available.status == "True" else 0)
        signals = status.signals
        if signals is None:
            return
        for name in SIGNALS:
            value = getattr(signals, name)
            if value is not None:
                self._labels(self.signal, key, name).set(value)
        observed = _parse_time(signals.observed_time)
        if observed is not None:
            self._labels(self.signals_age, key).set(max(0.0, (now - observed).total_seconds()))

    def _record_interruptions(self, key: PoolKey, before: Iterable[InterruptionRecord],
                              after: Iterable[InterruptionRecord]) -> None:
        """A record new in the status is a notice acted on; one that gained a drained time or a missed deadline
        is a drain that ended. Records are keyed by pod and notice time: the same pod name can come back."""
        known = {(r.pod, r.noticed_time): r for r in before}
        for record in after:
            earlier = known.get((record.pod, record.noticed_time))
            if earlier is None:
                self.notices.labels(record.kind, record.source).inc()
            if record.drained_time and (earlier is None or not earlier.drained_time):
                noticed, drained = _parse_time(record.noticed_time), _parse_time(record.drained_time)
                if noticed is not None and drained is not None:
                    self.drain_seconds.labels(record.capacity_type).observe(
                        max(0.0, (drained - noticed).total_seconds()))
            if record.deadline_missed and (earlier is None or not earlier.deadline_missed):
                self._labels(self.drain_deadline_missed, key).inc()

    def record_failed_evaluation(self, key: PoolKey, *, seconds: float) -> None:
        self.evaluation_seconds.observe(seconds)
        self._labels(self.evaluations, key, "error").inc()

    def forget_pool(self, key: PoolKey) -> None:
        """The pool's loop ended: its series go with it."""
        for metric, extra in self._children.pop(key, set()):
            with contextlib.suppress(KeyError):
                metric.remove(*key, *extra)

    def record_kube_api_error(self, verb: str, code: int | str) -> None:
        self.kube_api_errors.labels(verb, str(code)).inc()


OPERATOR = OperatorMetrics()
record_evaluation = OPERATOR.record_evaluation
record_failed_evaluation = OPERATOR.record_failed_evaluation
forget_pool = OPERATOR.forget_pool
record_kube_api_error = OPERATOR.record_kube_api_error
