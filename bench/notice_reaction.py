"""Notice -> replacement ordered and doomed replica out of routing: how long a reclaim takes to act on.

The real operator process runs against the embedded API server (its kubelet, EndpointSlice and
Deployment stand-ins). No vLLM replica serves at the pod IPs: the drain does not wait for the signals,
and a hundred fake replicas in the API server's process would measure Python's GIL, not the operator
(the pods source finds nothing listening: a refused connection on loopback, at once; the pool holds its
count and says MetricsUnavailable). A notice reaches it as a node taint
(Karpenter's ``karpenter.sh/disrupted``) or as an EC2 Spot Instance Interruption Warning through moto's
EventBridge and SQS. For each doomed replica, from the notice (the taint written, the event put):

* **replaced**: the operator's release of the pod from its Deployment (its ReplicaSet starts the
  replacement at that write);
* **unrouted**: the pod's address gone from the Service's ready EndpointSlice endpoints.

Both come from the store's own events (a listener on the API server's loop, the same clock as the
notice), so polling adds nothing. Scenarios: one notice at a time (``--trials`` times, one pool), and a
storm: one notice for each of ``--pools`` pools at once. Prints a table of median and p99 per scenario.

    python -m bench.notice_reaction [--trials 20] [--pools 100] [--sources taint,sqs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from controller.api.crd import generate_crd
from controller.kube.render import DRAIN_LABEL, POOL_LABEL
from devkube.aws import MotoServer, interruption_queue
from devkube.cluster import DevCluster
from devkube.localrun import OperatorProcess, free_port
from devkube.nodes import NodeSpec, instance_id
from devkube.store import WatchEvent

Manifest = dict[str, Any]
NAMESPACE = "bench"
TIMEOUT_SECONDS = 60.0
GOAL_P99_SECONDS = 1.0


@dataclass
class Moments:
    """When each pod was released and left routing, from the store's events (monotonic clock)."""

    released: dict[str, float] = field(default_factory=dict)
    unrouted: dict[str, float] = field(default_factory=dict)
    routed: dict[str, set[str]] = field(default_factory=dict)  # service -> ready IPs, as last seen
    pod_ips: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # The pods as PodReplicas and the bench read them, trimmed: listing (deep-copying) hundreds of pods
    # several times a second would keep the API server's loop busy, and measure the bench, not the operator.
    pods: dict[str, Manifest] = field(default_factory=dict)

    def pod_list(self) -> list[Manifest]:
        with self.lock:
            return list(self.pods.values())

    def on_event(self, event: WatchEvent) -> None:
        now = time.monotonic()
        kind = (event.resource.group, event.resource.plural)
        obj = event.object
        if kind == ("", "pods"):
            meta = obj["metadata"]
            ip = (obj.get("status") or {}).get("podIP")
            containers = (obj.get("spec") or {}).get("containers") or [{}]
            with self.lock:
                if ip:
                    self.pod_ips[meta["name"]] = ip
                if (meta.get("labels") or {}).get(DRAIN_LABEL) and meta["name"] not in self.released:
                    self.released[meta["name"]] = now
                if event.type == "DELETED":
                    self.pods.pop(meta["name"], None)
                else:
                    self.pods[meta["name"]] = {
                        "metadata": {"namespace": meta["namespace"], "name": meta["name"],
                                     "labels": dict(meta.get("labels") or {}),
                                     "deletionTimestamp": meta.get("deletionTimestamp")},
                        "spec": {"nodeName": (obj.get("spec") or {}).get("nodeName"),
                                 "containers": [{"args": list(containers[0].get("args") or [])}]},
                        "status": {"podIP": ip}}
        elif kind == ("discovery.k8s.io", "endpointslices"):
            service = (obj["metadata"].get("labels") or {}).get("kubernetes.io/service-name", "")
            ready = {address for endpoint in obj.get("endpoints") or []
                     if (endpoint.get("conditions") or {}).get("ready") is not False
                     for address in endpoint.get("addresses") or []}
            with self.lock:
                gone = self.routed.get(service, set()) - ready
                self.routed[service] = ready
                by_ip = {ip: name for name, ip in self.pod_ips.items()}
                for ip in gone:
                    if ip in by_ip:
                        self.unrouted.setdefault(by_ip[ip], now)


def pool_spec(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "m", "port": port, "gpusPerReplica": 0},
            "replicas": {"min": 2, "max": 2},
            "scaling": {"evaluationIntervalSeconds": 5},  # the notice must not wait for the timer
            "capacity": {"provider": "karpenter", "onDemandBase": 1, "spotPercentage": 100},
            "interruption": {"drainSeconds": 20, "preStopSeconds": 1},
        },
    }


@dataclass
class World:
    cluster: DevCluster
    moments: Moments
    moto: MotoServer | None
    queue_url: str | None
    pools: list[str]


