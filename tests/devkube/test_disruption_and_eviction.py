"""PodDisruptionBudget status (the stand-in disruption controller), the Eviction API and kubectl drain."""

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from devkube import DevCluster
from devkube.disruption import scaled_value
from devkube.kubelet import Container
from tests.support.tools import kubectl_binary

NS = "team-a"
SPOT_SELECTOR = {"karpenter.sh/capacity-type": "spot"}


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=["default", NS], kubectl_binary=kubectl_binary()) as c:
        yield c


def deployment(name: str = "web", replicas: int = 3, **pod_spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "vllm", "image": "vllm"}],
                                  "terminationGracePeriodSeconds": 5, **pod_spec}},
        },
    }


def budget(name: str = "web", app: str = "web", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": app}}, **spec}}


def live_pods(cluster: DevCluster, app: str = "web") -> list[dict[str, Any]]:
    return [p for p in cluster.pods(NS, {"app": app}) if not p["metadata"].get("deletionTimestamp")]


def ready_pods(cluster: DevCluster, count: int, app: str = "web") -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        pods = live_pods(cluster, app)
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        return ready if len(pods) == count == len(ready) else None

    return cluster.wait_until(check)


def budget_status(cluster: DevCluster, name: str = "web", **expected: Any) -> dict[str, Any]:
    """Wait until the PDB's status has these values; return it."""

    def check() -> dict[str, Any] | None:
        obj = cluster.get("poddisruptionbudgets", NS, name) or {}
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj.get("metadata", {}).get("generation")
        return status if current and all(status.get(k) == v for k, v in expected.items()) else None

    return cluster.wait_until(check)


def core_api(cluster: DevCluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(cluster.kubeconfig_path)))


def eviction(name: str, **delete_options: Any) -> kubernetes.client.V1Eviction:
    return kubernetes.client.V1Eviction(
        metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=NS),
        delete_options=kubernetes.client.V1DeleteOptions(**delete_options) if delete_options else None,
    )


@pytest.mark.parametrize(
    ("value", "total", "expected"), [(2, 10, 2), ("50%", 3, 2), ("34%", 3, 2), ("0%", 3, 0), ("100%", 3, 3)]
)
def test_percentages_scale_rounding_up(value: int | str, total: int, expected: int) -> None:
    assert scaled_value(value, total, round_up=True) == expected


def test_a_budget_counts_expected_healthy_and_allowed_pods(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=3))
    pods = ready_pods(cluster, 3)
    cluster.create("poddisruptionbudgets", budget(minAvailable=2))
    status = budget_status(cluster, expectedPods=3, currentHealthy=3, desiredHealthy=2, disruptionsAllowed=1)
    [allowed] = status["conditions"]
    assert (allowed["type"], allowed["status"], allowed["reason"]) == ("DisruptionAllowed", "True", "SufficientPods")
    assert allowed["observedGeneration"] == 1 and allowed["lastTransitionTime"]
    cluster.set_pod_ready(NS, pods[0]["metadata"]["name"], False)
    status = budget_status(cluster, currentHealthy=2, disruptionsAllowed=0)
    assert [(c["status"], c["reason"]) for c in status["conditions"]] == [("False", "InsufficientPods")]
    cluster.kubectl("patch", "pdb", "web", "-n", NS, "--type=merge",
                    "-p", json.dumps({"spec": {"minAvailable": None, "maxUnavailable": "50%"}}))
    # 50% of 3 rounds up to 2 unavailable: 1 must stay healthy, 2 are, so 1 may go.
    budget_status(cluster, expectedPods=3, desiredHealthy=1, currentHealthy=2, disruptionsAllowed=1,
                  observedGeneration=2)
    cluster.kubectl("patch", "pdb", "web", "-n", NS, "--type=merge",
                    "-p", json.dumps({"spec": {"maxUnavailable": None, "minAvailable": "50%"}}))
    budget_status(cluster, desiredHealthy=2, currentHealthy=2, disruptionsAllowed=0)


