"""The world a round-cost benchmark runs against, in its own process: API server, replicas, Prometheus.

Prints one JSON line ({kubeconfig, prometheus}) once N pools exist and Prometheus has a
sample for each of them, then serves until its standard input closes.

    python -m bench.world --pools 100
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from controller.api.crd import generate_crd
from devkube.cluster import DevCluster
from devkube.fakevllm import FakeVLLMFleet
from devkube.prometheus import PrometheusServer, ScrapeTarget

NAMESPACE = "bench"


def pool(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": {"name": "m", "port": port, "gpusPerReplica": 0},
                 "replicas": {"min": 1, "max": 4},
                 "metrics": {"source": "prometheus"}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, required=True)
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    names = [f"pool-{index:04d}" for index in range(args.pools)]
    cluster_context = DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE], fake_pods=False)
    with FakeVLLMFleet.in_thread(1) as fleet, cluster_context as cluster, \
            PrometheusServer(scrape_interval_seconds=args.scrape_interval) as prometheus:
        replica = fleet.replicas[0]
        replica.set(waiting=1, running=3, kv=0.5)  # a steady, moderate load: no scaling in steady rounds
        prometheus.set_targets([ScrapeTarget(replica.address, {"namespace": NAMESPACE, "poolpilot_io_pool": name})
                                for name in names])
        for name in names:
            cluster.create("inferencepools.poolpilot.io", pool(name, replica.port))
        prometheus.wait_for_samples('vllm:num_requests_waiting{poolpilot_io_pool!=""}', timeout=120,
                                    min_series=args.pools)
        print(json.dumps({"kubeconfig": str(cluster.kubeconfig_path), "prometheus": prometheus.url}), flush=True)
        sys.stdin.read()  # until the benchmark closes our standard input
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
