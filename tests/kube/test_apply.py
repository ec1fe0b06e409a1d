"""Applying owned objects against the embedded API server: what is written, and what a steady pool skips."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from controller.api.spec import InferencePoolSpec
from controller.core.capacity import CapacitySplit
from controller.kube.apply import VerifiedObjects, apply_owned_objects
from controller.kube.client import KubeApi, build_api_client
from controller.kube.drain import delete_retired
from controller.kube.render import (
    COMPONENT_LABEL,
    POOL_LABEL,
    ROUTER_LABEL,
    SERVING_LABEL,
    OwnedObject,
    PoolRef,
    render_owned_objects,
)
from devkube import DevCluster

NS = "team-a"
OWNER_UID = "pool-uid"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=[NS], fake_pods=False) as c:
        yield c


def deployment(replicas: int) -> OwnedObject:
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS,
                     "ownerReferences": [{"apiVersion": "poolpilot.io/v1alpha1", "kind": "InferencePool",
                                          "name": "p", "uid": OWNER_UID, "controller": True}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]}}},
    }
    return OwnedObject("apps/v1", "Deployment", "deployments", "web", manifest)


def apply(cluster: DevCluster, wanted: OwnedObject, verified: VerifiedObjects,
          cache: dict[str, Any] | None) -> list[Any]:
    api = KubeApi(build_api_client(str(cluster.kubeconfig_path)))
    try:
        return asyncio.run(apply_owned_objects(api, NS, OWNER_UID, [wanted], lambda kind, name: cache, verified))
    finally:
        api.close()


def live(cluster: DevCluster) -> dict[str, Any]:
    found = cluster.get("deployments", NS, "web")
    assert found is not None
    return found


def test_a_steady_object_is_not_written_and_any_change_to_it_or_to_the_wish_is(cluster: DevCluster) -> None:
    verified = VerifiedObjects()
    assert [c.action for c in apply(cluster, deployment(2), verified, None)] == ["created"]
    mark = cluster.mark()
    for _ in range(3):  # steady: compared once, then skipped while its resourceVersion stays
        assert apply(cluster, deployment(2), verified, live(cluster)) == []
    assert cluster.writes(mark) == []

    cluster.kubectl("patch", "deployment", "web", "-n", NS, "-p", '{"spec": {"replicas": 7}}')  # drift
    changes = apply(cluster, deployment(2), verified, live(cluster))
    assert [(c.action, c.fields) for c in changes] == [("updated", ("spec.replicas",))]
    assert live(cluster)["spec"]["replicas"] == 2

    steady = live(cluster)
    assert apply(cluster, deployment(2), verified, steady) == []
    changes = apply(cluster, deployment(3), verified, steady)  # a new wish, the same resourceVersion
    assert [c.action for c in changes] == ["updated"]
    assert live(cluster)["spec"]["replicas"] == 3


def test_an_object_edited_behind_a_stale_cache_is_still_compared(cluster: DevCluster) -> None:
    """The memo holds a version, not a verdict about a name: an edit in between is never skipped."""
    verified = VerifiedObjects()
    apply(cluster, deployment(2), verified, None)
    first = live(cluster)
    assert apply(cluster, deployment(2), verified, first) == []
    edited = json.loads(json.dumps(first))
    edited["spec"]["replicas"] = 5
    edited["metadata"]["resourceVersion"] = str(int(first["metadata"]["resourceVersion"]) + 100)
    cluster.kubectl("patch", "deployment", "web", "-n", NS, "-p", '{"spec": {"replicas": 5}}')
    changes = apply(cluster, deployment(2), verified, edited)
    assert [c.action for c in changes] == ["updated"]
    assert live(cluster)["spec"]["replicas"] == 2


# ------------------------------------------------------------------ the router, switched on and off

ROUTER_PLURALS = {"Deployment": "deployments", "Service": "services", "PodDisruptionBudget": "poddisruptionbudgets",
                  "ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}
ROUTER_OBJECTS = [("ServiceAccount", "llama-router"), ("Role", "llama-router"), ("RoleBinding", "llama-router"),
                  ("Deployment", "llama-router")]


def pool_spec(route: str | None) -> InferencePoolSpec:
    fallback: dict[str, Any] = {"enabled": route is not None, "route": route or "router",
                                "provider": {"baseURL": "http://api:8000/v1", "model": "m",
                                             "apiKeySecretRef": {"name": "provider"}}}
    if route == "httpRoute":
        fallback["httpRoute"] = {"name": "llama"}
    return InferencePoolSpec.model_validate({"model": {"name": "m"}, "fallback": fallback})


def converge(cluster: DevCluster, spec: InferencePoolSpec) -> list[Any]:
    """One apply step as reconcile runs it: the owned objects, then what the pool no longer has."""
    pool = PoolRef("llama", NS, OWNER_UID)

    def cached(kind: str, name: str) -> dict[str, Any] | None:
        return cluster.get(ROUTER_PLURALS[kind], NS, name)

    async def run() -> list[Any]:
        api = KubeApi(build_api_client(str(cluster.kubeconfig_path)))
        try:
            objects = render_owned_objects(pool, spec, CapacitySplit(spot=1, on_demand=1))
            changes = await apply_owned_objects(api, NS, OWNER_UID, objects, cached)
            await delete_retired(api, pool, cached, spec)
            return changes
        finally:
            api.close()

    return asyncio.run(run())


def existing(cluster: DevCluster, objects: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name in objects if cluster.get(ROUTER_PLURALS[kind], NS, name) is not None]


def front_door_selector(cluster: DevCluster) -> dict[str, str]:
    service = cluster.get("services", NS, "llama")
    assert service is not None
    selector: dict[str, str] = service["spec"]["selector"]
    return selector


def test_switching_the_router_on_and_off_creates_and_deletes_its_objects(cluster: DevCluster) -> None:
    created = converge(cluster, pool_spec("router"))
    assert {(c.kind, c.name) for c in created if c.action == "created"} >= set(ROUTER_OBJECTS)
    assert not [c for c in created if c.action in ("failed", "conflict")]
    assert existing(cluster, ROUTER_OBJECTS) == ROUTER_OBJECTS
    assert front_door_selector(cluster) == {COMPONENT_LABEL: "router", ROUTER_LABEL: "llama"}
    mark = cluster.mark()
    assert converge(cluster, pool_spec("router")) == []  # steady: nothing written
    assert cluster.writes(mark) == []

    for route in ("httpRoute", None):  # off: the route is the HTTPRoute's, or no fallback at all
        converge(cluster, pool_spec(route))
        assert existing(cluster, ROUTER_OBJECTS) == []
        assert front_door_selector(cluster) == {POOL_LABEL: "llama", SERVING_LABEL: "true"}
        assert cluster.get("services", NS, "llama-replicas") is not None
        converge(cluster, pool_spec("router"))
        assert existing(cluster, ROUTER_OBJECTS) == ROUTER_OBJECTS


def test_a_router_object_of_somebody_else_is_never_deleted(cluster: DevCluster) -> None:
    cluster.create("roles", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                             "metadata": {"name": "llama-router", "namespace": NS}, "rules": []})
    converge(cluster, pool_spec(None))
    assert existing(cluster, [("Role", "llama-router")]) == [("Role", "llama-router")]
