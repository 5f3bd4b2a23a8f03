"""The embedded SQS as patched (infra/local/moto_sqs.py): a receive costs O(messages returned), not O(queue length);
a standard queue keeps SQS's semantics (order of arrival, visibility, redrive, retention, purge); and, when the faults
are on, it delivers a share of messages twice and out of order, as SQS does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.local import faults

ACCOUNT, REGION = "123456789012", "eu-west-3"


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queue(sqs: Any, name: str = "q", **attributes: str) -> str:
    url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def _backend() -> Any:
    from moto.sqs.models import sqs_backends

    return sqs_backends[ACCOUNT][REGION]


def _bodies(answer: dict[str, Any]) -> list[str]:
    return [m["Body"] for m in answer.get("Messages", [])]


class _CountingList(list):  # type: ignore[type-arg]
    """A queue's message list that counts the walks through it (moto's O(queue length) paths all walk it)."""

    walks = 0

    def __iter__(self) -> Iterator[Any]:
        _CountingList.walks += 1
        return super().__iter__()


# --- cost -------------------------------------------------------------------------------------------------------


def test_a_receive_never_walks_the_queue_and_looks_at_a_few_messages_only(sqs, monkeypatch):
    from infra.local import moto_sqs

    url = _queue(sqs, VisibilityTimeout="300")
    backend = _backend()
    for i in range(10_000):
        backend.send_message("q", f"m{i}")
    backend.receive_message("q", 10, 0, 300)  # builds the index: the only walk through the queue
    for _ in range(998):  # 9,990 messages in flight ahead of the last 10 visible ones
        backend.receive_message("q", 10, 0, 300)
    queue = backend.get_queue("q")
    queue._messages = _CountingList(queue._messages)
    _CountingList.walks = 0
    looked_at: list[int] = []
    is_ready = moto_sqs._is_ready
    monkeypatch.setattr(moto_sqs, "_is_ready", lambda m, now: looked_at.append(1) or is_ready(m, now))

    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)

    assert _bodies(answer) == [f"m{i}" for i in range(9_990, 10_000)]
    assert _CountingList.walks == 0
    assert len(looked_at) <= 20


def test_queue_counts_read_the_clock_once_per_count_and_count_as_moto_does(sqs, monkeypatch):
    from moto.core import utils
    from moto.sqs import models

    url = _queue(sqs, VisibilityTimeout="300")
    for i in range(30):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", **({"DelaySeconds": 60} if i < 5 else {}))
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)  # 10 in flight, 5 delayed, 15 visible
    names = [f"ApproximateNumberOfMessages{what}" for what in ("", "NotVisible", "Delayed")]
    reads = []
    clock = utils.unix_time_millis
    monkeypatch.setattr(utils, "unix_time_millis", lambda *a: reads.append(1) or clock(*a))
    monkeypatch.setattr(models, "unix_time_millis", utils.unix_time_millis)

    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]

    assert counts == {names[0]: "15", names[1]: "10", names[2]: "5"}
    assert len(reads) <= 10, f"{len(reads)} clock reads for 30 messages: one per message or more"


def test_a_delete_and_a_visibility_change_find_their_message_without_walking_the_queue(sqs):
    url = _queue(sqs)
    backend = _backend()
    for i in range(1_000):
        backend.send_message("q", f"m{i}")
    first, second = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
    queue = backend.get_queue("q")
    queue._messages = _CountingList(queue._messages)
    _CountingList.walks = 0

    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)

    assert _CountingList.walks == 0
    assert len(queue._messages) == 999


# --- semantics kept -------------------------------------------------------------------------------------------------


def test_messages_come_in_the_order_they_were_sent_when_nothing_disturbs_them(sqs):
    url = _queue(sqs)
    for i in range(25):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")

    bodies = [body for _ in range(3) for body in _bodies(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10))]

    assert bodies == [f"m{i}" for i in range(25)]


def test_a_message_made_visible_again_is_received_again_with_its_count(sqs):
    url = _queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="only")
    first = sqs.receive_message(QueueUrl=url, VisibilityTimeout=30)["Messages"][0]
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None  # in flight

    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]

    assert again["MessageId"] == first["MessageId"]
    assert again["ReceiptHandle"] != first["ReceiptHandle"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_message_received_with_no_visibility_timeout_stays_receivable_but_comes_once_per_answer(sqs):
    url = _queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="only")

    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    second = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)

    assert (_bodies(first), _bodies(second)) == (["only"], ["only"])


def test_deletes_accept_any_handle_of_the_message_once_and_refuse_unknown_ones(sqs):
    url = _queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="only")
    first = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first, VisibilityTimeout=0)
    sqs.receive_message(QueueUrl=url)

    sqs.delete_message(QueueUrl=url, ReceiptHandle=first)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first)  # again: fine, as in SQS
    with pytest.raises(ClientError) as caught:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")

    assert caught.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(ClientError):  # gone for visibility changes too
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first, VisibilityTimeout=0)
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None


def test_a_message_received_too_often_moves_to_the_dead_letter_queue(sqs):
    dlq = _queue(sqs, "dlq")
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = _queue(sqs, RedrivePolicy=f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": 2}}')
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):
        handle = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)

    assert sqs.receive_message(QueueUrl=url).get("Messages") is None
    assert _bodies(sqs.receive_message(QueueUrl=dlq)) == ["poison"]


def test_a_message_past_its_retention_period_is_never_delivered(sqs):
    url = _queue(sqs, MessageRetentionPeriod="60")
    sqs.send_message(QueueUrl=url, MessageBody="old")
    sqs.send_message(QueueUrl=url, MessageBody="new")
    _backend().get_queue("q")._messages[0].sent_timestamp -= 61_000

    assert _bodies(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)) == ["new"]
    assert len(_backend().get_queue("q")._messages) == 1


def test_a_purged_queue_delivers_nothing_and_takes_new_messages(sqs):
    url = _queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="before")
    sqs.purge_queue(QueueUrl=url)
    sqs.send_message(QueueUrl=url, MessageBody="after")

    assert _bodies(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)) == ["after"]


def test_a_long_poll_is_answered_by_a_message_sent_while_it_waits(sqs):
    url = _queue(sqs)
    answers: list[list[str]] = []
    poll = threading.Thread(
        target=lambda: answers.append(_bodies(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)))
    )
    poll.start()
    poll.join(0.3)
    sqs.send_message(QueueUrl=url, MessageBody="late")
    poll.join(9)

    assert answers == [["late"]]


def test_a_delayed_message_is_not_delivered_before_its_delay(sqs):
    url = _queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    sqs.send_message(QueueUrl=url, MessageBody="now")

    assert _bodies(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)) == ["now"]


# --- faults: at-least-once delivery, no order -----------------------------------------------------------------------


def _drain(sqs: Any, url: str, expected: int, *, wait: int = 2, delete: bool = True) -> list[dict[str, Any]]:
    """Receive one message at a time until ``expected`` came or the queue stays empty for ``wait`` seconds."""
    seen: list[dict[str, Any]] = []
    while len(seen) < expected:
        messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=wait).get("Messages", [])
        if not messages:
            break
        seen.extend(messages)
        if delete:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
    return seen


def test_with_duplicates_on_a_deleted_message_is_delivered_again_later_same_id_new_handle(sqs):
    url = _queue(sqs)
    with faults.injected(seed=1, duplicate_rate=1.0, redelivery_seconds=0.0):
        sqs.send_message(QueueUrl=url, MessageBody="A")
        sqs.send_message(QueueUrl=url, MessageBody="B")

        seen = _drain(sqs, url, expected=4)

    assert [m["Body"] for m in seen] == ["A", "B", "A", "B"]  # twice each, and A's copy after B: out of order
    assert seen[0]["MessageId"] == seen[2]["MessageId"] and seen[1]["MessageId"] == seen[3]["MessageId"]
    assert len({m["ReceiptHandle"] for m in seen}) == 4


def test_a_duplicate_can_reach_a_second_consumer_while_the_first_still_holds_the_message(sqs):
    url = _queue(sqs)
    with faults.injected(seed=1, duplicate_rate=1.0, redelivery_seconds=0.0):
        sqs.send_message(QueueUrl=url, MessageBody="A")
        first = sqs.receive_message(QueueUrl=url, VisibilityTimeout=300)["Messages"][0]
        second = sqs.receive_message(QueueUrl=url, VisibilityTimeout=300, WaitTimeSeconds=2)["Messages"][0]

    assert (second["MessageId"], second["Body"]) == (first["MessageId"], "A")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])  # each copy is deleted on its own


def _duplicated_bodies(sqs: Any, seed: int, rate: float, count: int = 200) -> list[str]:
    """Which of ``count`` messages a seeded run delivers twice (received once each, fast; copies counted)."""
    url = _queue(sqs, "replayed")  # the same queue (name) each time: a stream of faults is per queue
    with faults.injected(seed=seed, duplicate_rate=rate, redelivery_seconds=600.0):
        for start in range(0, count, 10):
            sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)]
            )
        for _ in range(count // 10):
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)
    bodies = [m.body for m in _backend().get_queue("replayed")._messages]
    sqs.delete_queue(QueueUrl=url)
    return sorted({b for b in bodies if bodies.count(b) > 1})


def test_the_share_of_duplicates_follows_the_rate_and_a_seed_replays_the_same_ones(sqs):
    once = _duplicated_bodies(sqs, seed=42, rate=0.2)
    replayed = _duplicated_bodies(sqs, seed=42, rate=0.2)
    other = _duplicated_bodies(sqs, seed=43, rate=0.2)

    assert 20 <= len(once) <= 60  # 200 messages at 0.2
    assert replayed == once
    assert other != once
    assert _duplicated_bodies(sqs, seed=42, rate=0.0) == []


def test_with_reordering_on_messages_held_back_are_overtaken_by_later_ones_and_each_comes_once(sqs):
    url = _queue(sqs)
    with faults.injected(seed=3, reorder_rate=0.5, redelivery_seconds=0.2):
        for i in range(10):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        held = [m.body for m in _backend().get_queue("q")._messages if m.delayed]

        seen = [m["Body"] for m in _drain(sqs, url, expected=10)]

    assert 0 < len(held) < 10
    assert sorted(seen) == sorted(f"m{i}" for i in range(10))  # each once
    first_held = min(held, key=lambda body: int(body[1:]))
    sent_after_it = [f"m{i}" for i in range(int(first_held[1:]) + 1, 10)]
    assert any(seen.index(later) < seen.index(first_held) for later in sent_after_it)  # overtaken


def test_fifo_queues_are_never_duplicated_nor_reordered(sqs):
    url = _queue(sqs, "q.fifo", FifoQueue="true", ContentBasedDeduplication="true")
    with faults.injected(seed=1, duplicate_rate=1.0, reorder_rate=1.0, redelivery_seconds=5.0):
        for i in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g")
        seen = _drain(sqs, url, expected=4, wait=1)

    assert [m["Body"] for m in seen] == ["m0", "m1", "m2"]
