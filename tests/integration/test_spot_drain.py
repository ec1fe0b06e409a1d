"""A spot reclaim, end to end: moto's SQS and EventBridge, the embedded API server with its nodes, kubelet,
EndpointSlices and Eviction API, fake vLLM replicas bound to the pods, and the real operator process.

The load generator picks each request's replica from the Service's EndpointSlices, as kube-proxy
would, and streams completions through the reclaim of two replicas on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from controller.api.crd import generate_crd
from devkube.aws import InterruptionQueue, MotoServer, interruption_queue
from devkube.cluster import DevCluster
from devkube.endpointslices import ready_endpoints
from devkube.fakevllm import FakeVLLMFleet, Outcome
from devkube.loadgen import LoadReport, run_load
from devkube.localrun import free_port
from devkube.nodes import NodeSpec, instance_id
from devkube.wiring import PodReplicas
from tests.support.backends import Backend, open_backend
from tests.support.kube import condition
from tests.support.operator_metrics import scrape, value
from tests.support.scenarios import wait_for_quiet
from tests.support.waiting import eventually

Manifest = dict[str, Any]
NAMESPACE = "llm"
DOOMED_NODE = "gpu-spot-a"
POOL: Manifest = {
    "model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
    "replicas": {"min": 3, "max": 3},  # the scaler holds still: what changes is the drain's doing
    "scaling": {"evaluationIntervalSeconds": 1},
    "capacity": {"provider": "karpenter", "onDemandBase": 1, "spotPercentage": 100,
                 "spotUnavailableAfterSeconds": 10},
    "interruption": {"drainSeconds": 20, "preStopSeconds": 2},  # vLLM --shutdown-timeout=13
}
pytestmark = pytest.mark.embedded_only("needs the embedded world's kubelet, EndpointSlices and write log")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def queue(moto: MotoServer, request: pytest.FixtureRequest) -> InterruptionQueue:
    return interruption_queue(moto, name=f"drain-{abs(hash(request.node.name)) % 10**8}")


@pytest.fixture
def backend() -> Iterator[Backend]:
    # One spot node to start with, so both spot replicas share it; the replacements get the second.
    nodes = [NodeSpec("gpu-on-demand-a", zone="us-east-1a"), NodeSpec(DOOMED_NODE, capacity_type="spot")]
    with open_backend("embedded", None, namespace=NAMESPACE, crds=[generate_crd()],
                      dev_options={"nodes": nodes, "pod_ready_delay": 0.5}) as opened:
        yield opened


@pytest.fixture
def cluster(backend: Backend) -> DevCluster:
    assert backend.dev is not None
    return backend.dev


@pytest.fixture
def fleet() -> Iterator[FakeVLLMFleet]:
    with FakeVLLMFleet.in_thread(0, port=free_port()) as running:
        running.set_all(waiting=0, running=0, kv=0.2, tokens_per_second=20)
        yield running


@pytest.fixture
def replicas(backend: Backend, cluster: DevCluster, fleet: FakeVLLMFleet) -> Iterator[PodReplicas]:
    with PodReplicas(fleet, backend.pods, attach=cluster.attach_container) as wiring:
        yield wiring


def start_operator(backend: Backend, moto: MotoServer, queue: InterruptionQueue) -> Any:
    return backend.operator(env={**moto.environment(), "POOLPILOT_SQS_QUEUE_URL": queue.url,
                                 "POOLPILOT_SQS_WAIT_SECONDS": "1"})


def pool_pods(cluster: DevCluster) -> list[Manifest]:
    return [p for p in cluster.list("v1/pods", NAMESPACE)
            if (p["metadata"].get("labels") or {}).get("poolpilot.io/pool") == "qwen"]


def on_node(cluster: DevCluster, node: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pool_pods(cluster) if p["spec"].get("nodeName") == node)


def settle(backend: Backend, cluster: DevCluster, fleet: FakeVLLMFleet) -> None:
    backend.kube.create_pool(NAMESPACE, "qwen", {**POOL, "model": {**POOL["model"], "port": fleet.port}})
    eventually(lambda: backend.kube.get_pool(NAMESPACE, "qwen"),
               lambda p: (condition(p, "Ready") or {}).get("status") == "True", timeout=30, what="the pool Ready")
    eventually(lambda: ready_endpoints(cluster, NAMESPACE, "qwen"), lambda e: len(e) == 3, timeout=20,
               what="three ready endpoints")
    assert len(on_node(cluster, DOOMED_NODE)) == 2
    cluster.add_node(NodeSpec("gpu-spot-b", capacity_type="spot", zone="us-east-1b"))


def spot_warning(moto: MotoServer, node: str) -> None:
    answer = moto.client("events").put_events(Entries=[{
        "Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning",
        "Detail": json.dumps({"instance-id": instance_id(node), "instance-action": "terminate"}),
        "Resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id(node)}"]}])
    assert answer["FailedEntryCount"] == 0


def events(backend: Backend, reason: str) -> list[str]:
    return [e["message"] for e in backend.kube.events_for(NAMESPACE, "qwen") if e["reason"] == reason]


class BackgroundLoad:
    """The load generator on its own thread and loop, picking endpoints from the EndpointSlices."""

    def __init__(self, cluster: DevCluster, *, requests: int, rate: float, max_tokens: int) -> None:
        self.report: LoadReport | None = None

        async def endpoints() -> list[tuple[str, int]]:
            return [(e.ip, e.port) for e in await asyncio.to_thread(ready_endpoints, cluster, NAMESPACE, "qwen")]

        def run() -> None:
            self.report = asyncio.run(run_load(endpoints, requests=requests, rate=rate, max_tokens=max_tokens,
                                               timeout_seconds=60))

        self._thread = threading.Thread(target=run, name="load", daemon=True)
        self._thread.start()

    def wait(self) -> LoadReport:
        self._thread.join(timeout=120)
        assert self.report is not None, "the load generator did not finish"
        return self.report


def test_a_spot_warning_for_a_node_with_two_replicas_replaces_reroutes_and_drains_them_losing_no_request(
        backend: Backend, cluster: DevCluster, moto: MotoServer, queue: InterruptionQueue,
        fleet: FakeVLLMFleet, replicas: PodReplicas) -> None:
    operator = start_operator(backend, moto, queue)
    settle(backend, cluster, fleet)
    # A message that is no EC2 event, first in the queue: counted as rejected, and the notice after it still acts.
    moto.client("sqs").send_message(QueueUrl=queue.url, MessageBody="{not json")
    doomed = on_node(cluster, DOOMED_NODE)
    doomed_ips = {p["status"]["podIP"] for p in pool_pods(cluster) if p["metadata"]["name"] in doomed}
    mark = cluster.mark()
    doomed_replicas = replicas_on(cluster, replicas, DOOMED_NODE)
    assert len(doomed_replicas) == 2
    # 120 streaming requests of 40 tokens at 20 tokens/s (2 s each), 6 a second for 20 s: some are in
    # flight on the doomed replicas when the warning comes, and must finish there.
    load = BackgroundLoad(cluster, requests=120, rate=6, max_tokens=40)
    eventually(lambda: sum(r.running for r in replicas_on(cluster, replicas, DOOMED_NODE)), lambda n: n > 0,
               timeout=10, interval=0.05, what="requests in flight on the doomed replicas")
    spot_warning(moto, DOOMED_NODE)
    # The reclaim itself, while the load still runs: the instance goes (its pods are killed at once) as
    # soon as the drain is done, or after 12 s at the latest. Without the drain, requests would be cut.
    with contextlib.suppress(AssertionError):
        eventually(lambda: on_node(cluster, DOOMED_NODE), lambda names: names == [], timeout=12,
                   what="the doomed replicas gone")
    cluster.remove_node(DOOMED_NODE)
    report = load.wait()
    assert report.failed == {}, report.summary
    assert report.completed == 120
    assert any(r.endpoint and r.endpoint[0] in doomed_ips for r in report.records)

    # The doomed replicas finished what they held and were neither cut nor sent requests while draining;
    # exactly two replacements run on the other spot node; the Deployment's count never moved.
    assert sum(replica.completions[Outcome.FINISHED] for replica in doomed_replicas) > 0
    for replica in doomed_replicas:
        assert replica.completions[Outcome.ABORTED] == replica.completions[Outcome.REJECTED] == 0, replica.completions
    spot = [p for p in pool_pods(cluster) if p["metadata"]["labels"].get("poolpilot.io/capacity-type") == "spot"]
    assert len(spot) == 2 and all(p["spec"]["nodeName"] == "gpu-spot-b" for p in spot)
    deployment = backend.kube.get("Deployment", NAMESPACE, "qwen-spot")
    assert deployment is not None and deployment["spec"]["replicas"] == 2

    # In order: each doomed pod was released (out of its Deployment and out of routing) before it was evicted.
    writes = [(w.method, w.resource, w.subresource, w.name) for w in cluster.writes(mark)
              if w.resource == "pods" and w.name in doomed]
    for name in doomed:
        release = writes.index(("PATCH", "pods", None, name))
        eviction = writes.index(("POST", "pods", "eviction", name))
        assert release < eviction, writes
    assert [w for w in cluster.writes(mark, resource="deployments")] == []

    pool = eventually(lambda: backend.kube.get_pool(NAMESPACE, "qwen"),
                      lambda p: p is not None and [r["outcome"] for r in p["status"].get("interruptions", [])
                                                   ] == ["Drained"] * 2, timeout=20, what="both drains recorded")
    assert (condition(pool, "SpotDisrupted") or {}).get("reason") == "NoDisruption"
    assert len(events(backend, "SpotInterruptionNotice")) == 2 and len(events(backend, "ReplacementOrdered")) == 2
    drained = eventually(lambda: events(backend, "ReplicaDrained"), lambda m: len(m) == 2, what="ReplicaDrained")
    assert all("before its deadline" in m for m in drained), drained
    wait_for_quiet()  # a duplicate would come now: an evaluation starting from a status older than its last write
    assert len(events(backend, "ReplicaDrained")) == 2 and len(events(backend, "SpotInterruptionNotice")) == 2

    # What on-call's dashboard shows of it: two notices from SQS, two drains within the deadline, one
    # message rejected.
    samples = scrape(operator)
    assert value(samples, "poolpilot_notices_total", kind="spot-interruption", source="aws-sqs") == 2
    assert value(samples, "poolpilot_drain_duration_seconds_count", capacity_type="spot") == 2
    assert value(samples, "poolpilot_drain_deadline_missed_total", namespace=NAMESPACE, pool="qwen") is None
    assert value(samples, "poolpilot_interruption_messages_total", result="rejected") == 1
    assert (value(samples, "poolpilot_interruption_messages_total", result="notice") or 0) >= 1


def replicas_on(cluster: DevCluster, wiring: PodReplicas, node: str) -> list[Any]:
    ips = {p["status"].get("podIP") for p in pool_pods(cluster) if p["spec"].get("nodeName") == node}
    return [replica for key, replica in wiring.replicas_by_pod().items() if key[2] in ips]


def interruption_records(backend: Backend) -> list[Manifest]:
    pool = backend.kube.get_pool(NAMESPACE, "qwen") or {}
    return list((pool.get("status") or {}).get("interruptions") or [])


def blocking_budget(backend: Backend) -> None:
    """Somebody else's budget over the draining replicas: every eviction of them gets a 429."""
    backend.kube.policy.create_namespaced_pod_disruption_budget(NAMESPACE, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "hold-drains"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"poolpilot.io/drain": "draining"}}}})


