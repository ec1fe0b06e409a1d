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
storm: one notice for each of ``--pools`` pools at once.

The embedded server is Python on the same two cores as the operator: in a storm its own work (a
hundred ReplicaSets replacing, scheduling, slices, budgets, the kubelet) is what the latency measures.
``--servers real`` runs the same against the control plane KUBECONFIG names (``make cluster``: the real
kube-apiserver, scheduler and controllers, KWOK nodes): there the times are the operator's. Its
EndpointSlice controller refuses loopback pod IPs, so there "unrouted" is the release itself (the same
write takes the pod out of the Service's selector). Prints a table of median and p99 per scenario.

    python -m bench.notice_reaction [--trials 20] [--pools 100] [--sources taint,sqs] [--servers embedded,real]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import pathlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import kubernetes

from cluster.nodes import node_manifest
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
NOTIFY_THREADS = 16
PUT_EVENTS_BATCH = 10  # PutEvents takes at most 10 entries
TAINT = "karpenter.sh/disrupted"  # Karpenter's, v1
DEFAULT_KUBECONFIG = ".cluster/kubeconfig"  # where `make cluster` writes it


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

    def on_pod(self, obj: Manifest, *, deleted: bool) -> None:
        now = time.monotonic()
        meta = obj["metadata"]
        status = obj.get("status") or {}
        ip = status.get("podIP")
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        with self.lock:
            if ip:
                self.pod_ips[meta["name"]] = ip
            if (meta.get("labels") or {}).get(DRAIN_LABEL) and meta["name"] not in self.released:
                self.released[meta["name"]] = now
            if deleted:
                self.pods.pop(meta["name"], None)
            else:
                self.pods[meta["name"]] = {
                    "metadata": {"namespace": meta["namespace"], "name": meta["name"],
                                 "labels": dict(meta.get("labels") or {}),
                                 "deletionTimestamp": meta.get("deletionTimestamp")},
                    "spec": {"nodeName": (obj.get("spec") or {}).get("nodeName")},
                    "status": {"podIP": ip, "ready": ready}}

    def on_event(self, event: WatchEvent) -> None:
        now = time.monotonic()
        kind = (event.resource.group, event.resource.plural)
        obj = event.object
        if kind == ("", "pods"):
            self.on_pod(obj, deleted=event.type == "DELETED")
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
    """Where the bench sends notices and reads what the operator did: the embedded server, or a real one."""

    moments: Moments
    pools: list[str]
    taint: Callable[[str], float]  # returns when the taint was written (after any read it needs)
    untaint: Callable[[str], object]
    moto: MotoServer | None = None
    # Whether a pod in routing is seen in its Service's EndpointSlices (the embedded server), or only as
    # Ready and selected by the Service (a real server's EndpointSlice controller refuses loopback pod IPs).
    endpointslices: bool = True

    def spot_pods(self) -> dict[str, tuple[str, str]]:
        """pod -> (pool, node) for the spot replicas in routing."""
        with self.moments.lock:
            routed = {ip for ips in self.moments.routed.values() for ip in ips}
        found = {}
        for pod in self.moments.pod_list():
            labels = pod["metadata"].get("labels") or {}
            ip = (pod.get("status") or {}).get("podIP")
            serving = (labels.get("poolpilot.io/serving") == "true" and pod["status"].get("ready")
                       if not self.endpointslices else ip in routed)
            if labels.get("poolpilot.io/capacity-type") == "spot" and not pod["metadata"].get(
                    "deletionTimestamp") and serving:
                found[pod["metadata"]["name"]] = (labels[POOL_LABEL], pod["spec"]["nodeName"])
        return found


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
        def taint(node: str) -> float:
            sent = time.monotonic()
            cluster.taint_node(node, TAINT, effect="NoSchedule")
            return sent

        bench = World(moments, names, taint=taint, untaint=lambda node: cluster.untaint_node(node, TAINT), moto=moto)
        _wait(lambda: len(bench.spot_pods()) == pools, "every pool's spot replica in routing")
        yield bench


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def real_world(pools: int) -> Iterator[World]:
    """The same on the real control plane (KUBECONFIG; ``make cluster`` starts one): KWOK nodes, the
    real scheduler, ReplicaSets and Eviction API; a namespace, nodes and an operator of its own."""
    api_client = kubernetes.config.new_client_from_config(os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG)
    core = kubernetes.client.CoreV1Api(api_client)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    nodes = [f"{namespace}-spot-{i:04d}" for i in range(2 * pools)]
    moments = Moments()
    stop = threading.Event()
    with ExitStack() as stack:
        _install_crd(api_client)
        core.create_namespace({"metadata": {"name": namespace}})
        stack.callback(lambda: core.delete_namespace(namespace))
        for name in nodes:
            core.create_node(node_manifest(name, capacity_type="spot", labels={"poolpilot.io/bench": namespace}))
        stack.callback(lambda: [core.delete_node(name) for name in nodes])
        watcher = threading.Thread(target=_watch_pods, args=(core, namespace, moments, stop), daemon=True)
        watcher.start()
        stack.callback(stop.set)
        operator = OperatorProcess(pathlib.Path(os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG),
                                   namespaces=[namespace], verbose=False)
        operator.start()
        stack.callback(operator.stop)
        names = [f"pool-{i:03d}" for i in range(pools)]
        stack.callback(lambda: _delete_pools(custom, namespace, names))
        for name in names:
            spec = pool_spec(name, free_port())
            spec["metadata"]["namespace"] = namespace
            # Only the bench's own nodes: the cluster's default ones stay out of it.
            spec["spec"]["capacity"]["spot"] = {"nodeSelector": {"poolpilot.io/bench": namespace}}
            custom.create_namespaced_custom_object("poolpilot.io", "v1alpha1", namespace, "inferencepools", spec)

        def taint(node: str, add: bool = True) -> float:
            current = core.read_node(node).spec.taints or []
            kept = [{"key": t.key, "value": t.value, "effect": t.effect} for t in current if t.key != TAINT]
            wanted = kept + ([{"key": TAINT, "effect": "NoSchedule"}] if add else [])
            sent = time.monotonic()  # the notice is the write; the read before it is the bench's own
            core.patch_node(node, {"spec": {"taints": wanted or None}})
            return sent

        bench = World(moments, names, taint=taint, untaint=lambda node: taint(node, add=False),
                      endpointslices=False)
        _wait(lambda: len(bench.spot_pods()) == pools, "every pool's spot replica ready")
        yield bench


def _install_crd(api_client: Any) -> None:
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    crd = generate_crd()
    try:
        current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise
        extensions.create_custom_resource_definition(crd)
    else:
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    _wait(lambda: any(c.type == "Established" and c.status == "True" for c in (
        extensions.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or [])),
        "the CRD established")


def _watch_pods(core: Any, namespace: str, moments: Moments, stop: threading.Event) -> None:
    while not stop.is_set():
        stream = kubernetes.watch.Watch()
        try:
            for event in stream.stream(core.list_namespaced_pod, namespace, timeout_seconds=30):
                moments.on_pod(api_client_sanitize(core, event["object"]), deleted=event["type"] == "DELETED")
                if stop.is_set():
                    break
        except Exception:  # a watch that ends (timeout, a blip) is started again
            time.sleep(0.1)


def api_client_sanitize(core: Any, obj: Any) -> Manifest:
    sanitized: Manifest = core.api_client.sanitize_for_serialization(obj)
    return sanitized


def _delete_pools(custom: Any, namespace: str, names: list[str]) -> None:
    """Pools carry the operator's finalizer: delete them while the operator still runs."""
    for name in names:
        with contextlib.suppress(kubernetes.client.ApiException):
            custom.delete_namespaced_custom_object("poolpilot.io", "v1alpha1", namespace, "inferencepools", name)
    _wait(lambda: not custom.list_namespaced_custom_object("poolpilot.io", "v1alpha1", namespace,
                                                            "inferencepools")["items"], "the pools deleted")


def notify(world_: World, source: str, nodes: list[str]) -> dict[str, float]:
    """One notice per node, all at once (taints from 16 threads; EC2 events 10 to a PutEvents call, as
    many as AWS takes in one); returns when each was sent."""
    with concurrent.futures.ThreadPoolExecutor(NOTIFY_THREADS) as threads:
        if source == "taint":
            return dict(zip(nodes, threads.map(world_.taint, nodes), strict=True))
        assert world_.moto is not None
        events = world_.moto.client("events")

        def put(batch: list[str]) -> dict[str, float]:
            sent = time.monotonic()
            events.put_events(Entries=[{
                "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
                "Detail": json.dumps({"instance-id": instance_id(node), "instance-action": "terminate"}),
                "Resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id(node)}"]} for node in batch])
            return dict.fromkeys(batch, sent)

        batches = [nodes[i:i + PUT_EVENTS_BATCH] for i in range(0, len(nodes), PUT_EVENTS_BATCH)]
        return {node: sent for found in threads.map(put, batches) for node, sent in found.items()}


