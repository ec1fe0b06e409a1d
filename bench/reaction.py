"""Reaction time: from a queue spike at the fake vLLM replicas to the Deployment patch.

The real operator process runs against the embedded API server; fake replicas serve
vLLM's /metrics; for the prometheus source, the real Prometheus scrapes them every 1 s
or 5 s. Each spike: set 12 waiting requests per replica (target 4), time until the
pool's Deployments ask for more replicas, then drop the load and wait for the pool to
return to one replica. Prints a table of median and p99 per source.

    python -m bench.reaction [--spikes 20] [--sources pods,prometheus-1s,prometheus-5s]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from controller.api.crd import generate_crd
from devkube.cluster import DevCluster
from devkube.fakevllm import FakeVLLMFleet
from devkube.localrun import OperatorProcess, free_port
from devkube.prometheus import PrometheusServer
from devkube.wiring import PodReplicas, PodTargetSync

NAMESPACE = "bench"
POOL = "spiky"
MAX_REPLICAS = 3
EVALUATION_INTERVAL_SECONDS = 1
POLL_SECONDS = 0.01
SPIKE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class SourceSetup:
    name: str
    scrape_interval_seconds: float | None  # None: the pods source, no Prometheus


SETUPS = {
    "pods": SourceSetup("pods", None),
    "prometheus-1s": SourceSetup("prometheus-1s", 1.0),
    "prometheus-5s": SourceSetup("prometheus-5s", 5.0),
}


def _replicas(cluster: DevCluster) -> int:
    total = 0
    for suffix in ("on-demand", "spot"):
        deployment = cluster.get("deployments", NAMESPACE, f"{POOL}-{suffix}")
        total += deployment["spec"]["replicas"] if deployment else 0
    return total


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def _set_load(fleet: FakeVLLMFleet, waiting: float) -> None:
    fleet.set_all(waiting=waiting, running=2 if waiting else 0, kv=0.5 if waiting else 0.1)




def _pool_spec(port: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "m", "port": port, "gpusPerReplica": 0},
            "replicas": {"min": 1, "max": MAX_REPLICAS},
            "scaling": {"evaluationIntervalSeconds": EVALUATION_INTERVAL_SECONDS, "targetQueueDepthPerReplica": 4,
                        "scaleDown": {"stabilizationSeconds": 0, "maxStepReplicas": MAX_REPLICAS}},
            "capacity": {"onDemandBase": 1},
            "metrics": metrics,
        },
    }


def measure(setup: SourceSetup, spikes: int) -> list[float]:
    with ExitStack() as stack:
        fleet = stack.enter_context(FakeVLLMFleet.in_thread(0, port=free_port()))
        _set_load(fleet, 0)
        cluster = stack.enter_context(DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE]))
        stack.enter_context(PodReplicas(fleet, lambda: cluster.pods(NAMESPACE)))
        assert fleet.port is not None
        metrics: dict[str, Any] = {"source": "pods"}
        env: dict[str, str] = {}
        if setup.scrape_interval_seconds is not None:
            prometheus = stack.enter_context(PrometheusServer(scrape_interval_seconds=setup.scrape_interval_seconds))
            stack.enter_context(PodTargetSync(lambda: cluster.pods(NAMESPACE), prometheus, fleet.port))
            metrics = {"source": "prometheus", "prometheus": {"url": prometheus.url}}
            env["POOLPILOT_ALLOWED_PROMETHEUS_URLS"] = json.dumps([prometheus.url])
        operator = OperatorProcess(cluster.kubeconfig_path, env=env)
        operator.start()
        stack.callback(operator.stop)
        cluster.create("inferencepools.poolpilot.io", _pool_spec(fleet.port, metrics))
        _wait(lambda: _replicas(cluster) == 1, SPIKE_TIMEOUT_SECONDS, "the pool at one replica")
        time.sleep(2 * (setup.scrape_interval_seconds or 1))  # let the first samples arrive
        reactions = []
        for _ in range(spikes):
            _set_load(fleet, 12)
            reactions.append(_wait(lambda: _replicas(cluster) > 1, SPIKE_TIMEOUT_SECONDS, "the scale-up patch"))
            _set_load(fleet, 0)
            _wait(lambda: _replicas(cluster) == 1, SPIKE_TIMEOUT_SECONDS, "the scale-down")
            # Let the source see the calm state before the next spike (a full scrape for Prometheus).
            time.sleep(setup.scrape_interval_seconds or 0.5)
        return reactions


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spikes", type=int, default=20)
    parser.add_argument("--sources", default=",".join(SETUPS))
    args = parser.parse_args(argv)
    rows = []
    for name in args.sources.split(","):
        reactions = measure(SETUPS[name], args.spikes)
        rows.append((name, len(reactions), statistics.median(reactions), _percentile(reactions, 0.99),
                     max(reactions)))
        print(f"  {name}: done", flush=True)
    print(f"\nSpike -> Deployment patch (evaluation interval {EVALUATION_INTERVAL_SECONDS} s)")
    print(f"{'source':<16}{'spikes':>8}{'median s':>11}{'p99 s':>9}{'max s':>9}")
    for name, count, median, p99, worst in rows:
        print(f"{name:<16}{count:>8}{median:>11.2f}{p99:>9.2f}{worst:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
