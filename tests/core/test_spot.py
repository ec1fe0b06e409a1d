"""Spot capacity that is not there: the share moves to on-demand, one replica probes with backoff, and back."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from controller.api.spec import CapacitySpec
from controller.api.status import SpotStatus
from controller.core.capacity import CapacitySplit, CapacityType
from controller.core.replicas import ReplicaPod
from controller.core.spot import decide_spot, shift_split

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
CAPACITY = CapacitySpec(spot_unavailable_after_seconds=300)


def spot_pod(name: str, *, node: str | None = None, pending_for: float | None = None,
             capacity_type: CapacityType = CapacityType.SPOT, **fields: object) -> ReplicaPod:
    since = NOW - timedelta(seconds=pending_for) if pending_for is not None else None
    base = ReplicaPod(name=name, uid=name, capacity_type=capacity_type, node=node,
                      phase="Pending" if node is None else "Running", ready=node is not None,
                      created_at=NOW - timedelta(hours=1), unschedulable_since=since)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def test_spot_replicas_pending_past_the_threshold_move_the_share_to_on_demand_with_one_probe() -> None:
    decision = decide_spot([spot_pod("a", pending_for=301), spot_pod("b", pending_for=10),
                            spot_pod("c", node="n1", capacity_type=CapacityType.ON_DEMAND)], None, CAPACITY, now=NOW)
    assert decision.spot_cap == 1
    assert decision.state is not None and decision.state.unavailable_since == "2026-12-02T12:00:00Z"
    assert [e.reason for e in decision.events] == ["SpotCapacityUnavailable"]
    assert shift_split(CapacitySplit(spot=4, on_demand=1), decision.spot_cap) == CapacitySplit(spot=1, on_demand=4)


def test_pending_for_less_than_the_threshold_or_a_placed_spot_replica_changes_nothing() -> None:
    assert decide_spot([spot_pod("a", pending_for=299)], None, CAPACITY, now=NOW).spot_cap is None
    assert decide_spot([spot_pod("a", node="n1")], None, CAPACITY, now=NOW).state is None
    # A released (draining) spot replica is no evidence of anything.
    released = spot_pod("a", pending_for=900, terminating=True)
    assert decide_spot([released], None, CAPACITY, now=NOW).state is None


def test_a_probe_that_finds_no_node_is_withdrawn_and_retried_with_a_doubling_backoff() -> None:
    state = decide_spot([spot_pod("a", pending_for=301)], None, CAPACITY, now=NOW).state
    assert state is not None
    timeline = []
    moment = NOW
    for _ in range(40):  # 40 minutes in 60 s steps, the probe never placed
        moment += timedelta(seconds=60)
        decision = decide_spot([spot_pod("a", pending_for=400)] if decision_cap(state) else [], state, CAPACITY,
                               now=moment)
        state = decision.state
        assert state is not None
        timeline.append(decision.spot_cap)
    # Probe 5 min, off 5 min; probe 5 min, off 10 min; probe 5 min ...
    assert timeline[:4] == [1, 1, 1, 1] and timeline[4] == 0
    off_runs = [len(run) for run in "".join(str(c) for c in timeline).split("1") if run]
    assert off_runs[:2] == [5, 10], timeline
    assert state.probe_attempts >= 3


def decision_cap(state: SpotStatus) -> bool:
    return state.probe_started_time is not None


def test_the_backoff_is_capped_at_an_hour() -> None:
    state = SpotStatus(unavailable_since="2026-12-01T00:00:00Z", probe_attempts=9,
                       probe_started_time="2026-12-02T11:54:00Z")
    decision = decide_spot([spot_pod("a", pending_for=360)], state, CAPACITY, now=NOW)
    assert decision.spot_cap == 0 and decision.state is not None
    assert decision.state.next_probe_time == "2026-12-02T13:00:00Z"


def test_a_probe_that_gets_a_node_returns_the_share_to_spot() -> None:
    state = SpotStatus(unavailable_since="2026-12-02T11:00:00Z", probe_attempts=3,
                       probe_started_time="2026-12-02T11:58:00Z")
    decision = decide_spot([spot_pod("a", node="spot-7")], state, CAPACITY, now=NOW)
    assert decision.state is None and decision.spot_cap is None
    assert [e.reason for e in decision.events] == ["SpotCapacityRestored"]
    assert "spot-7 after 60 min" in decision.events[0].message


def test_spot_that_is_there_is_kept_when_only_part_of_the_share_finds_nodes() -> None:
    # 12 spot replicas placed, 10 more pending past the threshold: the spot pools hold 12, not none.
    placed = [spot_pod(f"p{i}", node=f"spot-{i}") for i in range(12)]
    pending = [spot_pod(f"w{i}", pending_for=301) for i in range(10)]
    decision = decide_spot([*placed, *pending], None, CAPACITY, now=NOW)
    assert decision.spot_cap == 13  # the 12 keep running on spot, one more probes
    assert decision.state is not None and decision.state.held_replicas == 12
    assert "the 12 spot replica(s) with nodes keep them" in decision.events[0].message
    assert shift_split(CapacitySplit(spot=22, on_demand=0), decision.spot_cap) == CapacitySplit(spot=13, on_demand=9)
    # The held replicas having nodes is no sign that spot is back; a 13th one is.
    later = NOW + timedelta(seconds=60)
    held = decide_spot([*placed, spot_pod("probe", pending_for=60)], decision.state, CAPACITY, now=later)
    assert held.state is not None and held.spot_cap == 13 and not held.events
    back = decide_spot([*placed, spot_pod("probe", node="spot-12")], decision.state, CAPACITY, now=later)
    assert back.state is None and back.spot_cap is None
    assert [e.reason for e in back.events] == ["SpotCapacityRestored"]


@pytest.mark.parametrize(("split", "cap", "expected"), [
    (CapacitySplit(3, 1), None, CapacitySplit(3, 1)),
    (CapacitySplit(3, 1), 1, CapacitySplit(1, 3)),
    (CapacitySplit(3, 1), 0, CapacitySplit(0, 4)),
    (CapacitySplit(0, 2), 1, CapacitySplit(0, 2)),
    (CapacitySplit(1, 1), 1, CapacitySplit(1, 1)),
])
def test_the_shift_moves_only_the_share_above_the_cap(split: CapacitySplit, cap: int | None,
                                                      expected: CapacitySplit) -> None:
    assert shift_split(split, cap) == expected
    assert shift_split(split, cap).total == split.total
