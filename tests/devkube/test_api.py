"""The API semantics over plain HTTP (aiohttp), as any client sees them."""

import asyncio
import json
import pathlib
import re
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kmock
import pytest
import pytest_asyncio

from devkube import DevCluster

DATA = pathlib.Path(__file__).parent / "data"
WP = "/apis/example.dev/v1/namespaces/team-a/workerpools"
GADGETS = "/apis/example.dev/v1/gadgets"
DEPLOYMENTS = "/apis/apps/v1/namespaces/team-a/deployments"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MERGE = "application/merge-patch+json"


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "User-Agent": "api-test/1.0"}
        async with self.session.request(method, path, data=data, headers=headers, params=params) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, payload = await self.call(method, path, body, **kwargs)
        assert 200 <= status < 300, payload
        return payload

    def watch(self, path: str, **params: str) -> "Watch":
        return Watch(self.session, path, {"watch": "true", **params})


class Watch:
    def __init__(self, session: aiohttp.ClientSession, path: str, params: dict[str, str]) -> None:
        self.session, self.path, self.params = session, path, params
        self.response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> "Watch":
        self.response = await self.session.get(self.path, params=self.params)
        assert self.response.status == 200
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self.response is not None
        self.response.close()

    async def events(self, count: int, timeout: float = 3.0) -> list[tuple[str, Any]]:
        assert self.response is not None
        events: list[tuple[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(events) < count:
                line = await self.response.content.readline()
                if not line:
                    break
                if line.strip():
                    event = json.loads(line)
                    events.append((event["type"], event["object"]))
        return events

    async def silence(self, seconds: float = 0.3) -> None:
        """Assert that no event arrives for a while."""
        with pytest.raises(TimeoutError):
            await self.events(1, timeout=seconds)


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[DevCluster]:
    async with DevCluster(
        crd_paths=[DATA / "crds"], namespaces=["default", "team-a"], fake_workloads=False
    ) as c:
        yield c


@pytest_asyncio.fixture
async def api(cluster: DevCluster) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(cluster.url) as session:
        yield Api(session)


def pool(name: str = "p1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.dev/v1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": spec or {"replicas": 1},
    }


# --- namespaces --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_namespaces_list_get_create_patch_delete(api: Api) -> None:
    listing = await api.ok("GET", "/api/v1/namespaces")
    assert listing["kind"] == "NamespaceList" and listing["apiVersion"] == "v1"
    assert [ns["metadata"]["name"] for ns in listing["items"]] == ["default", "team-a"]

    created = await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team-b"}})
    assert created["status"] == {"phase": "Active"}
    assert created["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-b"}

    fetched = await api.ok("GET", "/api/v1/namespaces/team-b")
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]

    patched = await api.ok(
        "PATCH", "/api/v1/namespaces/team-b", {"metadata": {"labels": {"x": "y"}}}, content_type=MERGE
    )
    assert patched["metadata"]["labels"]["x"] == "y"

    await api.ok("DELETE", "/api/v1/namespaces/team-b")
    status, body = await api.call("GET", "/api/v1/namespaces/team-b")
    assert status == 404 and body["reason"] == "NotFound" and body["kind"] == "Status"


@pytest.mark.asyncio
async def test_namespaces_watch(api: Api) -> None:
    async with api.watch("/api/v1/namespaces") as watch:
        assert [(t, o["metadata"]["name"]) for t, o in await watch.events(2)] == [
            ("ADDED", "default"),
            ("ADDED", "team-a"),
        ]
        await api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": "team-c"}})
        await api.ok(
            "PATCH", "/api/v1/namespaces/team-c", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE
        )
        await api.ok("DELETE", "/api/v1/namespaces/team-c")
        events = await watch.events(3)
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "team-c"),
        ("MODIFIED", "team-c"),
        ("DELETED", "team-c"),
    ]
    assert events[1][1]["metadata"]["labels"]["a"] == "b"


