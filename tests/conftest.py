"""Fixtures every suite shares: the real cluster named by KUBECONFIG, set up once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backends import KUBECONFIG, RealCluster, real_cluster_or_skip


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[RealCluster]:
    real_cluster_or_skip()
    cluster = RealCluster(KUBECONFIG)
    try:
        yield cluster
    finally:
        cluster.close()
