"""The fake workload controller's Pods: scaling, readiness, rollouts, replacement, watches, kubectl."""

import asyncio
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import kubernetes
import pytest

from devkube import ApiError, DevCluster
from devkube.workloads import PodAddresses

NS = "team-a"
POOL = "poolpilot.io/pool"
NO_STATUS = kubernetes.client.V1PodStatus()


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=["default", NS]) as c:
        yield c


def deployment(name: str = "web", replicas: int = 2, pool: str = "x") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, POOL: pool}, "annotations": {"team": "llm"}},
                "spec": {
                    "containers": [
                        {"name": "vllm", "image": "vllm/vllm-openai:v0.6", "ports": [{"containerPort": 8000}]}
                    ]
                },
            },
        },
    }


def pods_of(cluster: DevCluster, name: str = "web") -> list[dict[str, Any]]:
    return cluster.pods(NS, {"app": name})


def names(pods: list[dict[str, Any]]) -> set[str]:
    return {pod["metadata"]["name"] for pod in pods}


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conditions.get("Ready") == "True"


def status_of(cluster: DevCluster, name: str = "web") -> dict[str, Any]:
    obj = cluster.get("deployments", NS, name)
    assert obj is not None
    status: dict[str, Any] = obj.get("status", {})
    return status


def settled(cluster: DevCluster, name: str = "web", *, pods: int, ready: int) -> Callable[[], bool]:
    """The Deployment's status was written for the current spec, with these counts, and its pods agree."""

    def check() -> bool:
        obj = cluster.get("deployments", NS, name)
        current = [pod for pod in pods_of(cluster, name) if pod.get("status")]
        status = (obj or {}).get("status", {})
        return (
            obj is not None
            and status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("replicas", 0) == pods == len(current)
            and status.get("readyReplicas", 0) == ready == sum(map(is_ready, current))
        )

    return check


def scale(cluster: DevCluster, replicas: int, name: str = "web") -> None:
    patch = json.dumps({"spec": {"replicas": replicas}})
    cluster.kubectl("patch", "deployment", name, "-n", NS, "--type=merge", "-p", patch)


def test_pods_follow_the_replicas_with_labels_owner_node_and_addresses(cluster: DevCluster) -> None:
    mark = cluster.mark()
    created = cluster.create("deployments", deployment(replicas=2))
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    pods = pods_of(cluster)
    template_hash = pods[0]["metadata"]["labels"]["pod-template-hash"]
    assert re.fullmatch(r"[bcdfghjklmnpqrstvwxz2456789]{10}", template_hash)
    for pod in pods:
        meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
        assert re.fullmatch(rf"web-{template_hash}-[bcdfghjklmnpqrstvwxz2456789]{{5}}", meta["name"])
        assert meta["labels"] == {"app": "web", POOL: "x", "pod-template-hash": template_hash}
        assert meta["annotations"] == {"team": "llm"}
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "web",
                "uid": created["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["creationTimestamp"]
        assert spec["nodeName"] in {node["metadata"]["name"] for node in cluster.nodes()}
        assert spec["containers"][0]["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
        assert status["phase"] == "Running" and status["startTime"]
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network("127.244.0.0/16")
        assert status["podIPs"] == [{"ip": status["podIP"]}]
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "PodScheduled": "True",
            "Initialized": "True",
            "ContainersReady": "True",
            "Ready": "True",
        }
        [container] = status["containerStatuses"]
        assert container["name"] == "vllm" and container["ready"] and container["started"]
        assert container["restartCount"] == 0 and "running" in container["state"]

    scale(cluster, 5)
    cluster.wait_until(settled(cluster, pods=5, ready=5))
    assert names(pods) < names(pods_of(cluster))  # scaling up keeps the existing pods
    addresses = [pod["status"]["podIP"] for pod in pods_of(cluster)]
    assert len(set(addresses)) == 5  # the default allocator hands out unique addresses

    scale(cluster, 1)
    cluster.wait_until(settled(cluster, pods=1, ready=1))
    assert len(pods_of(cluster)) == 1
    scale(cluster, 0)
    cluster.wait_until(settled(cluster, pods=0, ready=0))
    assert pods_of(cluster) == []
    # Only the client's writes are logged: the controller writes in-process.
    assert [(w.method, w.resource) for w in cluster.writes(since=mark)] == [("PATCH", "deployments")] * 3


def test_scale_down_deletes_not_ready_then_cheaper_then_newer_pods(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=0))
    created: list[str] = []  # oldest first
    for replicas in range(1, 6):
        scale(cluster, replicas)
        cluster.wait_until(settled(cluster, pods=replicas, ready=replicas))
        [new] = names(pods_of(cluster)) - set(created)
        created.append(new)
    a, b, c, d, e = created
    cluster.set_pod_ready(NS, a, False)
    cluster.wait_until(settled(cluster, pods=5, ready=4))
    cost = "controller.kubernetes.io/pod-deletion-cost"
    cluster.kubectl("annotate", "pod", a, "-n", NS, f"{cost}=100")  # not ready matters more than cost
    cluster.kubectl("annotate", "pod", c, "-n", NS, f"{cost}=-1")

    remaining = set(created)
    for replicas, expected_victim in [(4, a), (3, c), (2, e), (1, d)]:
        scale(cluster, replicas)
        cluster.wait_until(settled(cluster, pods=replicas, ready=replicas))
        remaining.discard(expected_victim)
        assert names(pods_of(cluster)) == remaining
    assert remaining == {b}