def test_a_refused_eviction_is_retried_and_a_restart_mid_drain_orders_no_second_replacement(
        backend: Backend, cluster: DevCluster, moto: MotoServer, queue: InterruptionQueue,
        fleet: FakeVLLMFleet, replicas: PodReplicas) -> None:
    operator = start_operator(backend, moto, queue)
    settle(backend, cluster, fleet)
    blocking_budget(backend)
    doomed = on_node(cluster, DOOMED_NODE)
    before = {p["metadata"]["name"] for p in pool_pods(cluster)}
    cluster.taint_node(DOOMED_NODE, "karpenter.sh/disrupted", effect="NoSchedule")  # Karpenter's notice

    def records() -> list[Manifest]:
        return interruption_records(backend)

    blocked = eventually(records, lambda r: len(r) == 2 and all(x["evictionAttempts"] >= 2 for x in r),
                         timeout=20, what="evictions refused and retried")
    assert all(x["lastEvictionResult"].startswith("blocked") and "hold-drains" in x["lastEvictionResult"]
               for x in blocked), blocked
    assert all(x["source"] == "node-taint" and x["kind"] == "node-disruption" for x in blocked)

    operator.restart()  # killed mid-drain: the drain state is on the pods and in the status
    eventually(records, lambda r: all(x["evictionAttempts"] > y["evictionAttempts"] for x, y in zip(r, blocked,
                                                                                                   strict=True)),
               timeout=20, what="the restarted operator retrying the same drains")
    created = {p["metadata"]["name"] for p in pool_pods(cluster)} - before
    assert len(created) == 2, created  # one replacement per doomed replica, not two
    assert len(events(backend, "ReplacementOrdered")) == 2

    backend.kube.policy.delete_namespaced_pod_disruption_budget("hold-drains", NAMESPACE)
    eventually(lambda: on_node(cluster, DOOMED_NODE), lambda names: names == [], timeout=30,
               what="the doomed replicas evicted once the budget allows")
    assert set(doomed).isdisjoint(p["metadata"]["name"] for p in pool_pods(cluster))
    eventually(records, lambda r: [x["outcome"] for x in r] == ["Drained", "Drained"], what="drains recorded")


