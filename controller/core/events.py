"""Every Event reason PoolPilot posts, and the words it posts them with.

On-call engineers read these in ``kubectl describe ipool``; docs/runbook.md says
what to do for each reason. Reasons are CamelCase, one per event category.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from controller.core.notices import InterruptionNotice

__all__ = [
    "EventReason",
    "PoolEvent",
    "apply_failed",
    "cheaper_on_api",
    "cheaper_on_pool",
    "drain_deadline_missed",
    "fallback_changed",
    "interruption_notice",
    "object_conflict",
    "object_created",
    "object_updated",
    "replacement_ordered",
    "replica_drained",
    "replica_leaving_routing",
    "spec_accepted",
    "spec_invalid",
    "spot_restored",
    "spot_unavailable",
    "upgrade_started",
]

EventType = Literal["Normal", "Warning"]


class EventReason:
    CREATED = "Created"
    UPDATED = "Updated"
    OBJECT_CONFLICT = "ObjectConflict"
    APPLY_FAILED = "ApplyFailed"
    INVALID_SPEC = "InvalidSpec"
    SPEC_ACCEPTED = "SpecAccepted"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    METRICS_RECOVERED = "MetricsRecovered"
    UPGRADE_STARTED = "UpgradeStarted"
    SPOT_INTERRUPTION_NOTICE = "SpotInterruptionNotice"
    REPLACEMENT_ORDERED = "ReplacementOrdered"
    REPLICA_LEAVING_ROUTING = "ReplicaLeavingRouting"
    REPLICA_DRAINED = "ReplicaDrained"
    DRAIN_DEADLINE_MISSED = "DrainDeadlineMissed"
    SPOT_UNAVAILABLE = "SpotCapacityUnavailable"
    SPOT_RESTORED = "SpotCapacityRestored"
    FALLBACK_OVERFLOW = "FallbackOverflow"
    FALLBACK_FULL = "FallbackFull"
    FALLBACK_RECOVERED = "FallbackRecovered"
    CHEAPER_ON_API = "CheaperOnAPI"
    CHEAPER_ON_POOL = "CheaperOnPool"


@dataclass(frozen=True)
class PoolEvent:
    type: EventType
    reason: str
    message: str


def object_created(kind: str, name: str, detail: str = "") -> PoolEvent:
    suffix = f" ({detail})" if detail else ""
    return PoolEvent("Normal", EventReason.CREATED, f"Created {kind} {name}{suffix}")


def object_updated(kind: str, name: str, fields: Sequence[str]) -> PoolEvent:
    shown = ", ".join(fields[:5]) + (f" and {len(fields) - 5} more" if len(fields) > 5 else "")
    what = f": {shown} changed" if fields else ": fields removed"
    return PoolEvent("Normal", EventReason.UPDATED, f"Updated {kind} {name}{what}")


def object_conflict(kind: str, name: str) -> PoolEvent:
    return PoolEvent(
        "Warning", EventReason.OBJECT_CONFLICT,
        f"{kind} {name} exists and is not owned by this pool; PoolPilot leaves it alone. "
        "Rename the pool or remove that object.",
    )


def apply_failed(what: str, message: str) -> PoolEvent:
    return PoolEvent(
        "Warning", EventReason.APPLY_FAILED,
        f"The API server refused {what}: {message}. The pool's other objects are still applied; "
        "fix the spec (or the admission policy) that produces it.",
    )


def spec_invalid(problems: str) -> PoolEvent:
    return PoolEvent(
        "Warning", EventReason.INVALID_SPEC,
        f"Spec rejected, running replicas left as they are: {problems}",
    )


def spec_accepted(generation: int) -> PoolEvent:
    return PoolEvent("Normal", EventReason.SPEC_ACCEPTED, f"Spec generation {generation} is valid again")


def scaled(from_replicas: int, to_replicas: int, message: str) -> PoolEvent:
    reason = EventReason.SCALED_UP if to_replicas > from_replicas else EventReason.SCALED_DOWN
    return PoolEvent("Normal", reason, message)


def metrics_unavailable(kind: str, message: str) -> PoolEvent:
    return PoolEvent("Warning", EventReason.METRICS_UNAVAILABLE, f"{kind}: {message}")


def metrics_recovered(message: str) -> PoolEvent:
    return PoolEvent("Normal", EventReason.METRICS_RECOVERED, f"Signals are back: {message}")


def upgrade_started(limit: int) -> PoolEvent:
    return PoolEvent("Normal", EventReason.UPGRADE_STARTED,
                     "rolling the pods to the template this operator version renders (the spec did not change); "
                     f"at most {limit} pools roll for an upgrade at a time")


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%SZ")


def interruption_notice(pod: str, notice: InterruptionNotice, deadline: datetime, now: datetime,
                        stage: Literal["draining", "replacing", "already"]) -> PoolEvent:
    left = max(0, int((deadline - now).total_seconds()))
    what = {
        "draining": "taking it out of routing now and draining it",
        "replacing": "its replacement starts now; it keeps serving until the replacement is ready",
        "already": "it is already being deleted by somebody else (out of routing; its ReplicaSet replaces it)",
    }[stage]
    detail = f" ({notice.detail})" if notice.detail else ""
    return PoolEvent("Warning", EventReason.SPOT_INTERRUPTION_NOTICE,
                     f"{notice.kind.value} from {notice.source}{detail} for pod {pod} on node "
                     f"{notice.node or '?'}: capacity goes at {_clock(deadline)} (in {left} s); {what}")


def replacement_ordered(pod: str, capacity_type: str) -> PoolEvent:
    return PoolEvent("Normal", EventReason.REPLACEMENT_ORDERED,
                     f"released pod {pod} from the {capacity_type} Deployment: its ReplicaSet starts exactly one "
                     "replacement now; the Deployment's replica count is unchanged")


def replica_leaving_routing(pod: str, deadline: datetime, now: datetime) -> PoolEvent:
    left = max(0, int((deadline - now).total_seconds()))
    return PoolEvent("Normal", EventReason.REPLICA_LEAVING_ROUTING,
                     f"pod {pod} leaves routing and drains now ({left} s before its deadline)")


def replica_drained(pod: str, noticed_at: datetime, deadline: datetime, now: datetime, missed: bool) -> PoolEvent:
    took = int((now - noticed_at).total_seconds())
    spare = int((deadline - now).total_seconds())
    timing = (f"{-spare} s after its deadline" if spare < 0 else f"{spare} s before its deadline")
    return PoolEvent("Warning" if missed else "Normal", EventReason.REPLICA_DRAINED,
                     f"pod {pod} is gone {took} s after the notice, {timing}")


def drain_deadline_missed(pod: str, deadline: datetime, now: datetime, attempts: int,
                          last_result: str | None) -> PoolEvent:
    late = int((now - deadline).total_seconds())
    tried = f"; evictions tried: {attempts}" + (f", last answer: {last_result}" if last_result else "")
    return PoolEvent("Warning", EventReason.DRAIN_DEADLINE_MISSED,
                     f"pod {pod} still exists {late} s past its deadline ({_clock(deadline)}): requests still on "
                     f"it may be cut when its node goes{tried if attempts else '; no eviction was made yet'}")


def spot_unavailable(stuck: int, after_seconds: int, held: int = 0) -> PoolEvent:
    kept = f"the {held} spot replica(s) with nodes keep them, the rest of " if held else "the "
    return PoolEvent("Warning", EventReason.SPOT_UNAVAILABLE,
                     f"{stuck} spot replica(s) found no node for {after_seconds} s: {kept}the spot share runs on "
                     "on-demand now, and one more spot replica probes until spot capacity is back")


def spot_restored(pod: str, node: str, unavailable_for: timedelta, probes: int) -> PoolEvent:
    minutes = int(unavailable_for.total_seconds() // 60)
    return PoolEvent("Normal", EventReason.SPOT_RESTORED,
                     f"spot replica {pod} got node {node} after {minutes} min without spot capacity ({probes} "
                     "probe(s)): the spot share returns to spot")


def fallback_changed(before: str, after: str, why: str, *, rising: bool) -> PoolEvent:
    """A change of where traffic goes: a Warning when more goes to the API, Normal when traffic comes back."""
    reason = {"Overflow": EventReason.FALLBACK_OVERFLOW, "Full": EventReason.FALLBACK_FULL}.get(
        after, EventReason.FALLBACK_RECOVERED)
    return PoolEvent("Warning" if rising else "Normal", reason, f"fallback {before} -> {after}: {why}")


def cheaper_on_api(why: str) -> PoolEvent:
    """fallback.preferCheaper moved all traffic to the API and the pool to zero: asked for, so Normal."""
    return PoolEvent("Normal", EventReason.CHEAPER_ON_API, why)


def cheaper_on_pool(why: str) -> PoolEvent:
    """fallback.preferCheaper scales the pool back up from zero: the pool is cheaper again."""
    return PoolEvent("Normal", EventReason.CHEAPER_ON_POOL, why)
