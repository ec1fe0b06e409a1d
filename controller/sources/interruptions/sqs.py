"""Interruption notices from an SQS queue fed by EventBridge (and optionally SNS), read with boto3.

One long poll (``WaitTimeSeconds``, up to 10 messages) per call, in a worker thread so the event loop
never blocks. Every message received is parsed and then deleted, whatever it was: a notice, an
ignored event or a malformed body (logged with its reason); each counts in
``poolpilot_interruption_messages_total{result}``. A message delivered twice, or the same event sent
again, yields its notice once (event ids are remembered, boundedly). Credentials and the endpoint come
the AWS way: IRSA or the environment (``AWS_REGION``, ``AWS_ENDPOINT_URL``, ...), never a setting of ours.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter

from controller.core.notices import InterruptionNotice, Verdict
from controller.sources.interruptions.aws_events import parse_sqs_body

__all__ = ["MESSAGES", "SqsNoticeSource"]

logger = logging.getLogger(__name__)

MESSAGES = Counter("poolpilot_interruption_messages", "Interruption queue messages received, by what they were",
                   ["result"])  # notice, ignored, rejected, duplicate


class SqsNoticeSource:
    def __init__(self, queue_url: str, *, region: str | None = None, wait_seconds: int = 20,
                 client: Any | None = None, remembered_events: int = 4096) -> None:
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self._client = client if client is not None else boto3.client("sqs", region_name=region)
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remembered = remembered_events

    async def receive(self) -> list[InterruptionNotice]:
        return await asyncio.to_thread(self.receive_batch)

    def receive_batch(self) -> list[InterruptionNotice]:
        """One long poll: the new notices it brought. Raises only for the queue itself (BotoCoreError, ClientError)."""
        answer = self._client.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=self.wait_seconds)
        messages = answer.get("Messages") or []
        notices: list[InterruptionNotice] = []
        for message in messages:
            notices.extend(self._read(message))
        self._delete(messages)
        return notices

    def _read(self, message: dict[str, Any]) -> list[InterruptionNotice]:
        result = parse_sqs_body(message.get("Body") or "")
        if result.verdict is not Verdict.NOTICE:
            MESSAGES.labels(result.verdict.value).inc()
            log = logger.warning if result.verdict is Verdict.REJECTED else logger.info
            log("interruption queue message %s %s: %s", message.get("MessageId"), result.verdict.value, result.reason)
            return []
        fresh = [notice for notice in result.notices if self._first_time(notice.event_id)]
        MESSAGES.labels("notice" if fresh else "duplicate").inc()
        for notice in fresh:
            logger.info("interruption notice %s: %s", notice.kind.value, notice.detail)
        return fresh

    def _first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return False
        self._seen[event_id] = None
        while len(self._seen) > self._remembered:
            self._seen.popitem(last=False)
        return True

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        entries = [{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]}
                   for index, m in enumerate(messages) if m.get("ReceiptHandle")]
        if not entries:
            return
        try:
            answer = self._client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as error:
            # Redelivered after the visibility timeout, and then recognised as a duplicate.
            logger.warning("could not delete %d interruption queue messages: %s", len(entries), error)
            return
        for failure in answer.get("Failed") or []:
            logger.warning("could not delete an interruption queue message: %s", failure.get("Message"))
