"""Applying owned objects against the embedded API server: what is written, and what a steady pool skips."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.apply import VerifiedObjects, apply_owned_objects
from controller.kube.client import KubeApi, build_api_client
from controller.kube.render import OwnedObject
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
