"""The scrape jobs of manifests/monitoring/, on a real Prometheus: what they keep, drop and label.

The replicas' job is proven the way the operator depends on it: its own Prometheus source
(controller/sources/metrics/prometheus.py) reads the pool through that Prometheus and gets what the fake
replicas and the router report, and only that. The PodMonitor's job (the Prometheus Operator's translation,
tests/monitoring/world.py) is read the same way in a namespace of its own, and labels its series as the
plain job does. The operator's job keeps each pool's own ``namespace``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import yaml

from controller.core.signals import MetricsProblem, PoolSignals
from controller.kube.render import MANAGED_BY_LABEL, POOL_LABEL, ROUTER_LABEL
from controller.sources.metrics.base import PoolTarget
from controller.sources.metrics.prometheus import PrometheusSource
from tests.monitoring.generate import MONITORING
from tests.monitoring.world import (
    DROPPED_VALUES,
    OPERATOR_JOB,
    PLAIN_NAMESPACE,
    PODMONITOR,
    PODMONITOR_NAMESPACE,
    REPLICA_VALUES,
    REPLICAS_JOB,
    ROUTER_IN_FLIGHT,
    MonitoringWorld,
    plain_jobs,
    sanitize_label_name,
)

__all__: list[str] = []

PODMONITOR_JOB = "poolpilot-system/poolpilot-pool-replicas"
JOB_OF_NAMESPACE = {PLAIN_NAMESPACE: REPLICAS_JOB, PODMONITOR_NAMESPACE: PODMONITOR_JOB}


async def _read_pool(world: MonitoringWorld, namespace: str) -> PoolSignals:
    """The pool as the operator's Prometheus source reads it, once every replica and the router's rate are in."""
    # A rate window of a few scrapes: the default minute would hold only the seconds this Prometheus has run.
    source = PrometheusSource(world.prom.url, timeout_seconds=2.0, rate_window_seconds=3)
    key = (namespace, world.pool_name)
    try:
        deadline = time.monotonic() + 10
        while True:
            reading = (await source.read([PoolTarget(key)], now=datetime.now(UTC)))[key]
            complete = (isinstance(reading, PoolSignals) and reading.replicas_reporting == len(REPLICA_VALUES)
                        and reading.router_arrivals_per_second is not None)
            if complete or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await source.close()
    assert not isinstance(reading, MetricsProblem), reading
    return reading


@pytest.mark.parametrize("namespace", [PLAIN_NAMESPACE, PODMONITOR_NAMESPACE],
                         ids=["scrape-configs.yaml", "podmonitor.yaml"])
async def test_the_operator_reads_the_pools_signals_through_the_job(monitoring_world: MonitoringWorld,
                                                                     namespace: str) -> None:
    signals = await _read_pool(monitoring_world, namespace)
    # Exactly the kept replicas' figures: the released one counts, the dropped pods' large numbers do not.
    assert signals.replicas_reporting == len(REPLICA_VALUES)
    assert signals.queue_depth == sum(waiting for waiting, _, _ in REPLICA_VALUES.values())
    assert signals.running_requests == sum(running for _, running, _ in REPLICA_VALUES.values())
    assert signals.kv_cache_utilization == pytest.approx(
        sum(kv for _, _, kv in REPLICA_VALUES.values()) / len(REPLICA_VALUES))
    # The router's series, labelled poolpilot_io_router by the job, are the pool's demand.
    assert signals.router_in_flight == sum(ROUTER_IN_FLIGHT.values())
    assert signals.router_arrivals_per_second == pytest.approx(4.0, rel=0.25)
    assert signals.router_spills_per_second == pytest.approx(0.5, rel=0.25)


def test_the_pods_that_are_no_replica_are_never_scraped(monitoring_world: MonitoringWorld) -> None:
    world = monitoring_world
    for role in DROPPED_VALUES:
        assert world.replicas[role].requests["/metrics"] == 0, f"{role} was scraped"
    for role in REPLICA_VALUES:
        assert world.replicas[role].requests["/metrics"] >= 2, f"{role} was not scraped"
    dropped = world.prom.get_api("/api/v1/targets?state=dropped")["data"]["droppedTargets"]
    dropped_pods = {(target["discoveredLabels"]["__meta_kubernetes_namespace"],
                     target["discoveredLabels"]["__meta_kubernetes_pod_name"],
                     target["discoveredLabels"]["__meta_kubernetes_pod_container_port_name"])
                    for target in dropped if "__meta_kubernetes_pod_phase" in target["discoveredLabels"]}
    expected = {(pod.namespace, pod.name, pod.port_name) for pods in world.dropped.values() for pod in pods}
    assert dropped_pods == expected


@pytest.mark.parametrize("namespace", [PLAIN_NAMESPACE, PODMONITOR_NAMESPACE],
                         ids=["scrape-configs.yaml", "podmonitor.yaml"])
def test_each_replica_and_the_router_are_labelled_with_their_pool(monitoring_world: MonitoringWorld,
                                                                  namespace: str) -> None:
    world = monitoring_world
    job = JOB_OF_NAMESPACE[namespace]
    targets = {series["pod"]: series for series in world.prom.series(f'up{{job="{job}"}}')}
    expected_pods = {pod.name for pod in world.kept[namespace]}
    assert set(targets) == expected_pods
    for pod in world.kept[namespace]:
        labels = targets[pod.name]
        assert labels["namespace"] == namespace
        assert labels["container"] == pod.container
        if POOL_LABEL in pod.labels:  # a replica: the pool label, as the source and the dashboard read it
            assert (labels.get("poolpilot_io_pool"), labels.get("poolpilot_io_router")) == (world.pool_name, None)
        else:  # the router: its own label, which the source maps onto the pool (never counted as vLLM)
            assert (labels.get("poolpilot_io_pool"), labels.get("poolpilot_io_router")) == (None, world.pool_name)


def test_the_podmonitor_and_the_plain_job_label_alike(monitoring_world: MonitoringWorld) -> None:
    """The same pods, the same series labels, whichever install: but for job and namespace, and the endpoint
    label the Prometheus Operator adds to every target."""
    def labels_of(job: str) -> set[tuple[tuple[str, str], ...]]:
        ignored = {"job", "namespace", "endpoint", "instance"}
        return {tuple(sorted((name, value) for name, value in series.items() if name not in ignored))
                for series in monitoring_world.prom.series(f'{{job="{job}"}}')}

    plain, podmonitor = labels_of(REPLICAS_JOB), labels_of(PODMONITOR_JOB)
    assert plain and plain == podmonitor


def test_the_operator_job_keeps_each_pools_namespace(monitoring_world: MonitoringWorld) -> None:
    world = monitoring_world
    pools = world.prom.series(f'poolpilot_pool_replicas{{job="{OPERATOR_JOB}"}}')
    assert {(series["namespace"], series["pool"]) for series in pools} == {
        (PLAIN_NAMESPACE, world.pool_name), (PLAIN_NAMESPACE, "batch"), ("tenant-b", "idle")}
    assert not any("exported_namespace" in series for series in pools)
    # The operator's own series, which have no namespace of their own, get the target's.
    leaders = world.prom.series(f'poolpilot_leader{{job="{OPERATOR_JOB}"}}')
    assert {(series["namespace"], series["pod"], series["service"]) for series in leaders} == {
        ("poolpilot-system", "poolpilot-5f7c9d-leadr", "poolpilot-metrics"),
        ("poolpilot-system", "poolpilot-5f7c9d-stdby", "poolpilot-metrics")}
    assert world.operators["standby"].scrapes >= 2, "a standby (not ready) is scraped too"
    assert world.decoy.scrapes == 0, "another Service's endpoint was scraped"


def test_the_podmonitor_selects_what_render_py_labels_and_names() -> None:
    """The label keys and the port name the monitors rely on are render.py's, not copies that drift."""
    podmonitor = yaml.safe_load(PODMONITOR.read_text())
    spec = podmonitor["spec"]
    assert spec["selector"] == {"matchLabels": {MANAGED_BY_LABEL: "poolpilot"}}
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] == "http"
    targets = {rule.get("targetLabel"): rule.get("sourceLabels") for rule in endpoint["relabelings"]}
    assert targets["poolpilot_io_pool"] == [f"__meta_kubernetes_pod_label_{sanitize_label_name(POOL_LABEL)}"]
    assert targets["poolpilot_io_router"] == [f"__meta_kubernetes_pod_label_{sanitize_label_name(ROUTER_LABEL)}"]
    # The plain job derives the same two labels from the same meta labels.
    plain = plain_jobs()[REPLICAS_JOB]["relabel_configs"]
    plain_targets = {rule.get("target_label"): rule.get("source_labels") for rule in plain}
    for label in ("poolpilot_io_pool", "poolpilot_io_router", "namespace", "pod"):
        assert label in plain_targets, label
    assert plain_targets["poolpilot_io_pool"] == targets["poolpilot_io_pool"]
    assert plain_targets["poolpilot_io_router"] == targets["poolpilot_io_router"]


def test_both_operator_scrapes_honor_the_pools_namespace_label() -> None:
    servicemonitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((MONITORING / "service.yaml").read_text())
    (endpoint,) = servicemonitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert plain_jobs()[OPERATOR_JOB]["honor_labels"] is True
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"] == "http-metrics"
    selector = servicemonitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