def test_spot_replicas_without_a_node_move_their_share_to_on_demand_and_back(
        backend: Backend, cluster: DevCluster, moto: MotoServer, queue: InterruptionQueue,
        fleet: FakeVLLMFleet, replicas: PodReplicas) -> None:
    start_operator(backend, moto, queue)
    settle(backend, cluster, fleet)
    for node in (DOOMED_NODE, "gpu-spot-b"):
        cluster.cordon(node)
    for name in on_node(cluster, DOOMED_NODE):
        cluster.kill_pod(NAMESPACE, name)  # reclaimed; their replacements find no spot node

    def split() -> tuple[int, int]:
        spot = backend.kube.get("Deployment", NAMESPACE, "qwen-spot") or {}
        on_demand = backend.kube.get("Deployment", NAMESPACE, "qwen-on-demand") or {}
        return spot.get("spec", {}).get("replicas"), on_demand.get("spec", {}).get("replicas")

    eventually(split, lambda s: s == (1, 2), timeout=30, what="the spot share on on-demand, one spot probe")
    pool = backend.kube.get_pool(NAMESPACE, "qwen")
    assert (condition(pool, "SpotDisrupted") or {}).get("reason") == "SpotCapacityUnavailable"
    assert pool is not None and pool["status"]["spot"]["movedReplicas"] == 1
    # Kopf posts Events from a queue: one may trail the change it describes by a moment.
    eventually(lambda: len(events(backend, "SpotCapacityUnavailable")),
               lambda n: n == 1, what="one SpotCapacityUnavailable Event")
    cluster.uncordon("gpu-spot-b")  # spot capacity is back: the probe gets a node
    eventually(split, lambda s: s == (2, 1), timeout=30, what="the share back on spot")
    # Kopf posts Events from a queue: one may trail the change it describes by a moment.
    eventually(lambda: len(events(backend, "SpotCapacityRestored")),
               lambda n: n == 1, what="one SpotCapacityRestored Event")
    pool = backend.kube.get_pool(NAMESPACE, "qwen")
    assert pool is not None and "spot" not in pool["status"]
    assert (condition(pool, "SpotDisrupted") or {}).get("reason") == "NoDisruption"