@contextmanager
def world(pools: int, source: str) -> Iterator[World]:
    with ExitStack() as stack:
        # Two spot nodes per pool, so every doomed replica's replacement finds a node.
        nodes = [NodeSpec("on-demand-0")] + [NodeSpec(f"spot-{i:04d}", capacity_type="spot")
                                             for i in range(2 * pools)]
        cluster = stack.enter_context(DevCluster.in_thread(crds=[generate_crd()], namespaces=["default", NAMESPACE],
                                                           nodes=nodes, pod_ready_delay=0.2))
        moments = Moments()
        cluster._call(lambda: cluster.emulator.store.listeners.append(moments.on_event))
        moto, queue_url, env = None, None, {}
        if source == "sqs":
            moto = stack.enter_context(MotoServer())
            queue_url = interruption_queue(moto, name="bench-interruptions").url
            env = {**moto.environment(), "POOLPILOT_SQS_QUEUE_URL": queue_url, "POOLPILOT_SQS_WAIT_SECONDS": "20"}
        operator = OperatorProcess(cluster.kubeconfig_path, env=env, verbose=False)
        operator.start()
        stack.callback(operator.stop)
        names = [f"pool-{i:03d}" for i in range(pools)]
        for name in names:
            cluster.create("inferencepools.poolpilot.io", pool_spec(name, free_port()))
        _wait(lambda: len(_routed_spot_pods(cluster, moments)) == pools, "every pool's spot replica in routing")
        yield World(cluster, moments, moto, queue_url, names)


def _routed_spot_pods(cluster: DevCluster, moments: Moments) -> dict[str, tuple[str, str]]:
    """pod -> (pool, node) for the spot replicas that serve and are in their Service's ready endpoints."""
    with moments.lock:
        routed = {ip for ips in moments.routed.values() for ip in ips}
    found = {}
    for pod in moments.pod_list():
        labels = pod["metadata"].get("labels") or {}
        if (labels.get("poolpilot.io/capacity-type") == "spot" and not pod["metadata"].get("deletionTimestamp")
                and (pod.get("status") or {}).get("podIP") in routed):
            found[pod["metadata"]["name"]] = (labels[POOL_LABEL], pod["spec"]["nodeName"])
    return found


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def notify(world_: World, source: str, node: str) -> float:
    """Send the notice; returns when it was sent."""
    if source == "taint":
        sent = time.monotonic()
        world_.cluster.taint_node(node, "karpenter.sh/disrupted", effect="NoSchedule")
        return sent
    assert world_.moto is not None
    events = world_.moto.client("events")
    sent = time.monotonic()
    events.put_events(Entries=[{
        "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
        "Detail": json.dumps({"instance-id": instance_id(node), "instance-action": "terminate"}),
        "Resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id(node)}"]}])
    return sent


def measure(world_: World, source: str, count: int) -> tuple[list[float], list[float]]:
    """Notices for ``count`` spot replicas at once: the seconds to release and to leave routing, each."""
    doomed = dict(list(_routed_spot_pods(world_.cluster, world_.moments).items())[:count])
    sent = {pod: notify(world_, source, node) for pod, (_, node) in doomed.items()}
    moments = world_.moments
    _wait(lambda: all(p in moments.released and p in moments.unrouted for p in doomed), "every doomed replica out")
    # Let the drains finish and the replacements get into routing before the next round.
    _wait(lambda: len(_routed_spot_pods(world_.cluster, moments)) >= len(world_.pools), "the replacements routed")
    for _, node in doomed.values():
        if source == "taint":
            world_.cluster.untaint_node(node, "karpenter.sh/disrupted")
    return ([moments.released[p] - sent[p] for p in doomed], [moments.unrouted[p] - sent[p] for p in doomed])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="single notices, one after another")
    parser.add_argument("--pools", type=int, default=100, help="pools in the storm, one notice each")
    parser.add_argument("--sources", default="taint,sqs")
    args = parser.parse_args(argv)
    rows = []
    for source in args.sources.split(","):
        with world(1, source) as single:
            released, unrouted = [], []
            for _ in range(args.trials):
                r, u = measure(single, source, 1)
                released += r
                unrouted += u
        rows.append((f"one notice ({source})", len(released), released, unrouted))
        with world(args.pools, source) as storm:
            released, unrouted = measure(storm, source, args.pools)
        rows.append((f"storm: {args.pools} pools ({source})", len(released), released, unrouted))
    print(f"{'scenario':<28} {'n':>4} {'replaced p50':>13} {'replaced p99':>13} {'unrouted p50':>13} "
          f"{'unrouted p99':>13}  goal p99 < {GOAL_P99_SECONDS:.0f} s")
    for name, n, released, unrouted in rows:
        verdict = "met" if max(percentile(released, 0.99), percentile(unrouted, 0.99)) < GOAL_P99_SECONDS else "MISSED"
        print(f"{name:<28} {n:>4} {statistics.median(released):>12.3f}s {percentile(released, 0.99):>12.3f}s "
              f"{statistics.median(unrouted):>12.3f}s {percentile(unrouted, 0.99):>12.3f}s  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