def test_the_python_client_evicts_a_pod_within_the_budget(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    first, _ = ready_pods(cluster, 2)
    cluster.create("poddisruptionbudgets", budget(minAvailable=1))
    budget_status(cluster, disruptionsAllowed=1)
    name = first["metadata"]["name"]
    async def never_exits() -> None:
        await asyncio.Event().wait()

    cluster.attach_container(NS, name, Container(on_sigterm=never_exits))  # holds it Terminating
    core_api(cluster).create_namespaced_pod_eviction(name, NS, eviction(name, grace_period_seconds=20))
    evicted = cluster.get("pods", NS, name)
    assert evicted is not None and evicted["metadata"]["deletionGracePeriodSeconds"] == 20
    [target] = [c for c in evicted["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert (target["status"], target["reason"], target["message"]) == (
        "True", "EvictionByEvictionAPI", "Eviction API: evicting")
    assert cluster.writes(resource="pods", subresource="eviction")[-1].status == 201
    cluster.kill_pod(NS, name)


def test_an_exhausted_budget_refuses_with_the_real_cause(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    [pod, _] = ready_pods(cluster, 2)
    cluster.create("poddisruptionbudgets", budget(minAvailable=2))
    budget_status(cluster, desiredHealthy=2, currentHealthy=2, disruptionsAllowed=0)
    with pytest.raises(ApiException) as refused:
        core_api(cluster).create_namespaced_pod_eviction(pod["metadata"]["name"], NS, eviction(pod["metadata"]["name"]))
    assert refused.value.status == 429
    body = json.loads(refused.value.body)
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"] == [
        {"reason": "DisruptionBudget", "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}
    ]
    assert cluster.get("pods", NS, pod["metadata"]["name"]) is not None


def test_an_eviction_spends_a_disruption_and_records_the_pod(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=3))
    pods = ready_pods(cluster, 3)
    cluster.create("poddisruptionbudgets", budget(maxUnavailable=1))
    budget_status(cluster, disruptionsAllowed=1)
    name = pods[0]["metadata"]["name"]

    def evict_and_look() -> tuple[dict[str, Any], dict[str, Any]]:
        # In one step on the cluster's loop: the budget as the eviction left it, before its controller looks.
        result = cluster.evict_pod(NS, name)
        return result, cluster.get("poddisruptionbudgets", NS, "web") or {}

    result, after = cluster._call(evict_and_look)
    assert result == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    assert after["status"]["disruptionsAllowed"] == 0 and list(after["status"]["disruptedPods"]) == [name]
    assert [(c["status"], c["reason"]) for c in after["status"]["conditions"]] == [("False", "InsufficientPods")]
    # Once the pod is terminating (or gone), the controller drops it from disruptedPods.
    status = budget_status(cluster, currentHealthy=3, disruptionsAllowed=1)
    assert "disruptedPods" not in status


def test_two_budgets_on_one_pod_are_a_500_and_a_missing_pod_a_404(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    [pod, _] = ready_pods(cluster, 2)
    cluster.create("poddisruptionbudgets", budget("one", minAvailable=0))
    cluster.create("poddisruptionbudgets", budget("two", minAvailable=0))
    api = core_api(cluster)
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_pod_eviction(pod["metadata"]["name"], NS, eviction(pod["metadata"]["name"]))
    assert refused.value.status == 500
    assert json.loads(refused.value.body)["message"] == (
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
    with pytest.raises(ApiException) as missing:
        api.create_namespaced_pod_eviction("nope", NS, eviction("nope"))
    assert missing.value.status == 404


def test_pending_and_unhealthy_pods_are_evicted_without_spending_the_budget(cluster: DevCluster) -> None:
    for node in ("gpu-spot-a", "gpu-spot-b"):
        cluster.cordon(node)
    cluster.create("deployments", deployment("stuck", replicas=1, nodeSelector=SPOT_SELECTOR))
    cluster.create("poddisruptionbudgets", budget("stuck", app="stuck", minAvailable=1))
    stuck = cluster.wait_until(lambda: [p for p in live_pods(cluster, "stuck")
                                        if (p.get("status") or {}).get("phase") == "Pending"])
    assert cluster.evict_pod(NS, stuck[0]["metadata"]["name"])["status"] == "Success"  # Pending: no PDB check

    cluster.create("deployments", deployment(replicas=2))
    first, second = ready_pods(cluster, 2)
    cluster.create("poddisruptionbudgets", budget(minAvailable=2, unhealthyPodEvictionPolicy="AlwaysAllow"))
    cluster.set_pod_ready(NS, first["metadata"]["name"], False)
    budget_status(cluster, currentHealthy=1, disruptionsAllowed=0)
    assert cluster.evict_pod(NS, first["metadata"]["name"])["status"] == "Success"
    with pytest.raises(Exception, match="disruption budget"):
        cluster.evict_pod(NS, second["metadata"]["name"])  # a Ready pod still needs the budget


def test_a_stale_budget_status_is_a_429_still_being_processed(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2))
    [pod, _] = ready_pods(cluster, 2)
    stale = budget(minAvailable=1)
    stale["metadata"]["generation"] = 3
    stale["status"] = {"observedGeneration": 2, "disruptionsAllowed": 1}
    cluster.disruption.stop()  # nobody brings the status up to date
    cluster.put_object("poddisruptionbudgets", stale)
    with pytest.raises(Exception) as refused:
        cluster.evict_pod(NS, pod["metadata"]["name"])
    details = getattr(refused.value, "details", {})
    assert details == {"causes": [{"reason": "DisruptionBudget",
                                   "message": "The disruption budget web is still being processed by the server."}],
                       "retryAfterSeconds": 10}


def test_discovery_lists_the_eviction_subresource_as_the_real_server(cluster: DevCluster) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{cluster.url}/api/v1") as response:  # loopback only
        document = json.load(response)
    [entry] = [r for r in document["resources"] if r["name"] == "pods/eviction"]
    assert (entry["group"], entry["version"], entry["kind"], entry["verbs"]) == ("policy", "v1", "Eviction", ["create"])
    assert any(r["name"] == "nodes" and not r["namespaced"] for r in document["resources"])


def test_kubectl_drain_evicts_the_nodes_pods_and_they_come_back_elsewhere(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=2, nodeSelector=SPOT_SELECTOR))
    ready_pods(cluster, 2)
    cluster.create("poddisruptionbudgets", budget(maxUnavailable=1))
    budget_status(cluster, disruptionsAllowed=1)
    result = cluster.kubectl("drain", "gpu-spot-a", "--ignore-daemonsets", "--delete-emptydir-data",
                             "--timeout=30s", timeout=60)
    assert "evicting pod" in result.stdout + result.stderr and "drained" in result.stdout
    node = cluster.get("nodes", None, "gpu-spot-a")
    assert node is not None and node["spec"]["unschedulable"] is True
    pods = ready_pods(cluster, 2)
    assert {p["spec"]["nodeName"] for p in pods} == {"gpu-spot-b"}
    evictions = cluster.writes(resource="pods", subresource="eviction")
    assert evictions and all(w.status == 201 for w in evictions)


def test_kubectl_drain_waits_on_a_budget_and_gives_up_at_its_timeout(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=1, nodeSelector={"kubernetes.io/hostname": "gpu-spot-a"}))
    ready_pods(cluster, 1)
    cluster.create("poddisruptionbudgets", budget(minAvailable=1))
    budget_status(cluster, disruptionsAllowed=0)
    started = time.monotonic()
    result = cluster.kubectl("drain", "gpu-spot-a", "--ignore-daemonsets", "--timeout=3s", check=False, timeout=60)
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert "Cannot evict pod as it would violate the pod's disruption budget." in result.stderr
