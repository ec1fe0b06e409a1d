"""The drain plan: which doomed replicas are released, taken out of routing and evicted, and what is said."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api.spec import InterruptionSpec
from controller.api.status import InterruptionRecord
from controller.core.capacity import CapacityType
from controller.core.drain import DrainPlan, EvictionResult, plan_drains, record_evictions
from controller.core.notices import InterruptionNotice, NoticeKind
from controller.core.pool import DeploymentState, PoolObservation
from controller.core.replicas import DrainStage, ReplicaPod

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
SPOT, ON_DEMAND = CapacityType.SPOT, CapacityType.ON_DEMAND
INTERRUPTION = InterruptionSpec()  # drainSeconds 90, preStopSeconds 10
STEADY = PoolObservation({SPOT: DeploymentState(replicas=2, ready=2), ON_DEMAND: DeploymentState(1, 1)})
STARTING = PoolObservation({SPOT: DeploymentState(replicas=2, ready=1), ON_DEMAND: DeploymentState(1, 1)})


def pod(name: str, node: str | None, capacity_type: CapacityType = SPOT, **fields: object) -> ReplicaPod:
    base = ReplicaPod(name=name, uid=f"uid-{name}", capacity_type=capacity_type, node=node, phase="Running",
                      ready=True, created_at=NOW - timedelta(hours=1))
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def notice(node: str, kind: NoticeKind = NoticeKind.SPOT_INTERRUPTION, *, seconds: float | None = 120,
           source: str = "aws-sqs") -> InterruptionNotice:
    return InterruptionNotice(kind, source, f"event-{node}-{kind.value}", instance_id="i-0abc", node=node,
                              deadline=NOW + timedelta(seconds=seconds) if seconds is not None else None,
                              detail="EC2 Spot Instance Interruption Warning")


def drain(pods: list[ReplicaPod], notices: list[InterruptionNotice], previous: tuple[InterruptionRecord, ...] = (),
          deployments: PoolObservation = STARTING, now: datetime = NOW) -> DrainPlan:
    return plan_drains(pods, notices, previous, deployments, INTERRUPTION, now=now)


def applied(pods: list[ReplicaPod], plan: DrainPlan) -> list[ReplicaPod]:
    """The pods after the apply step: releases set the mark, evictions start the deletion."""
    marks = {r.pod: r.mark for r in plan.releases}
    evicted = {e.pod for e in plan.evictions}
    return [dataclasses.replace(p, drain=marks.get(p.name, p.drain), terminating=p.terminating or p.name in evicted)
            for p in pods]


def test_a_spot_warning_releases_both_replicas_on_the_node_out_of_routing_and_evicts_them_at_once() -> None:
    pods = [pod("a", "n1"), pod("b", "n1"), pod("c", "n2"), pod("d", "n3", ON_DEMAND)]
    plan = drain(pods, [notice("n1")])
    assert [(r.pod, r.serving, r.mark.stage) for r in plan.releases] == [
        ("a", False, DrainStage.DRAINING), ("b", False, DrainStage.DRAINING)]
    assert all(r.mark.capacity_type is SPOT and r.mark.deadline == NOW + timedelta(seconds=120)
               for r in plan.releases)
    # The grace fits the notice: the pod's own 90 s, SIGKILL still 5 s before the deadline.
    assert [(e.pod, e.uid, e.grace_seconds) for e in plan.evictions] == [("a", "uid-a", 90), ("b", "uid-b", 90)]
    assert [r.outcome for r in plan.records] == ["Draining", "Draining"]
    reasons = [e.reason for e in plan.events]
    assert reasons == ["SpotInterruptionNotice", "ReplacementOrdered"] * 2
    assert "in 120 s" in plan.events[0].message and "node n1" in plan.events[0].message


def test_a_late_notice_shortens_the_grace_so_sigkill_comes_before_the_deadline() -> None:
    plan = drain([pod("a", "n1")], [notice("n1", seconds=30)])
    assert plan.evictions[0].grace_seconds == 25
    assert drain([pod("a", "n1")], [notice("n1", seconds=2)]).evictions[0].grace_seconds == 1


def test_a_notice_for_a_node_without_our_replicas_changes_nothing() -> None:
    plan = drain([pod("a", "n1"), pod("b", "n2")], [notice("elsewhere")])
    assert plan == DrainPlan()


def test_the_second_evaluation_releases_nothing_again_and_evicts_only_after_backoff() -> None:
    pods = [pod("a", "n1")]
    first = drain(pods, [notice("n1")])
    records = record_evictions(first.records, [EvictionResult("a", "blocked", "Cannot evict pod")], now=NOW)
    pods = applied(pods, dataclasses.replace(first, evictions=()))  # blocked: not terminating
    again = drain(pods, [notice("n1")], records, now=NOW + timedelta(milliseconds=500))
    assert again.releases == () and again.evictions == () and again.events == ()
    assert again.retry_after == 0.5  # 1 s after the first refusal
    later = drain(pods, [notice("n1")], records, now=NOW + timedelta(seconds=1))
    assert [e.pod for e in later.evictions] == ["a"]
    records = record_evictions(later.records, [EvictionResult("a", "blocked")], now=NOW + timedelta(seconds=1))
    assert records[0].eviction_attempts == 2 and records[0].last_eviction_result == "blocked"
    assert drain(pods, [notice("n1")], records, now=NOW + timedelta(seconds=2)).retry_after == 1.0  # then 2 s


def test_a_drained_replica_is_recorded_once_with_its_timing() -> None:
    pods = applied([pod("a", "n1")], first := drain([pod("a", "n1")], [notice("n1")]))
    gone = drain([], [notice("n1")], first.records, now=NOW + timedelta(seconds=40))
    assert [r.outcome for r in gone.records] == ["Drained"]
    assert [e.reason for e in gone.events] == ["ReplicaDrained"]
    assert "40 s after the notice, 80 s before its deadline" in gone.events[0].message
    assert drain([], [], gone.records, now=NOW + timedelta(seconds=50)).events == ()
    assert pods[0].terminating


def test_a_replica_that_outlives_its_deadline_is_reported_once() -> None:
    pods = [pod("a", "n1")]
    first = drain(pods, [notice("n1", seconds=20)])
    records = record_evictions(first.records, [EvictionResult("a", "blocked", "budget")], now=NOW)
    pods = applied(pods, dataclasses.replace(first, evictions=()))
    late = drain(pods, [notice("n1", seconds=20)], records, now=NOW + timedelta(seconds=25))
    assert [e.reason for e in late.events] == ["DrainDeadlineMissed"]
    assert "5 s past its deadline" in late.events[0].message and "blocked: budget" in late.events[0].message
    assert late.records[0].deadline_missed and late.records[0].outcome == "Draining"
    again = drain(pods, [notice("n1", seconds=20)], late.records, now=NOW + timedelta(seconds=30))
    assert [e.reason for e in again.events] == []
    assert [e.pod for e in again.evictions] == ["a"]  # still evicted: the pod must go


def test_a_rebalance_recommendation_releases_but_keeps_serving_until_the_replacement_is_ready() -> None:
    pods = [pod("a", "n1")]
    early = drain(pods, [notice("n1", NoticeKind.REBALANCE_RECOMMENDATION, seconds=None)])
    assert [(r.pod, r.serving, r.mark.stage) for r in early.releases] == [("a", True, DrainStage.REPLACING)]
    assert early.evictions == () and [r.outcome for r in early.records] == ["Replacing"]
    pods = applied(pods, early)
    waiting = drain(pods, [notice("n1", NoticeKind.REBALANCE_RECOMMENDATION, seconds=None)], early.records,
                    deployments=STARTING, now=NOW + timedelta(seconds=30))
    assert waiting.releases == () and waiting.evictions == ()
    ready = drain(pods, [notice("n1", NoticeKind.REBALANCE_RECOMMENDATION, seconds=None)], early.records,
                  deployments=STEADY, now=NOW + timedelta(seconds=60))
    assert [(r.pod, r.serving) for r in ready.releases] == [("a", False)] and [e.pod for e in ready.evictions] == ["a"]
    assert [e.reason for e in ready.events] == ["ReplicaLeavingRouting"]


def test_the_interruption_after_a_rebalance_drains_at_once_without_a_second_replacement() -> None:
    pods = applied([pod("a", "n1")], early := drain([pod("a", "n1")], [
        notice("n1", NoticeKind.REBALANCE_RECOMMENDATION, seconds=None)]))
    reclaim = drain(pods, [notice("n1", NoticeKind.REBALANCE_RECOMMENDATION, seconds=None), notice("n1")],
                    early.records, now=NOW + timedelta(seconds=5))
    assert [(r.pod, r.serving, r.mark.kind) for r in reclaim.releases] == [("a", False, NoticeKind.SPOT_INTERRUPTION)]
    assert "ReplacementOrdered" not in [e.reason for e in reclaim.events]
    assert [e.pod for e in reclaim.evictions] == ["a"]


def test_a_scheduled_change_days_ahead_replaces_first_and_drains_when_the_deadline_comes_close() -> None:
    far = notice("n1", NoticeKind.SCHEDULED_CHANGE, seconds=3 * 86400, source="aws-sqs")
    first = drain([pod("a", "n1")], [far])
    assert [r.serving for r in first.releases] == [True]
    pods = applied([pod("a", "n1")], first)
    near = NOW + timedelta(seconds=3 * 86400 - 60)  # inside drainSeconds of the deadline, replacement not ready
    assert [r.serving for r in drain(pods, [far], first.records, now=near).releases] == [False]


def test_a_replica_somebody_else_deletes_is_recorded_but_not_touched() -> None:
    karpenter = pod("a", "n1", terminating=True)
    plan = drain([karpenter], [notice("n1", NoticeKind.NODE_DISRUPTION, seconds=None, source="node-taint")])
    assert plan.releases == () and plan.evictions == ()
    assert [r.outcome for r in plan.records] == ["Draining"]
    assert "already being deleted" in plan.events[0].message
    assert drain([karpenter], [notice("n1", NoticeKind.NODE_DISRUPTION, seconds=None)], plan.records).events == ()


def test_a_pods_own_disruption_condition_drains_it_even_without_a_node_notice() -> None:
    own = InterruptionNotice(NoticeKind.POD_DISRUPTION, "pod-condition", "e", node="n1", pod="llm/a",
                             deadline=NOW + timedelta(seconds=30))
    plan = drain([pod("a", "n1", disruption=own), pod("b", "n1")], [])
    assert [r.pod for r in plan.releases] == ["a"]


def test_a_restart_after_the_release_but_before_the_status_write_rebuilds_the_record_from_the_pod() -> None:
    first = drain([pod("a", "n1")], [notice("n1")])
    pods = applied([pod("a", "n1")], dataclasses.replace(first, evictions=()))
    restarted = drain(pods, [notice("n1")], previous=(), now=NOW + timedelta(seconds=3))
    assert restarted.releases == ()  # the mark on the pod says it was released: no second replacement
    assert [r.noticed_time for r in restarted.records] == ["2026-12-02T12:00:00Z"]
    assert [e.pod for e in restarted.evictions] == ["a"]


def test_the_status_keeps_every_drain_in_progress_and_the_last_five_finished() -> None:
    finished = tuple(InterruptionRecord(pod=f"old-{i}", kind="spot-interruption", source="aws-sqs",
                                        capacity_type="spot", outcome="Drained", noticed_time=f"2026-12-01T0{i}:00:00Z",
                                        deadline=f"2026-12-01T0{i}:02:00Z", drained_time=f"2026-12-01T0{i}:01:00Z")
                     for i in range(8))
    plan = drain([pod("a", "n1")], [notice("n1")], finished)
    assert [r.pod for r in plan.records] == ["old-3", "old-4", "old-5", "old-6", "old-7", "a"]


# ------------------------------------------------------------------------------------------ properties

NODES = ["n1", "n2", "n3"]
KINDS = [NoticeKind.SPOT_INTERRUPTION, NoticeKind.REBALANCE_RECOMMENDATION, NoticeKind.NODE_DISRUPTION]
steps = st.lists(st.tuples(st.sampled_from(["notice", "tick", "gone", "blocked", "ready"]),
                           st.sampled_from(NODES), st.sampled_from(KINDS)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_never_more_than_one_replacement_per_doomed_replica_and_never_a_healthy_victim(script: list[tuple[
        str, str, NoticeKind]]) -> None:
    pods = [pod(f"p{i}", NODES[i % 3]) for i in range(6)]
    notices: list[InterruptionNotice] = []
    records: tuple[InterruptionRecord, ...] = ()
    released: dict[str, int] = {}
    now = NOW
    deployments = STARTING
    for action, node, kind in script:
        now += timedelta(seconds=7)
        if action == "notice":
            notices.append(notice(node, kind, seconds=120 if kind is NoticeKind.SPOT_INTERRUPTION else None))
        elif action == "gone":
            pods = [p for p in pods if not p.terminating]
        elif action == "ready":
            deployments = STEADY
        plan = drain(pods, notices, records, deployments=deployments, now=now)
        doomed_nodes = {n.node for n in notices}
        for release in plan.releases:
            target = next(p for p in pods if p.name == release.pod)
            assert target.node in doomed_nodes, "a replica on a healthy node was touched"
            if target.drain is None:
                released[release.pod] = released.get(release.pod, 0) + 1
        for eviction in plan.evictions:
            target = next(p for p in pods if p.name == eviction.pod)
            assert target.node in doomed_nodes and not target.terminating
            mark = next((r.mark for r in plan.releases if r.pod == eviction.pod), target.drain)
            assert mark is not None and mark.stage is DrainStage.DRAINING, "evicted while still serving"
        outcome = "blocked" if action == "blocked" else "evicted"
        records = record_evictions(plan.records, [EvictionResult(e.pod, outcome) for e in plan.evictions], now=now)
        if outcome == "blocked":
            plan = dataclasses.replace(plan, evictions=())
        pods = applied(pods, plan)
    assert all(count == 1 for count in released.values()), released
