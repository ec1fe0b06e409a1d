"""Reclaim notices turned into drains, as values: which pods to release, take out of routing and evict.

Pure: the pool's pods, the notices for their nodes, the drain records from the status and ``now`` in;
pod changes, evictions, the records to write back and the Events out.

How a replica on a doomed node leaves, in order (``docs/runbook.md`` says the same for on-call):

1. **Replaced at once, by releasing it.** One patch takes the pod out of its Deployment's selector
   (the capacity-type label goes) and makes the pool its owner. Its ReplicaSet then counts one pod fewer
   and starts the replacement itself, exactly one, with no change to the Deployment's count; so nothing
   is ever scaled back down afterwards, and the ReplicaSet never picks a healthy victim.
2. **Out of routing in the same patch.** The pool's Service selects ``poolpilot.io/serving=true``; the
   patch sets it to ``false``, so the EndpointSlice controller drops the pod before anything stops.
3. **Evicted**, through the Eviction API, with a grace period fitted to what is left of the notice: the
   pod's preStop sleep, then vLLM's ``--shutdown-timeout`` finishes what it holds. A 429 is retried with
   backoff until the pod is gone. The released pod is outside the pool's PDBs, so our own budget never
   blocks it; a budget of somebody else's can, and is retried.

An early warning (a rebalance recommendation), or a reclaim whose deadline is far away (a scheduled
change), releases the pod but leaves it serving (``REPLACING``) until its replacement is ready or the
deadline comes close; then it drains as above. A pod somebody else already deletes (Karpenter, the Node
Termination Handler, the kubelet's graceful shutdown) is out of routing and replaced already: it is only
recorded. Every step is decided from what the pod and the status say, so a restart at any step finishes
the drain without a second replacement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controller.api.spec import SIGKILL_MARGIN_SECONDS, InterruptionSpec
from controller.api.status import InterruptionRecord
from controller.core import events
from controller.core.capacity import CapacityType
from controller.core.conditions import format_time, parse_time
from controller.core.notices import InterruptionNotice
from controller.core.pool import PoolObservation
from controller.core.replicas import DrainMark, DrainStage, ReplicaPod

__all__ = ["DrainPlan", "EvictionResult", "PodEviction", "PodRelease", "plan_drains", "record_evictions"]

# A reclaim further away than this replaces first and drains once the replacement is ready.
REPLACE_FIRST_HORIZON = timedelta(minutes=10)
# How long a replica on a node with a rebalance recommendation keeps serving if its replacement never gets ready.
REBALANCE_HOLD = timedelta(hours=6)
# Finished drains kept in the status as history, beside every drain in progress.
FINISHED_RECORDS_KEPT = 5
EVICTION_BACKOFF_CAP_SECONDS = 8.0
_IN_PROGRESS = ("Replacing", "Draining")


@dataclass(frozen=True)
class PodRelease:
    """One patch on one pod: out of its Deployment, owned by the pool, serving or not, with its mark."""

    pod: str
    uid: str  # a precondition: a pod of the same name that is not this one is left alone
    mark: DrainMark
    serving: bool


@dataclass(frozen=True)
class PodEviction:
    pod: str
    uid: str
    grace_seconds: int


@dataclass(frozen=True)
class EvictionResult:
    """What the API server answered one eviction: ``evicted``, ``blocked`` (429), ``gone`` or ``failed``."""

    pod: str
    outcome: str
    message: str = ""


@dataclass(frozen=True)
class DrainPlan:
    releases: tuple[PodRelease, ...] = ()
    evictions: tuple[PodEviction, ...] = ()
    records: tuple[InterruptionRecord, ...] = ()
    events: tuple[events.PoolEvent, ...] = ()
    # Seconds until an eviction retry is due: the pool's loop should come back no later than that.
    retry_after: float | None = None

    @property
    def in_progress(self) -> tuple[InterruptionRecord, ...]:
        return tuple(r for r in self.records if r.outcome in _IN_PROGRESS)


def plan_drains(pods: Sequence[ReplicaPod], notices: Sequence[InterruptionNotice],
                previous: Sequence[InterruptionRecord], deployments: PoolObservation,
                interruption: InterruptionSpec, *, now: datetime) -> DrainPlan:
    records = {record.pod: record for record in previous}
    releases: list[PodRelease] = []
    evictions: list[PodEviction] = []
    pool_events: list[events.PoolEvent] = []
    retry_after: float | None = None
    present = {pod.name for pod in pods}

    for pod in pods:
        notice = _notice_for(pod, notices, now)
        record = records.get(pod.name)
        mark = pod.drain
        if mark is None:
            if notice is None or pod.capacity_type is None:
                continue
            if pod.terminating:
                # Somebody else deletes it: its endpoint is terminating and its ReplicaSet replaced it.
                if record is None or record.outcome not in _IN_PROGRESS:
                    records[pod.name] = _new_record(pod, notice, pod.capacity_type, "Draining", interruption, now)
                    pool_events.append(events.interruption_notice(pod.name, notice, _deadline(notice, interruption,
                                                                                             now), now, "already"))
                continue
            stage = _first_stage(notice, interruption, now)
            mark = DrainMark(stage=stage, kind=notice.kind, source=notice.source,
                             capacity_type=pod.capacity_type, noticed_at=now,
                             deadline=_deadline(notice, interruption, now), event_id=notice.event_id)
            releases.append(PodRelease(pod.name, pod.uid, mark, serving=stage is DrainStage.REPLACING))
        elif mark.stage is DrainStage.REPLACING and not pod.terminating:
            reclaim_now = notice is not None and notice.kind.is_reclaim
            deadline = _deadline(notice, interruption, now) if reclaim_now and notice else mark.deadline
            if reclaim_now or _replacement_ready(deployments, mark.capacity_type) or _must_drain_by(
                    deadline, interruption) <= now:
                mark = replace(mark, stage=DrainStage.DRAINING, deadline=min(deadline, mark.deadline),
                               kind=notice.kind if reclaim_now and notice else mark.kind)
                releases.append(PodRelease(pod.name, pod.uid, mark, serving=False))

        record = _record_for(pod, mark, record, now)
        if record.pod not in records or records[record.pod] != record:
            new = pod.name not in records or records[pod.name].outcome not in _IN_PROGRESS
            if new:
                pool_events.append(events.interruption_notice(pod.name, _as_notice(mark, notice), mark.deadline,
                                                              now, "draining" if mark.stage is DrainStage.DRAINING
                                                              else "replacing"))
                pool_events.append(events.replacement_ordered(pod.name, mark.capacity_type.value))
            elif records[pod.name].outcome == "Replacing" and record.outcome == "Draining":
                pool_events.append(events.replica_leaving_routing(pod.name, mark.deadline, now))
        if mark.stage is DrainStage.DRAINING and not pod.terminating:
            due = _eviction_due(record, now)
            if due <= now:
                evictions.append(PodEviction(pod.name, pod.uid, _grace_seconds(mark.deadline, interruption, now)))
            else:
                wait = (due - now).total_seconds()
                retry_after = wait if retry_after is None else min(retry_after, wait)
        if record.outcome in _IN_PROGRESS and now > mark.deadline and not record.deadline_missed:
            record = record.model_copy(update={"deadline_missed": True})
            pool_events.append(events.drain_deadline_missed(pod.name, mark.deadline, now, record.eviction_attempts,
                                                            record.last_eviction_result))
        records[pod.name] = record

    for name, record in list(records.items()):
        if name not in present and record.outcome in _IN_PROGRESS:
            records[name] = record.model_copy(update={"outcome": "Drained", "drained_time": format_time(now)})
            pool_events.append(events.replica_drained(name, parse_time(record.noticed_time),
                                                      parse_time(record.deadline), now, record.deadline_missed))
    return DrainPlan(releases=tuple(releases), evictions=tuple(evictions), records=_bounded(records.values()),
                     events=tuple(pool_events), retry_after=retry_after)


def record_evictions(records: Sequence[InterruptionRecord], results: Sequence[EvictionResult], *,
                     now: datetime) -> tuple[InterruptionRecord, ...]:
    """The records after the apply step: each eviction attempt counted with the server's answer."""
    by_pod = {result.pod: result for result in results}
    updated = []
    for record in records:
        result = by_pod.get(record.pod)
        if result is not None:
            answer = result.outcome + (f": {result.message}" if result.message else "")
            record = record.model_copy(update={"eviction_attempts": record.eviction_attempts + 1,
                                               "last_eviction_time": format_time(now),
                                               "last_eviction_result": answer[:256]})
        updated.append(record)
    return tuple(updated)


