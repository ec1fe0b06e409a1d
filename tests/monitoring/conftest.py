"""The monitoring tests' one real Prometheus, shared by the session (tests/monitoring/world.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.monitoring.world import MonitoringWorld
from tests.monitoring.world import monitoring_world as build_monitoring_world

__all__: list[str] = []


@pytest.fixture(scope="session")
def monitoring_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoringWorld]:
    with build_monitoring_world(tmp_path_factory.mktemp("monitoring-targets")) as world:
        yield world
