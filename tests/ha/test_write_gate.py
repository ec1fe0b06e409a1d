"""The write gate: once the lead is lost, no write leaves the process, PoolPilot's (KubeApi) or Kopf's (its session)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import kopf
import pytest

from controller.kube.client import KubeApi, NotLeading, build_api_client, user_agent
from controller.kube.kopf_session import session_for
from devkube.cluster import DevCluster

NAMESPACE = "llm"


class Gate:
    def __init__(self, answers: Iterator[bool]) -> None:
        self.answers = answers
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return next(self.answers)


def config_map(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


@pytest.fixture
async def cluster() -> AsyncIterator[DevCluster]:
    async with DevCluster(namespaces=["default", NAMESPACE], nodes=()) as running:
        yield running


async def test_kube_api_refuses_every_write_when_the_gate_says_no_and_reads_on(cluster: DevCluster) -> None:
    gate = Gate(itertools.repeat(False))
    api = KubeApi(build_api_client(str(cluster.kubeconfig_path), agent=user_agent("replica-a_1")), write_gate=gate)
    try:
        for write in (api.create("Service", NAMESPACE, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
                      api.patch("Deployment", NAMESPACE, "d", {"spec": {"replicas": 1}}),
                      api.delete("Deployment", NAMESPACE, "d"),
                      api.evict(NAMESPACE, "p", grace_seconds=1),
                      api.patch_pool_status(NAMESPACE, "pool", {"observedGeneration": 1}),
                      api.json_patch_custom("gateway.networking.k8s.io", "v1", "httproutes", NAMESPACE, "r", [])):
            with pytest.raises(NotLeading):
                await write
        assert await api.read("Deployment", NAMESPACE, "d") is None  # reads need no lead
        assert cluster.writes() == []  # nothing reached the server
    finally:
        api.close()


async def test_kube_api_asks_the_gate_again_just_before_the_request_leaves(cluster: DevCluster) -> None:
    """A write that passed the gate, then waited for a thread while the lead lapsed, is not sent."""
    gate = Gate(iter([True, False]))
    api = KubeApi(build_api_client(str(cluster.kubeconfig_path)), write_gate=gate)
    try:
        with pytest.raises(NotLeading):
            await api.create("Service", NAMESPACE, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
        assert gate.asked == 2 and cluster.writes() == []
    finally:
        api.close()


async def test_writes_carry_the_replicas_identity(cluster: DevCluster) -> None:
    api = KubeApi(build_api_client(str(cluster.kubeconfig_path), agent=user_agent("replica-a_1")),
                  write_gate=lambda: True)
    try:
        await api.create("Service", NAMESPACE, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})
    finally:
        api.close()
    (write,) = cluster.writes()
    assert write.user_agent.startswith("poolpilot/") and write.user_agent.endswith(" (replica-a_1)")


async def test_kopfs_session_names_the_replica_and_sends_no_write_once_the_lead_is_lost(cluster: DevCluster) -> None:
    leading = [True]
    info = kopf.ConnectionInfo(server=cluster.url)
    context = session_for(info, agent=user_agent("replica-a_1"), write_gate=lambda: leading[0])
    session = context.aiohttp_session
    events = f"{cluster.url}/api/v1/namespaces/{NAMESPACE}/configmaps"
    try:
        async with session.post(events, json=config_map("while-leading")) as response:
            assert response.status == 201
        leading[0] = False
        with pytest.raises(NotLeading):
            await session.post(events, json=config_map("after-the-loss"))
        with pytest.raises(NotLeading):
            await session.patch(f"{events}/while-leading", json={"data": {"k": "w"}},
                                headers={"Content-Type": "application/merge-patch+json"})
        async with session.get(events) as response:  # watching and listing go on
            assert response.status == 200
    finally:
        await session.close()
    assert [(w.method, w.name, w.user_agent) for w in cluster.writes()] == [
        ("POST", "while-leading", user_agent("replica-a_1"))]
    assert context.server == cluster.url