@pytest.mark.asyncio
async def test_deleting_a_namespace_deletes_its_content_and_waits_for_finalizers(api: Api) -> None:
    await api.ok(
        "POST", WP, {**pool("held"), "metadata": {"name": "held", "finalizers": ["example.dev/hold"]}}
    )
    await api.ok("POST", WP, pool("free"))
    await api.ok("DELETE", "/api/v1/namespaces/team-a")

    namespace = await api.ok("GET", "/api/v1/namespaces/team-a")
    assert namespace["status"]["phase"] == "Terminating"
    assert (await api.call("GET", f"{WP}/free"))[0] == 404
    assert (await api.ok("GET", f"{WP}/held"))["metadata"]["deletionTimestamp"]
    status, body = await api.call("POST", WP, pool("late"))
    assert status == 403 and body["reason"] == "Forbidden"

    await api.ok("PATCH", f"{WP}/held", {"metadata": {"finalizers": None}}, content_type=MERGE)
    assert (await api.call("GET", "/api/v1/namespaces/team-a"))[0] == 404


@pytest.mark.asyncio
async def test_creating_in_a_missing_namespace_is_404(api: Api) -> None:
    status, body = await api.call("POST", "/apis/example.dev/v1/namespaces/nowhere/workerpools", pool())
    assert status == 404
    assert body["message"] == 'namespaces "nowhere" not found'


