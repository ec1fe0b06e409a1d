"""Interruption notices from the real shapes: EventBridge events (the Node Termination Handler's samples),
SNS-wrapped ones, malformed and unknown messages, Node taints and the Pod DisruptionTarget condition."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.core.notices import NoticeKind, Verdict, instance_id_from_provider_id
from controller.sources.interruptions.aws_events import parse_sqs_body
from controller.sources.interruptions.kube_objects import parse_node, parse_pod

SPOT = {"version": "0", "id": "1e5527d7-bb36-4607-3370-4164db56a40e",
        "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
        "account": "<account_number>", "time": "1970-01-01T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:ec2:us-east-1b:instance/i-0b662ef9931388ba0"],
        "detail": {"instance-id": "i-0b662ef9931388ba0", "instance-action": "terminate"}}
REBALANCE = {"version": "0", "id": "5d5555d5-dd55-5555-5555-5555dd55d55d",
             "detail-type": "EC2 Instance Rebalance Recommendation", "source": "aws.ec2", "account": "123456789012",
             "time": "2020-10-26T14:14:14Z", "region": "us-east-1",
             "resources": ["arn:aws:ec2:us-east-1b:instance/i-0b662ef9931388ba0"],
             "detail": {"instance-id": "i-0b662ef9931388ba0"}}
STATE = {"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
         "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "account": "123456789012",
         "time": "2015-11-11T21:29:54Z", "region": "us-east-1",
         "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
         "detail": {"instance-id": "i-abcd1111", "state": "pending"}}
HEALTH = {"version": "0", "id": "7fb65329-1", "detail-type": "AWS Health Event", "source": "aws.health",
          "account": "account id", "time": "2016-06-05T06:27:57Z", "region": "us-east-1", "resources": ["i-12345678"],
          "detail": {"eventArn": "arn:aws:health:region::event/id", "service": "EC2",
                     "eventTypeCode": "AWS_EC2_DEDICATED_HOST_NETWORK_MAINTENANCE_SCHEDULED",
                     "eventTypeCategory": "scheduledChange", "startTime": "Sat, 05 Jun 2016 15:10:09 GMT",
                     "eventDescription": [{"language": "en_US", "latestDescription": "..."}],
                     "affectedEntities": [{"entityValue": "i-12345678", "tags": {"stage": "prod"}}]}}
ASG = {"version": "0", "id": "468fb2dc-1", "detail-type": "EC2 Instance-terminate Lifecycle Action",
       "source": "aws.autoscaling", "time": "2021-01-01T00:00:00Z", "region": "us-east-1",
       "detail": {"LifecycleActionToken": "t", "AutoScalingGroupName": "gpu-spot", "LifecycleHookName": "drain",
                  "EC2InstanceId": "i-0aaa1111bbbb2222c",
                  "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}}


def test_a_spot_warning_gives_the_instance_two_minutes() -> None:
    result = parse_sqs_body(json.dumps(SPOT))
    assert result.verdict is Verdict.NOTICE
    (notice,) = result.notices
    assert notice.kind is NoticeKind.SPOT_INTERRUPTION and notice.kind.is_reclaim
    assert notice.instance_id == "i-0b662ef9931388ba0"
    assert notice.deadline == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=2)
    assert notice.event_id == SPOT["id"]


def test_a_rebalance_recommendation_is_an_early_warning_without_a_deadline() -> None:
    (notice,) = parse_sqs_body(json.dumps(REBALANCE)).notices
    assert notice.kind is NoticeKind.REBALANCE_RECOMMENDATION and not notice.kind.is_reclaim
    assert notice.deadline is None


@pytest.mark.parametrize(("state", "verdict"), [("pending", Verdict.IGNORED), ("running", Verdict.IGNORED),
                                                ("stopping", Verdict.NOTICE), ("stopped", Verdict.NOTICE),
                                                ("shutting-down", Verdict.NOTICE), ("terminated", Verdict.NOTICE)])
def test_only_states_on_the_way_down_are_interruptions(state: str, verdict: Verdict) -> None:
    result = parse_sqs_body(json.dumps({**STATE, "detail": {**STATE["detail"], "state": state}}))  # type: ignore[dict-item]
    assert result.verdict is verdict
    if verdict is Verdict.NOTICE:
        assert [n.kind for n in result.notices] == [NoticeKind.INSTANCE_STOPPING]


def test_an_ec2_scheduled_change_names_each_affected_instance_with_its_start() -> None:
    two = {**HEALTH, "detail": {**HEALTH["detail"], "affectedEntities": [  # type: ignore[dict-item]
        {"entityValue": "i-12345678"}, {"entityValue": "i-87654321"}, {"entityValue": "not-an-instance"}]}}
    result = parse_sqs_body(json.dumps(two))
    assert [(n.kind, n.instance_id) for n in result.notices] == [
        (NoticeKind.SCHEDULED_CHANGE, "i-12345678"), (NoticeKind.SCHEDULED_CHANGE, "i-87654321")]
    assert {n.deadline for n in result.notices} == {datetime(2016, 6, 5, 15, 10, 9, tzinfo=UTC)}
    assert len({n.event_id for n in result.notices}) == 2  # one idempotency key per instance
    other = {**HEALTH, "detail": {**HEALTH["detail"], "service": "RDS"}}  # type: ignore[dict-item]
    assert parse_sqs_body(json.dumps(other)).verdict is Verdict.IGNORED


def test_an_auto_scaling_termination_is_an_instance_stopping() -> None:
    (notice,) = parse_sqs_body(json.dumps(ASG)).notices
    assert (notice.kind, notice.instance_id) == (NoticeKind.INSTANCE_STOPPING, "i-0aaa1111bbbb2222c")
    assert "gpu-spot" in notice.detail


def test_an_event_through_sns_is_unwrapped_and_is_the_same_notice() -> None:
    wrapped = {"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:1:t",
               "Message": json.dumps(SPOT), "Timestamp": "1970-01-01T00:00:01Z"}
    assert parse_sqs_body(json.dumps(wrapped)) == parse_sqs_body(json.dumps(SPOT))


def test_a_redelivered_message_is_the_same_notice() -> None:
    assert parse_sqs_body(json.dumps(SPOT)) == parse_sqs_body(json.dumps(SPOT).encode())


@pytest.mark.parametrize(("body", "why"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"hello": "world"}), "not an EventBridge event"),
    (json.dumps({**SPOT, "detail": {}}), "no instance-id"),
    (json.dumps({**SPOT, "id": ""}), "no event id"),
    (json.dumps({"Type": "Notification", "Message": "{oops"}), "Message is not JSON"),
    (json.dumps({**HEALTH, "detail": {**HEALTH["detail"], "affectedEntities": []}}), "names no instance"),  # type: ignore[dict-item]
    ("\udcff", "not JSON"),
])
def test_malformed_messages_are_rejected_with_a_reason_never_raised(body: str, why: str) -> None:
    result = parse_sqs_body(body)
    assert result.verdict is Verdict.REJECTED and why in result.reason and result.notices == ()


def test_an_event_of_another_kind_is_ignored() -> None:
    result = parse_sqs_body(json.dumps({**SPOT, "detail-type": "EC2 AMI State Change"}))
    assert result.verdict is Verdict.IGNORED


def node(*taints: dict[str, Any], provider: str = "aws:///us-east-1a/i-0b662ef9931388ba0") -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": "ip-10-0-1-5"},
            "spec": {"providerID": provider, "taints": list(taints)}}


@pytest.mark.parametrize(("taint", "kind"), [
    ({"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}, NoticeKind.NODE_DISRUPTION),
    ({"key": "karpenter.sh/disruption", "value": "disrupting", "effect": "NoSchedule"}, NoticeKind.NODE_DISRUPTION),
    ({"key": "aws-node-termination-handler/spot-itn", "value": "spot-itn-1e55", "effect": "NoSchedule"},
     NoticeKind.NODE_DISRUPTION),
    ({"key": "aws-node-termination-handler/scheduled-maintenance", "value": "e1", "effect": "NoSchedule"},
     NoticeKind.NODE_DISRUPTION),
    ({"key": "aws-node-termination-handler/asg-lifecycle-termination", "value": "e2", "effect": "NoSchedule"},
     NoticeKind.NODE_DISRUPTION),
    ({"key": "aws-node-termination-handler/rebalance-recommendation", "value": "e3", "effect": "NoSchedule"},
     NoticeKind.REBALANCE_RECOMMENDATION),
    ({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"},
     NoticeKind.NODE_DISRUPTION),
])
def test_disruption_taints_are_notices_for_the_node_and_its_instance(taint: dict[str, Any], kind: NoticeKind) -> None:
    (notice,) = parse_node(node(taint, {"key": "nvidia.com/gpu", "effect": "NoSchedule"})).notices
    assert (notice.kind, notice.node, notice.instance_id) == (kind, "ip-10-0-1-5", "i-0b662ef9931388ba0")


def test_a_node_without_a_disruption_taint_is_ignored() -> None:
    assert parse_node(node({"key": "nvidia.com/gpu", "effect": "NoSchedule"})).verdict is Verdict.IGNORED
    assert parse_node(node({"key": "karpenter.sh/disruption", "value": "candidate"})).verdict is Verdict.IGNORED
    assert parse_node({"kind": "Node", "metadata": {"name": "n"}, "spec": {"taints": "x"}}).verdict is Verdict.REJECTED


def test_provider_ids_map_to_instances_on_aws_only() -> None:
    assert instance_id_from_provider_id("aws:///us-east-1a/i-0123456789abcdef0") == "i-0123456789abcdef0"
    assert instance_id_from_provider_id("gce://project/zone/vm-1") is None
    assert instance_id_from_provider_id(None) is None


def test_a_pod_disruption_target_is_a_notice_with_its_deletion_as_deadline() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "llama-spot-7d9f-x2k4p", "namespace": "llm", "uid": "u1",
                                        "deletionTimestamp": "2026-12-02T10:00:30Z"},
           "spec": {"nodeName": "gke-spot-1"},
           "status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                                      "message": "Pod was terminated in response to imminent node shutdown.",
                                      "lastTransitionTime": "2026-12-02T10:00:00Z"}]}}
    (notice,) = parse_pod(pod).notices
    assert (notice.kind, notice.pod, notice.node) == (NoticeKind.POD_DISRUPTION, "llm/llama-spot-7d9f-x2k4p",
                                                      "gke-spot-1")
    assert notice.deadline == datetime(2026, 12, 2, 10, 0, 30, tzinfo=UTC)
    assert "TerminationByKubelet" in notice.detail
    pod["status"]["conditions"][0]["status"] = "False"  # type: ignore[index]
    assert parse_pod(pod).verdict is Verdict.IGNORED
