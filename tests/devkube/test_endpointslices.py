"""The stand-in EndpointSlice controller: slices as the real one writes them, and kube-proxy's reading of them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devkube import DevCluster
from devkube.endpointslices import (
    CONTROLLER_NAME,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    Endpoint,
    ready_endpoints,
    usable_endpoints,
)
from tests.devkube.test_kubectl import table

NS = "serving"
SLICES = "discovery.k8s.io/v1/endpointslices"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=["default", NS]) as c:
        yield c


def service(name: str = "web", *, target_port: int | str = "http", selector: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "llm"}},
        "spec": {"selector": {"app": "web"} if selector is None else selector,
                 "ports": [{"port": 80, "targetPort": target_port}], **spec},
    }


def pod(name: str, ip: str | None, *, ready: bool = True, node: str = "node-a", phase: str = "Running",
        labels: dict[str, str] | None = None, finalizers: list[str] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip is not None:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": {"app": "web"} if labels is None else labels}
    if finalizers:
        meta["finalizers"] = finalizers
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "vllm", "image": "vllm",
                                                   "ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": status,
    }


def slices_of(cluster: DevCluster, name: str = "web") -> list[dict[str, Any]]:
    return [s for s in cluster.list(SLICES, NS) if s["metadata"]["labels"].get(SERVICE_NAME_LABEL) == name]


def endpoints_of(cluster: DevCluster, name: str = "web") -> dict[str, dict[str, Any]]:
    """Pod name -> its endpoint, over all the Service's slices."""
    return {e["targetRef"]["name"]: e for s in slices_of(cluster, name) for e in s["endpoints"] or []}


def wait_for_endpoints(cluster: DevCluster, count: int, name: str = "web") -> dict[str, dict[str, Any]]:
    def found() -> dict[str, dict[str, Any]] | None:
        endpoints = endpoints_of(cluster, name)
        return endpoints if len(endpoints) == count else None

    return cluster.wait_until(found)


