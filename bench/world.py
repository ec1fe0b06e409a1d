"""The world a benchmark runs against, in its own process: API server, replicas, Prometheus.

So that what a benchmark measures of the operator is the operator's alone, the embedded API
server, the fake vLLM replicas and Prometheus run here, in a process of their own.

Round mode (``bench.round_cost``): no pods; one fake replica that Prometheus scrapes once per
pool, with that pool's labels. Prints one JSON line ({kubeconfig, prometheus}) once N pools exist
and Prometheus has a sample for each of them, then serves until its standard input closes::

    python -m bench.world --pools 100

Fleet mode (``bench.fleet``): the stand-in Deployment controller makes each pool's pods, and a
fake vLLM replica serves at every pool pod's IP (all of them on one event loop); for the
prometheus source, Prometheus scrapes those pods as kubernetes_sd would. Prints one JSON line
({kubeconfig, prometheus, namespace}) when ready, then answers commands on its standard input,
one JSON line each, until it closes::

    python -m bench.world --fleet pods --pools 100 [--replicas 4]
    create               -> {"seconds"}                          the pools, each held at --replicas
    converge <timeout>   -> {"converged", "seconds", "all_read_seconds", "ready", "reading", "all_read", "pools"}
                            polls until every pool is Ready=True and MetricsAvailable=True (seconds since
                            create), then until every pool's signals come from all its replicas
    counters             -> {"time", "api_requests": {verb: n}, "scrapes", "promql_queries"}
                            all since the start: API requests received, replica /metrics answered,
                            instant queries Prometheus answered
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from controller.api.crd import generate_crd
from controller.kube.render import POOL_LABEL
from devkube.cluster import DevCluster
from devkube.fakevllm import FakeVLLMFleet
from devkube.localrun import free_port
from devkube.prometheus import PrometheusServer, ScrapeTarget
from devkube.store import ObjectStore, WatchEvent
from devkube.wiring import PodReplicas, PodTargetSync

NAMESPACE = "bench"
POOLS = "inferencepools.poolpilot.io"
CONVERGE_POLL_SECONDS = 0.1
Manifest = dict[str, Any]


def pool(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": {"name": "m", "port": port, "gpusPerReplica": 0},
                 "replicas": {"min": 1, "max": 4},
                 "metrics": {"source": "prometheus"}},
    }


def pool_names(count: int) -> list[str]:
    return [f"pool-{index:04d}" for index in range(count)]


def run_rounds_world(pools: int, scrape_interval: float) -> int:
    names = pool_names(pools)
    cluster_context = DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE], fake_pods=False)
    with FakeVLLMFleet.in_thread(1) as fleet, cluster_context as cluster, \
            PrometheusServer(scrape_interval_seconds=scrape_interval) as prometheus:
        replica = fleet.replicas[0]
        replica.set(waiting=1, running=3, kv=0.5)  # a steady, moderate load: no scaling in steady rounds
        prometheus.set_targets([ScrapeTarget(replica.address, {"namespace": NAMESPACE, "poolpilot_io_pool": name})
                                for name in names])
        for name in names:
            cluster.create(POOLS, pool(name, replica.port))
        prometheus.wait_for_samples('vllm:num_requests_waiting{poolpilot_io_pool!=""}', timeout=120,
                                    min_series=pools)
        print(json.dumps({"kubeconfig": str(cluster.kubeconfig_path), "prometheus": prometheus.url}), flush=True)
        sys.stdin.read()  # until the benchmark closes our standard input
    return 0


# --- fleet mode ---------------------------------------------------------------------------------


def fleet_pool(name: str, port: int, source: str, replicas: int) -> dict[str, Any]:
    """A pool held at ``replicas`` (min = max), the default evaluation interval, the operator's Prometheus."""
    return {
        "apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": {"name": "m", "port": port, "gpusPerReplica": 0},
                 "replicas": {"min": replicas, "max": replicas},
                 "metrics": {"source": source}},
    }


class PoolPods:
    """The pool pods that have an IP, kept up to date from the store's events (a listener, on the cluster's loop).

    ``PodReplicas`` and ``PodTargetSync`` poll their pod listing several times a second; listing the
    store deep-copies every pod each time, which at thousands of pods would keep the API server's loop
    busy. This keeps only what the wiring reads (namespace, name, labels, podIP), and hands out a copy.
    """

    def __init__(self, store: ObjectStore) -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], Manifest] = {}
        store.listeners.append(self._on_event)  # before any pod exists: nothing is missed

    def _on_event(self, event: WatchEvent) -> None:
        if (event.resource.group, event.resource.plural) != ("", "pods"):
            return
        meta = event.object["metadata"]
        key = (meta["namespace"], meta["name"])
        labels = meta.get("labels") or {}
        ip = (event.object.get("status") or {}).get("podIP")
        with self._lock:
            if event.type == "DELETED" or not ip or POOL_LABEL not in labels:
                self._pods.pop(key, None)
            else:
                self._pods[key] = {"metadata": {"namespace": key[0], "name": key[1], "labels": dict(labels)},
                                   "status": {"podIP": ip}}

    def __call__(self) -> list[Manifest]:
        with self._lock:
            return list(self._pods.values())


