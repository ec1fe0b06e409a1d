"""Read what the owned Deployments say into the core's observation. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.core.capacity import CapacityType
from controller.core.pool import DeploymentState, PoolObservation
from controller.kube.diff import last_applied
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
        applied = last_applied(deployment) or {}
        template = applied.get("spec", {}).get("template")
        recorded = applied.get("metadata", {}).get("annotations", {}).get(TEMPLATE_GENERATION_ANNOTATION)
        states[capacity_type] = DeploymentState(
            replicas=int(deployment.get("spec", {}).get("replicas", 0) or 0),
            # The Deployment controller omits readyReplicas when none are ready.
            ready=int(status.get("readyReplicas", 0) or 0),
            template=template_fingerprint(template) if isinstance(template, dict) else None,
            template_generation=int(recorded) if str(recorded or "").isdigit() else None,
            rolling=is_rolling(deployment),
        )
    return PoolObservation(deployments=states)


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
