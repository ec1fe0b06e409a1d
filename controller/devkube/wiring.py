"""Wire the embedded cluster's pods to fake vLLM replicas and to Prometheus, as a real cluster would be.

``FakeReplicaAddresses`` gives each new pod the address of a fake replica that no live pod
uses (pass it as ``DevCluster(pod_ip=...)``, then set ``.cluster``). ``PodTargetSync``
mirrors the pods into Prometheus' file_sd targets with the labels a kubernetes_sd scrape
config would relabel onto them (``namespace``, ``pod``, ``poolpilot_io_pool``).
"""

from __future__ import annotations

import threading
from types import TracebackType

from controller.devkube.cluster import DevCluster
from controller.devkube.fakevllm import FakeVLLMFleet
from controller.devkube.prometheus import PrometheusServer, ScrapeTarget
from controller.kube.render import POOL_LABEL

__all__ = ["FakeReplicaAddresses", "PodTargetSync"]


class FakeReplicaAddresses:
    """A ``pod_ip`` callback: the first fake replica no live pod uses (the first one when all are taken)."""

    def __init__(self, fleet: FakeVLLMFleet) -> None:
        self._hosts = [replica.host for replica in fleet.replicas]
        self.cluster: DevCluster | None = None  # set once the cluster runs; pods come only after that

    def __call__(self, namespace: str, pod: str, deployment: str) -> str:
        used = {p.get("status", {}).get("podIP") for p in self.cluster.pods(None)} if self.cluster else set()
        return next((host for host in self._hosts if host not in used), self._hosts[0])


class PodTargetSync:
    """A thread that keeps Prometheus' targets equal to the pool pods that have an IP."""

    def __init__(self, cluster: DevCluster, prometheus: PrometheusServer, port: int, *,
                 namespace: str | None = None, period_seconds: float = 0.2) -> None:
        self._cluster, self._prometheus, self._port = cluster, prometheus, port
        self._namespace, self._period = namespace, period_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-target-sync", daemon=True)

    def __enter__(self) -> PodTargetSync:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def targets(self) -> list[ScrapeTarget]:
        return [
            ScrapeTarget(address=f"{pod['status']['podIP']}:{self._port}", labels={
                "namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"],
                "poolpilot_io_pool": pod["metadata"]["labels"][POOL_LABEL]})
            for pod in self._cluster.pods(self._namespace)
            if pod.get("status", {}).get("podIP") and POOL_LABEL in pod["metadata"].get("labels", {})
        ]

    def _run(self) -> None:
        last: list[ScrapeTarget] | None = None
        while not self._stop.wait(self._period):
            targets = self.targets()
            if targets != last and self._prometheus.running:  # a test may stop Prometheus on purpose
                self._prometheus.set_targets(targets)
                last = targets
