"""KubeApi's lanes: the writes that take a doomed replica out of routing never queue behind the rest."""

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from controller.kube.client import API_THREADS, KubeApi, build_api_client
from devkube import DevCluster

NS = "team-a"


@pytest.fixture
def cluster() -> Iterator[DevCluster]:
    with DevCluster.in_thread(namespaces=[NS], fake_pods=False) as c:
        yield c


def test_an_urgent_patch_goes_through_while_every_ordinary_call_is_stuck(cluster: DevCluster) -> None:
    cluster.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "doomed", "namespace": NS},
                                "spec": {"ports": [{"port": 8000}]}})
    api = KubeApi(build_api_client(str(cluster.kubeconfig_path)))
    unstuck = threading.Event()

    def stuck_call(*args: Any, **kwargs: Any) -> Any:  # a server that stopped answering ordinary calls
        unstuck.wait(30)
        raise TimeoutError

    async def storm() -> tuple[dict[str, Any], list[bool]]:
        ordinary = [asyncio.ensure_future(api._call(stuck_call)) for _ in range(API_THREADS + 4)]
        await asyncio.sleep(0.1)  # every ordinary thread is taken
        try:
            patched = await asyncio.wait_for(
                api.patch("Service", NS, "doomed", {"metadata": {"labels": {"released": "yes"}}}, urgent=True), 10)
            return patched, [call.done() for call in ordinary]
        finally:
            unstuck.set()
            await asyncio.gather(*ordinary, return_exceptions=True)

    try:
        patched, ordinary_done = asyncio.run(storm())
    finally:
        api.close()
    assert patched["metadata"]["labels"] == {"released": "yes"}
    assert not any(ordinary_done)  # it did not wait for them
