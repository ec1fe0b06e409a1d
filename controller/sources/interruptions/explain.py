"""``poolpilot explain-notice``: what PoolPilot makes of one SQS message body, Node or Pod.

The same parsers as the operator's sources (``aws_events``, ``kube_objects``), never a second one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import yaml

from controller.core.notices import ParseResult
from controller.sources.interruptions.aws_events import parse_sqs_body
from controller.sources.interruptions.kube_objects import parse_object

__all__ = ["describe", "explain_text"]


def explain_text(text: str) -> ParseResult:
    """JSON or YAML; an object with ``kind`` Node or Pod is read as one, anything else as an SQS body."""
    try:
        parsed = json.loads(text)
        as_json = text  # the queue reader's path, byte for byte
    except ValueError:
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            return parse_sqs_body(text)  # says why it is not JSON, as the queue reader would
        as_json = json.dumps(parsed, default=str)
    if isinstance(parsed, Mapping) and parsed.get("kind") in ("Node", "Pod"):
        return parse_object(parsed)
    return parse_sqs_body(as_json)


def describe(result: ParseResult) -> str:
    """For a person: the verdict, then one line per notice."""
    if not result.notices:
        return f"{result.verdict.value}: {result.reason}"
    lines = [f"{result.verdict.value}: {len(result.notices)} notice" + ("s" if len(result.notices) > 1 else "")]
    for notice in result.notices:
        where = ", ".join(part for part in (
            f"instance {notice.instance_id}" if notice.instance_id else "",
            f"node {notice.node}" if notice.node else "",
            f"pod {notice.pod}" if notice.pod else "") if part)
        deadline = f"deadline {notice.deadline.isoformat()}" if notice.deadline else "no deadline given"
        action = "a reclaim" if notice.kind.is_reclaim else "an early warning, not a reclaim"
        lines.append(f"  {notice.kind.value} ({notice.source}): {where or 'no target'}; {deadline}; {action}")
        lines.append(f"    {notice.detail}")
    return "\n".join(lines)
