"""IPv6 pods, end to end: the embedded API server gives the pool's pod the address ``::1``, a fake vLLM
replica serves there, and the real operator process runs with its default liveness endpoint on an
IPv6 pod (``POOLPILOT_POD_IP``) and on an IPv4 one.

Needs the IPv6 loopback; where ``::1`` cannot be bound, the IPv6 tests skip with that reason.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from controller.api.crd import generate_crd
from controller.api.spec import API_GROUP, PLURAL
from devkube.cluster import DevCluster
from devkube.fakevllm import FakeVLLMFleet, ipv6_loopback_bindable
from devkube.localrun import OperatorProcess, free_port
from devkube.wiring import PodReplicas
from tests.support.waiting import eventually

__all__: list[str] = []

NAMESPACE = "llm"
POOLS = f"{PLURAL}.{API_GROUP}"
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_bindable(), reason="::1 cannot be bound on this machine")


def _metrics_available(pool: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((pool or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "MetricsAvailable"), {})


def _probe(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        status: int = response.status
        return status


@pytest.fixture
def ipv6_cluster() -> Iterator[tuple[DevCluster, FakeVLLMFleet]]:
    with FakeVLLMFleet.in_thread(0, port=free_port()) as fleet, \
            DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE],
                                 pod_ip=lambda namespace, pod, deployment: "::1") as cluster, \
            PodReplicas(fleet, lambda: cluster.pods(NAMESPACE)):
        yield cluster, fleet


@needs_ipv6
def test_a_pool_of_ipv6_pods_reads_its_signals_and_the_default_probe_answers_on_ipv6(
        ipv6_cluster: tuple[DevCluster, FakeVLLMFleet]) -> None:
    cluster, fleet = ipv6_cluster
    fleet.set_all(waiting=3, running=2, kv=0.25)
    operator = OperatorProcess(cluster.kubeconfig_path, env={"POOLPILOT_POD_IP": "fd00::5"},
                               default_liveness=True, probe_host="::1")
    operator.start()
    try:
        assert _probe(operator.probe_url("::1")) == 200
        cluster.create(POOLS, {
            "apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
            "metadata": {"name": "v6", "namespace": NAMESPACE},
            "spec": {"model": {"name": "m", "port": fleet.port, "gpusPerReplica": 0},
                     "replicas": {"min": 1, "max": 1}, "scaling": {"evaluationIntervalSeconds": 1},
                     "metrics": {"source": "pods"}},
        })
        pool = eventually(lambda: cluster.get(POOLS, NAMESPACE, "v6"),
                          lambda p: _metrics_available(p).get("status") == "True", timeout=30,
                          what="signals read from the replica at [::1]")
        assert pool is not None
        assert pool["status"]["signals"]["queueDepth"] == 3
        assert fleet.replicas[0].requests["/metrics"] > 0
    finally:
        operator.stop()


def test_the_default_probe_answers_on_ipv4_pods() -> None:
    with DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE]) as cluster:
        operator = OperatorProcess(cluster.kubeconfig_path, env={"POOLPILOT_POD_IP": "10.1.2.3"},
                                   default_liveness=True, probe_host="127.0.0.1")
        operator.start()
        try:
            assert _probe(operator.probe_url("127.0.0.1")) == 200
        finally:
            operator.stop()