def test_set_pod_ready_flips_one_pod_and_the_deployment_follows(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    flipped, other = sorted(names(pods_of(cluster)))
    other_before = cluster.get("pods", NS, other)

    cluster.set_pod_ready(NS, flipped, False)
    cluster.wait_until(settled(cluster, pods=2, ready=1))
    pod = cluster.get("pods", NS, flipped)
    assert pod is not None and pod["status"]["phase"] == "Running"
    conditions = {c["type"]: c for c in pod["status"]["conditions"]}
    assert conditions["Ready"]["status"] == conditions["ContainersReady"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "ContainersNotReady"
    assert conditions["PodScheduled"]["status"] == "True"
    assert [c["ready"] for c in pod["status"]["containerStatuses"]] == [False]
    assert cluster.get("pods", NS, other) == other_before  # the other pod was not even rewritten
    status = status_of(cluster)
    assert (status["readyReplicas"], status["availableReplicas"], status["unavailableReplicas"]) == (1, 1, 1)

    cluster.set_pod_ready(NS, flipped, True)
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    assert "unavailableReplicas" not in status_of(cluster)
    with pytest.raises(ApiError) as missing:
        cluster.set_pod_ready(NS, "no-such-pod", True)
    assert missing.value.status == 404


def test_the_ready_cap_leaves_the_other_pods_running_but_not_ready(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=3))
    cluster.wait_until(settled(cluster, pods=3, ready=3))
    cluster.set_deployment_ready(NS, "web", ready=1)
    cluster.wait_until(settled(cluster, pods=3, ready=1))
    pods = pods_of(cluster)
    assert {pod["status"]["phase"] for pod in pods} == {"Running"}
    assert sorted(pod["status"]["containerStatuses"][0]["ready"] for pod in pods) == [False, False, True]
    assert {(c["type"], c["status"]) for c in status_of(cluster)["conditions"]} >= {("Available", "False")}

    # A pod forced Ready counts beyond the cap, and the other pods keep their state.
    [ready] = [pod for pod in pods if is_ready(pod)]
    [unready, _] = [pod["metadata"]["name"] for pod in pods if not is_ready(pod)]
    cluster.set_pod_ready(NS, unready, True)
    cluster.wait_until(settled(cluster, pods=3, ready=2))
    assert cluster.get("pods", NS, ready["metadata"]["name"]) == ready
    # Lifting the cap makes all of them Ready.
    cluster.set_deployment_ready(NS, "web", ready=None)
    cluster.wait_until(settled(cluster, pods=3, ready=3))
    # Scaling up under a cap adds pods that are not Ready.
    cluster.set_deployment_ready(NS, "web", ready=3)
    scale(cluster, 4)
    cluster.wait_until(settled(cluster, pods=4, ready=3))


def test_pods_become_ready_after_the_ready_delay() -> None:
    with DevCluster.in_thread(namespaces=[NS], pod_ready_delay=0.5) as cluster:
        started = time.monotonic()
        cluster.create("deployments", deployment(replicas=2))
        cluster.wait_until(settled(cluster, pods=2, ready=0), timeout=5)
        status = status_of(cluster)
        assert (status["replicas"], status["unavailableReplicas"]) == (2, 2)
        assert {pod["status"]["phase"] for pod in pods_of(cluster)} == {"Running"}
        cluster.wait_until(settled(cluster, pods=2, ready=2), timeout=5)
        assert time.monotonic() - started >= 0.45


def test_a_template_change_replaces_all_pods_at_once(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=3))
    cluster.wait_until(settled(cluster, pods=3, ready=3))
    old = pods_of(cluster)
    old_hash = old[0]["metadata"]["labels"]["pod-template-hash"]
    patch = {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}}
    cluster.kubectl("patch", "deployment", "web", "-n", NS, "--type=merge", "-p", json.dumps(patch))
    cluster.wait_until(settled(cluster, pods=3, ready=3))
    new = pods_of(cluster)
    new_hash = new[0]["metadata"]["labels"]["pod-template-hash"]
    assert new_hash != old_hash
    assert not names(old) & names(new)
    assert {pod["metadata"]["labels"]["pod-template-hash"] for pod in new} == {new_hash}
    assert all(pod["metadata"]["name"].startswith(f"web-{new_hash}-") for pod in new)
    assert all(pod["metadata"]["annotations"] == {"team": "llm", "restartedAt": "now"} for pod in new)
    status = status_of(cluster)
    assert status["updatedReplicas"] == 3 and status["observedGeneration"] == 2
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["message"] == f'ReplicaSet "web-{new_hash}" has successfully progressed.'