def _notice_for(pod: ReplicaPod, notices: Sequence[InterruptionNotice], now: datetime) -> InterruptionNotice | None:
    """The notice that concerns this pod: its own condition, or one for its node. A reclaim wins over an
    early warning, then the earliest deadline."""
    found = [n for n in notices if pod.node is not None and n.node == pod.node and n.pod is None]
    if pod.disruption is not None:
        found.append(pod.disruption)
    return min(found, key=lambda n: (not n.kind.is_reclaim, n.deadline is None, n.deadline or now), default=None)


def _deadline(notice: InterruptionNotice | None, interruption: InterruptionSpec, now: datetime) -> datetime:
    """The notice's own deadline; a taint or condition without one gets the pod's whole drain time.

    An early warning has none: the replica serves until its replacement is ready (or the reclaim comes),
    at most ``REBALANCE_HOLD``.
    """
    if notice is not None and notice.deadline is not None:
        return notice.deadline
    if notice is not None and not notice.kind.is_reclaim:
        return now + REBALANCE_HOLD
    return now + timedelta(seconds=interruption.drain_seconds)


def _must_drain_by(deadline: datetime, interruption: InterruptionSpec) -> datetime:
    """The latest moment a drain can start and still fit the pod's grace period before the deadline."""
    return deadline - timedelta(seconds=interruption.drain_seconds)