# --- object metadata ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_server_sets_uid_timestamp_generation_and_resource_version(api: Api) -> None:
    created = await api.ok(
        "POST", WP, {**pool(), "metadata": {"name": "p1", "uid": "forged", "resourceVersion": "7"}}
    )
    meta = created["metadata"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["generation"] == 1
    assert meta["namespace"] == "team-a"
    assert created["apiVersion"] == "example.dev/v1" and created["kind"] == "WorkerPool"
    other = await api.ok("POST", WP, pool("p2"))
    assert int(other["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


@pytest.mark.asyncio
async def test_generation_follows_spec_changes_only(api: Api) -> None:
    created = await api.ok("POST", WP, pool(replicas=1))
    rv0 = int(created["metadata"]["resourceVersion"])

    spec_changed = await api.ok("PATCH", f"{WP}/p1", {"spec": {"replicas": 2}}, content_type=MERGE)
    assert spec_changed["metadata"]["generation"] == 2
    rv1 = int(spec_changed["metadata"]["resourceVersion"])
    assert rv1 > rv0

    labelled = await api.ok("PATCH", f"{WP}/p1", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    assert labelled["metadata"]["generation"] == 2
    rv2 = int(labelled["metadata"]["resourceVersion"])
    assert rv2 > rv1

    status_only = await api.ok("PATCH", f"{WP}/p1/status", {"status": {"phase": "Ready"}}, content_type=MERGE)
    assert status_only["metadata"]["generation"] == 2
    assert int(status_only["metadata"]["resourceVersion"]) > rv2


@pytest.mark.asyncio
async def test_status_changes_do_not_bump_generation_without_status_subresource(api: Api) -> None:
    await api.ok("POST", GADGETS, {"metadata": {"name": "g1"}, "spec": {"size": 1}})
    patched = await api.ok("PATCH", f"{GADGETS}/g1", {"status": {"state": "on"}}, content_type=MERGE)
    assert patched["status"] == {"state": "on"}  # stored: no subresource to isolate it
    assert patched["metadata"]["generation"] == 1
    status, _ = await api.call("PATCH", f"{GADGETS}/g1/status", {"status": {}}, content_type=MERGE)
    assert status == 404


@pytest.mark.asyncio
async def test_noop_writes_keep_the_resource_version_and_emit_nothing(api: Api) -> None:
    created = await api.ok("POST", WP, pool(replicas=1))
    async with api.watch(WP, resourceVersion=created["metadata"]["resourceVersion"]) as watch:
        same = await api.ok("PATCH", f"{WP}/p1", {"spec": {"replicas": 1}}, content_type=MERGE)
        assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        await watch.silence()


@pytest.mark.asyncio
async def test_generate_name(api: Api) -> None:
    created = await api.ok("POST", WP, {"metadata": {"generateName": "pool-"}, "spec": {}})
    assert re.fullmatch(r"pool-[a-z0-9]{5}", created["metadata"]["name"])
    assert (await api.ok("GET", f"{WP}/{created['metadata']['name']}"))["metadata"]["uid"]


@pytest.mark.asyncio
async def test_create_conflict_is_409_already_exists(api: Api) -> None:
    await api.ok("POST", WP, pool())
    status, body = await api.call("POST", WP, pool())
    assert status == 409
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "code": 409,
        "reason": "AlreadyExists",
        "message": 'workerpools.example.dev "p1" already exists',
        "details": {"name": "p1", "group": "example.dev", "kind": "workerpools"},
    }


# --- status subresource ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_subresource_isolation_both_ways(api: Api) -> None:
    created = await api.ok("POST", WP, {**pool(), "status": {"phase": "Forged"}})
    assert "status" not in created  # dropped on create

    main = await api.ok(
        "PATCH", f"{WP}/p1", {"spec": {"replicas": 5}, "status": {"phase": "Ignored"}}, content_type=MERGE
    )
    assert main["spec"] == {"replicas": 5} and "status" not in main

    status = await api.ok(
        "PATCH",
        f"{WP}/p1/status",
        {"spec": {"replicas": 9}, "status": {"phase": "Ready"}, "metadata": {"labels": {"x": "y"}}},
        content_type=MERGE,
    )
    assert status["spec"] == {"replicas": 5} and status["status"] == {"phase": "Ready"}
    assert "labels" not in status["metadata"]

    whole = {**status, "spec": {"replicas": 7}, "status": {"phase": "Replaced"}}
    replaced = await api.ok("PUT", f"{WP}/p1/status", whole)
    assert replaced["spec"] == {"replicas": 5} and replaced["status"] == {"phase": "Replaced"}

    fetched = await api.ok("GET", f"{WP}/p1/status")
    assert fetched["status"] == {"phase": "Replaced"}


@pytest.mark.asyncio
async def test_builtin_deployment_status_is_a_subresource(api: Api) -> None:
    body = {
        "metadata": {"name": "d1"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    await api.ok("POST", DEPLOYMENTS, body)
    main = await api.ok("PATCH", f"{DEPLOYMENTS}/d1", {"status": {"replicas": 9}}, content_type=MERGE)
    assert "status" not in main
    status = await api.ok(
        "PATCH", f"{DEPLOYMENTS}/d1/status", {"status": {"replicas": 9}}, content_type=MERGE
    )
    assert status["status"] == {"replicas": 9} and status["metadata"]["generation"] == 1


@pytest.mark.asyncio
async def test_deployments_get_server_defaults(api: Api) -> None:
    body = {
        "metadata": {"name": "d1"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "spec": {"containers": [{"name": "c", "image": "img", "ports": [{"containerPort": 80}]}]}
            },
        },
    }
    created = await api.ok("POST", DEPLOYMENTS, body)
    spec = created["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    container = spec["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "Always" and container["ports"][0]["protocol"] == "TCP"
    resent = await api.ok("PATCH", f"{DEPLOYMENTS}/d1", body, content_type=MERGE)
    assert (
        resent["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    )  # defaults are no change


# --- patches and replacements ------------------------------------------------------------


@pytest.mark.asyncio
async def test_patch_content_types(api: Api) -> None:
    await api.ok("POST", WP, pool(replicas=1, mode="a", extra={"x": 1, "y": 2}))
    merged = await api.ok(
        "PATCH", f"{WP}/p1", {"spec": {"mode": None, "extra": {"x": None}}}, content_type=MERGE
    )
    assert merged["spec"] == {"replicas": 1, "extra": {"y": 2}}

    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/spec/tags", "value": ["t"]},
    ]
    jsoned = await api.ok("PATCH", f"{WP}/p1", ops, content_type="application/json-patch+json")
    assert jsoned["spec"] == {"replicas": 4, "extra": {"y": 2}, "tags": ["t"]}

    status, body = await api.call(
        "PATCH",
        f"{WP}/p1",
        [{"op": "test", "path": "/spec/replicas", "value": 0}],
        content_type="application/json-patch+json",
    )
    assert status == 422 and body["reason"] == "Invalid"

    status, body = await api.call(
        "PATCH", f"{WP}/p1", {"spec": {}}, content_type="application/strategic-merge-patch+json"
    )
    assert status == 415  # as on a real server: no strategic merge for custom resources

    status, _ = await api.call("PATCH", f"{WP}/p1", {"spec": {}}, content_type="application/apply-patch+yaml")
    assert status == 415


@pytest.mark.asyncio
async def test_strategic_merge_patch_of_a_deployment(api: Api) -> None:
    manifest = json.loads(json.dumps(_yaml(DATA / "deployment.yaml")))
    await api.ok("POST", DEPLOYMENTS, manifest)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": "nginx:1.28", "env": [{"name": "MODE", "$patch": "delete"}]}
                    ]
                }
            }
        }
    }
    patched = await api.ok(
        "PATCH", f"{DEPLOYMENTS}/web", patch, content_type="application/strategic-merge-patch+json"
    )
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("app", "nginx:1.28"),
        ("sidecar", "busybox:1.36"),
    ]
    assert "env" not in containers[0] or containers[0]["env"] == []
    assert patched["metadata"]["generation"] == 2


