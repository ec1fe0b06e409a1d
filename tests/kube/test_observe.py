"""What the operator reads from its Deployments."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.capacity import CapacityType
from controller.core.notices import NoticeKind
from controller.core.replicas import DrainMark, DrainStage
from controller.kube.diff import LAST_APPLIED_ANNOTATION
from controller.kube.observe import is_rolling, observe_deployments, observe_pods, trimmed_pod
from controller.kube.render import (
    CAPACITY_TYPE_LABEL,
    TEMPLATE_GENERATION_ANNOTATION,
    PoolRef,
    release_patch,
    template_fingerprint,
)


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


def _replica(name: str, **overrides: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "llm", "uid": f"uid-{name}",
                     "creationTimestamp": "2026-12-02T11:00:00Z",
                     "labels": {"poolpilot.io/pool": "llama", "poolpilot.io/capacity-type": "spot",
                                "poolpilot.io/serving": "true"}},
        "spec": {"nodeName": "spot-1", "containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]},
    }
    for key, value in overrides.items():
        pod[key] = {**pod[key], **value}
    return pod


def test_replica_pods_are_read_with_node_readiness_and_their_drain_mark() -> None:
    pool = PoolRef(name="llama", namespace="llm", uid="pool-uid")
    mark = DrainMark(stage=DrainStage.DRAINING, kind=NoticeKind.SPOT_INTERRUPTION, source="aws-sqs",
                     capacity_type=CapacityType.SPOT, noticed_at=datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
                     deadline=datetime(2026, 12, 2, 12, 2, tzinfo=UTC), event_id="e1")
    released = _replica("b")
    patch = release_patch(pool, mark, serving=False)["metadata"]
    released["metadata"]["labels"] = {k: v for k, v in {**released["metadata"]["labels"], **patch["labels"]}.items()
                                      if v is not None}
    released["metadata"]["annotations"] = patch["annotations"]
    pending = _replica("c", spec={"nodeName": None}, status={"phase": "Pending", "podIP": None, "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "lastTransitionTime": "2026-12-02T11:55:00Z"}]})
    a, b, c = observe_pods([trimmed_pod(p) for p in (_replica("a"), released, pending)])
    assert (a.capacity_type, a.node, a.ready, a.drain, a.unschedulable_since) == (CapacityType.SPOT, "spot-1", True,
                                                                                   None, None)
    assert b.drain == mark and b.capacity_type is CapacityType.SPOT and b.released
    assert "poolpilot.io/capacity-type" not in released["metadata"]["labels"]
    assert released["metadata"]["labels"]["poolpilot.io/serving"] == "false"
    assert patch["ownerReferences"][0]["uid"] == "pool-uid"
    assert c.node is None and c.unschedulable_since == datetime(2026, 12, 2, 11, 55, tzinfo=UTC)


def test_a_drain_mark_that_cannot_be_read_is_no_mark() -> None:
    broken = _replica("a", metadata={"labels": {"poolpilot.io/drain": "draining"},
                                     "annotations": {"poolpilot.io/drain-notice": "{not json"}})
    (pod,) = observe_pods([broken])
    assert pod.drain is None and pod.capacity_type is None


def test_a_disruption_target_condition_is_the_pods_own_notice() -> None:
    evicted = _replica("a", metadata={"deletionTimestamp": "2026-12-02T12:00:30Z"}, status={"conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
         "lastTransitionTime": "2026-12-02T12:00:00Z"}]})
    (pod,) = observe_pods([trimmed_pod(evicted)])
    assert pod.terminating and pod.disruption is not None
    assert pod.disruption.kind is NoticeKind.POD_DISRUPTION and pod.disruption.node == "spot-1"
    assert "containers" not in trimmed_pod(evicted)["spec"]
