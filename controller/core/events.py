"""Every Event reason PoolPilot posts, and the words it posts them with.

On-call engineers read these in ``kubectl describe ipool``; docs/runbook.md says
what to do for each reason. Reasons are CamelCase, one per event category.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "EventReason",
    "PoolEvent",
    "apply_failed",
    "object_conflict",
    "object_created",
    "object_updated",
    "spec_accepted",
    "spec_invalid",
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