@pytest.mark.asyncio
async def test_put_replaces_with_optimistic_concurrency(api: Api) -> None:
    created = await api.ok("POST", WP, {**pool(replicas=1), "metadata": {"name": "p1", "labels": {"a": "b"}}})
    stale = dict(created, spec={"replicas": 2})
    fresh = await api.ok("PUT", f"{WP}/p1", stale)
    assert fresh["spec"] == {"replicas": 2} and fresh["metadata"]["generation"] == 2
    assert fresh["metadata"]["uid"] == created["metadata"]["uid"]
    assert fresh["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]

    status, body = await api.call("PUT", f"{WP}/p1", dict(stale, spec={"replicas": 3}))
    assert status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]

    status, body = await api.call("PUT", f"{WP}/p1", {"metadata": {"name": "p1"}, "spec": {"replicas": 4}})
    assert (
        status == 422 and "must be specified for an update" in body["message"]
    )  # CRs: no unconditional PUTs

    configmaps = "/api/v1/namespaces/team-a/configmaps"
    await api.ok("POST", configmaps, {"metadata": {"name": "c1", "labels": {"a": "b"}}, "data": {"k": "v"}})
    replaced = await api.ok("PUT", f"{configmaps}/c1", {"metadata": {"name": "c1"}, "data": {"k": "w"}})
    assert replaced["data"] == {"k": "w"} and "labels" not in replaced["metadata"]  # a whole replacement

    stale_patch = {
        "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
        "spec": {"replicas": 9},
    }
    status, _ = await api.call("PATCH", f"{WP}/p1", stale_patch, content_type=MERGE)
    assert status == 409


# --- lists, selectors, watches -----------------------------------------------------------


@pytest.mark.asyncio
async def test_lists_carry_kind_api_version_and_resource_version(api: Api, cluster: DevCluster) -> None:
    await api.ok("POST", WP, pool())
    listing = await api.ok("GET", WP)
    assert listing["kind"] == "WorkerPoolList" and listing["apiVersion"] == "example.dev/v1"
    assert listing["metadata"]["resourceVersion"] == str(cluster.emulator.store.resource_version)
    assert listing["items"][0]["kind"] == "WorkerPool"
    cluster_wide = await api.ok("GET", "/apis/example.dev/v1/workerpools")
    assert [item["metadata"]["name"] for item in cluster_wide["items"]] == ["p1"]


