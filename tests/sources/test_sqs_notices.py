"""The SQS source against moto's server, with boto3 as the operator uses it: EventBridge rules deliver
EC2 events to the queue; every message is parsed, counted and deleted; duplicates yield nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from prometheus_client import REGISTRY

from controller.core.notices import NoticeKind
from controller.notice_feed import NoticeFeed
from controller.sources.interruptions.sqs import SqsNoticeSource
from devkube.aws import InterruptionQueue, MotoServer, interruption_queue
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def queue(moto: MotoServer, request: pytest.FixtureRequest) -> InterruptionQueue:
    return interruption_queue(moto, name=f"q-{abs(hash(request.node.name)) % 10**8}")


def source(moto: MotoServer, queue: InterruptionQueue, monkeypatch: pytest.MonkeyPatch) -> SqsNoticeSource:
    # The operator's way: boto3 finds endpoint, region and credentials in the environment.
    for key, value in moto.environment().items():
        monkeypatch.setenv(key, value)
    return SqsNoticeSource(queue.url, wait_seconds=1)


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("poolpilot_interruption_messages_total", {"result": result}) or 0.0


def put_ec2_event(moto: MotoServer, detail_type: str, detail: dict[str, Any]) -> None:
    answer = moto.client("events").put_events(Entries=[{
        "Source": "aws.ec2", "DetailType": detail_type, "Detail": json.dumps(detail),
        "Resources": [f"arn:aws:ec2:us-east-1b:instance/{detail['instance-id']}"]}])
    assert answer["FailedEntryCount"] == 0


def remaining(moto: MotoServer, queue: InterruptionQueue) -> int:
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(value) for value in attributes["Attributes"].values())


def test_eventbridge_events_become_notices_and_leave_the_queue(
        moto: MotoServer, queue: InterruptionQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = source(moto, queue, monkeypatch)
    before = counted("notice")
    put_ec2_event(moto, "EC2 Spot Instance Interruption Warning",
                  {"instance-id": "i-0b662ef9931388ba0", "instance-action": "terminate"})
    put_ec2_event(moto, "EC2 Instance Rebalance Recommendation", {"instance-id": "i-0aaa1111bbbb2222c"})
    notices = asyncio.run(reader.receive())
    for _ in range(5):  # a long poll may return fewer messages than there are
        if len(notices) >= 2:
            break
        notices += reader.receive_batch()
    assert sorted((n.kind, n.instance_id) for n in notices) == [
        (NoticeKind.REBALANCE_RECOMMENDATION, "i-0aaa1111bbbb2222c"),
        (NoticeKind.SPOT_INTERRUPTION, "i-0b662ef9931388ba0")]
    spot = next(n for n in notices if n.kind is NoticeKind.SPOT_INTERRUPTION)
    assert spot.deadline is not None
    assert counted("notice") - before == 2
    eventually(lambda: remaining(moto, queue), lambda left: left == 0, timeout=10, what="the messages deleted")


def test_malformed_unknown_and_duplicate_messages_are_counted_deleted_and_yield_nothing(
        moto: MotoServer, queue: InterruptionQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = source(moto, queue, monkeypatch)
    sqs = boto3.client("sqs")
    event = {"version": "0", "id": "dup-1", "detail-type": "EC2 Spot Instance Interruption Warning",
             "source": "aws.ec2", "time": "2026-12-02T10:00:00Z", "detail": {"instance-id": "i-0123456789abcdef0"}}
    before = {result: counted(result) for result in ("notice", "duplicate", "rejected", "ignored")}
    for body in ("{not json", json.dumps({**event, "detail-type": "EC2 AMI State Change"}),
                 json.dumps(event), json.dumps({"Type": "Notification", "Message": json.dumps(event)})):
        sqs.send_message(QueueUrl=queue.url, MessageBody=body)
    notices: list[Any] = []
    for _ in range(5):  # a long poll may return fewer messages than there are
        notices += reader.receive_batch()
        if remaining(moto, queue) == 0:
            break
    assert [(n.kind, n.instance_id) for n in notices] == [(NoticeKind.SPOT_INTERRUPTION, "i-0123456789abcdef0")]
    assert {result: counted(result) - before[result] for result in before} == {
        "notice": 1, "duplicate": 1, "rejected": 1, "ignored": 1}
    assert remaining(moto, queue) == 0


def test_the_feed_maps_instances_to_nodes_wakes_their_pools_and_forgets_stale_notices(
        moto: MotoServer, queue: InterruptionQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = source(moto, queue, monkeypatch)
    nodes = {"i-0b662ef9931388ba0": "ip-10-0-1-7.ec2.internal"}
    woken: list[str] = []
    clock = [datetime.now(UTC)]
    feed = NoticeFeed(reader, node_of_instance=nodes.get, on_notice=woken.append, clock=lambda: clock[0])
    put_ec2_event(moto, "EC2 Spot Instance Interruption Warning",
                  {"instance-id": "i-0b662ef9931388ba0", "instance-action": "terminate"})
    put_ec2_event(moto, "EC2 Spot Instance Interruption Warning",
                  {"instance-id": "i-0fffffffffffffff0", "instance-action": "terminate"})  # not in this cluster

    async def two_polls() -> None:
        task = asyncio.create_task(feed.run())
        for _ in range(50):
            if feed.unmatched + len(woken) >= 2:
                break
            await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(two_polls())
    assert woken == ["ip-10-0-1-7.ec2.internal"] and feed.unmatched == 1
    (kept,) = feed.for_node("ip-10-0-1-7.ec2.internal")
    assert kept.node == "ip-10-0-1-7.ec2.internal" and kept.kind is NoticeKind.SPOT_INTERRUPTION
    clock[0] += timedelta(minutes=15)  # well past the 2-minute deadline
    feed.accept([])
    assert feed.for_node("ip-10-0-1-7.ec2.internal") == ()


def test_a_queue_that_fails_is_retried_and_never_stops_the_feed(moto: MotoServer, monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    for key, value in moto.environment().items():
        monkeypatch.setenv(key, value)
    missing = SqsNoticeSource(f"{moto.url}/123456789012/no-such-queue", wait_seconds=0)
    feed = NoticeFeed(missing, node_of_instance=lambda _: None, on_notice=lambda _: None)

    async def briefly() -> bool:
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(1.5)
        alive = not task.done()
        task.cancel()
        return alive

    assert asyncio.run(briefly())


def test_a_poll_abandoned_by_a_stopping_operator_returns_at_once_and_leaves_its_messages_queued(
        moto: MotoServer, queue: InterruptionQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in moto.environment().items():
        monkeypatch.setenv(key, value)
    reader = SqsNoticeSource(queue.url, wait_seconds=3)

    async def stop_mid_poll() -> float:
        poll = asyncio.create_task(reader.receive())
        await asyncio.sleep(0.3)  # the long poll is waiting on the queue
        put_ec2_event(moto, "EC2 Spot Instance Interruption Warning",
                      {"instance-id": "i-0c0c0c0c0c0c0c0c0", "instance-action": "terminate"})
        poll.cancel()
        started = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.CancelledError):
            await poll
        return asyncio.get_running_loop().time() - started

    stopped_after = asyncio.run(stop_mid_poll())  # asyncio.run would join an executor's thread here
    assert stopped_after < 1.0, "the cancelled poll was waited for"
    # The abandoned poll deletes nothing: once it ends, the message is still in the queue (in flight until its
    # visibility timeout, then back for the next reader).
    time.sleep(reader.wait_seconds + 1)
    assert remaining(moto, queue) == 1
