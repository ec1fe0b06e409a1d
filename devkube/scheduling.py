"""
The stand-in scheduler's decisions: which Node a Pod may run on, and why none fits.

The filters are those of kube-scheduler's default profile that look at labels and taints, in its
order (pkg/scheduler/framework/plugins/): ``NodeUnschedulable`` (``spec.unschedulable``, unless the
pod tolerates ``node.kubernetes.io/unschedulable:NoSchedule``), ``TaintToleration`` (every
``NoSchedule``/``NoExecute`` taint must be tolerated; ``PreferNoSchedule`` is a preference) and
``NodeAffinity`` (``nodeSelector`` and the required ``nodeAffinity`` terms). A node that fails is
counted under the first filter it fails, and the reasons make the real ``FitError`` message:
``0/4 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 2 node(s) were
unschedulable. preemption: ...`` (pkg/scheduler/schedule_one.go, framework/types.go).

Among the nodes that fit, the one with the fewest pods wins, then the first by name: deterministic,
where the real scoring plugins balance resources and topology spread.

Differences: no resource fit (requests, ``nvidia.com/gpu``), no ports, volumes, inter-pod affinity,
topology spread constraints or preemption; ``matchFields`` supports ``metadata.name`` only.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"
_REASON_UNSCHEDULABLE = "node(s) were unschedulable"  # nodeunschedulable.ErrReasonUnschedulable
_REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"  # nodeaffinity.ErrReasonPod
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a pod goes: a node's name, or ``None`` and the scheduler's message saying why not."""

    node: str | None
    message: str = ""


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """``Toleration.ToleratesTaint`` (staging/src/k8s.io/api/core/v1/toleration.go): an empty effect
    matches every effect, an empty key (with ``Exists``) every key; ``Equal`` (the default) compares values."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(
    tolerations: Sequence[Mapping[str, Any]], taints: Iterable[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The first ``NoSchedule``/``NoExecute`` taint no toleration tolerates (the TaintToleration filter)."""
    for taint in taints:
        if taint.get("effect") in _BLOCKING_EFFECTS and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def _requirement_matches(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A ``NodeSelectorRequirement`` (k8s.io/component-helpers/scheduling/corev1/nodeaffinity)."""
    key, operator = requirement.get("key", ""), requirement.get("operator")
    values = [str(v) for v in requirement.get("values") or []]
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and len(values) == 1 and key in labels:
        try:
            actual, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return actual > bound if operator == "Gt" else actual < bound
    return False


def _term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """A term ANDs its requirements; an empty term matches no node, as the real one."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    name_only = {"metadata.name": node["metadata"]["name"]}
    return all(_requirement_matches(e, labels) for e in expressions) and all(
        _requirement_matches(f, name_only) for f in fields
    )


def matches_node_affinity(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """``nodeSelector`` (every label equal) and the required node affinity (any term)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (
        ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    )
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return True
    return any(_term_matches(term, node) for term in terms)


def rejection(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> str | None:
    """Why this node cannot take the pod (the first failing filter's reason), or ``None`` if it can."""
    spec = node.get("spec") or {}
    tolerations = pod_spec.get("tolerations") or []
    if spec.get("unschedulable") and not any(
        tolerates(t, {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule"}) for t in tolerations
    ):
        return _REASON_UNSCHEDULABLE
    taint = untolerated_taint(tolerations, spec.get("taints") or [])
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value') or ''}}}"
    if not matches_node_affinity(pod_spec, node):
        return _REASON_AFFINITY
    return None


def place(
    pod_spec: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]], pods_on: Mapping[str, int]
) -> Placement:
    """The node for a pod (fewest pods, then name), or the real scheduler's message when none fits."""
    if not nodes:
        return Placement(None, "no nodes available to schedule pods")
    reasons: collections.Counter[str] = collections.Counter()
    fitting: list[str] = []
    for node in nodes:
        reason = rejection(pod_spec, node)
        if reason is None:
            fitting.append(node["metadata"]["name"])
        else:
            reasons[reason] += 1
    if fitting:
        return Placement(min(fitting, key=lambda name: (pods_on.get(name, 0), name)))
    histogram = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
    total = len(nodes)
    # DefaultPreemption's post-filter message: no victim would make room for a label or taint mismatch.
    preemption = f"preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
    return Placement(None, f"0/{total} nodes are available: {histogram}. {preemption}")