@pytest.mark.asyncio
async def test_list_with_label_and_field_selectors(api: Api) -> None:
    for name, labels in [
        ("a", {"tier": "web", "env": "prod"}),
        ("b", {"tier": "db"}),
        ("c", {"tier": "web"}),
    ]:
        await api.ok("POST", WP, {"metadata": {"name": name, "labels": labels}, "spec": {}})

    async def names(**params: str) -> list[str]:
        return [item["metadata"]["name"] for item in (await api.ok("GET", WP, params=params))["items"]]

    assert await names(labelSelector="tier=web") == ["a", "c"]
    assert await names(labelSelector="tier=web,env!=prod") == ["c"]
    assert await names(labelSelector="tier in (db,cache)") == ["b"]
    assert await names(labelSelector="!env") == ["b", "c"]
    assert await names(fieldSelector="metadata.name!=a") == ["b", "c"]
    assert await names(fieldSelector="metadata.namespace=team-a", labelSelector="env") == ["a"]
    status, _ = await api.call("GET", WP, params={"fieldSelector": "spec.replicas=1"})
    assert status == 400


@pytest.mark.asyncio
async def test_watch_with_label_selector_sees_objects_enter_and_leave(api: Api) -> None:
    await api.ok("POST", WP, {"metadata": {"name": "in", "labels": {"tier": "web"}}, "spec": {}})
    await api.ok("POST", WP, {"metadata": {"name": "out"}, "spec": {}})
    async with api.watch(WP, labelSelector="tier=web") as watch:
        assert [(t, o["metadata"]["name"]) for t, o in await watch.events(1)] == [("ADDED", "in")]
        await api.ok("PATCH", f"{WP}/out", {"metadata": {"labels": {"tier": "web"}}}, content_type=MERGE)
        await api.ok("PATCH", f"{WP}/in", {"spec": {"x": 1}}, content_type=MERGE)
        await api.ok("PATCH", f"{WP}/in", {"metadata": {"labels": None}}, content_type=MERGE)
        await api.ok("POST", WP, {"metadata": {"name": "other"}, "spec": {}})
        events = await watch.events(3)
        await watch.silence()
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "out"),
        ("MODIFIED", "in"),
        ("DELETED", "in"),
    ]
    assert events[1][1]["spec"] == {"x": 1}


@pytest.mark.asyncio
async def test_watch_with_field_selector_on_events(api: Api) -> None:
    events_path = "/api/v1/namespaces/team-a/events"

    def event(name: str, involved: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "involvedObject": {"kind": "WorkerPool", "name": involved},
            "reason": "Test",
            "type": "Normal",
            "message": name,
        }

    async with api.watch(
        events_path, fieldSelector="involvedObject.name=p1,involvedObject.kind=WorkerPool"
    ) as watch:
        await api.ok("POST", events_path, event("e1", "p2"))
        await api.ok("POST", events_path, event("e2", "p1"))
        assert [o["metadata"]["name"] for _, o in await watch.events(1)] == ["e2"]
        await watch.silence()


@pytest.mark.asyncio
async def test_watch_resumes_from_a_resource_version(api: Api) -> None:
    await api.ok("POST", WP, pool("old"))
    listing = await api.ok("GET", WP)
    await api.ok("POST", WP, pool("new"))
    async with api.watch(WP, resourceVersion=listing["metadata"]["resourceVersion"]) as watch:
        assert [(t, o["metadata"]["name"]) for t, o in await watch.events(1)] == [("ADDED", "new")]
        await watch.silence()


