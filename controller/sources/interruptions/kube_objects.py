"""Interruption notices a cluster itself shows: taints on a Node, the DisruptionTarget condition on a Pod.

Taints (keys only; values and effects vary by version and configuration):

* Karpenter v1 ``karpenter.sh/disrupted`` (no value) and v1beta1 ``karpenter.sh/disruption=disrupting``
  (kubernetes-sigs/karpenter ``pkg/apis/v1/taints.go``; renamed in #1468): Karpenter drains the node.
* The Node Termination Handler's ``aws-node-termination-handler/spot-itn``, ``/scheduled-maintenance``,
  ``/asg-lifecycle-termination`` (value: the event id) and ``/rebalance-recommendation``, which, as the
  EventBridge event it stands for, is an early warning rather than a reclaim (``pkg/node/node.go``).
* ``node.kubernetes.io/out-of-service`` (the node is shut down; Kubernetes' non-graceful node shutdown).

The Pod condition ``DisruptionTarget=True`` (pod disruption conditions, Kubernetes 1.26+): the kubelet's
graceful node shutdown (GKE and Azure spot), an eviction, preemption or the taint manager is about to
delete the pod; its ``deletionTimestamp``, when set, is the deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.core.conditions import parse_api_time
from controller.core.notices import (
    InterruptionNotice,
    NoticeKind,
    ParseResult,
    instance_id_from_provider_id,
)

__all__ = ["DISRUPTION_TAINTS", "parse_node", "parse_object", "parse_pod"]

NODE_SOURCE = "node-taint"
POD_SOURCE = "pod-condition"
DISRUPTION_TAINTS: Mapping[str, NoticeKind] = {
    "karpenter.sh/disrupted": NoticeKind.NODE_DISRUPTION,
    "karpenter.sh/disruption": NoticeKind.NODE_DISRUPTION,
    "aws-node-termination-handler/spot-itn": NoticeKind.NODE_DISRUPTION,
    "aws-node-termination-handler/scheduled-maintenance": NoticeKind.NODE_DISRUPTION,
    "aws-node-termination-handler/asg-lifecycle-termination": NoticeKind.NODE_DISRUPTION,
    "aws-node-termination-handler/rebalance-recommendation": NoticeKind.REBALANCE_RECOMMENDATION,
    "node.kubernetes.io/out-of-service": NoticeKind.NODE_DISRUPTION,
}


def parse_object(obj: Any) -> ParseResult:
    """A Node or a Pod, by its ``kind``."""
    if not isinstance(obj, Mapping):
        return ParseResult.rejected("not a JSON or YAML object")
    kind = obj.get("kind")
    if kind == "Node":
        return parse_node(obj)
    if kind == "Pod":
        return parse_pod(obj)
    return ParseResult.rejected(f"kind {kind!r}: expected an SQS message body, a Node or a Pod")


def parse_node(node: Mapping[str, Any]) -> ParseResult:
    name = _meta(node).get("name")
    if not isinstance(name, str) or not name:
        return ParseResult.rejected("a Node without metadata.name")
    spec = _mapping(node, "spec")
    taints = spec.get("taints") or []
    if not isinstance(taints, list):
        return ParseResult.rejected(f"node {name}: spec.taints is not a list")
    instance = instance_id_from_provider_id(spec.get("providerID") if isinstance(spec.get("providerID"), str)
                                            else None)
    notices = []
    for taint in taints:
        if not isinstance(taint, Mapping) or not isinstance(taint.get("key"), str):
            return ParseResult.rejected(f"node {name}: a taint without a key")
        kind = DISRUPTION_TAINTS.get(taint["key"])
        if kind is None or (taint["key"] == "karpenter.sh/disruption" and taint.get("value") != "disrupting"):
            continue
        shown = taint["key"] + (f"={taint['value']}" if taint.get("value") else "") + f":{taint.get('effect', '')}"
        notices.append(InterruptionNotice(
            kind, NODE_SOURCE, f"{name}/{taint['key']}/{taint.get('value') or taint.get('timeAdded') or ''}",
            instance_id=instance, node=name, detail=f"node {name} has the taint {shown}"))
    if not notices:
        return ParseResult.ignored(f"node {name} has no disruption taint")
    return ParseResult.notice(*notices)


def parse_pod(pod: Mapping[str, Any]) -> ParseResult:
    meta = _meta(pod)
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        return ParseResult.rejected("a Pod without metadata.name")
    status = _mapping(pod, "status")
    found = status.get("conditions")
    conditions: list[Any] = found if isinstance(found, list) else []
    target = next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == "DisruptionTarget"), None)
    if target is None or target.get("status") != "True":
        return ParseResult.ignored(f"pod {namespace}/{name} has no DisruptionTarget=True condition")
    spec = _mapping(pod, "spec")
    node = spec.get("nodeName") if isinstance(spec.get("nodeName"), str) else None
    reason = str(target.get("reason") or "DisruptionTarget")
    message = str(target.get("message") or "")
    return ParseResult.notice(InterruptionNotice(
        NoticeKind.POD_DISRUPTION, POD_SOURCE,
        f"{namespace}/{name}/{meta.get('uid') or ''}/{target.get('lastTransitionTime') or ''}",
        node=node, pod=f"{namespace}/{name}", deadline=parse_api_time(meta.get("deletionTimestamp")),
        detail=f"pod {namespace}/{name}: {reason}" + (f" ({message})" if message else "")))


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj, "metadata")


def _mapping(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


