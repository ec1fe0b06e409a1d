"""A stand-in for the operator's ``/metrics``: every series of the operator's metric contract, with values.

The names and labels are the fixed contract the alerts and the dashboard are written against (the lead's
list: ``poolpilot_*``, per pool ``namespace`` and ``pool``). Served from a prometheus_client registry of its
own, in the classic text format, on 127.0.0.1, so a real Prometheus scrapes it as it would the operator.
A leader exports the pools' series; a standby only who it is (``poolpilot_leader 0``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from devkube.fakevllm import CONTENT_TYPE

__all__ = ["OPERATOR_METRICS", "FakeOperatorPool", "MetricsServer", "operator_registry", "serve_registry"]

# Every metric of the contract, as exposed (a counter's samples are NAME_total; a histogram's _bucket, _sum
# and _count): what the alerts and the dashboard may name.
OPERATOR_METRICS = frozenset({
    "poolpilot_build_info", "poolpilot_leader", "poolpilot_pools",
    "poolpilot_pool_replicas", "poolpilot_pool_decisions_total", "poolpilot_pool_events_total",
    "poolpilot_pool_fallback_mode", "poolpilot_pool_signal", "poolpilot_pool_signals_age_seconds",
    "poolpilot_pool_metrics_available", "poolpilot_pool_last_evaluation_timestamp_seconds",
    "poolpilot_pool_evaluations_total", "poolpilot_evaluation_duration_seconds",
    "poolpilot_interruption_messages_total", "poolpilot_notices_total", "poolpilot_drain_duration_seconds",
    "poolpilot_drain_deadline_missed_total", "poolpilot_kube_api_errors_total", "poolpilot_pool_cost_per_hour",
    "poolpilot_pool_spot_moved_replicas",
})
POOL = ("namespace", "pool")


@dataclass(frozen=True)
class FakeOperatorPool:
    """One pool as the leader reports it."""

    namespace: str
    name: str
    mode: str = "Off"
    desired: dict[str, int] = field(default_factory=lambda: {"spot": 2, "on-demand": 1})
    ready: dict[str, int] = field(default_factory=lambda: {"spot": 2, "on-demand": 1})
    signals: dict[str, float] = field(default_factory=lambda: {
        "queue_depth": 10, "running_requests": 9, "kv_cache_utilization": 0.4, "prompt_tokens_per_second": 900,
        "generation_tokens_per_second": 300, "ttft_seconds": 0.8})
    metrics_available: bool = True
    spot_moved: int = 0
    cost: dict[str, float] = field(default_factory=lambda: {"pool": 2.11, "api": 0.35})


def operator_registry(*, leader: bool, pools: Sequence[FakeOperatorPool] = (),
                      version: str = "0.1.0") -> CollectorRegistry:
    registry = CollectorRegistry()
    build_info = Gauge("poolpilot_build_info", "The running PoolPilot version.", ["version"], registry=registry)
    build_info.labels(version).set(1)
    Gauge("poolpilot_leader", "1 on the replica that holds the Lease.", registry=registry).set(1 if leader else 0)
    Gauge("poolpilot_pools", "Pools this replica evaluates.", registry=registry).set(len(pools) if leader else 0)
    # The operator's own counters exist whether or not it leads.
    errors = Counter("poolpilot_kube_api_errors", "Failed API calls.", ["verb", "code"], registry=registry)
    errors.labels("patch", "409").inc(3)
    if not leader:
        return registry
    duration = Histogram("poolpilot_evaluation_duration_seconds", "One evaluation.", registry=registry,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
    for seconds in (0.004, 0.02, 0.03, 0.2):
        duration.observe(seconds)
    messages = Counter("poolpilot_interruption_messages", "SQS messages.", ["result"], registry=registry)
    messages.labels("notice").inc(2)
    messages.labels("ignored").inc(5)
    Counter("poolpilot_notices", "Reclaim notices acted on.", ["kind", "source"],
            registry=registry).labels("spot-interruption", "aws-sqs").inc(2)
    Histogram("poolpilot_drain_duration_seconds", "Notice to pod gone.", ["capacity_type"], registry=registry,
              buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600)).labels("spot").observe(42)
    replicas = Gauge("poolpilot_pool_replicas", "Replicas.", [*POOL, "capacity_type", "state"], registry=registry)
    decisions = Counter("poolpilot_pool_decisions", "Decisions.", [*POOL, "reason"], registry=registry)
    events = Counter("poolpilot_pool_events", "Events posted.", [*POOL, "type", "reason"], registry=registry)
    mode = Gauge("poolpilot_pool_fallback_mode", "Fallback mode.", [*POOL, "mode"], registry=registry)
    signal = Gauge("poolpilot_pool_signal", "Signals.", [*POOL, "signal"], registry=registry)
    age = Gauge("poolpilot_pool_signals_age_seconds", "Signals' age.", POOL, registry=registry)
    available = Gauge("poolpilot_pool_metrics_available", "MetricsAvailable.", POOL, registry=registry)
    last = Gauge("poolpilot_pool_last_evaluation_timestamp_seconds", "Last evaluation.", POOL, registry=registry)
    evaluations = Counter("poolpilot_pool_evaluations", "Evaluations.", [*POOL, "result"], registry=registry)
    missed = Counter("poolpilot_drain_deadline_missed", "Deadlines missed.", POOL, registry=registry)
    cost = Gauge("poolpilot_pool_cost_per_hour", "Cost per hour.", [*POOL, "component", "currency"], registry=registry)
    moved = Gauge("poolpilot_pool_spot_moved_replicas", "Spot replicas on on-demand.", POOL, registry=registry)
    for pool in pools:
        key = (pool.namespace, pool.name)
        for capacity_type in ("spot", "on-demand"):
            replicas.labels(*key, capacity_type, "desired").set(pool.desired[capacity_type])
            replicas.labels(*key, capacity_type, "ready").set(pool.ready[capacity_type])
        decisions.labels(*key, "ScaledUp").inc()
        events.labels(*key, "Normal", "ScaledUp").inc()
        events.labels(*key, "Warning", "SpotInterruptionNotice").inc()
        events.labels(*key, "Normal", "ReplicaDrained").inc()
        for candidate in ("Off", "Overflow", "Full"):
            mode.labels(*key, candidate).set(1 if candidate == pool.mode else 0)
        for name, value in pool.signals.items():
            signal.labels(*key, name).set(value)
        age.labels(*key).set(2.5)
        available.labels(*key).set(1 if pool.metrics_available else 0)
        last.labels(*key).set_function(time.time)  # evaluated just now, at every scrape
        evaluations.labels(*key, "ok").inc(100)
        evaluations.labels(*key, "error").inc(1)
        missed.labels(*key).inc(0)
        for component, hourly in pool.cost.items():
            cost.labels(*key, component, "USD").set(hourly)
        moved.labels(*key).set(pool.spot_moved)
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class MetricsServer:
    address: str
    scrapes: int = 0


@contextlib.contextmanager
def serve_registry(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    """Serve ``registry`` at http://127.0.0.1:PORT/metrics (classic text format); counts the scrapes."""
    served = MetricsServer("")

    def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        served.scrapes += 1
        start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
        return [generate_latest(registry)]

    server = make_server("127.0.0.1", 0, application, handler_class=_QuietHandler)
    served.address = f"127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, name="fake-operator-metrics", daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
