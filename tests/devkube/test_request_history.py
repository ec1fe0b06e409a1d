"""kmock matches every request against its request history: ours keeps it bounded, so a long run stays fast."""

from __future__ import annotations

import aiohttp
import kmock
import pytest

from devkube.cluster import DevCluster


@pytest.mark.asyncio
async def test_the_request_history_is_bounded_and_reactions_still_apply() -> None:
    async with DevCluster() as cluster, aiohttp.ClientSession(cluster.url) as session:
        cluster.emulator.request_history = 50
        for _ in range(120):
            async with session.get("/api/v1/namespaces/default") as response:
                assert response.status == 200
        assert len(cluster.emulator._requests) == 50
        cluster.emulator["get /api/v1/namespaces/default"] << 503
        async with session.get("/api/v1/namespaces/default") as response:
            assert response.status == 503
        assert isinstance(cluster.emulator, kmock.KubernetesEmulator)
