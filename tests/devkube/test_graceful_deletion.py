"""Graceful deletion of pods and the stand-in kubelet: deletionTimestamp, preStop, SIGTERM, SIGKILL."""

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from devkube import DevCluster
from devkube.kubelet import Container, prestop_sleep_seconds
from tests.support.tools import kubectl_binary

NS = "team-a"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=["default", NS], kubectl_binary=kubectl_binary()) as c:
        yield c


def bare_pod(name: str, node: str | None, grace: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node is not None:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def deployment(replicas: int = 1, grace: int = 30, pre_stop: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "vllm", "image": "vllm"}
    if pre_stop is not None:
        container["lifecycle"] = {"preStop": {"exec": {"command": pre_stop}}}
    return {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [container], "terminationGracePeriodSeconds": grace}},
        },
    }


def running_pod(cluster: DevCluster) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        pods = [p for p in cluster.pods(NS, {"app": "web"}) if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        return ready[0] if len(pods) == 1 and ready else None

    return cluster.wait_until(find)


def ready_status(pod: dict[str, Any] | None) -> str | None:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return next((c["status"] for c in conditions if c["type"] == "Ready"), None)


class Recorder:
    """A container whose SIGTERM handler takes ``drain_seconds`` (None: never returns)."""

    def __init__(self, drain_seconds: float | None) -> None:
        self.events: list[tuple[str, float]] = []
        self.drain_seconds = drain_seconds
        self.started = time.monotonic()
        self.container = Container(on_sigterm=self.on_sigterm, on_kill=self.on_kill)

    async def on_sigterm(self) -> None:
        self.events.append(("sigterm", time.monotonic() - self.started))
        await asyncio.sleep(3600 if self.drain_seconds is None else self.drain_seconds)
        self.events.append(("drained", time.monotonic() - self.started))

    def on_kill(self) -> None:
        self.events.append(("kill", time.monotonic() - self.started))


def test_a_scheduled_pod_gets_a_deletion_timestamp_and_a_grace_that_only_shortens(cluster: DevCluster) -> None:
    cluster.create("pods", bare_pod("p", node="nowhere", grace=45))  # no kubelet serves a missing node
    deleted = cluster.delete_pod(NS, "p")
    assert deleted["metadata"]["deletionGracePeriodSeconds"] == 45 and deleted["metadata"]["deletionTimestamp"]
    assert deleted["metadata"]["generation"] == 2
    longer = cluster.delete_pod(NS, "p", grace_period_seconds=100)
    assert longer["metadata"]["deletionGracePeriodSeconds"] == 45
    assert longer["metadata"]["resourceVersion"] == deleted["metadata"]["resourceVersion"]  # no write at all
    shorter = cluster.delete_pod(NS, "p", grace_period_seconds=5)
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
    assert shorter["metadata"]["deletionTimestamp"] < deleted["metadata"]["deletionTimestamp"]
    time.sleep(0.2)
    assert cluster.get("pods", NS, "p") is not None  # still Terminating
    cluster.delete_pod(NS, "p", grace_period_seconds=0)
    assert cluster.get("pods", NS, "p") is None


def test_unscheduled_and_terminal_pods_and_grace_zero_go_at_once(cluster: DevCluster) -> None:
    cluster.create("pods", bare_pod("unscheduled", node=None))
    cluster.delete_pod(NS, "unscheduled")
    assert cluster.get("pods", NS, "unscheduled") is None
    cluster.create("pods", bare_pod("done", node="nowhere"))
    cluster._call(lambda: cluster.emulator.store.write_status(cluster.resource("pods"), NS, "done",
                                                              {"phase": "Succeeded"}))
    cluster.delete_pod(NS, "done")
    assert cluster.get("pods", NS, "done") is None
    cluster.create("pods", bare_pod("forced", node="nowhere"))
    cluster.delete_pod(NS, "forced", grace_period_seconds=0)
    assert cluster.get("pods", NS, "forced") is None


def test_a_pod_without_a_container_on_a_real_node_goes_once_marked(cluster: DevCluster) -> None:
    cluster.create("pods", bare_pod("p", node="gpu-spot-a"))
    marked = cluster.delete_pod(NS, "p")
    assert marked["metadata"]["deletionTimestamp"]
    cluster.wait_until(lambda: cluster.get("pods", NS, "p") is None, timeout=2)


def test_the_kubelet_runs_prestop_then_sigterm_then_kill_and_the_deployment_replaces_at_once(
    cluster: DevCluster,
) -> None:
    cluster.create("deployments", deployment(grace=10, pre_stop=["sleep", "1"]))
    pod = running_pod(cluster)
    name = pod["metadata"]["name"]
    recorder = Recorder(drain_seconds=0.5)
    cluster.attach_container(NS, name, recorder.container)
    recorder.started = time.monotonic()
    cluster.delete_pod(NS, name)
    # A replacement at once, while the old pod terminates: Running, still Ready during the preStop sleep.
    replacement = running_pod(cluster)
    assert replacement["metadata"]["name"] != name
    terminating = cluster.get("pods", NS, name)
    assert terminating is not None and terminating["status"]["phase"] == "Running"
    assert ready_status(terminating) == "True"
    cluster.wait_until(lambda: ready_status(cluster.get("pods", NS, name)) == "False", timeout=3)
    cluster.wait_until(lambda: cluster.get("pods", NS, name) is None, timeout=5)
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["sigterm", "drained", "kill"]
    sigterm_at = recorder.events[0][1]
    assert 0.9 <= sigterm_at < 2.0, recorder.events  # after the preStop sleep of 1 s
    assert not recorder.container.killed and recorder.container.sigterm_sent


def test_a_container_that_ignores_sigterm_is_killed_when_the_grace_runs_out(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(grace=1))
    name = running_pod(cluster)["metadata"]["name"]
    recorder = Recorder(drain_seconds=None)
    cluster.attach_container(NS, name, recorder.container)
    recorder.started = time.monotonic()
    cluster.delete_pod(NS, name)
    cluster.wait_until(lambda: cluster.get("pods", NS, name) is None, timeout=5)
    assert [kind for kind, _ in recorder.events] == ["sigterm", "kill"]
    # A 1 s grace still leaves 2 s after SIGTERM: the kubelet's minimum (minimumGracePeriodInSeconds).
    assert 1.8 <= recorder.events[1][1] < 3.5, recorder.events
    assert recorder.container.killed


def test_a_prestop_longer_than_the_grace_is_cut_and_sigterm_gets_two_more_seconds(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(grace=1, pre_stop=["/bin/sh", "-c", "sleep 30"]))
    name = running_pod(cluster)["metadata"]["name"]
    recorder = Recorder(drain_seconds=None)
    cluster.attach_container(NS, name, recorder.container)
    recorder.started = time.monotonic()
    cluster.delete_pod(NS, name)
    cluster.wait_until(lambda: cluster.get("pods", NS, name) is None, timeout=6)
    (_, sigterm_at), (_, kill_at) = recorder.events
    assert 0.9 <= sigterm_at < 1.6 and 2.8 <= kill_at - 0 < 4.5, recorder.events


def test_a_force_delete_during_termination_kills_at_once(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(grace=30))
    name = running_pod(cluster)["metadata"]["name"]
    recorder = Recorder(drain_seconds=None)
    cluster.attach_container(NS, name, recorder.container)
    cluster.delete_pod(NS, name)
    cluster.wait_until(lambda: recorder.events)
    cluster.kill_pod(NS, name)
    cluster.wait_until(lambda: [kind for kind, _ in recorder.events] == ["sigterm", "kill"], timeout=2)
    assert recorder.container.killed


def test_kubectl_delete_with_a_grace_period_and_no_wait(cluster: DevCluster) -> None:
    cluster.create("deployments", deployment(grace=30))
    name = running_pod(cluster)["metadata"]["name"]
    recorder = Recorder(drain_seconds=None)
    cluster.attach_container(NS, name, recorder.container)
    cluster.kubectl("delete", "pod", name, "-n", NS, "--grace-period=3", "--wait=false")
    pod = cluster.get("pods", NS, name)
    assert pod is not None and pod["metadata"]["deletionGracePeriodSeconds"] == 3
    listing = cluster.kubectl("get", "pod", name, "-n", NS).stdout
    assert "Terminating" in listing
    cluster.kubectl("delete", "pod", name, "-n", NS, "--grace-period=1", "--timeout=20s")  # waits until gone
    assert cluster.get("pods", NS, name) is None and recorder.container.killed


def test_the_python_client_deletes_with_a_grace_period(cluster: DevCluster) -> None:
    cluster.create("pods", bare_pod("p", node="nowhere"))
    api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(cluster.kubeconfig_path)))
    api.delete_namespaced_pod("p", NS, grace_period_seconds=7)
    pod = cluster.get("pods", NS, "p")
    assert pod is not None and pod["metadata"]["deletionGracePeriodSeconds"] == 7
    api.delete_namespaced_pod("p", NS, body=kubernetes.client.V1DeleteOptions(grace_period_seconds=0))
    assert cluster.get("pods", NS, "p") is None


@pytest.mark.parametrize(
    ("lifecycle", "seconds"),
    [
        ({"preStop": {"exec": {"command": ["sleep", "5"]}}}, 5.0),
        ({"preStop": {"exec": {"command": ["/bin/sleep", "2.5"]}}}, 2.5),
        ({"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 7"]}}}, 7.0),
        ({"preStop": {"sleep": {"seconds": 4}}}, 4.0),
        ({"preStop": {"exec": {"command": ["/bin/sh", "-c", "curl localhost/drain"]}}}, 0.0),
        ({"preStop": {"httpGet": {"path": "/drain", "port": 8000}}}, 0.0),
        ({}, 0.0),
    ],
)
def test_prestop_sleeps_are_read_from_the_pod_spec(lifecycle: dict[str, Any], seconds: float) -> None:
    pod = {"spec": {"containers": [{"name": "c", "lifecycle": lifecycle}]}}
    assert prestop_sleep_seconds(pod) == seconds