def test_a_slice_per_service_as_the_real_controller_writes_it(cluster: DevCluster) -> None:
    svc = cluster.create("v1/services", service())
    cluster.put_object("v1/pods", pod("web-0", "127.245.0.1"))
    cluster.put_object("v1/pods", pod("web-1", "127.245.0.2"))
    cluster.put_object("v1/pods", pod("other", "127.245.0.3", labels={"app": "other"}))
    endpoints = wait_for_endpoints(cluster, 2)
    (endpoint_slice,) = slices_of(cluster)
    meta = endpoint_slice["metadata"]
    assert meta["generateName"] == "web-" and meta["name"].startswith("web-") and len(meta["name"]) == len("web-") + 5
    assert meta["labels"] == {"team": "llm", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: CONTROLLER_NAME}
    assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Service", "name": "web",
                                        "uid": svc["metadata"]["uid"], "controller": True,
                                        "blockOwnerDeletion": True}]
    assert endpoint_slice["addressType"] == "IPv4"
    assert endpoint_slice["ports"] == [{"name": "", "port": 8000, "protocol": "TCP"}]  # the named port, resolved
    pod0 = cluster.get("v1/pods", NS, "web-0")
    assert pod0 is not None
    assert endpoints["web-0"] == {
        "addresses": ["127.245.0.1"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": "node-a",
        "targetRef": {"kind": "Pod", "namespace": NS, "name": "web-0", "uid": pod0["metadata"]["uid"]},
    }
    assert ready_endpoints(cluster, NS, "web") == [Endpoint("127.245.0.1", 8000), Endpoint("127.245.0.2", 8000)]


def test_conditions_follow_readiness_deletion_and_publish_not_ready(cluster: DevCluster) -> None:
    cluster.create("v1/services", service())
    cluster.put_object("v1/pods", pod("web-0", "127.245.0.1"))
    cluster.put_object("v1/pods", pod("web-1", "127.245.0.2", ready=False))
    cluster.put_object("v1/pods", pod("web-2", "127.245.0.3", finalizers=["example.com/hold"]))
    wait_for_endpoints(cluster, 3)
    cluster.delete("v1/pods", NS, "web-2")  # held by its finalizer: terminating
    cluster.wait_until(lambda: endpoints_of(cluster)["web-2"]["conditions"]["terminating"])
    conditions = {name: e["conditions"] for name, e in endpoints_of(cluster).items()}
    assert conditions == {
        "web-0": {"ready": True, "serving": True, "terminating": False},
        "web-1": {"ready": False, "serving": False, "terminating": False},
        "web-2": {"ready": False, "serving": True, "terminating": True},  # still serving, never "ready"
    }
    svc = cluster.get("v1/services", NS, "web")
    assert svc is not None
    svc["spec"]["publishNotReadyAddresses"] = True
    cluster.put_object("v1/services", svc)
    cluster.wait_until(lambda: all(e["conditions"]["ready"] for e in endpoints_of(cluster).values()))


def test_which_pods_are_in(cluster: DevCluster) -> None:
    cluster.create("v1/services", service())
    cluster.put_object("v1/pods", pod("running", "127.245.0.1"))
    cluster.put_object("v1/pods", pod("no-ip", None))
    cluster.put_object("v1/pods", pod("failed", "127.245.0.2", phase="Failed"))
    cluster.put_object("v1/pods", pod("succeeded", "127.245.0.3", phase="Succeeded"))
    cluster.put_object("v1/pods", pod("pending", "127.245.0.4", phase="Pending", ready=False))
    assert set(wait_for_endpoints(cluster, 2)) == {"running", "pending"}


def test_zone_from_the_node_and_ipv6_slices(cluster: DevCluster) -> None:
    cluster.put_object("v1/nodes", {"metadata": {"name": "node-a",
                                                 "labels": {"topology.kubernetes.io/zone": "us-east-1a"}}})
    cluster.create("v1/services", service(target_port=8000))
    cluster.put_object("v1/pods", pod("on-a", "127.245.0.1"))
    cluster.put_object("v1/pods", pod("nowhere", "127.245.0.2", node="no-such-node"))
    cluster.put_object("v1/pods", pod("six", "::1"))
    endpoints = wait_for_endpoints(cluster, 3)
    assert endpoints["on-a"]["zone"] == "us-east-1a" and "zone" not in endpoints["nowhere"]
    by_type = {s["addressType"]: s for s in slices_of(cluster)}
    assert set(by_type) == {"IPv4", "IPv6"}
    assert [e["addresses"] for e in by_type["IPv6"]["endpoints"]] == [["::1"]]
    cluster.put_object("v1/nodes", {"metadata": {"name": "node-a",
                                                 "labels": {"topology.kubernetes.io/zone": "us-east-1b"}}})
    cluster.wait_until(lambda: endpoints_of(cluster)["on-a"].get("zone") == "us-east-1b")


def test_at_most_100_endpoints_per_slice(cluster: DevCluster) -> None:
    cluster.create("v1/services", service())
    for i in range(101):
        cluster.put_object("v1/pods", pod(f"web-{i:03}", f"127.245.1.{i + 1}"))
    wait_for_endpoints(cluster, 101)
    assert sorted(len(s["endpoints"]) for s in slices_of(cluster)) == [1, 100]


def test_no_write_when_nothing_changed_and_updates_on_change(cluster: DevCluster) -> None:
    cluster.create("v1/services", service())
    cluster.put_object("v1/pods", pod("web-0", "127.245.0.1"))
    wait_for_endpoints(cluster, 1)
    (before,) = slices_of(cluster)
    changed = pod("web-0", "127.245.0.1")
    changed["metadata"]["annotations"] = {"irrelevant": "yes"}
    cluster.put_object("v1/pods", changed)
    cluster.create("v1/configmaps", {"metadata": {"name": "flush", "namespace": NS}})
    cluster.wait_until(lambda: cluster.get("v1/configmaps", NS, "flush"))
    (after,) = slices_of(cluster)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    cluster.put_object("v1/pods", pod("web-0", "127.245.0.1", ready=False))
    cluster.wait_until(lambda: not endpoints_of(cluster)["web-0"]["conditions"]["ready"])


def test_named_port_missing_on_a_pod_and_port_changes(cluster: DevCluster) -> None:
    cluster.create("v1/services", service(target_port="metrics"))  # no container has a port named so
    cluster.put_object("v1/pods", pod("web-0", "127.245.0.1"))
    cluster.wait_until(lambda: (s := slices_of(cluster)) and s[0]["endpoints"])
    (endpoint_slice,) = slices_of(cluster)
    assert endpoint_slice["ports"] == []  # the pod is in, without that port
    svc = cluster.get("v1/services", NS, "web")
    assert svc is not None
    svc["spec"]["ports"] = [{"name": "api", "port": 80, "targetPort": 9000, "protocol": "TCP"}]
    cluster.put_object("v1/services", svc)
    cluster.wait_until(lambda: [s["ports"] for s in slices_of(cluster)] == [
        [{"name": "api", "port": 9000, "protocol": "TCP"}]])
    assert ready_endpoints(cluster, NS, "web", port_name="api") == [Endpoint("127.245.0.1", 9000)]


def test_placeholder_deletion_with_the_service_and_selectorless_services(cluster: DevCluster) -> None:
    cluster.create("v1/services", service())
    (placeholder,) = cluster.wait_until(lambda: slices_of(cluster))
    assert placeholder["endpoints"] is None and placeholder["ports"] is None
    assert ready_endpoints(cluster, NS, "web") == []
    cluster.put_object("v1/pods", pod("web-0", "127.245.0.1"))
    wait_for_endpoints(cluster, 1)
    assert len(slices_of(cluster)) == 1
    cluster.create("v1/services", {"metadata": {"name": "manual", "namespace": NS}, "spec": {"ports": [{"port": 1}]}})
    cluster.delete("v1/services", NS, "web")
    cluster.wait_until(lambda: not slices_of(cluster))
    assert slices_of(cluster, "manual") == []


def test_a_slice_deleted_by_someone_else_comes_back(cluster: DevCluster) -> None:
    cluster.create("v1/services", service())
    cluster.put_object("v1/pods", pod("web-0", "127.245.0.1"))
    wait_for_endpoints(cluster, 1)
    (first,) = slices_of(cluster)
    cluster.delete(SLICES, NS, first["metadata"]["name"])
    cluster.wait_until(lambda: (s := slices_of(cluster)) and s[0]["metadata"]["uid"] != first["metadata"]["uid"])
    wait_for_endpoints(cluster, 1)


def test_deployment_pods_and_kubectl(cluster: DevCluster) -> None:
    cluster.create("apps/v1/deployments", {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "vllm", "image": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}]}}},
    })
    cluster.create("v1/services", service())
    wait_for_endpoints(cluster, 2)
    rows = table(cluster.kubectl("get", "endpointslices", "-n", NS).stdout)
    assert rows[0] == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    ips = {p["status"]["podIP"] for p in cluster.pods(NS, {"app": "web"})}
    assert rows[1][1:3] == ["IPv4", "8000"] and set(rows[1][3].split(",")) == ips and rows[1][0].startswith("web-")
    resources = cluster.kubectl("api-resources", "--api-group=discovery.k8s.io").stdout
    assert "endpointslices" in resources and "EndpointSlice" in resources
    assert cluster.endpointslices is not None and cluster.endpointslices.errors == []


def test_usable_endpoints_falls_back_to_serving_terminating_as_kube_proxy() -> None:
    def endpoint(ip: str, ready: bool, serving: bool, terminating: bool) -> dict[str, Any]:
        return {"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}

    draining = {"ports": [{"name": "", "port": 8000}], "endpoints": [
        endpoint("127.0.0.2", False, True, True), endpoint("127.0.0.3", False, False, True),
        endpoint("127.0.0.4", False, True, False)]}
    assert usable_endpoints([draining]) == [Endpoint("127.0.0.2", 8000)]
    with_ready = {"ports": [{"name": "", "port": 8000}], "endpoints": [endpoint("127.0.0.5", True, True, False)]}
    assert usable_endpoints([draining, with_ready]) == [Endpoint("127.0.0.5", 8000)]
    assert usable_endpoints([{"ports": [{"port": 1}], "endpoints": [{"addresses": ["127.0.0.6"]}]}]) == [
        Endpoint("127.0.0.6", 1)]  # nil conditions read as ready
