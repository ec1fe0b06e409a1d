"""The official ``kubernetes`` Python client against the emulator."""

import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from devkube import DevCluster

DATA = pathlib.Path(__file__).parent / "data"
GROUP, VERSION, PLURAL = "example.dev", "v1", "workerpools"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(crd_paths=[DATA / "crds"], namespaces=["default", "team-a"]) as c:
        yield c


@pytest.fixture
def client(cluster: DevCluster) -> Iterator[kubernetes.client.ApiClient]:
    api_client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
    try:
        yield api_client
    finally:
        api_client.close()


def deployment(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def test_custom_objects_create_patch_status_list(
    cluster: DevCluster, client: kubernetes.client.ApiClient
) -> None:
    custom = kubernetes.client.CustomObjectsApi(client)
    body = {"apiVersion": "example.dev/v1", "kind": "WorkerPool", "spec": {"replicas": 1}}
    for name, tier in [("a", "web"), ("b", "db")]:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "team-a", PLURAL, {**body, "metadata": {"name": name, "labels": {"tier": tier}}}
        )
    mark = cluster.mark()
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "team-a", PLURAL, "a", {"spec": {"replicas": 2}}
    )
    assert patched["spec"] == {"replicas": 2} and patched["metadata"]["generation"] == 2
    status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "team-a", PLURAL, "a", {"status": {"phase": "Ready"}}
    )
    assert status["status"] == {"phase": "Ready"} and status["metadata"]["generation"] == 2
    assert [w.content_type for w in cluster.writes(since=mark)] == ["application/merge-patch+json"] * 2
    assert [w.subresource for w in cluster.writes(since=mark)] == [None, "status"]

    listing = custom.list_namespaced_custom_object(
        GROUP, VERSION, "team-a", PLURAL, label_selector="tier=web"
    )
    assert listing["kind"] == "WorkerPoolList"
    assert [item["metadata"]["name"] for item in listing["items"]] == ["a"]


def test_typed_apis_patch_replace_and_select(
    cluster: DevCluster, client: kubernetes.client.ApiClient
) -> None:
    apps = kubernetes.client.AppsV1Api(client)
    apps.create_namespaced_deployment("team-a", deployment("web", {"tier": "front"}))
    apps.create_namespaced_deployment("team-a", deployment("db", {"tier": "back"}))

    mark = cluster.mark()
    patched = apps.patch_namespaced_deployment("web", "team-a", {"spec": {"replicas": 3}})
    assert patched.spec.replicas == 3 and patched.metadata.generation == 2
    [write] = cluster.writes(since=mark)
    assert write.content_type == "application/strategic-merge-patch+json"
    assert write.user_agent.startswith("OpenAPI-Generator/")

    current = apps.read_namespaced_deployment("web", "team-a")
    stale = apps.read_namespaced_deployment("web", "team-a")
    current.spec.replicas = 4
    apps.replace_namespaced_deployment("web", "team-a", current)
    stale.spec.replicas = 5
    with pytest.raises(ApiException) as info:
        apps.replace_namespaced_deployment("web", "team-a", stale)
    assert info.value.status == 409

    selected = apps.list_namespaced_deployment("team-a", label_selector="tier in (front)")
    assert [item.metadata.name for item in selected.items] == ["web"]
    assert selected.items[0].spec.replicas == 4

    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment("team-a", deployment("web"))
    assert info.value.status == 409 and info.value.reason == "Conflict"


def test_events_with_field_selectors(client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(client)
    for name, target in [("e1", "p1"), ("e2", "p2")]:
        core.create_namespaced_event(
            "team-a",
            {
                "metadata": {"name": name},
                "involvedObject": {"kind": "WorkerPool", "name": target, "namespace": "team-a"},
                "reason": "Tested",
                "message": name,
                "type": "Normal",
            },
        )
    selected = core.list_namespaced_event(
        "team-a", field_selector="involvedObject.name=p2,involvedObject.kind=WorkerPool"
    )
    assert [event.message for event in selected.items] == ["e2"]
    assert [ns.metadata.name for ns in core.list_namespace().items] == ["default", "team-a"]


def test_watch_stream_resumes_and_ends_at_the_server_timeout(client: kubernetes.client.ApiClient) -> None:
    custom = kubernetes.client.CustomObjectsApi(client)
    body = {"apiVersion": "example.dev/v1", "kind": "WorkerPool", "spec": {"replicas": 1}}
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "team-a", PLURAL, {**body, "metadata": {"name": "old"}}
    )
    resource_version = custom.list_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL)["metadata"][
        "resourceVersion"
    ]
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "team-a", PLURAL, {**body, "metadata": {"name": "new"}}
    )
    custom.patch_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, "new", {"spec": {"replicas": 2}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, "old")

    watch = kubernetes.watch.Watch()
    events = [
        (event["type"], event["object"]["metadata"]["name"])
        for event in watch.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            "team-a",
            PLURAL,
            resource_version=resource_version,
            timeout_seconds=1,
            _request_timeout=10,
        )
    ]
    assert events == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "old")]


def test_typed_watch_with_a_label_selector(client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_config_map("team-a", {"metadata": {"name": "picked", "labels": {"pick": "yes"}}})
    core.create_namespaced_config_map("team-a", {"metadata": {"name": "skipped"}})
    watch = kubernetes.watch.Watch()
    events = [
        (event["type"], event["object"].metadata.name)
        for event in watch.stream(
            core.list_namespaced_config_map,
            "team-a",
            label_selector="pick=yes",
            timeout_seconds=1,
            _request_timeout=10,
        )
    ]
    assert events == [("ADDED", "picked")]