@pytest.mark.asyncio
async def test_watch_from_a_forgotten_resource_version_is_410() -> None:
    async with (
        DevCluster(namespaces=["default"], fake_workloads=False, history_size=2) as cluster,
        aiohttp.ClientSession(cluster.url) as session,
    ):
        api = Api(session)
        for name in ["a", "b", "c", "d"]:
            await api.ok("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": name}})
        async with api.watch("/api/v1/namespaces/default/configmaps", resourceVersion="1") as watch:
            [(event_type, status)] = await watch.events(1)
    assert event_type == "ERROR" and status["code"] == 410 and status["reason"] == "Expired"


@pytest.mark.asyncio
async def test_watch_ends_after_timeout_seconds(api: Api) -> None:
    async with api.watch(WP, timeoutSeconds="1") as watch:
        assert await watch.events(5, timeout=3) == []  # the stream ended by itself, before 3 seconds


@pytest.mark.asyncio
async def test_watch_initial_events_end_with_a_bookmark(api: Api) -> None:
    await api.ok("POST", WP, pool())
    async with api.watch(WP, sendInitialEvents="true", resourceVersionMatch="NotOlderThan") as watch:
        events = await watch.events(2)
    assert [t for t, _ in events] == ["ADDED", "BOOKMARK"]
    assert events[1][1]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


# --- deletion ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_finalizers_block_deletion(api: Api) -> None:
    await api.ok("POST", WP, {"metadata": {"name": "p1", "finalizers": ["example.dev/cleanup"]}, "spec": {}})
    async with api.watch(WP) as watch:
        await watch.events(1)
        deleting = await api.ok("DELETE", f"{WP}/p1")
        assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["generation"] == 2
        status, body = await api.call(
            "PATCH", f"{WP}/p1", {"metadata": {"finalizers": ["a", "b"]}}, content_type=MERGE
        )
        assert status == 422 and "no new finalizers" in body["message"]
        await api.ok("PATCH", f"{WP}/p1", {"metadata": {"finalizers": []}}, content_type=MERGE)
        events = await watch.events(2)
    assert [t for t, _ in events] == ["MODIFIED", "DELETED"]
    assert (await api.call("GET", f"{WP}/p1"))[0] == 404


@pytest.mark.asyncio
async def test_owner_references_are_garbage_collected_recursively(api: Api) -> None:
    owner = await api.ok("POST", WP, pool("owner"))
    child = await api.ok(
        "POST",
        DEPLOYMENTS,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "example.dev/v1",
                        "kind": "WorkerPool",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
            "spec": {"selector": {}, "template": {"spec": {"containers": []}}},
        },
    )
    await api.ok(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        {
            "metadata": {
                "name": "grandchild",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "child",
                        "uid": child["metadata"]["uid"],
                    }
                ],
            }
        },
    )
    other = await api.ok("POST", WP, pool("other"))
    await api.ok(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        {
            "metadata": {
                "name": "shared",
                "ownerReferences": [
                    {
                        "apiVersion": "example.dev/v1",
                        "kind": "WorkerPool",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    },
                    {
                        "apiVersion": "example.dev/v1",
                        "kind": "WorkerPool",
                        "name": "other",
                        "uid": other["metadata"]["uid"],
                    },
                ],
            }
        },
    )

    async with (
        api.watch(DEPLOYMENTS) as deployments,
        api.watch("/api/v1/namespaces/team-a/configmaps") as configmaps,
    ):
        await deployments.events(1)
        await configmaps.events(2)
        await api.ok("DELETE", f"{WP}/owner")
        assert [(t, o["metadata"]["name"]) for t, o in await deployments.events(1)] == [("DELETED", "child")]
        assert [(t, o["metadata"]["name"]) for t, o in await configmaps.events(1)] == [
            ("DELETED", "grandchild")
        ]
        await configmaps.silence()
    assert (await api.call("GET", "/api/v1/namespaces/team-a/configmaps/shared"))[0] == 200


