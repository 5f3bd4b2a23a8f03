"""The embedded AWS as patched (infra/local/moto_patches.py): transactions all or nothing and isolated, streams
included; no message lost to a concurrent delete."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-3")
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
        )
        client.put_item(TableName="t", Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "1"}})
        client.put_item(TableName="t", Item={"pk": {"S": "taken"}, "sk": {"S": "1"}})
        yield client


def _items(client: Any) -> list[dict[str, Any]]:
    return sorted(client.scan(TableName="t")["Items"], key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def _stream_events(client: Any) -> list[str]:
    streams = boto3.client("dynamodbstreams", region_name="eu-west-3")
    arn = client.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    return [f"{r['eventName']} {r['dynamodb']['Keys']['pk']['S']}" for r in records]


def _waits_for(
    first: Callable[[], object], second: Callable[[], object], halfway: threading.Event, go_on: threading.Event
) -> bool:
    """Start ``first``; once it paused (``halfway``), start ``second``; whether ``second`` was still waiting half a
    second later. Then let ``first`` go on (``go_on``) and let both end."""
    one, two = threading.Thread(target=first), threading.Thread(target=second)
    one.start()
    assert halfway.wait(10)
    two.start()
    two.join(timeout=0.5)
    waited = two.is_alive()
    go_on.set()
    one.join(10)
    two.join(10)
    return waited


def _transaction(last_condition: str) -> list[dict[str, Any]]:
    return [
        {
            "Update": {
                "TableName": "t",
                "Key": {"pk": {"S": "a"}, "sk": {"S": "1"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {
            "Update": {
                "TableName": "t",
                "Key": {"pk": {"S": "new-counter"}, "sk": {"S": "1"}},
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "b"}, "sk": {"S": "1"}}}},
        {"Delete": {"TableName": "t", "Key": {"pk": {"S": "taken"}, "sk": {"S": "1"}}}},
        {
            "Put": {
                "TableName": "t",
                "Item": {"pk": {"S": "c"}, "sk": {"S": "1"}},
                "ConditionExpression": last_condition,
            }
        },
    ]


def test_a_cancelled_transaction_leaves_items_and_stream_as_they_were(table: Any) -> None:
    items, events = _items(table), _stream_events(table)

    with pytest.raises(ClientError) as caught:
        table.transact_write_items(TransactItems=_transaction("attribute_exists(pk)"))

    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _items(table) == items
    assert _stream_events(table) == events == ["INSERT a", "INSERT taken"]


def test_a_committed_transaction_writes_every_item_and_its_stream_records(table: Any) -> None:
    table.transact_write_items(TransactItems=_transaction("attribute_not_exists(pk)"))

    assert [(i["pk"]["S"], i.get("n", {}).get("N")) for i in _items(table)] == [
        ("a", "2"),
        ("b", None),
        ("c", None),
        ("new-counter", "1"),
    ]
    events = _stream_events(table)
    assert events[:2] == ["INSERT a", "INSERT taken"]
    assert {"MODIFY a", "INSERT b", "REMOVE taken", "INSERT c"} <= set(events[2:])


def test_writes_outside_transactions_are_not_rolled_back_by_a_later_failure(table: Any) -> None:
    with pytest.raises(ClientError):
        table.transact_write_items(TransactItems=_transaction("attribute_exists(pk)"))
    table.put_item(TableName="t", Item={"pk": {"S": "after"}, "sk": {"S": "1"}})
    with pytest.raises(ClientError):
        table.transact_write_items(TransactItems=_transaction("attribute_exists(pk)"))

    assert [i["pk"]["S"] for i in _items(table)] == ["a", "after", "taken"]


def test_a_stream_reader_waits_for_a_transaction_and_never_sees_a_write_it_undoes(table, monkeypatch):
    from infra.local import moto_patches

    halfway, go_on = threading.Event(), threading.Event()
    remember = moto_patches._UndoLog.remember

    def pause_at_the_second_write(self: Any, *args: Any) -> None:
        if len(self.items) == 1 and not halfway.is_set():  # "phantom" is written; the failing condition is ahead
            halfway.set()
            go_on.wait(10)
        remember(self, *args)

    monkeypatch.setattr(moto_patches._UndoLog, "remember", pause_at_the_second_write)
    failing = [
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "phantom"}, "sk": {"S": "1"}}}},
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "phantom"}, "sk": {"S": "2"}}}},
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}, "sk": {"S": "1"}}, "ConditionExpression": "n > :n",
                 "ExpressionAttributeValues": {":n": {"N": "5"}}}},
    ]  # fmt: skip
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            table.transact_write_items(TransactItems=failing)
        except ClientError as error:
            outcome["writer"] = error.response["Error"]["Code"]

    def read() -> None:
        outcome["events"] = _stream_events(table)

    assert _waits_for(write, read, halfway, go_on), "the stream was read in the middle of a transaction"

    assert outcome == {"writer": "TransactionCanceledException", "events": ["INSERT a", "INSERT taken"]}


def test_a_message_sent_while_another_is_deleted_is_kept(monkeypatch):
    from infra.local import moto_sqs

    with mock_aws():
        sqs = boto3.client("sqs", region_name="eu-west-3")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="old")
        handle = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
        halfway, go_on = threading.Event(), threading.Event()
        forget = moto_sqs._Index.forget

        def pause_in_the_delete(self: Any, message: Any) -> None:
            halfway.set()  # the message is out of the queue's list; its receipt handles not yet forgotten
            go_on.wait(10)
            forget(self, message)

        monkeypatch.setattr(moto_sqs._Index, "forget", pause_in_the_delete)
        assert _waits_for(
            lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle=handle),
            lambda: sqs.send_message(QueueUrl=url, MessageBody="new"),
            halfway,
            go_on,
        ), "a message was sent in the middle of a delete"

        bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
        assert bodies == ["new"]


def test_two_consumers_never_receive_the_same_message(monkeypatch):
    from moto.sqs.models import Message

    with mock_aws():
        sqs = boto3.client("sqs", region_name="eu-west-3")
        url = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="only")
        halfway, go_on = threading.Event(), threading.Event()
        mark_received = Message.mark_received

        def pause_while_receiving(self: Any, *args: Any, **kwargs: Any) -> None:
            if not halfway.is_set():  # the first consumer holds the message, not yet marked in flight
                halfway.set()
                go_on.wait(10)
            mark_received(self, *args, **kwargs)

        monkeypatch.setattr(Message, "mark_received", pause_while_receiving)
        got: dict[str, list[str]] = {}

        def consume(name: str) -> None:
            answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
            got[name] = [m["Body"] for m in answer.get("Messages", [])]

        assert _waits_for(lambda: consume("first"), lambda: consume("second"), halfway, go_on), (
            "a second receive ran in the middle of the first"
        )

        assert got == {"first": ["only"], "second": []}
