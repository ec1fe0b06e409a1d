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
import contextlib
import logging
import threading
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from controller.core.notices import InterruptionNotice, Verdict
from controller.sources.interruptions.aws_events import parse_sqs_body
from controller.telemetry.metrics import OPERATOR

__all__ = ["SqsNoticeSource"]

logger = logging.getLogger(__name__)


class SqsNoticeSource:
    def __init__(self, queue_url: str, *, region: str | None = None, wait_seconds: int = 20,
                 client: Any | None = None, remembered_events: int = 4096) -> None:
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self._client = client if client is not None else boto3.client("sqs", region_name=region)
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remembered = remembered_events

    async def receive(self) -> list[InterruptionNotice]:
        """One long poll, in a daemon thread of its own: a stopping operator does not wait out the poll
        (``asyncio.run`` joins the default executor's threads, up to ``wait_seconds``). Messages are read
        on the loop and deleted only then, so a poll abandoned (the operator stopping) deletes nothing: its
        messages come back after their visibility timeout to the next reader (a restarted operator)."""
        loop = asyncio.get_running_loop()
        polled: asyncio.Future[list[dict[str, Any]]] = loop.create_future()

        def settle(messages: list[dict[str, Any]], error: BaseException | None) -> None:
            if polled.done():  # abandoned
                return
            if error is not None:
                polled.set_exception(error)
            else:
                polled.set_result(messages)

        def poll() -> None:
            messages: list[dict[str, Any]] = []
            error: BaseException | None = None
            try:
                messages = self._poll()
            except BaseException as raised:  # handed to the awaiting task
                error = raised
            with contextlib.suppress(RuntimeError):  # the loop is closed: the operator has stopped
                loop.call_soon_threadsafe(settle, messages, error)

        threading.Thread(target=poll, name="sqs-long-poll", daemon=True).start()
        messages = await polled
        notices = self._take(messages)
        # Not awaited: the caller keeps its notices with no await in between. Should the process end before
        # the delete, the message comes back and is acted on again, idempotently (drain state is on the pod).
        threading.Thread(target=self._delete, args=(messages,), name="sqs-delete", daemon=True).start()
        return notices

    def receive_batch(self) -> list[InterruptionNotice]:
        """One long poll: the new notices it brought. Raises only for the queue itself (BotoCoreError, ClientError)."""
        messages = self._poll()
        notices = self._take(messages)
        self._delete(messages)
        return notices

    def _poll(self) -> list[dict[str, Any]]:
        answer = self._client.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=self.wait_seconds)
        messages: list[dict[str, Any]] = answer.get("Messages") or []
        return messages

    def _take(self, messages: list[dict[str, Any]]) -> list[InterruptionNotice]:
        return [notice for message in messages for notice in self._read(message)]

    def _read(self, message: dict[str, Any]) -> list[InterruptionNotice]:
        result = parse_sqs_body(message.get("Body") or "")
        if result.verdict is not Verdict.NOTICE:
            OPERATOR.interruption_messages.labels(result.verdict.value).inc()
            log = logger.warning if result.verdict is Verdict.REJECTED else logger.info
            log("interruption queue message %s %s: %s", message.get("MessageId"), result.verdict.value, result.reason)
            return []
        fresh = [notice for notice in result.notices if self._first_time(notice.event_id)]
        OPERATOR.interruption_messages.labels("notice" if fresh else "duplicate").inc()
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
