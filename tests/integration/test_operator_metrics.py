"""The operator's own /metrics and its JSON decision logs, from the real operator process, on both API servers."""

from __future__ import annotations

import json
from typing import Any

from devkube.fakevllm import FakeVLLMFleet
from devkube.localrun import OperatorProcess
from devkube.wiring import PodReplicas
from tests.integration.test_scaling import pool_spec, wait_for_replicas
from tests.support.backends import Backend
from tests.support.kube import condition
from tests.support.operator_metrics import Samples, pool_series, scrape, value
from tests.support.waiting import eventually


def decision_lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in operator.log().splitlines() if line.strip()]
    return [line for line in lines if line["logger"] == "poolpilot.decisions"]


def test_the_operator_exports_each_pool_and_logs_each_decision_as_json(
        backend: Backend, fleet: FakeVLLMFleet, replicas: PodReplicas) -> None:
    operator = backend.operator(env={"POOLPILOT_LOG_FORMAT": "json"})
    ns = backend.namespace
    fleet.set_all(waiting=0, running=1, kv=0.2)
    backend.kube.create_pool(ns, "qwen", {**pool_spec(fleet), "cost": {"spotReplicaHourly": 1.2,
                                                                        "onDemandReplicaHourly": 3.4}})
    wait_for_replicas(backend, "qwen", 1)
    fleet.set_all(waiting=12, running=4, kv=0.5)  # 12 waiting at a target of 4 per replica: 3 replicas
    wait_for_replicas(backend, "qwen", 3)

    def settled() -> tuple[dict[str, Any] | None, Samples]:
        return backend.kube.get_pool(ns, "qwen"), scrape(operator)

    def agree(found: tuple[dict[str, Any] | None, Samples]) -> bool:
        pool, samples = found
        if pool is None or "replicas" not in pool.get("status", {}):
            return False
        counts: dict[str, int] = pool["status"]["replicas"]
        return (value(samples, "poolpilot_pool_replicas", namespace=ns, pool="qwen", capacity_type="spot",
                      state="desired") == counts["spotDesired"]
                and value(samples, "poolpilot_pool_replicas", namespace=ns, pool="qwen", capacity_type="on-demand",
                          state="ready") == counts["onDemandReady"]
                and counts["desired"] == 3)

    pool, samples = eventually(settled, agree, what="/metrics showing the replicas the status shows")
    assert pool is not None
    pool_labels = {"namespace": ns, "pool": "qwen"}
    assert value(samples, "poolpilot_leader") == 1
    assert value(samples, "poolpilot_pools") == 1
    assert value(samples, "poolpilot_build_info", version="0.1.0") == 1
    assert value(samples, "poolpilot_pool_fallback_mode", **pool_labels, mode="Off") == 1
    assert value(samples, "poolpilot_pool_fallback_mode", **pool_labels, mode="Full") == 0
    assert value(samples, "poolpilot_pool_metrics_available", **pool_labels) == 1
    assert value(samples, "poolpilot_pool_signal", **pool_labels, signal="kv_cache_utilization") == 0.5
    assert (value(samples, "poolpilot_pool_decisions_total", **pool_labels, reason="ScaledUp") or 0) >= 1
    assert (value(samples, "poolpilot_pool_events_total", **pool_labels, type="Normal", reason="Created") or 0) >= 2
    assert (value(samples, "poolpilot_pool_evaluations_total", **pool_labels, result="ok") or 0) >= 2
    assert (value(samples, "poolpilot_evaluation_duration_seconds_count") or 0) >= 2
    assert value(samples, "poolpilot_pool_evaluation_interval_seconds", **pool_labels) == 1  # the spec's
    age = value(samples, "poolpilot_pool_signals_age_seconds", **pool_labels)
    assert age is not None and 0 <= age < 30
    assert value(samples, "poolpilot_pool_cost_per_hour", **pool_labels, component="pool",
                 currency=pool["status"]["cost"]["currency"]) == pool["status"]["cost"]["hourly"]

    # One JSON line per decision, with the pool, the reason and the numbers it was decided on.
    scaled = eventually(lambda: [d for d in decision_lines(operator) if d["reason"] == "ScaledUp"], bool,
                        what="a ScaledUp decision line")
    assert scaled[-1]["namespace"] == ns and scaled[-1]["pool"] == "qwen" and scaled[-1]["type"] == "Normal"
    assert scaled[-1]["desired"] == 3 and scaled[-1]["queue_depth"] >= 12  # 12 waiting on each ready replica
    assert isinstance(scaled[-1]["detail"], str) and scaled[-1]["level"] == "INFO"
    assert condition(pool, "MetricsAvailable") is not None

    # The pool goes: so do its series (none freezes at its last value).
    backend.kube.delete_pool(ns, "qwen")
    gone = eventually(lambda: scrape(operator), lambda s: not pool_series(s, "qwen") and
                      value(s, "poolpilot_pools") == 0, what="the pool's series removed")
    assert value(gone, "poolpilot_leader") == 1


def test_refused_writes_are_counted_by_verb_and_code(backend: Backend) -> None:
    """A quota that allows no Deployment: the server answers the creates with 403, and /metrics counts them."""
    operator = backend.operator()
    ns = backend.namespace
    backend.kube.core.create_namespaced_resource_quota(ns, {
        "metadata": {"name": "no-deployments"}, "spec": {"hard": {"count/deployments.apps": "0"}}})
    backend.kube.create_pool(ns, "qwen", {"model": {"name": "m"}})
    samples = eventually(lambda: scrape(operator),
                         lambda s: (value(s, "poolpilot_kube_api_errors_total", verb="create", code="403") or 0) >= 2,
                         what="the refused creates counted")
    assert value(samples, "poolpilot_kube_api_errors_total", verb="get", code="404") is None  # not an error