# --- CRDs and discovery ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_crd_registration_via_the_api(api: Api) -> None:
    crd = _yaml(DATA / "crds" / "workerpools.yaml")
    crd["metadata"]["name"] = "widgets.other.dev"
    crd["spec"].update(group="other.dev")
    crd["spec"]["names"] = {
        "plural": "widgets",
        "singular": "widget",
        "kind": "Widget",
        "shortNames": ["wdg"],
    }
    assert (await api.call("GET", "/apis/other.dev/v1"))[0] == 404

    created = await api.ok("POST", CRDS, crd)
    assert {c["type"] for c in created["status"]["conditions"]} == {"NamesAccepted", "Established"}
    group = await api.ok("GET", "/apis/other.dev")
    assert group["preferredVersion"] == {"groupVersion": "other.dev/v1", "version": "v1"}
    resources = (await api.ok("GET", "/apis/other.dev/v1"))["resources"]
    assert resources == [
        {
            "name": "widgets",
            "singularName": "widget",
            "namespaced": True,
            "kind": "Widget",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["wdg"],
        },
        {
            "name": "widgets/status",
            "singularName": "",
            "namespaced": True,
            "kind": "Widget",
            "verbs": ["get", "patch", "update"],
        },
    ]
    await api.ok(
        "POST", "/apis/other.dev/v1/namespaces/team-a/widgets", {"metadata": {"name": "w1"}, "spec": {}}
    )

    await api.ok("DELETE", f"{CRDS}/widgets.other.dev")
    assert (await api.call("GET", "/apis/other.dev/v1"))[0] == 404
    assert (await api.call("GET", "/apis/other.dev/v1/namespaces/team-a/widgets/w1"))[0] == 404


@pytest.mark.asyncio
async def test_invalid_crds_are_rejected(api: Api) -> None:
    crd = _yaml(DATA / "crds" / "gadgets.yaml")
    crd["metadata"]["name"] = "wrong.example.dev"
    status, body = await api.call("POST", CRDS, crd)
    assert status == 422 and body["reason"] == "Invalid"


@pytest.mark.asyncio
async def test_discovery_of_core_and_groups(api: Api) -> None:
    core = await api.ok("GET", "/api/v1")
    namespaces = [r for r in core["resources"] if r["name"].startswith("namespaces")]
    assert [r["name"] for r in namespaces] == ["namespaces", "namespaces/finalize", "namespaces/status"]
    assert namespaces[0]["shortNames"] == ["ns"] and "shortNames" not in namespaces[2]
    groups = {g["name"]: g for g in (await api.ok("GET", "/apis"))["groups"]}
    assert groups["autoscaling"]["preferredVersion"]["version"] == "v2"
    assert groups["example.dev"]["versions"] == [{"groupVersion": "example.dev/v1", "version": "v1"}]
    version = await api.ok("GET", "/version")
    assert version["major"] == "1" and version["minor"] == "32"


