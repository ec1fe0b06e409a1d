"""Read what the owned Deployments and the replica pods say into the core's observation. Pure."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from controller.core.capacity import CapacityType
from controller.core.conditions import parse_api_time
from controller.core.notices import NoticeKind, Verdict
from controller.core.pool import DeploymentState, PoolObservation
from controller.core.replicas import DrainMark, DrainStage, ReplicaPod
from controller.kube.diff import last_applied_text
from controller.kube.render import (
    CAPACITY_TYPE_LABEL,
    DRAIN_ANNOTATION,
    DRAIN_LABEL,
    TEMPLATE_GENERATION_ANNOTATION,
    template_fingerprint,
)
from controller.sources.interruptions.kube_objects import parse_pod

__all__ = ["is_rolling", "observe_deployments", "observe_pods", "trimmed_pod"]


def observe_deployments(deployments: Iterable[Mapping[str, Any]]) -> PoolObservation:
    states: dict[CapacityType, DeploymentState] = {}
    for deployment in deployments:
        label = deployment.get("metadata", {}).get("labels", {}).get(CAPACITY_TYPE_LABEL)
        try:
            capacity_type = CapacityType(label)
        except ValueError:
            continue  # not one of ours, or a label edited by hand: not counted
        status = deployment.get("status") or {}
        annotation = last_applied_text(deployment)
        template, recorded = _applied_template(annotation) if annotation is not None else (None, None)
        states[capacity_type] = DeploymentState(
            replicas=int(deployment.get("spec", {}).get("replicas", 0) or 0),
            # The Deployment controller omits readyReplicas when none are ready.
            ready=int(status.get("readyReplicas", 0) or 0),
            template=template,
            template_generation=recorded,
            rolling=is_rolling(deployment),
        )
    return PoolObservation(deployments=states)


@functools.lru_cache(maxsize=4096)
def _applied_template(last_applied_text: str) -> tuple[str | None, int | None]:
    """The fingerprint of the pod template last applied, and the pool generation it was rolled for.

    Cached by the annotation's text: a steady Deployment keeps it, and parsing and hashing it for every
    Deployment of every pool every few seconds was a good part of a steady evaluation.
    """
    try:
        applied = json.loads(last_applied_text)
    except ValueError:
        return None, None  # a hand-edited annotation: as if we had never applied a template
    template = _at(applied, "spec", "template")
    recorded = _at(applied, "metadata", "annotations", TEMPLATE_GENERATION_ANNOTATION)
    return (template_fingerprint(template) if isinstance(template, dict) else None,
            int(recorded) if str(recorded or "").isdigit() else None)


def _at(value: Any, *path: str) -> Any:
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def is_rolling(deployment: Mapping[str, Any]) -> bool:
    """Whether the Deployment's rollout is not complete: the controller's own DeploymentComplete
    (pkg/controller/deployment/util/deployment_util.go) is updated == available == replicas == wanted,
    for the latest generation.

    A rollout the controller gave up on (Progressing=False, ProgressDeadlineExceeded, see
    pkg/controller/deployment/progress.go) no longer counts: it must not hold the fleet's
    upgrade slot forever.
    """
    status = deployment.get("status") or {}
    wanted = int(deployment.get("spec", {}).get("replicas", 0) or 0)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return False
    generation = int(deployment.get("metadata", {}).get("generation", 0) or 0)
    observed = int(status.get("observedGeneration", 0) or 0)
    updated = int(status.get("updatedReplicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    total = int(status.get("replicas", 0) or 0)
    return observed < generation or not updated == available == total == wanted


def trimmed_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Only what ``observe_pods`` reads, copied: a pod's spec (its whole template) is most of its size."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {key: copy.deepcopy(meta[key]) for key in ("name", "namespace", "uid", "labels",
                                                                "creationTimestamp", "deletionTimestamp")
                     if key in meta}
        | ({"annotations": {DRAIN_ANNOTATION: annotations[DRAIN_ANNOTATION]}} if DRAIN_ANNOTATION in annotations
           else {}),
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
        "status": {"phase": status.get("phase"), "podIP": status.get("podIP"),
                   "conditions": copy.deepcopy(status.get("conditions") or [])},
    }


def observe_pods(pods: Iterable[Mapping[str, Any]]) -> tuple[ReplicaPod, ...]:
    """The pool's replica pods as values: where each runs, whether it serves, and its drain mark."""
    found = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = pod.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
        mark = _drain_mark(labels.get(DRAIN_LABEL), (meta.get("annotations") or {}).get(DRAIN_ANNOTATION))
        scheduled = conditions.get("PodScheduled") or {}
        unschedulable = scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        disruption = parse_pod(pod)
        found.append(ReplicaPod(
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            capacity_type=mark.capacity_type if mark else _capacity_type(labels.get(CAPACITY_TYPE_LABEL)),
            node=(pod.get("spec") or {}).get("nodeName") or None,
            phase=str(status.get("phase") or "Pending"),
            ready=(conditions.get("Ready") or {}).get("status") == "True",
            created_at=parse_api_time(meta.get("creationTimestamp")),
            unschedulable_since=(parse_api_time(scheduled.get("lastTransitionTime"))
                                 or parse_api_time(meta.get("creationTimestamp")) if unschedulable else None),
            terminating=bool(meta.get("deletionTimestamp")),
            disruption=disruption.notices[0] if disruption.verdict is Verdict.NOTICE else None,
            drain=mark,
        ))
    return tuple(sorted(found, key=lambda p: p.name))


def _capacity_type(label: Any) -> CapacityType | None:
    try:
        return CapacityType(label)
    except ValueError:
        return None


def _drain_mark(stage: Any, annotation: Any) -> DrainMark | None:
    """The drain state PoolPilot wrote on the pod; a mark it cannot read is no mark (and logged by the caller)."""
    if stage is None or not isinstance(annotation, str):
        return None
    try:
        notice = json.loads(annotation)
        return DrainMark(stage=DrainStage(stage), kind=NoticeKind(notice["kind"]), source=str(notice["source"]),
                         capacity_type=CapacityType(notice["capacityType"]),
                         noticed_at=_required_time(notice["noticedAt"]), deadline=_required_time(notice["deadline"]),
                         event_id=str(notice.get("eventId") or ""))
    except (ValueError, KeyError, TypeError):
        return None


def _required_time(value: Any) -> datetime:
    moment = parse_api_time(value)
    if moment is None:
        raise ValueError(f"not a time: {value!r}")
    return moment
