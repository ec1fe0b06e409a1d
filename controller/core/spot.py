"""Spot capacity that is not there: move its share to on-demand, probe with one spot replica, move it back.

Pure: the pool's pods, the spot state from the status and ``now`` in; the cap on spot replicas, the next
state and the Events out.

* A spot replica the scheduler cannot place for ``capacity.spotUnavailableAfterSeconds`` means the spot
  pools have no more capacity (Karpenter's insufficient-capacity errors look the same from here). The
  spot replicas that have nodes keep them (``held_replicas``: spot that is there is not given up); the rest
  of the spot share runs on on-demand, except one more spot replica that stays asked for: the probe.
* A probe lasts ``spotUnavailableAfterSeconds``. A probe that finds no node is withdrawn and the next one
  starts after a backoff that doubles (one window, two, four, ... at most an hour), so a region without
  spot for hours does not keep a pending pod (and a provisioning attempt) forever.
* The first spot replica beyond the held ones that gets a node ends it: the share returns to spot.

The state lives in ``status.spot``, so a restart neither forgets the shift nor restarts its clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.api.spec import CapacitySpec
from controller.api.status import SpotStatus
from controller.core import events
from controller.core.capacity import CapacitySplit, CapacityType
from controller.core.conditions import format_time, parse_time
from controller.core.replicas import ReplicaPod

__all__ = ["SpotDecision", "decide_spot", "shift_split"]

MAX_PROBE_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class SpotDecision:
    state: SpotStatus | None  # None: spot is fine, the split is the spec's
    spot_cap: int | None  # at most this many spot replicas now (1 while a probe runs, 0 between probes)
    events: tuple[events.PoolEvent, ...] = ()


def decide_spot(pods: Sequence[ReplicaPod], previous: SpotStatus | None, capacity: CapacitySpec, *,
                now: datetime) -> SpotDecision:
    window = timedelta(seconds=capacity.spot_unavailable_after_seconds)
    spot = [p for p in pods if p.capacity_type is CapacityType.SPOT and not p.released and not p.terminating]
    placed = [p for p in spot if p.node is not None]
    stuck = [p for p in spot if p.unschedulable_since is not None and now - p.unschedulable_since >= window]
    if previous is None:
        if not stuck:
            return SpotDecision(state=None, spot_cap=None)
        held = len(placed)
        state = SpotStatus(unavailable_since=format_time(now), probe_attempts=1, probe_started_time=format_time(now),
                           held_replicas=held)
        return SpotDecision(state=state, spot_cap=held + 1, events=(events.spot_unavailable(
            len(stuck), capacity.spot_unavailable_after_seconds, held),))
    held = previous.held_replicas
    if len(placed) > held:
        since = parse_time(previous.unavailable_since)
        newest = max(placed, key=lambda p: p.created_at or datetime.min.replace(tzinfo=now.tzinfo))
        return SpotDecision(state=None, spot_cap=None, events=(events.spot_restored(
            newest.name, newest.node or "?", now - since, previous.probe_attempts),))
    if previous.probe_started_time is not None:
        started = parse_time(previous.probe_started_time)
        if now - started < window:
            return SpotDecision(state=previous, spot_cap=held + 1)
        backoff = min(MAX_PROBE_BACKOFF, window * 2 ** (previous.probe_attempts - 1))
        state = previous.model_copy(update={"probe_started_time": None, "next_probe_time": format_time(now + backoff)})
        return SpotDecision(state=state, spot_cap=held)
    next_probe = parse_time(previous.next_probe_time) if previous.next_probe_time else now
    if now < next_probe:
        return SpotDecision(state=previous, spot_cap=held)
    state = previous.model_copy(update={"probe_attempts": previous.probe_attempts + 1,
                                        "probe_started_time": format_time(now), "next_probe_time": None})
    return SpotDecision(state=state, spot_cap=held + 1)


def shift_split(split: CapacitySplit, spot_cap: int | None) -> CapacitySplit:
    """The spec's split with the spot share above the cap moved to on-demand."""
    if spot_cap is None or split.spot <= spot_cap:
        return split
    return CapacitySplit(spot=spot_cap, on_demand=split.on_demand + split.spot - spot_cap)