def measure(world_: World, source: str, count: int) -> tuple[list[float], list[float]]:
    """Notices for ``count`` spot replicas at once: the seconds to release and to leave routing, each."""
    doomed = dict(list(world_.spot_pods().items())[:count])
    by_node = notify(world_, source, sorted({node for _, node in doomed.values()}))  # one per node
    sent = {pod: by_node[node] for pod, (_, node) in doomed.items()}
    moments = world_.moments
    unrouted = moments.unrouted if world_.endpointslices else moments.released
    _wait(lambda: all(p in moments.released and p in unrouted for p in doomed), "every doomed replica out")
    # Let the drains finish and the replacements get into routing before the next round.
    _wait(lambda: len(world_.spot_pods()) >= len(world_.pools), "the replacements routed")
    if source == "taint":
        for node in {node for _, node in doomed.values()}:
            world_.untaint(node)
    return ([moments.released[p] - sent[p] for p in doomed], [unrouted[p] - sent[p] for p in doomed])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="single notices, one after another")
    parser.add_argument("--pools", type=int, default=100, help="pools in the storm, one notice each")
    parser.add_argument("--sources", default="taint,sqs")
    parser.add_argument("--servers", default="embedded,real",
                        help="embedded: the embedded API server; real: the control plane KUBECONFIG names (taints)")
    args = parser.parse_args(argv)
    rows = []
    if "real" in args.servers.split(","):
        with real_world(1) as single:
            released, routed_out = [], []
            for _ in range(args.trials):
                r, u = measure(single, "taint", 1)
                released += r
                routed_out += u
        rows.append(("one notice (taint, real)", len(released), released, routed_out))
        with real_world(args.pools) as storm:
            released, routed_out = measure(storm, "taint", args.pools)
        rows.append((f"storm: {args.pools} pools (taint, real)", len(released), released, routed_out))
    for source in args.sources.split(",") if "embedded" in args.servers.split(",") else ():
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
    print(f"{'scenario':<34} {'n':>4} {'replaced p50':>13} {'replaced p99':>13} {'unrouted p50':>13} "
          f"{'unrouted p99':>13}  goal p99 < {GOAL_P99_SECONDS:.0f} s")
    for name, n, released, unrouted in rows:
        verdict = "met" if max(percentile(released, 0.99), percentile(unrouted, 0.99)) < GOAL_P99_SECONDS else "MISSED"
        print(f"{name:<34} {n:>4} {statistics.median(released):>12.3f}s {percentile(released, 0.99):>12.3f}s "
              f"{statistics.median(unrouted):>12.3f}s {percentile(unrouted, 0.99):>12.3f}s  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
