"""What every interruption source produces: a frozen notice, or why the input was ignored or rejected.

The sources (``controller/sources/interruptions``) make these at the edge; the core plans drains from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["InterruptionNotice", "NoticeKind", "ParseResult", "Verdict", "instance_id_from_provider_id"]


class NoticeKind(StrEnum):
    SPOT_INTERRUPTION = "spot-interruption"  # the 2-minute warning: the instance goes at the deadline
    REBALANCE_RECOMMENDATION = "rebalance-recommendation"  # an early warning, not a reclaim
    INSTANCE_STOPPING = "instance-stopping"  # EC2 state changes, ASG termination lifecycle hooks
    SCHEDULED_CHANGE = "scheduled-change"  # AWS Health scheduled maintenance for EC2
    NODE_DISRUPTION = "node-disruption"  # a taint of Karpenter, the Node Termination Handler or out-of-service
    POD_DISRUPTION = "pod-disruption"  # the pod's DisruptionTarget condition

    @property
    def is_reclaim(self) -> bool:
        """Whether the replica must be drained now; a rebalance recommendation only starts a replacement."""
        return self is not NoticeKind.REBALANCE_RECOMMENDATION


class Verdict(StrEnum):
    NOTICE = "notice"
    IGNORED = "ignored"  # well-formed, but not an interruption (another event, a state that is no reclaim)
    REJECTED = "rejected"  # malformed: logged, counted, deleted from the queue


@dataclass(frozen=True)
class InterruptionNotice:
    kind: NoticeKind
    source: str  # "aws-sqs", "node-taint", "pod-condition"
    event_id: str  # the same event delivered twice has the same id: handling it again changes nothing
    instance_id: str | None = None  # EC2 instance, mapped to a node through spec.providerID
    node: str | None = None
    pod: str | None = None  # namespace/name, for a pod's own condition
    deadline: datetime | None = None  # when the capacity goes; None when the source does not say
    detail: str = ""  # what the source said, for Events and explain-notice


@dataclass(frozen=True)
class ParseResult:
    verdict: Verdict
    notices: tuple[InterruptionNotice, ...] = ()
    reason: str = ""

    @classmethod
    def notice(cls, *notices: InterruptionNotice, reason: str = "") -> ParseResult:
        return cls(Verdict.NOTICE, tuple(notices), reason)

    @classmethod
    def ignored(cls, reason: str) -> ParseResult:
        return cls(Verdict.IGNORED, reason=reason)

    @classmethod
    def rejected(cls, reason: str) -> ParseResult:
        return cls(Verdict.REJECTED, reason=reason)

    def as_json(self) -> list[dict[str, Any]]:
        """One object per notice (at least one), as ``poolpilot explain-notice --json`` prints them."""
        if not self.notices:
            return [{"result": self.verdict.value, "kind": None, "instanceId": None, "node": None,
                     "pod": None, "deadline": None, "reason": self.reason}]
        return [{"result": self.verdict.value, "kind": n.kind.value, "instanceId": n.instance_id, "node": n.node,
                 "pod": n.pod, "deadline": n.deadline.isoformat() if n.deadline else None,
                 "reason": self.reason or n.detail} for n in self.notices]


def instance_id_from_provider_id(provider_id: str | None) -> str | None:
    """``aws:///us-east-1a/i-0123456789abcdef0`` -> ``i-0123456789abcdef0``; None for other clouds."""
    if not provider_id or not provider_id.startswith("aws://"):
        return None
    last = provider_id.rstrip("/").rsplit("/", 1)[-1]
    return last if last.startswith("i-") else None
