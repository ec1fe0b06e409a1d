"""Wire a cluster's pods to fake vLLM replicas and to Prometheus, as a real cluster would be.

``PodReplicas`` plays the kubelet's part for the containers: every pool pod that has an IP
gets a fake replica serving at that IP (the model its ``--served-model-name`` names; the embedded
server's and KWOK's pod IPs are both on loopback), until the pod is gone. ``PodTargetSync`` mirrors
the pods into Prometheus' file_sd targets with the labels a kubernetes_sd scrape config
would relabel onto them (``namespace``, ``pod``, ``poolpilot_io_pool``).

The pod listings come from a callable, so the same wiring serves any API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from controller.kube.render import POOL_LABEL
from devkube.fakevllm import FakeVLLMFleet, FakeVLLMReplica
from devkube.kubelet import Container
from devkube.prometheus import PrometheusServer, ScrapeTarget

__all__ = ["PodReplicas", "PodTargetSync"]

Manifest = dict[str, Any]
PodLister = Callable[[], Iterable[Manifest]]
logger = logging.getLogger(__name__)


class _PollingThread:
    """A daemon thread that calls ``step`` every period until the context exits."""

    def __init__(self, name: str, period_seconds: float) -> None:
        self._period = period_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.step()
            except Exception:  # the API server may be busy or restarting: try again next period
                logger.exception("%s: step failed", self._thread.name)

    def step(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PodTargetSync(_PollingThread):
    """Keeps Prometheus' targets equal to the pool pods that have an IP."""

    def __init__(self, pods: PodLister, prometheus: PrometheusServer, port: int, *,
                 period_seconds: float = 0.2) -> None:
        super().__init__("pod-target-sync", period_seconds)
        self._pods, self._prometheus, self._port = pods, prometheus, port
        self._last: list[ScrapeTarget] | None = None

    def targets(self) -> list[ScrapeTarget]:
        return [
            ScrapeTarget(address=f"{pod['status']['podIP']}:{self._port}", labels={
                "namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"],
                "poolpilot_io_pool": pod["metadata"]["labels"][POOL_LABEL]})
            for pod in _pool_pods_with_ips(self._pods())
        ]

    def step(self) -> None:
        targets = self.targets()
        if targets != self._last and self._prometheus.running:  # a test may stop Prometheus on purpose
            self._prometheus.set_targets(targets)
            self._last = targets


class PodReplicas(_PollingThread):
    """A fake vLLM replica at each pool pod's IP, from the moment it has one until the pod is gone.

    With ``attach`` (``DevCluster.attach_container``), each replica is also the pod's container for the
    stand-in kubelet: a graceful deletion sends it SIGTERM, and it drains as ``vllm serve`` does with the
    pod's own ``--shutdown-timeout`` (stops taking requests, finishes what it holds); SIGKILL cuts it.
    """

    def __init__(self, fleet: FakeVLLMFleet, pods: PodLister, *, period_seconds: float = 0.1,
                 attach: Callable[[str, str, Container], None] | None = None) -> None:
        super().__init__("pod-replicas", period_seconds)
        if fleet.port is None:
            raise ValueError("PodReplicas needs a fleet with a fixed port (FakeVLLMFleet(0, port=...))")
        self._fleet, self._pods, self._attach = fleet, pods, attach
        self._by_pod: dict[tuple[str, str, str], FakeVLLMReplica] = {}  # (namespace, name, ip) -> replica

    def step(self) -> None:
        pods = {(pod["metadata"]["namespace"], pod["metadata"]["name"], pod["status"]["podIP"]): pod
                for pod in _pool_pods_with_ips(self._pods())}
        for key in [k for k in self._by_pod if k not in pods]:
            self._fleet.call(self._fleet.remove_replica(self._by_pod.pop(key)))
        for key in sorted(pods.keys() - self._by_pod.keys()):
            replica = self._by_pod[key] = self._fleet.call(
                self._fleet.add_replica(host=key[2], model_name=_container_flag(pods[key], "--served-model-name")))
            if self._attach is not None and not pods[key]["metadata"].get("deletionTimestamp"):
                try:
                    self._attach(key[0], key[1], self._container(replica, _shutdown_timeout(pods[key])))
                except Exception as error:  # the pod went in between: its replica goes on the next step
                    logger.debug("could not attach a replica to pod %s/%s: %s", key[0], key[1], error)

    def replicas_by_pod(self) -> dict[tuple[str, str, str], FakeVLLMReplica]:
        """(namespace, pod, ip) -> the replica serving there, as of the last step."""
        return dict(self._by_pod)

    def _container(self, replica: FakeVLLMReplica, shutdown_timeout: float) -> Container:
        fleet = self._fleet

        async def sigterm() -> None:  # on the cluster's loop; the replica lives on the fleet's
            await asyncio.wrap_future(fleet.submit(replica.terminate(shutdown_timeout)))

        def kill() -> None:
            with contextlib.suppress(RuntimeError):
                fleet.submit(replica.terminate(0))

        return Container(on_sigterm=sigterm, on_kill=kill)

    def close(self) -> None:
        for replica in self._by_pod.values():
            if replica in self._fleet.replicas:
                self._fleet.call(self._fleet.remove_replica(replica))
        self._by_pod.clear()


def _container_flag(pod: Manifest, flag: str) -> str | None:
    """``--flag=value`` from the pod's container args, as ``vllm serve`` reads it (None without one)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    for arg in containers[0].get("args") or []:
        if str(arg).startswith(f"{flag}="):
            return str(arg).split("=", 1)[1]
    return None


def _shutdown_timeout(pod: Manifest) -> float:
    """vLLM's ``--shutdown-timeout`` from the pod's container args (0, vLLM's default, without one)."""
    value = _container_flag(pod, "--shutdown-timeout")
    return 0.0 if value is None else float(value)


def _pool_pods_with_ips(pods: Iterable[Manifest]) -> list[Manifest]:
    return [pod for pod in pods if (pod.get("status") or {}).get("podIP")
            and POOL_LABEL in (pod["metadata"].get("labels") or {})]