def test_killed_and_deleted_pods_are_replaced(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    before = {pod["metadata"]["name"]: pod["status"]["podIP"] for pod in pods_of(cluster)}
    victim, survivor = sorted(before)

    mark = cluster.mark()
    killed = cluster.kill_pod(NS, victim)
    assert killed["metadata"]["name"] == victim and cluster.get("pods", NS, victim) is None
    cluster.wait_until(lambda: len(pods_of(cluster)) == 2 and settled(cluster, pods=2, ready=2)())
    after = {pod["metadata"]["name"]: pod["status"]["podIP"] for pod in pods_of(cluster)}
    [replacement] = set(after) - {survivor}
    assert replacement != victim and after[replacement] not in before.values()
    assert cluster.writes(since=mark) == []  # kill_pod is in-process too

    cluster.kubectl("delete", "pod", survivor, "-n", NS)
    cluster.wait_until(lambda: survivor not in names(pods_of(cluster)) and len(pods_of(cluster)) == 2)
    cluster.wait_until(settled(cluster, pods=2, ready=2))


def test_deleting_the_deployment_or_namespace_deletes_the_pods_for_good(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    cluster.kubectl("delete", "deployment", "web", "-n", NS)
    assert pods_of(cluster) == []  # garbage-collected with the owner, at once
    time.sleep(0.2)
    assert pods_of(cluster) == []  # and not replaced

    cluster.create("namespaces", {"metadata": {"name": "doomed"}})
    cluster.create(
        "deployments", {**deployment(replicas=2), "metadata": {"name": "web", "namespace": "doomed"}}
    )
    cluster.wait_until(lambda: len(cluster.pods("doomed")) == 2)
    cluster.kubectl("delete", "namespace", "doomed")
    cluster.wait_until(lambda: cluster.get("namespaces", None, "doomed") is None)
    time.sleep(0.2)
    assert cluster.pods("doomed") == []
    assert cluster.workloads is not None and cluster.workloads.errors == []


def test_a_pod_relabelled_out_of_the_selector_is_released_and_replaced(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    kept, released = sorted(names(pods_of(cluster)))
    # A label outside the selector (e.g. a serving flag) leaves the pod owned.
    cluster.kubectl("label", "pod", kept, "-n", NS, f"{POOL}=drained", "--overwrite")
    time.sleep(0.2)
    assert names(pods_of(cluster)) == {kept, released}
    # A label of the selector makes the controller let go of the pod and replace it.
    cluster.kubectl("label", "pod", released, "-n", NS, "app=debug", "--overwrite")
    cluster.wait_until(lambda: len(pods_of(cluster)) == 2 and released not in names(pods_of(cluster)))
    orphan = cluster.get("pods", NS, released)
    assert orphan is not None and "ownerReferences" not in orphan["metadata"]
    cluster.wait_until(settled(cluster, pods=2, ready=2))


def test_address_and_node_callbacks_are_used_and_addresses_may_repeat() -> None:
    calls: list[tuple[str, str, str]] = []

    def pod_ip(namespace: str, pod: str, deployment: str) -> str:
        calls.append((namespace, pod, deployment))
        return "127.0.0.5"

    with DevCluster.in_thread(
        namespaces=[NS], pod_ip=pod_ip, pod_node_name=lambda ns, pod, deployment: f"node-of-{deployment}"
    ) as cluster:
        cluster.create("deployments", deployment(replicas=2))
        cluster.wait_until(settled(cluster, pods=2, ready=2))
        pods = pods_of(cluster)
        assert [pod["status"]["podIP"] for pod in pods] == ["127.0.0.5", "127.0.0.5"]
        assert [pod["spec"]["nodeName"] for pod in pods] == ["node-of-web", "node-of-web"]
        assert sorted(calls) == sorted((NS, name, "web") for name in names(pods))
        cluster.set_pod_ready(NS, pods[0]["metadata"]["name"], False)
        cluster.wait_until(settled(cluster, pods=2, ready=1))
        assert len(calls) == 2  # one address per pod, kept across status updates


def test_without_pods_the_status_comes_from_the_spec() -> None:
    with DevCluster.in_thread(namespaces=[NS], fake_pods=False) as cluster:
        cluster.create("deployments", deployment(replicas=2))
        cluster.wait_until(lambda: status_of(cluster).get("readyReplicas") == 2)
        assert cluster.pods(NS) == []
        with pytest.raises(RuntimeError):
            cluster.set_pod_ready(NS, "any", True)


def test_kubectl_get_pods_with_a_label_selector(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment("a", replicas=2, pool="x"))
    cluster.create("deployments", deployment("b", replicas=1, pool="y"))
    cluster.wait_until(settled(cluster, "a", pods=2, ready=2))
    cluster.wait_until(settled(cluster, "b", pods=1, ready=1))
    pods_a = pods_of(cluster, "a")
    cluster.set_pod_ready(NS, pods_a[0]["metadata"]["name"], False)
    cluster.wait_until(settled(cluster, "a", pods=2, ready=1))

    output = cluster.kubectl("get", "pods", "-n", NS, "-l", f"{POOL}=x").stdout
    rows = [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert sorted(row[:4] for row in rows[1:]) == sorted(
        [pod["metadata"]["name"], ready, "Running", "0"]
        for pod, ready in zip(pods_a, ["0/1", "1/1"], strict=True)
    )
    wide = cluster.kubectl("get", "pods", "-n", NS, "-l", f"{POOL}=y", "-o", "wide").stdout
    header, row = ([cell for cell in re.split(r"\s{2,}", line.strip())] for line in wide.strip().splitlines())
    [pod_b] = pods_of(cluster, "b")
    assert header[5:7] == ["IP", "NODE"]
    assert row[5:7] == [pod_b["status"]["podIP"], pod_b["spec"]["nodeName"]]


def test_a_client_watch_with_a_label_selector_sees_the_pods_lifecycle(cluster: DevCluster) -> None:
    api_client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
    try:
        core = kubernetes.client.CoreV1Api(api_client)
        start = core.list_namespaced_pod(NS, label_selector=f"{POOL}=x").metadata.resource_version
        cluster.create("deployments", deployment("a", replicas=1, pool="x"))
        cluster.create("deployments", deployment("b", replicas=1, pool="y"))
        cluster.wait_until(settled(cluster, "a", pods=1, ready=1))
        [first] = names(pods_of(cluster, "a"))
        cluster.kill_pod(NS, first)
        cluster.wait_until(lambda: names(pods_of(cluster, "a")) - {first})
        cluster.wait_until(settled(cluster, "a", pods=1, ready=1))
        [second] = names(pods_of(cluster, "a"))
        watch = kubernetes.watch.Watch()
        events = [
            (event["type"], event["object"].metadata.name, (event["object"].status or NO_STATUS).pod_ip)
            for event in watch.stream(
                core.list_namespaced_pod,
                NS,
                label_selector=f"{POOL}=x",
                resource_version=start,
                timeout_seconds=1,
                _request_timeout=10,
            )
        ]
    finally:
        api_client.close()
    assert [(kind, name) for kind, name, _ in events] == [
        ("ADDED", first),
        ("MODIFIED", first),
        ("DELETED", first),
        ("ADDED", second),
        ("MODIFIED", second),
    ]
    assert events[0][2] is None and events[1][2] is not None  # the address comes with the running status


@pytest.mark.asyncio
async def test_a_live_kopf_style_watch_with_a_label_selector() -> None:
    async with DevCluster(namespaces=[NS]) as cluster, aiohttp.ClientSession(cluster.url) as session:
        params = {"watch": "true", "allowWatchBookmarks": "true", "labelSelector": f"{POOL}=x"}
        async with session.get(f"/api/v1/namespaces/{NS}/pods", params=params) as response:
            # The helpers run directly on the cluster's own loop here.
            cluster.create("deployments", deployment("b", replicas=1, pool="y"))
            cluster.create("deployments", deployment("a", replicas=1, pool="x"))
            seen: list[tuple[str, str, bool]] = []

            async def read_until(kind: str, ready: bool) -> str:
                while True:
                    event = json.loads(await response.content.readline())
                    pod = event["object"]
                    assert pod["metadata"]["labels"][POOL] == "x"
                    seen.append((event["type"], pod["metadata"]["name"], is_ready(pod)))
                    if event["type"] == kind and is_ready(pod) == ready:
                        return str(pod["metadata"]["name"])

            async with asyncio.timeout(5):
                first = await read_until("MODIFIED", ready=True)
                cluster.set_pod_ready(NS, first, False)
                await read_until("MODIFIED", ready=False)
                cluster.kill_pod(NS, first)
                await read_until("DELETED", ready=False)
                second = await read_until("MODIFIED", ready=True)
    assert seen == [
        ("ADDED", first, False),
        ("MODIFIED", first, True),
        ("MODIFIED", first, False),
        ("DELETED", first, False),
        ("ADDED", second, False),
        ("MODIFIED", second, True),
    ]


def test_the_released_pod_outlives_its_former_owner_and_the_new_ones_do_not(cluster: DevCluster) -> None:
    """The store's owner index follows ownerReferences as they change, not as they were at creation."""
    cluster.create("deployments", deployment(replicas=2))
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    released = sorted(names(pods_of(cluster)))[0]
    cluster.kubectl("label", "pod", released, "-n", NS, "app=debug", "--overwrite")
    cluster.wait_until(settled(cluster, pods=2, ready=2))
    cluster.kubectl("delete", "deployment", "web", "-n", NS)
    assert pods_of(cluster) == []
    orphan = cluster.get("pods", NS, released)
    assert orphan is not None and orphan["metadata"]["labels"]["app"] == "debug"


def test_a_pod_address_in_use_is_never_handed_out_again(cluster: DevCluster) -> None:
    """Also an address someone else gave a pod (a test, another controller) is in use."""
    taken = "127.244.0.3"
    cluster.put_object("pods", {"metadata": {"name": "squatter", "namespace": NS},
                                "spec": {"containers": [{"name": "c", "image": "i"}]},
                                "status": {"phase": "Running", "podIP": taken, "podIPs": [{"ip": taken}]}})
    cluster.create("deployments", deployment(replicas=6))
    cluster.wait_until(settled(cluster, pods=6, ready=6))
    first = {pod["status"]["podIP"] for pod in pods_of(cluster)}
    assert len(first) == 6 and taken not in first
    scale(cluster, 3)
    cluster.wait_until(settled(cluster, pods=3, ready=3))
    scale(cluster, 6)
    cluster.wait_until(settled(cluster, pods=6, ready=6))
    addresses = [pod["status"]["podIP"] for pod in pods_of(cluster)]
    assert len(set(addresses)) == 6 and taken not in addresses
    assert not (set(addresses) - first) & first  # freed addresses come round only after the whole range


def test_pod_addresses_go_round_the_whole_range_before_reuse_and_refuse_when_full() -> None:
    addresses = PodAddresses("10.0.0.0/29")  # 6 hosts
    handed = [addresses.allocate((NS, f"p{i}")) for i in range(3)]
    for i, address in enumerate(handed):
        addresses.track((NS, f"p{i}"), address)
    assert handed == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert addresses.allocate((NS, "p0")) == "10.0.0.1"  # a pod keeps what it holds
    addresses.forget((NS, "p0"))
    assert addresses.allocate((NS, "q")) == "10.0.0.4"  # not the freed 10.0.0.1 yet
    assert addresses.allocate((NS, "q")) == "10.0.0.4"  # reserved until its status shows it
    addresses.track((NS, "q"), "10.0.0.4")
    addresses.track((NS, "other"), "10.0.0.5")  # set by someone else
    assert addresses.allocate((NS, "r")) == "10.0.0.6"
    addresses.track((NS, "r"), "10.0.0.6")
    assert addresses.allocate((NS, "s")) == "10.0.0.1"  # round the range: the freed one
    addresses.track((NS, "s"), "10.0.0.1")
    with pytest.raises(RuntimeError, match="full"):
        addresses.allocate((NS, "t"))
