"""EventBridge events for EC2, as they arrive in an SQS message body (directly, or wrapped by SNS).

The shapes are AWS's (samples in the Node Termination Handler's ``pkg/monitor/sqsevent``; Karpenter's
``pkg/controllers/interruption/messages`` reads the same fields):

* ``EC2 Spot Instance Interruption Warning`` (``aws.ec2``): ``detail.instance-id``, ``detail.instance-action``
  (hibernate, stop or terminate); the instance goes two minutes after the event's ``time``.
* ``EC2 Instance Rebalance Recommendation``: an early warning, no deadline.
* ``EC2 Instance State-change Notification``: only ``stopping``, ``stopped``, ``shutting-down``,
  ``terminated`` are interruptions; ``pending`` and ``running`` are ignored.
* ``AWS Health Event`` (``aws.health``): only ``service == "EC2"`` with ``eventTypeCategory ==
  "scheduledChange"``; the instances are ``affectedEntities[].entityValue``, the deadline ``startTime``.
* ``EC2 Instance-terminate Lifecycle Action`` (``aws.autoscaling``): an Auto Scaling group terminates
  ``detail.EC2InstanceId``.

Anything else that is a well-formed event is ignored; what is not one is rejected. Never an exception.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from controller.core.notices import InterruptionNotice, NoticeKind, ParseResult

__all__ = ["SPOT_NOTICE", "parse_sqs_body"]

SPOT_NOTICE = timedelta(minutes=2)  # "two minutes before Amazon EC2 stops or terminates your Spot Instance"
SOURCE = "aws-sqs"
_STOPPING_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})


def parse_sqs_body(body: str | bytes) -> ParseResult:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        return ParseResult.rejected(f"not JSON: {error}")
    if isinstance(event, Mapping) and event.get("Type") == "Notification" and isinstance(event.get("Message"), str):
        # Subscribed through SNS: the EventBridge event is the notification's Message, as a string.
        try:
            event = json.loads(event["Message"])
        except ValueError as error:
            return ParseResult.rejected(f"an SNS notification whose Message is not JSON: {error}")
    if not isinstance(event, Mapping):
        return ParseResult.rejected("not a JSON object")
    return parse_event(event)


def parse_event(event: Mapping[str, Any]) -> ParseResult:
    detail_type, detail = event.get("detail-type"), event.get("detail")
    if not isinstance(detail_type, str) or not isinstance(detail, Mapping):
        return ParseResult.rejected("not an EventBridge event: no detail-type or detail")
    event_id = str(event.get("id") or "")
    if not event_id:
        return ParseResult.rejected(f"{detail_type}: no event id")
    at = _time(event.get("time"))
    if detail_type == "EC2 Spot Instance Interruption Warning":
        instance = _instance(detail.get("instance-id"))
        if instance is None or at is None:
            return ParseResult.rejected(f"{detail_type}: no instance-id or time")
        action = str(detail.get("instance-action") or "terminate")
        return ParseResult.notice(InterruptionNotice(
            NoticeKind.SPOT_INTERRUPTION, SOURCE, event_id, instance_id=instance, deadline=at + SPOT_NOTICE,
            detail=f"EC2 will {action} spot instance {instance} at {(at + SPOT_NOTICE).isoformat()}"))
    if detail_type == "EC2 Instance Rebalance Recommendation":
        instance = _instance(detail.get("instance-id"))
        if instance is None:
            return ParseResult.rejected(f"{detail_type}: no instance-id")
        return ParseResult.notice(InterruptionNotice(
            NoticeKind.REBALANCE_RECOMMENDATION, SOURCE, event_id, instance_id=instance,
            detail=f"spot instance {instance} is at elevated risk of interruption"))
    if detail_type == "EC2 Instance State-change Notification":
        instance, state = _instance(detail.get("instance-id")), detail.get("state")
        if instance is None or not isinstance(state, str):
            return ParseResult.rejected(f"{detail_type}: no instance-id or state")
        if state not in _STOPPING_STATES:
            return ParseResult.ignored(f"instance {instance} is {state}: not an interruption")
        return ParseResult.notice(InterruptionNotice(
            NoticeKind.INSTANCE_STOPPING, SOURCE, event_id, instance_id=instance, deadline=at,
            detail=f"instance {instance} is {state}"))
    if detail_type == "AWS Health Event":
        return _health(event_id, detail)
    if detail_type == "EC2 Instance-terminate Lifecycle Action":
        instance = _instance(detail.get("EC2InstanceId"))
        if instance is None:
            return ParseResult.rejected(f"{detail_type}: no EC2InstanceId")
        group = detail.get("AutoScalingGroupName") or "its Auto Scaling group"
        return ParseResult.notice(InterruptionNotice(
            NoticeKind.INSTANCE_STOPPING, SOURCE, event_id, instance_id=instance,
            detail=f"{group} terminates instance {instance}"))
    return ParseResult.ignored(f"{detail_type!r} events are not interruptions")


def _health(event_id: str, detail: Mapping[str, Any]) -> ParseResult:
    service, category = detail.get("service"), detail.get("eventTypeCategory")
    if service != "EC2" or category != "scheduledChange":
        return ParseResult.ignored(f"an AWS Health event for {service}/{category}, not an EC2 scheduled change")
    entities = detail.get("affectedEntities")
    instances = sorted({instance for entity in entities if isinstance(entity, Mapping)
                        if (instance := _instance(entity.get("entityValue"))) is not None}
                       ) if isinstance(entities, list) else []
    if not instances:
        return ParseResult.rejected("an EC2 scheduled change that names no instance in affectedEntities")
    start = _rfc1123(detail.get("startTime"))
    code = detail.get("eventTypeCode") or "a scheduled change"
    return ParseResult.notice(*(InterruptionNotice(
        NoticeKind.SCHEDULED_CHANGE, SOURCE, f"{event_id}/{instance}", instance_id=instance, deadline=start,
        detail=f"{code} for instance {instance}" + (f" from {start.isoformat()}" if start else ""))
        for instance in instances))


def _instance(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith("i-") and len(value) > 2 else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _rfc1123(value: Any) -> datetime | None:
    """AWS Health's ``startTime``: ``Sat, 05 Jun 2016 15:10:09 GMT``."""
    if not isinstance(value, str):
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
