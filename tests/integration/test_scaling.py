"""Scaling on vLLM's signals, end to end: fake vLLM replicas, the real Prometheus, the real operator process.

Each pod gets the address of its own fake replica (the first one no live pod uses), and the
test sets the same load on all of them (uniform load balancing). For the prometheus source, a sync thread mirrors
the pool's ready pods into Prometheus' file-based discovery, as kubernetes_sd would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.api.crd import generate_crd
from controller.devkube.cluster import DevCluster
from controller.devkube.fakevllm import FakeVLLMFleet
from controller.devkube.prometheus import PrometheusServer
from controller.devkube.wiring import FakeReplicaAddresses, PodTargetSync
from controller.localrun import OperatorProcess
from tests.support.kube import TestKube, condition
from tests.support.tools import kubectl_binary
from tests.support.waiting import eventually

NAMESPACE = "llm"
Manifest = dict[str, Any]


MAX_REPLICAS = 5


def set_load(fleet: FakeVLLMFleet, *, waiting: float, running: float | None = None, kv: float | None = None) -> None:
    for replica in fleet.replicas:
        replica.set(waiting=waiting, running=running, kv=kv)


@pytest.fixture
def fleet() -> Iterator[FakeVLLMFleet]:
    # Two pools share the fleet in one test: one replica per pod of both.
    with FakeVLLMFleet.in_thread(2 * MAX_REPLICAS) as running:
        set_load(running, waiting=0, running=2, kv=0.5)
        yield running


@pytest.fixture
def cluster(fleet: FakeVLLMFleet) -> Iterator[DevCluster]:
    addresses = FakeReplicaAddresses(fleet)
    with DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE],
                              kubectl_binary=kubectl_binary(), pod_ip=addresses) as running:
        addresses.cluster = running
        yield running


@pytest.fixture
def kube(cluster: DevCluster) -> Iterator[TestKube]:
    client = TestKube(str(cluster.kubeconfig_path))
    yield client
    client.close()


@pytest.fixture
def operator(cluster: DevCluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster.kubeconfig_path)
    process.start()
    yield process
    process.stop()
    print(f"--- operator log ---\n{process.log()[-20000:]}")  # shown when a test failed


SCALE_DOWN_WINDOW_SECONDS = 6
# The window starts at the operator's last evaluation under high load, which comes up to one
# evaluation interval (more on a loaded machine) before the test lowers the load.
EVALUATION_SLACK_SECONDS = 2


def pool_spec(fleet: FakeVLLMFleet, **metrics: Any) -> Manifest:
    return {
        "model": {"name": "m", "port": fleet.port, "gpusPerReplica": 0},
        "replicas": {"min": 1, "max": MAX_REPLICAS},
        "scaling": {"evaluationIntervalSeconds": 1, "targetQueueDepthPerReplica": 4,
                    "targetKVCacheUtilization": 0.8,
                    "scaleDown": {"stabilizationSeconds": SCALE_DOWN_WINDOW_SECONDS, "maxStepReplicas": 5}},
        "capacity": {"onDemandBase": 1, "spotPercentage": 100},
        "metrics": metrics or {"source": "pods"},
    }


def total_replicas(kube: TestKube, pool: str) -> int:
    total = 0
    for suffix in ("on-demand", "spot"):
        deployment = kube.get("Deployment", NAMESPACE, f"{pool}-{suffix}")
        total += deployment["spec"]["replicas"] if deployment else 0
    return total


def wait_for_replicas(kube: TestKube, pool: str, count: int, timeout: float = 20.0) -> None:
    eventually(lambda: total_replicas(kube, pool), lambda n: n == count, timeout=timeout,
               what=f"{pool} at {count} replicas")


def events(kube: TestKube, pool: str, reason: str) -> list[Manifest]:
    return [e for e in kube.events_for(NAMESPACE, pool) if e["reason"] == reason]


def events_eventually(kube: TestKube, pool: str, reason: str, count: int = 1) -> list[Manifest]:
    """Kopf posts Events from a queue: they may trail the change they describe by a moment."""
    return eventually(lambda: events(kube, pool, reason), lambda found: len(found) >= count,
                      what=f"{count} {reason} event(s) on {pool}")


def test_the_pods_source_scales_up_on_a_queue_spike_and_down_after_the_window(
        fleet: FakeVLLMFleet, kube: TestKube, operator: OperatorProcess) -> None:
    kube.create_pool(NAMESPACE, "qwen", pool_spec(fleet))
    pool = eventually(lambda: kube.get_pool(NAMESPACE, "qwen"),
                      lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "True",
                      what="signals read from the replica")
    assert "via pods" in (condition(pool, "MetricsAvailable") or {})["message"]
    assert total_replicas(kube, "qwen") == 1

    spiked_at = time.monotonic()
    set_load(fleet, waiting=12)  # 12 waiting per replica against a target of 4
    wait_for_replicas(kube, "qwen", 5)
    assert time.monotonic() - spiked_at < 10
    scaled_up = events_eventually(kube, "qwen", "ScaledUp")
    assert "1 -> 3" in scaled_up[0]["message"], scaled_up
    assert "queue" in scaled_up[0]["message"]
    status = eventually(lambda: kube.get_pool(NAMESPACE, "qwen"),
                        lambda p: p is not None and p["status"].get("lastDecision", {}).get("toReplicas") == 5,
                        what="the last decision in the status")["status"]  # type: ignore[index]
    assert status["lastDecision"]["reason"] == "ScaledUp"

    set_load(fleet, waiting=0, running=0, kv=0.1)
    calmed_at = time.monotonic()
    time.sleep(SCALE_DOWN_WINDOW_SECONDS - EVALUATION_SLACK_SECONDS - 1)
    assert total_replicas(kube, "qwen") == 5, "scaled down inside the stabilization window"
    wait_for_replicas(kube, "qwen", 1)
    assert time.monotonic() - calmed_at >= SCALE_DOWN_WINDOW_SECONDS - EVALUATION_SLACK_SECONDS
    events_eventually(kube, "qwen", "ScaledDown")


def test_unreadable_metrics_hold_the_replicas_warn_once_and_recover(
        fleet: FakeVLLMFleet, kube: TestKube, operator: OperatorProcess) -> None:
    set_load(fleet, waiting=12)
    kube.create_pool(NAMESPACE, "qwen", pool_spec(fleet))
    wait_for_replicas(kube, "qwen", 5)

    for replica in fleet.replicas:  # every replica's /metrics now refuses connections
        fleet.call(replica.stop())
    pool = eventually(lambda: kube.get_pool(NAMESPACE, "qwen"),
                      lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "False",
                      what="MetricsAvailable=False")
    assert (condition(pool, "MetricsAvailable") or {})["reason"] == "SourceUnreachable"
    time.sleep(3)  # several evaluations during the outage
    assert total_replicas(kube, "qwen") == 5, "scaled while blind"
    warnings = events_eventually(kube, "qwen", "MetricsUnavailable")
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

    for replica in fleet.replicas:
        fleet.call(replica.start())
    eventually(lambda: kube.get_pool(NAMESPACE, "qwen"),
               lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "True", what="recovered")
    assert len(events_eventually(kube, "qwen", "MetricsRecovered")) == 1




def test_the_prometheus_source_scales_like_the_pods_source_and_holds_when_prometheus_stops(
        fleet: FakeVLLMFleet, cluster: DevCluster, kube: TestKube) -> None:
    assert fleet.port is not None
    with PrometheusServer(scrape_interval_seconds=1.0) as prometheus, \
            PodTargetSync(cluster, prometheus, fleet.port, namespace=NAMESPACE):
        operator = OperatorProcess(cluster.kubeconfig_path)
        operator.start()
        try:
            kube.create_pool(NAMESPACE, "via-prom", pool_spec(fleet, source="prometheus",
                                                              prometheus={"url": prometheus.url}))
            kube.create_pool(NAMESPACE, "via-pods", pool_spec(fleet))
            for name in ("via-prom", "via-pods"):
                eventually(lambda name=name: kube.get_pool(NAMESPACE, name),  # type: ignore[misc]
                           lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "True",
                           timeout=30, what=f"{name} reads its signals")
            set_load(fleet, waiting=12)
            # The same load gives the same decisions, whichever way the signals travel.
            wait_for_replicas(kube, "via-pods", 5)
            wait_for_replicas(kube, "via-prom", 5, timeout=30)
            prom_pool = kube.get_pool(NAMESPACE, "via-prom")
            assert prom_pool is not None and prom_pool["status"]["signals"]["source"] == "prometheus"

            prometheus.stop()
            set_load(fleet, waiting=0, running=0, kv=0.1)  # would scale down, if the operator could see it
            pool = eventually(lambda: kube.get_pool(NAMESPACE, "via-prom"),
                              lambda p: (condition(p, "MetricsAvailable") or {}).get("status") == "False",
                              timeout=20, what="MetricsAvailable=False once Prometheus is gone")
            assert (condition(pool, "MetricsAvailable") or {})["reason"] in ("SourceUnreachable", "SourceTimeout")
            time.sleep(SCALE_DOWN_WINDOW_SECONDS + 1)  # past the scale-down window
            assert total_replicas(kube, "via-prom") == 5, "scaled down blind"
            wait_for_replicas(kube, "via-pods", 1)  # the pods-sourced pool still sees the replicas
        finally:
            operator.stop()
            print(f"--- operator log ---\n{operator.log()[-20000:]}")