def _snapshot(counter: Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """A copy of a counter another thread updates (a new key may appear while copying: try again)."""
    for _ in range(100):
        with contextlib.suppress(RuntimeError):
            return dict(counter)
    return dict(counter)


class PoolStates:
    """Each pool's progress, from the store's events (a listener, on the cluster's loop): Ready=True,
    MetricsAvailable=True, and signals read from all its replicas (Prometheus may have scraped some of
    a pool's pods only). Exact to the write, and no listing (deep copies) of a thousand pools to poll."""

    def __init__(self, store: ObjectStore, replicas: int) -> None:
        self._replicas = replicas
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], tuple[bool, bool, bool]] = {}
        store.listeners.append(self._on_event)  # before any pool exists: nothing is missed

    def _on_event(self, event: WatchEvent) -> None:
        if (event.resource.group, event.resource.plural) != ("poolpilot.io", "inferencepools"):
            return
        meta = event.object["metadata"]
        key = (meta["namespace"], meta["name"])
        status = event.object.get("status") or {}
        true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        all_read = (status.get("signals") or {}).get("replicasReporting") == self._replicas
        with self._lock:
            if event.type == "DELETED":
                self._states.pop(key, None)
            else:
                self._states[key] = ("Ready" in true, "MetricsAvailable" in true, all_read)

    def counts(self) -> tuple[int, int, int]:
        """How many pools are Ready, read signals, and read them from all replicas."""
        with self._lock:
            states = list(self._states.values())
        return (sum(ready for ready, _, _ in states), sum(reading for _, reading, _ in states),
                sum(ready and reading and all_read for ready, reading, all_read in states))


class FleetWorld:
    """The fleet world's state and its commands (run on the main thread, one at a time)."""

    def __init__(self, cluster: DevCluster, fleet: FakeVLLMFleet, prometheus: PrometheusServer | None,
                 source: str, pools: int, replicas: int) -> None:
        self.cluster, self.fleet, self.prometheus = cluster, fleet, prometheus
        self.source, self.pools, self.replicas = source, pools, replicas
        self.states = PoolStates(cluster.emulator.store, replicas)
        self.created_at: float | None = None

    def create(self) -> dict[str, Any]:
        assert self.fleet.port is not None
        self.created_at = time.monotonic()
        for name in pool_names(self.pools):
            self.cluster.create(POOLS, fleet_pool(name, self.fleet.port, self.source, self.replicas))
        return {"seconds": time.monotonic() - self.created_at}

    def converge(self, timeout: float) -> dict[str, Any]:
        """Wait until every pool is Ready and reads its signals (converged), and then until every pool shows
        signals from all its replicas (the status writes stop: steady), ``timeout`` seconds after create."""
        if self.created_at is None:
            raise RuntimeError("converge before create")
        deadline = self.created_at + timeout
        ready = reading = all_read = 0
        reply: dict[str, Any] = {"converged": False, "seconds": None, "all_read_seconds": None}
        while True:
            ready, reading, all_read = self.states.counts()
            now = time.monotonic()
            if not reply["converged"] and ready == reading == self.pools:
                reply.update(converged=True, seconds=now - self.created_at)
            if reply["converged"] and all_read == self.pools:
                reply["all_read_seconds"] = now - self.created_at
            if reply["all_read_seconds"] is not None or now >= deadline:
                return {**reply, "ready": ready, "reading": reading, "all_read": all_read, "pools": self.pools}
            time.sleep(min(CONVERGE_POLL_SECONDS, max(0.0, deadline - now)))

    def counters(self) -> dict[str, Any]:
        by_verb: Counter[str] = Counter()
        for (_agent, verb), count in _snapshot(self.cluster.emulator.requests_received).items():
            by_verb[verb] += count  # every HTTP client of this API server is the operator
        scrapes = sum(replica.requests["/metrics"] for replica in list(self.fleet.replicas))
        queries = self.prometheus.api_query_count() if self.prometheus is not None else 0
        return {"time": time.monotonic(), "api_requests": dict(by_verb), "scrapes": scrapes,
                "promql_queries": queries}

    def serve(self, lines: Iterator[str]) -> None:
        for line in lines:
            command, *arguments = line.split()
            if command == "create":
                reply = self.create()
            elif command == "converge":
                reply = self.converge(float(arguments[0]))
            elif command == "counters":
                reply = self.counters()
            else:
                reply = {"error": f"unknown command {command!r}"}
            print(json.dumps(reply), flush=True)


def run_fleet_world(source: str, pools: int, replicas: int, scrape_interval: float) -> int:
    with ExitStack() as stack:
        fleet = stack.enter_context(FakeVLLMFleet.in_thread(0, port=free_port()))
        fleet.set_all(waiting=1, running=3, kv=0.5)  # a steady, moderate load for every replica to come
        cluster = stack.enter_context(DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE]))
        pool_pods = PoolPods(cluster.emulator.store)
        stack.enter_context(PodReplicas(fleet, pool_pods, period_seconds=0.5))
        prometheus: PrometheusServer | None = None
        if source == "prometheus":
            assert fleet.port is not None
            prometheus = stack.enter_context(PrometheusServer(scrape_interval_seconds=scrape_interval))
            stack.enter_context(PodTargetSync(pool_pods, prometheus, fleet.port, period_seconds=1.0))
        world = FleetWorld(cluster, fleet, prometheus, source, pools, replicas)
        print(json.dumps({"kubeconfig": str(cluster.kubeconfig_path),
                          "prometheus": prometheus.url if prometheus else None, "namespace": NAMESPACE}), flush=True)
        world.serve(iter(sys.stdin.readline, ""))  # until the benchmark closes our standard input
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", type=int, required=True)
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    parser.add_argument("--fleet", choices=("pods", "prometheus"), default=None,
                        help="fleet mode, with this metrics source (default: round mode)")
    parser.add_argument("--replicas", type=int, default=4, help="fleet mode: replicas per pool (min = max)")
    args = parser.parse_args(argv)
    if args.fleet is None:
        return run_rounds_world(args.pools, args.scrape_interval)
    return run_fleet_world(args.fleet, args.pools, args.replicas, args.scrape_interval)


if __name__ == "__main__":
    raise SystemExit(main())
