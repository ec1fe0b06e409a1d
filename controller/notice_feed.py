"""The operator's SQS interruption queue, read in the background: notices kept by node until they are stale.

One long poll after another (off the event loop, ``SqsNoticeSource``); each notice's EC2 instance is
mapped to its node through ``spec.providerID`` (the nodes index), kept for the pools' evaluations and
announced (``on_notice(node)``) so that the pools with replicas there are evaluated at once. A notice
for an instance that is no node of this cluster changes nothing. A queue that fails is retried with
backoff and logged; it never stops the operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from controller.core.drain import REBALANCE_HOLD
from controller.core.notices import InterruptionNotice
from controller.sources.interruptions.sqs import SqsNoticeSource

__all__ = ["NoticeFeed"]

logger = logging.getLogger(__name__)

# A notice is kept this long past its deadline: the pods it concerns are gone by then.
KEPT_PAST_DEADLINE = timedelta(minutes=10)
MAX_KEPT = 10_000
MAX_BACKOFF_SECONDS = 60.0


class NoticeFeed:
    def __init__(self, source: SqsNoticeSource, *, node_of_instance: Callable[[str], str | None],
                 on_notice: Callable[[str], None], clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._source = source
        self._node_of_instance = node_of_instance
        self._on_notice = on_notice
        self._clock = clock
        self._by_node: dict[str, dict[str, tuple[InterruptionNotice, datetime]]] = {}
        self.unmatched = 0  # notices for instances that are no node of this cluster

    def for_node(self, node: str) -> tuple[InterruptionNotice, ...]:
        return tuple(notice for notice, _ in self._by_node.get(node, {}).values())

    def accept(self, notices: list[InterruptionNotice]) -> None:
        now = self._clock()
        self._prune(now)
        for notice in notices:
            node = notice.node or (self._node_of_instance(notice.instance_id) if notice.instance_id else None)
            if node is None:
                self.unmatched += 1
                logger.info("interruption notice for %s: no node of this cluster has it", notice.instance_id)
                continue
            expires = (notice.deadline + KEPT_PAST_DEADLINE if notice.deadline else now + REBALANCE_HOLD)
            self._by_node.setdefault(node, {})[notice.event_id] = (replace(notice, node=node), expires)
            self._on_notice(node)

    async def run(self) -> None:
        """Poll until cancelled."""
        failures = 0
        while True:
            try:
                notices = await self._source.receive()
            except (BotoCoreError, ClientError) as error:
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, 2.0 ** (failures - 1))
                logger.warning("the interruption queue %s failed (%d in a row), retrying in %.0f s: %s",
                               self._source.queue_url, failures, delay, error)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.accept(notices)

    def _prune(self, now: datetime) -> None:
        for node in list(self._by_node):
            kept = {key: value for key, value in self._by_node[node].items() if value[1] > now}
            if kept:
                self._by_node[node] = kept
            else:
                del self._by_node[node]
        while sum(len(v) for v in self._by_node.values()) > MAX_KEPT:
            oldest = min(self._by_node, key=lambda n: min(e for _, e in self._by_node[n].values()))
            del self._by_node[oldest]
