"""Read what the owned Deployments say into the core's observation. Pure."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from controller.core.capacity import CapacityType
from controller.core.pool import DeploymentState, PoolObservation
from controller.kube.diff import last_applied_text
from controller.kube.render import CAPACITY_TYPE_LABEL, TEMPLATE_GENERATION_ANNOTATION, template_fingerprint

__all__ = ["is_rolling", "observe_deployments"]


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
