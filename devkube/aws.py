"""AWS as the operator meets it, on this machine: moto in server mode, reached with boto3 over HTTP.

``MotoServer`` runs moto's server on 127.0.0.1; ``interruption_queue`` builds what an admin sets up
for spot interruptions (as Karpenter's and the Node Termination Handler's CloudFormation do): an SQS
queue and EventBridge rules for the EC2 and AWS Health events, targeting it. Events put with
``EventBridge.put_events`` arrive in the queue in EventBridge's envelope, as on AWS.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import boto3
from moto.server import ThreadedMotoServer

__all__ = ["INTERRUPTION_EVENTS", "InterruptionQueue", "MotoServer"]

REGION = "us-east-1"
# The rules of Karpenter's getting-started CloudFormation (detail-type by source).
INTERRUPTION_EVENTS = {
    "aws.ec2": ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation",
                "EC2 Instance State-change Notification"],
    "aws.health": ["AWS Health Event"],
}


class MotoServer:
    def __init__(self) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def __enter__(self) -> Self:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        # moto's backends are global to the process: without a reset, a second server would see the first
        # one's queues, rules and in-flight messages. Each server is a fresh AWS account, as a test expects.
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10).close()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._server.stop()

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def environment(self) -> dict[str, str]:
        """What the operator's process needs to reach this server with boto3's own configuration."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class InterruptionQueue:
    url: str
    arn: str


def interruption_queue(moto: MotoServer, name: str = "poolpilot-interruptions") -> InterruptionQueue:
    sqs, events = moto.client("sqs"), moto.client("events")
    url = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "300"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for index, (source, detail_types) in enumerate(INTERRUPTION_EVENTS.items()):
        rule = f"{name}-{index}"
        events.put_rule(Name=rule, EventPattern=json.dumps({"source": [source], "detail-type": detail_types}))
        events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn}])
    return InterruptionQueue(url=url, arn=arn)
