"""Traffic as a cluster routes it: the load generator picks ready endpoints from the EndpointSlices, per request,
and sends streaming completions to fake vLLM replicas at the pods' IPs; a draining replica drops out."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devkube import DevCluster
from devkube.endpointslices import Endpoint, ready_endpoints
from devkube.fakevllm import DrainResult, FakeVLLMFleet
from devkube.loadgen import RequestOutcome, run_load

NS = "llm"


@pytest.fixture
async def fleet() -> AsyncIterator[FakeVLLMFleet]:
    async with FakeVLLMFleet(3) as running:
        if running.address_mode != "loopback-aliases":
            pytest.skip("the pods' addresses need 127.0.0.2 and up on one port (Linux)")
        running.set_all(tokens_per_second=100)
        yield running


def deployment(replicas: int, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "vllm", "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "vllm"}},
                 "template": {"metadata": {"labels": {"app": "vllm"}}, "spec": {"containers": [
                     {"name": "vllm", "image": "vllm/vllm-openai", "ports": [{"name": "http", "containerPort": port}]}
                 ]}}},
    }


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await asyncio.to_thread(predicate)):
            await asyncio.sleep(0.05)
    return result


async def test_load_follows_the_ready_endpoints_through_a_drain(fleet: FakeVLLMFleet) -> None:
    hosts = itertools.cycle([replica.host for replica in fleet.replicas])  # each pod's IP is a replica's address
    port = fleet.port
    assert port is not None
    with DevCluster.in_thread(namespaces=[NS], pod_ip=lambda namespace, pod, owner: next(hosts)) as cluster:
        cluster.create("apps/v1/deployments", deployment(3, port))
        cluster.create("v1/services", {"metadata": {"name": "vllm", "namespace": NS},
                                       "spec": {"selector": {"app": "vllm"},
                                                "ports": [{"port": 80, "targetPort": "http"}]}})

        def ready() -> list[Endpoint]:
            return ready_endpoints(cluster, NS, "vllm")

        assert len(await eventually(lambda: len(ready()) == 3 and ready())) == 3
        report = await run_load(ready, requests=30, rate=100, max_tokens=4)
        assert report.summary == {"sent": 30, "completed": 30}
        assert sorted(report.by_endpoint().values()) == [10, 10, 10]  # round-robin over the three
        assert all(record.tokens == 4 and record.status == 200 for record in report.records)

        # One replica drains: its pod stops being Ready (the kubelet's readiness probe sees /health 503)
        # and the endpoint leaves the slice; traffic from the slices never reaches it again.
        drained = fleet.replicas[0]
        pod = next(p for p in cluster.pods(NS, {"app": "vllm"}) if p["status"]["podIP"] == drained.host)
        drain = asyncio.create_task(drained.terminate(shutdown_timeout=5))
        cluster.set_pod_ready(NS, pod["metadata"]["name"], False)
        await eventually(lambda: len(ready()) == 2)
        during = await run_load(ready, requests=20, rate=100, max_tokens=4)
        assert during.summary == {"sent": 20, "completed": 20}
        assert Endpoint(drained.host, port) not in during.by_endpoint()
        assert await drain == DrainResult(finished=0, aborted=0)

        # Sent past the slices, straight to the drained address: refused now that it has stopped.
        stale = await run_load(lambda: [(drained.host, port)], requests=2, rate=100)
        assert stale.failed == {RequestOutcome.REFUSED: 2}


async def test_a_draining_replica_answers_503_and_a_cut_stream_is_a_reset(fleet: FakeVLLMFleet) -> None:
    replica = fleet.replicas[0]
    assert fleet.port is not None
    target = [(replica.host, fleet.port)]
    replica.set(tokens_per_second=20)
    load = asyncio.create_task(run_load(lambda: target, requests=2, rate=50, max_tokens=100))  # 5 s streams
    async with asyncio.timeout(5):
        while replica.running < 2:
            await asyncio.sleep(0.01)
    drain = asyncio.create_task(replica.terminate(shutdown_timeout=0.5))
    await asyncio.sleep(0.1)
    rejected = await run_load(lambda: target, requests=1, rate=1)
    assert [(r.outcome, r.status) for r in rejected.records] == [(RequestOutcome.HTTP_ERROR, 503)]
    assert await drain == DrainResult(finished=0, aborted=2)
    report = await load
    assert report.failed == {RequestOutcome.RESET: 2}
    assert all(0 < record.tokens < 100 and record.first_token_seconds is not None for record in report.records)


async def test_bounded_and_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await run_load(lambda: [("10.0.0.1", 80)], requests=1, rate=1)
    with pytest.raises(ValueError):
        await run_load(lambda: [("127.0.0.1", 1)], requests=0, rate=1)

    async def nothing() -> list[tuple[str, int]]:
        return []

    assert (await run_load(nothing, requests=2, rate=100)).summary == {"no_endpoint": 2, "sent": 2}
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    refused = await run_load(lambda: [("127.0.0.1", port)], requests=1, rate=1)
    assert refused.failed == {RequestOutcome.REFUSED: 1}