def _first_stage(notice: InterruptionNotice, interruption: InterruptionSpec, now: datetime) -> DrainStage:
    if not notice.kind.is_reclaim:
        return DrainStage.REPLACING
    deadline = _deadline(notice, interruption, now)
    return DrainStage.REPLACING if deadline - now > REPLACE_FIRST_HORIZON else DrainStage.DRAINING


def _replacement_ready(deployments: PoolObservation, capacity_type: CapacityType) -> bool:
    state = deployments.deployments.get(capacity_type)
    return state is not None and state.ready >= state.replicas


def _grace_seconds(deadline: datetime, interruption: InterruptionSpec, now: datetime) -> int:
    """The pod's own grace period, shortened so that SIGKILL still comes before the deadline."""
    left = int((deadline - now).total_seconds()) - SIGKILL_MARGIN_SECONDS
    return max(1, min(interruption.drain_seconds, left))


def _eviction_due(record: InterruptionRecord, now: datetime) -> datetime:
    """Backoff after a refusal: 1, 2, 4, 8, 8, ... seconds after the last attempt."""
    if not record.eviction_attempts or not record.last_eviction_time:
        return now
    if record.last_eviction_result and record.last_eviction_result.startswith("evicted"):
        return parse_time(record.last_eviction_time) + timedelta(seconds=EVICTION_BACKOFF_CAP_SECONDS)
    delay = min(EVICTION_BACKOFF_CAP_SECONDS, 2.0 ** (record.eviction_attempts - 1))
    return parse_time(record.last_eviction_time) + timedelta(seconds=delay)


def _new_record(pod: ReplicaPod, notice: InterruptionNotice, capacity_type: CapacityType, outcome: str,
                interruption: InterruptionSpec, now: datetime) -> InterruptionRecord:
    return InterruptionRecord(pod=pod.name, node=pod.node, kind=notice.kind.value, source=notice.source,
                              capacity_type=capacity_type.value, outcome=outcome,
                              noticed_time=format_time(now),
                              deadline=format_time(_deadline(notice, interruption, now)))


def _record_for(pod: ReplicaPod, mark: DrainMark, previous: InterruptionRecord | None,
                now: datetime) -> InterruptionRecord:
    """The record as the pod's mark says (the mark is the truth; a lost status write is rebuilt from it)."""
    outcome = "Draining" if mark.stage is DrainStage.DRAINING else "Replacing"
    base = previous if previous is not None and previous.noticed_time == format_time(mark.noticed_at) else None
    if base is None:
        return InterruptionRecord(pod=pod.name, node=pod.node, kind=mark.kind.value, source=mark.source,
                                  capacity_type=mark.capacity_type.value, outcome=outcome,
                                  noticed_time=format_time(mark.noticed_at), deadline=format_time(mark.deadline))
    return base.model_copy(update={"outcome": outcome, "kind": mark.kind.value, "deadline": format_time(mark.deadline)})


def _as_notice(mark: DrainMark, notice: InterruptionNotice | None) -> InterruptionNotice:
    return notice or InterruptionNotice(mark.kind, mark.source, mark.event_id, deadline=mark.deadline)


def _bounded(records: Iterable[InterruptionRecord]) -> tuple[InterruptionRecord, ...]:
    """Every drain in progress, and the last few finished ones, oldest first."""
    ordered = sorted(records, key=lambda r: (r.noticed_time, r.pod))
    finished = [r.pod for r in ordered if r.outcome not in _IN_PROGRESS][-FINISHED_RECORDS_KEPT:]
    return tuple(r for r in ordered if r.outcome in _IN_PROGRESS or r.pod in finished)


