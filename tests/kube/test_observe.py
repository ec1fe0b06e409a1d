"""What the operator reads from its Deployments."""

from typing import Any

import pytest

from controller.kube.observe import is_rolling


def deployment(wanted: int = 2, generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": wanted}, "status": status}


COMPLETE = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}


@pytest.mark.parametrize(("status", "rolling"), [
    (COMPLETE, False),
    ({**COMPLETE, "observedGeneration": 1}, True),  # the controller has not seen the change yet
    ({**COMPLETE, "replicas": 3}, True),  # the surge pod is up, an old one still runs
    ({**COMPLETE, "updatedReplicas": 1}, True),
    ({**COMPLETE, "availableReplicas": 1}, True),  # a new pod is not ready yet
    ({**COMPLETE, "availableReplicas": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}, False),
])
def test_a_rollout_is_complete_as_the_deployment_controller_defines_it(status: dict[str, Any], rolling: bool) -> None:
    assert is_rolling(deployment(**status)) is rolling


def test_a_deployment_scaled_to_zero_is_complete_with_its_counts_omitted() -> None:
    assert is_rolling(deployment(wanted=0, observedGeneration=2)) is False
