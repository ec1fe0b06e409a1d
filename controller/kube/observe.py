"""Read what the owned Deployments say into the core's observation. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.core.capacity import CapacityType
from controller.core.pool import DeploymentState, PoolObservation
from controller.kube.render import CAPACITY_TYPE_LABEL

__all__ = ["observe_deployments"]


def observe_deployments(deployments: Iterable[Mapping[str, Any]]) -> PoolObservation:
    states: dict[CapacityType, DeploymentState] = {}
    for deployment in deployments:
        label = deployment.get("metadata", {}).get("labels", {}).get(CAPACITY_TYPE_LABEL)
        try:
            capacity_type = CapacityType(label)
        except ValueError:
            continue  # not one of ours, or a label edited by hand: not counted
        status = deployment.get("status") or {}
        states[capacity_type] = DeploymentState(
            replicas=int(deployment.get("spec", {}).get("replicas", 0) or 0),
            # The Deployment controller omits readyReplicas when none are ready.
            ready=int(status.get("readyReplicas", 0) or 0),
        )
    return PoolObservation(deployments=states)
