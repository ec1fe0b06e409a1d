"""What the metrics sources' tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controller.sources.metrics.pods import PodsSource


@pytest.fixture
async def source() -> AsyncIterator[PodsSource]:
    """The pods source, as the operator runs it, closed after the test."""
    source = PodsSource(timeout_seconds=1.0)
    yield source
    await source.close()