@pytest.mark.asyncio
async def test_tables_for_custom_resources(api: Api, cluster: DevCluster) -> None:
    cluster.put_object(
        "workerpools",
        {
            "metadata": {"name": "p1", "namespace": "team-a", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 2},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
    )
    headers = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    async with api.session.get(WP, headers=headers) as response:
        table = await response.json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Replicas", "Ready", "Phase", "Age"]
    [row] = table["rows"]
    assert row["cells"][:4] == ["p1", 2, "True", None]
    assert re.fullmatch(r"\d+y(\d+d)?", row["cells"][4])
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "p1"


# --- the write log -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_write_log_records_client_writes_only(api: Api, cluster: DevCluster) -> None:
    mark = cluster.mark()
    cluster.put_object("workerpools", {"metadata": {"name": "setup", "namespace": "team-a"}, "spec": {}})
    await api.ok("POST", WP, {"metadata": {"generateName": "gen-"}, "spec": {}})
    await api.ok("GET", WP)
    await api.call("PATCH", f"{WP}/missing", {}, content_type=MERGE)
    writes = cluster.writes(since=mark)
    assert [(w.method, w.resource, w.status) for w in writes] == [
        ("POST", "workerpools", 201),
        ("PATCH", "workerpools", 404),
    ]
    assert writes[0].name is not None and writes[0].name.startswith("gen-")
    assert writes[0].user_agent == "api-test/1.0" and writes[0].namespace == "team-a"
    assert writes[0].body == {"metadata": {"generateName": "gen-"}, "spec": {}}
    assert cluster.writes(since=mark, user_agent="api-test", succeeded=True) == writes[:1]
    assert cluster.writes(since=mark, resource="workerpools.example.dev", method="patch") == writes[1:]
    assert cluster.writes(since=cluster.mark()) == []


def _yaml(path: pathlib.Path) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


@pytest.mark.asyncio
async def test_dry_run_and_delete_collection(api: Api) -> None:
    status, created = await api.call("POST", WP, pool("dry"), params={"dryRun": "All"})
    assert status == 201 and created["metadata"]["uid"]
    assert (await api.call("GET", f"{WP}/dry"))[0] == 404

    for name, tier in [("a", "web"), ("b", "web"), ("c", "db")]:
        await api.ok("POST", WP, {"metadata": {"name": name, "labels": {"tier": tier}}, "spec": {}})
    deleted = await api.ok("DELETE", WP, params={"labelSelector": "tier=web"})
    assert [item["metadata"]["name"] for item in deleted["items"]] == ["a", "b"]
    assert [item["metadata"]["name"] for item in (await api.ok("GET", WP))["items"]] == ["c"]


@pytest.mark.asyncio
async def test_register_crd_declares_without_a_crd_object(api: Api, cluster: DevCluster) -> None:
    crd = _yaml(DATA / "crds" / "gadgets.yaml")
    crd["metadata"]["name"] = "gizmos.example.dev"
    crd["spec"]["names"] = {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"}
    declared = cluster.emulator.register_crd(crd)
    assert declared == [kmock.resource("example.dev", "v1", "gizmos")]
    names = [r["name"] for r in (await api.ok("GET", "/apis/example.dev/v1"))["resources"]]
    assert "gizmos" in names
    assert (await api.call("GET", f"{CRDS}/gizmos.example.dev"))[0] == 404
    await api.ok("POST", "/apis/example.dev/v1/gizmos", {"metadata": {"name": "g1"}})


def _watch_lines(cluster: DevCluster, query: str) -> list[dict[str, Any]]:
    url = f"{cluster.url}/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1{query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def test_a_quiet_watch_that_allows_bookmarks_gets_them_with_the_current_resource_version() -> None:
    """As the real watch cache does (every minute there; faster here): a client whose selection saw no
    event still learns how far the server has come, so its resourceVersion never falls out of history."""
    with DevCluster.in_thread(namespaces=["default", "other"]) as cluster:
        cluster.emulator.bookmark_interval_seconds = 0.3
        cluster.create("configmaps", {"metadata": {"name": "elsewhere", "namespace": "other"}})
        events = _watch_lines(cluster, "&allowWatchBookmarks=true&resourceVersion=1")
        bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
        assert 2 <= len(bookmarks) <= 4, events
        assert all(e["type"] == "BOOKMARK" for e in events)  # nothing of the other namespace
        latest = int(bookmarks[-1]["object"]["metadata"]["resourceVersion"])
        assert latest == cluster.emulator.store.resource_version and latest > 1
        assert bookmarks[0]["object"]["kind"] == "ConfigMap" and bookmarks[0]["object"]["apiVersion"] == "v1"
        assert [e for e in _watch_lines(cluster, "&resourceVersion=1") if e["type"] == "BOOKMARK"] == []
