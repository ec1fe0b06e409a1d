"""DevCluster: running it, its helpers, the fake workload controller, kmock's own features."""

import asyncio
import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import kmock
import pytest
import yaml

from devkube import ApiError, DevCluster

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(
        crd_paths=[DATA / "crds" / "workerpools.yaml"], namespaces=["default", "team-a"]
    ) as c:
        yield c


def deployment(name: str = "web", replicas: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def status_of(cluster: DevCluster, name: str) -> dict[str, Any]:
    obj = cluster.get("deployments", "team-a", name)
    assert obj is not None
    status: dict[str, Any] = obj.get("status", {})
    return status


def counts(status: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if key != "conditions"}


def test_kubeconfig_points_to_the_server_without_auth(cluster: DevCluster) -> None:
    config = yaml.safe_load(cluster.kubeconfig_path.read_text())
    assert config["current-context"] == "devkube"
    assert config["clusters"] == [{"name": "devkube", "cluster": {"server": cluster.url}}]
    assert config["users"] == [{"name": "devkube", "user": {}}]
    assert cluster.url.startswith("http://127.0.0.1:")
    env = cluster.kubectl_env()
    assert env["KUBECONFIG"] == str(cluster.kubeconfig_path)
    assert pathlib.Path(env["KUBECACHEDIR"]).parent == cluster.kubeconfig_path.parent


def test_the_temporary_files_are_removed_at_exit() -> None:
    with DevCluster.in_thread() as cluster:
        directory = cluster.kubeconfig_path.parent
        assert directory.is_dir()
    assert not directory.exists()


def test_helpers_return_copies_and_put_objects_directly(cluster: DevCluster) -> None:
    cluster.put_object(
        "workerpools",
        {
            "metadata": {"name": "p1", "namespace": "team-a"},
            "spec": {"replicas": 1},
            "status": {"phase": "Given"},
        },
    )
    fetched = cluster.get("wp", "team-a", "p1")
    assert fetched is not None and fetched["status"] == {"phase": "Given"}  # put_object keeps the status
    assert fetched["metadata"]["generation"] == 1 and fetched["metadata"]["uid"]
    fetched["spec"]["replicas"] = 100
    assert cluster.get("workerpools.example.dev", "team-a", "p1")["spec"] == {"replicas": 1}  # type: ignore[index]
    assert [o["metadata"]["name"] for o in cluster.list("example.dev/v1/workerpools")] == ["p1"]
    assert cluster.get("workerpools", "team-a", "missing") is None
    assert cluster.writes() == []  # in-process setup is not a client write
    assert cluster.resource("deploy").kind == "Deployment"
    assert cluster.resource("events").group == ""  # the core group wins over events.k8s.io


def test_in_process_create_applies_the_api_rules(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment())
    with pytest.raises(ApiError) as info:
        cluster.create("deployments", deployment())
    assert info.value.status == 409
    cluster.delete("deployments", "team-a", "web")
    assert cluster.get("deployments", "team-a", "web") is None


def test_kmock_views_of_objects_and_history(cluster: DevCluster) -> None:
    cluster.create(
        "workerpools", {"metadata": {"name": "p1", "namespace": "team-a"}, "spec": {"replicas": 1}}
    )
    cluster.kubectl("patch", "wp", "p1", "-n", "team-a", "--type=merge", "-p", '{"spec": {"replicas": 2}}')
    objects = cluster.emulator.objects
    assert objects["example.dev/v1/workerpools", "team-a", "p1"] >= {"spec": {"replicas": 2}}
    first = objects["example.dev/v1/workerpools", "team-a", "p1", 0]
    assert first is not None and first >= {"spec": {"replicas": 1}}


def test_fake_deployment_controller_reports_a_rollout(cluster: DevCluster) -> None:
    mark = cluster.mark()
    cluster.create("deployments", deployment(replicas=2))
    status = cluster.wait_until(lambda: status_of(cluster, "web"))
    assert counts(status) == {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
    }
    assert {(c["type"], c["status"]) for c in status["conditions"]} == {
        ("Available", "True"),
        ("Progressing", "True"),
    }
    assert cluster.writes(since=mark) == []  # the controller writes in-process

    cluster.kubectl("patch", "deployment", "web", "-n", "team-a", "-p", '{"spec": {"replicas": 0}}')
    status = cluster.wait_until(
        lambda: s if (s := status_of(cluster, "web")).get("observedGeneration") == 2 else None
    )
    assert counts(status) == {"observedGeneration": 2}  # zero counts are omitted, as by the real controller


def test_readiness_can_be_held_back(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(replicas=3))
    cluster.wait_until(lambda: status_of(cluster, "web").get("readyReplicas") == 3)
    cluster.set_deployment_ready("team-a", "web", ready=1)
    status = cluster.wait_until(
        lambda: s if (s := status_of(cluster, "web")).get("readyReplicas") == 1 else None
    )
    assert counts(status) == {
        "observedGeneration": 1,
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "unavailableReplicas": 2,
    }
    assert {(c["type"], c["status"]) for c in status["conditions"]} >= {("Available", "False")}
    cluster.set_deployment_ready("team-a", "web", ready=None)
    cluster.wait_until(lambda: status_of(cluster, "web").get("readyReplicas") == 3)


def test_the_controller_honours_its_delay_and_can_be_disabled() -> None:
    with DevCluster.in_thread(namespaces=["team-a"], workload_delay=0.5) as delayed:
        started = time.monotonic()
        delayed.create("deployments", deployment())
        assert status_of(delayed, "web") == {}
        delayed.wait_until(lambda: status_of(delayed, "web"), timeout=5)
        assert time.monotonic() - started >= 0.45
    with DevCluster.in_thread(namespaces=["team-a"], fake_workloads=False) as disabled:
        disabled.create("deployments", deployment())
        time.sleep(0.2)
        assert status_of(disabled, "web") == {}
        with pytest.raises(RuntimeError):
            disabled.set_deployment_ready("team-a", "web", ready=1)


@pytest.mark.asyncio
async def test_async_use_on_the_same_loop_and_the_controllers_watch_events() -> None:
    async with DevCluster(namespaces=["team-a"]) as cluster, aiohttp.ClientSession(cluster.url) as session:
        async with session.get(
            "/apis/apps/v1/namespaces/team-a/deployments", params={"watch": "true"}
        ) as response:
            cluster.create("deployments", deployment())  # helpers run directly on the cluster's own loop
            types: list[tuple[str, int | None]] = []
            async with asyncio.timeout(3):
                while len(types) < 2:
                    line = await response.content.readline()
                    event = json.loads(line)
                    types.append((event["type"], event["object"].get("status", {}).get("readyReplicas")))
        assert types == [("ADDED", None), ("MODIFIED", 2)]
        with pytest.raises(RuntimeError):
            cluster.kubectl("version")  # blocking helpers refuse to block the cluster's own loop


@pytest.mark.asyncio
async def test_kmock_reactions_can_inject_failures() -> None:
    async with DevCluster(namespaces=["team-a"]) as cluster, aiohttp.ClientSession(cluster.url) as session:
        cluster.emulator[kmock.method.PATCH] << 503
        cluster.create("deployments", deployment())
        path = "/apis/apps/v1/namespaces/team-a/deployments/web"
        headers = {"Content-Type": "application/merge-patch+json"}
        async with session.patch(path, data='{"spec": {"replicas": 5}}', headers=headers) as response:
            assert response.status == 503
        assert cluster.get("deployments", "team-a", "web")["spec"]["replicas"] == 2  # type: ignore[index]
        async with session.get(path) as response:
            assert response.status == 200
