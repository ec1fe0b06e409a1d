"""What the operator reads from its Deployments."""

import json
from typing import Any

import pytest

from controller.core.capacity import CapacityType
from controller.kube.diff import LAST_APPLIED_ANNOTATION
from controller.kube.observe import is_rolling, observe_deployments
from controller.kube.render import CAPACITY_TYPE_LABEL, TEMPLATE_GENERATION_ANNOTATION, template_fingerprint


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


def _with_annotation(text: str) -> dict[str, Any]:
    return {"metadata": {"labels": {CAPACITY_TYPE_LABEL: "spot"}, "annotations": {LAST_APPLIED_ANNOTATION: text}},
            "spec": {"replicas": 2}, "status": {"readyReplicas": 2}}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"spec": "x"}', '{"spec": {"template": 3}}',
                                  '{"metadata": {"annotations": {"poolpilot.io/template-generation": "x"}}}'])
def test_a_hand_edited_last_applied_annotation_reads_as_no_template(text: str) -> None:
    state = observe_deployments([_with_annotation(text)]).deployments[CapacityType.SPOT]
    assert (state.template, state.template_generation, state.replicas, state.ready) == (None, None, 2, 2)


def test_the_applied_template_is_read_from_the_annotation_text() -> None:
    manifest = {"metadata": {"annotations": {TEMPLATE_GENERATION_ANNOTATION: "7"}},
                "spec": {"template": {"spec": {"containers": [{"name": "vllm"}]}}}}
    state = observe_deployments([_with_annotation(json.dumps(manifest))]).deployments[CapacityType.SPOT]
    assert state.template == template_fingerprint(manifest["spec"]["template"])  # type: ignore[index]
    assert state.template_generation == 7
