"""The pool's replica pods as the core sees them: where each runs, whether it serves, and its drain mark.

A pod's drain state lives on the pod itself (a label and annotations), never only in memory, so an
operator killed at any step finds, restarted, where every drain stands (``controller/kube/observe.py``
reads it back into a :class:`DrainMark`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from controller.core.capacity import CapacityType
from controller.core.notices import InterruptionNotice, NoticeKind

__all__ = ["DrainMark", "DrainStage", "ReplicaPod", "count_by_readiness"]


class DrainStage(StrEnum):
    # Released from its Deployment (whose ReplicaSet starts the replacement at once), still serving:
    # for an early warning, or a reclaim far enough ahead that the replacement can get ready first.
    REPLACING = "replacing"
    # Out of routing (its EndpointSlice entry goes), then evicted until it is gone.
    DRAINING = "draining"


@dataclass(frozen=True)
class DrainMark:
    """What PoolPilot wrote on a pod it took out of its Deployment."""

    stage: DrainStage
    kind: NoticeKind
    source: str
    capacity_type: CapacityType  # the Deployment it was released from
    noticed_at: datetime
    deadline: datetime
    event_id: str = ""


@dataclass(frozen=True)
class ReplicaPod:
    name: str
    uid: str
    capacity_type: CapacityType | None  # its Deployment's, or for a released pod the one in its mark
    node: str | None
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    ready: bool
    created_at: datetime | None = None
    # Since when the scheduler has found no node for it (PodScheduled=False, reason Unschedulable).
    unschedulable_since: datetime | None = None
    terminating: bool = False  # deletionTimestamp set: somebody is already deleting it
    disruption: InterruptionNotice | None = None  # its own DisruptionTarget condition
    drain: DrainMark | None = None

    @property
    def released(self) -> bool:
        """Out of its Deployment: the Deployment's counts no longer include it."""
        return self.drain is not None


def count_by_readiness(pods: Iterable[ReplicaPod], capacity_type: CapacityType, *, now: datetime,
                       startup_seconds: float) -> tuple[int, int, int]:
    """(ready, starting, stuck) among the Deployment's own live pods of one capacity type.

    Starting: not ready yet and younger than ``startupSeconds``, capacity on its way. Stuck: not ready
    past it (or pending with no node), which no longer counts as capacity on its way.
    """
    ready = starting = stuck = 0
    for pod in pods:
        if pod.capacity_type is not capacity_type or pod.released or pod.terminating:
            continue
        if pod.ready:
            ready += 1
        elif pod.created_at is not None and (now - pod.created_at).total_seconds() < startup_seconds:
            starting += 1
        else:
            stuck += 1
    return ready, starting, stuck
