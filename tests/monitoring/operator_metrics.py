"""The operator's ``/metrics`` for a real Prometheus to scrape: the operator's own metrics
(``controller.telemetry.metrics.OperatorMetrics``), in a registry of their own, fed the statuses of a few pools
through the same ``record_evaluation`` an evaluation calls, and served in the classic text format on
127.0.0.1. A leader exports the pools' series; a standby only who it is (``poolpilot_leader 0``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest

from controller.api.status import InferencePoolStatus
from controller.core.events import PoolEvent
from controller.telemetry.metrics import OperatorMetrics
from devkube.fakevllm import CONTENT_TYPE

__all__ = ["OPERATOR_METRICS", "FakeOperatorPool", "MetricsServer", "operator_registry", "serve_registry"]


def _exposed_names() -> frozenset[str]:
    """Every series name the operator can expose (a counter's NAME_total, a histogram's _bucket, _sum, _count):
    what the alerts and the dashboard may name."""
    names: set[str] = set()
    for family in OperatorMetrics(CollectorRegistry()).__dict__.values():
        describe = getattr(family, "describe", None)
        for metric in describe() if describe else ():
            kind = metric.type
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
            names.update(metric.name + suffix for suffix in suffixes)
    return frozenset(names)


OPERATOR_METRICS = _exposed_names()


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

    def statuses(self, now: datetime) -> tuple[InferencePoolStatus, InferencePoolStatus]:
        """(before, after) one evaluation that scaled up, and acted on a notice for a pod that drained at once."""
        def at(seconds_ago: float) -> str:
            return (now - timedelta(seconds=seconds_ago)).isoformat()

        drain = {"pod": f"{self.name}-spot-x", "kind": "spot-interruption", "source": "aws-sqs",
                 "capacityType": "spot", "outcome": "Drained", "noticedTime": at(60), "deadline": at(-60),
                 "drainedTime": at(18)}
        before = InferencePoolStatus()
        after = InferencePoolStatus.model_validate({
            "replicas": {"desired": sum(self.desired.values()), "ready": sum(self.ready.values()),
                         "spotDesired": self.desired["spot"], "spotReady": self.ready["spot"],
                         "onDemandDesired": self.desired["on-demand"], "onDemandReady": self.ready["on-demand"]},
            "signals": {**{_camel(k): v for k, v in self.signals.items()}, "observedTime": at(2.5)},
            "fallback": {"mode": self.mode},
            "cost": {"currency": "USD", "hourly": self.cost["pool"], "apiHourly": self.cost["api"]},
            **({"spot": {"unavailableSince": at(600), "movedReplicas": self.spot_moved}} if self.spot_moved else {}),
            "lastDecision": {"time": at(1), "fromReplicas": 1, "toReplicas": 3, "reason": "ScaledUp", "message": "m"},
            "conditions": [{"type": "MetricsAvailable", "status": "True" if self.metrics_available else "False",
                            "reason": "SignalsRead" if self.metrics_available else "Unreachable", "message": "m",
                            "lastTransitionTime": at(900)}],
            "interruptions": [drain]})
        return before, after


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


EVENTS = (PoolEvent("Normal", "ScaledUp", "1 -> 3"), PoolEvent("Warning", "SpotInterruptionNotice", "n"),
          PoolEvent("Normal", "ReplicaDrained", "d"))


def operator_registry(*, leader: bool, pools: Sequence[FakeOperatorPool] = (),
                      version: str = "0.1.0") -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, version=version)
    metrics.leader.set(1 if leader else 0)
    metrics.record_kube_api_error("patch", 409)  # the operator's own counters exist whether or not it leads
    if not leader:
        return registry
    metrics.pools.set(len(pools))
    metrics.interruption_messages.labels("notice").inc(2)
    metrics.interruption_messages.labels("ignored").inc(5)
    for seconds in (0.004, 0.03, 0.2):
        metrics.evaluation_seconds.observe(seconds)
    now = datetime.now(UTC)
    for pool in pools:
        key = (pool.namespace, pool.name)
        before, after = pool.statuses(now)
        metrics.record_evaluation(key, before, after, EVENTS, seconds=0.02, now=now, interval_seconds=5)
        metrics.record_failed_evaluation(key, seconds=0.5)
        metrics.drain_deadline_missed.labels(*key).inc(0)  # a series at 0, as after a first miss elsewhere
        metrics.last_evaluation.labels(*key).set_function(time.time)  # evaluated just now, at every scrape
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
