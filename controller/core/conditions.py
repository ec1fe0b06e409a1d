"""Conditions in the ``metav1.Condition`` shape, set the way the API conventions ask.

``lastTransitionTime`` moves only when the status flips, so on-call engineers can
read how long a pool has been in its state; reason and message may change freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from controller.api.status import CONDITION_TYPES, Condition, ConditionStatus

__all__ = ["find_condition", "format_time", "parse_api_time", "parse_time", "set_condition"]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times (whole seconds); naive times are UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    """A time as ``format_time`` writes it (RFC 3339, ``Z``), back to a datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_api_time(value: object) -> datetime | None:
    """A time as the API server sends it (RFC 3339), or None for anything else: a missing or malformed
    field in an object we read is no reason to fail."""
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def find_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    return next((c for c in conditions if c.type == condition_type), None)


def set_condition(
    conditions: Sequence[Condition],
    condition_type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Return the conditions with one type set; its transition time is kept unless the status flips."""
    previous = find_condition(conditions, condition_type)
    transition = previous.last_transition_time if previous and previous.status == status else format_time(now)
    updated = Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    result = [c for c in conditions if c.type != condition_type]
    result.append(updated)
    return sorted(result, key=lambda c: _order(c.type))


def _order(condition_type: str) -> tuple[int, str]:
    # Ready first, then the fixed order of our types, then anything else alphabetically.
    known = CONDITION_TYPES
    index = known.index(condition_type) if condition_type in known else len(known)
    return index, condition_type
