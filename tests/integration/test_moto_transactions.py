"""The embedded AWS as patched (infra/local/moto_patches.py): transactions all or nothing and isolated, streams
included; no message lost to a concurrent delete."""

from __future__ import annotations

import threading
import time
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


# --- conflicts: DynamoDB refuses what a transaction in flight holds, it does not queue it --------------------------


@pytest.fixture
def conflicts() -> Iterator[None]:
    from infra.local import faults

    with faults.injected(transaction_conflicts=True):
        yield


def _update(pk: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": "t",
            "Key": {"pk": {"S": pk}, "sk": {"S": "1"}},
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def _put(pk: str) -> dict[str, Any]:
    return {"Put": {"TableName": "t", "Item": {"pk": {"S": pk}, "sk": {"S": "1"}}}}


def _check(pk: str) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": "t",
            "Key": {"pk": {"S": pk}, "sk": {"S": "1"}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }


class _InFlight:
    """A transaction started on another thread and paused at its first write: in flight, holding its items, until
    :meth:`finish` lets it end (its outcome: "ok" or the error code)."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch, items: list[dict[str, Any]]) -> None:
        from infra.local import moto_patches

        self.paused, self._go_on, self.outcome = threading.Event(), threading.Event(), ""
        remember = moto_patches._UndoLog.remember

        def pause_at_the_first_write(log: Any, *args: Any) -> None:
            if not self.paused.is_set():
                self.paused.set()
                self._go_on.wait(10)
            remember(log, *args)

        monkeypatch.setattr(moto_patches._UndoLog, "remember", pause_at_the_first_write)

        def run() -> None:
            try:
                client.transact_write_items(TransactItems=items)
                self.outcome = "ok"
            except ClientError as error:
                self.outcome = error.response["Error"]["Code"]

        self._thread = threading.Thread(target=run)
        self._thread.start()
        assert self.paused.wait(10), "the first transaction never started"

    def finish(self) -> str:
        self._go_on.set()
        self._thread.join(10)
        return self.outcome


def _n(client: Any, pk: str) -> str | None:
    item = client.get_item(TableName="t", Key={"pk": {"S": pk}, "sk": {"S": "1"}}).get("Item")
    return None if item is None else item.get("n", {}).get("N", "-")


def test_a_transaction_sharing_an_item_with_one_in_flight_is_cancelled_with_transaction_conflict_at_its_index(
    table, conflicts, monkeypatch
):
    first = _InFlight(table, monkeypatch, [_update("a"), _put("b")])

    with pytest.raises(ClientError) as caught:
        table.transact_write_items(TransactItems=[_put("x"), _update("a"), _put("y")])

    assert first.finish() == "ok"
    error = caught.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert error["CancellationReasons"] == [
        {"Code": "None"},
        {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
        {"Code": "None"},
    ]
    assert (_n(table, "a"), _n(table, "b"), _n(table, "x"), _n(table, "y")) == ("2", "-", None, None)


@pytest.mark.parametrize("checked_by", ["the transaction in flight", "the later transaction"])
def test_sharing_only_a_condition_checked_item_is_a_conflict_too(table, conflicts, monkeypatch, checked_by):
    if checked_by == "the transaction in flight":
        first, later = [_check("a"), _put("b")], [_put("x"), _update("a")]
    else:
        first, later = [_update("a"), _put("b")], [_put("x"), _check("a")]
    in_flight = _InFlight(table, monkeypatch, first)

    with pytest.raises(ClientError) as caught:
        table.transact_write_items(TransactItems=later)

    assert in_flight.finish() == "ok"
    assert [r["Code"] for r in caught.value.response["CancellationReasons"]] == ["None", "TransactionConflict"]
    assert _n(table, "x") is None


def test_pynamodb_reads_the_conflict_at_the_index_of_the_shared_item(table, conflicts, monkeypatch):
    from pynamodb.connection import Connection
    from pynamodb.exceptions import TransactWriteError

    first = _InFlight(table, monkeypatch, [_update("a")])
    key = {"pk": {"S": "a"}, "sk": {"S": "1"}}

    with pytest.raises(TransactWriteError) as caught:
        Connection(region="eu-west-3").transact_write_items(
            condition_check_items=[{"TableName": "t", "Key": key, "ConditionExpression": "attribute_exists(pk)"}],
            delete_items=[],
            put_items=[{"TableName": "t", "Item": {"pk": {"S": "z"}, "sk": {"S": "1"}}}],
            update_items=[],
        )

    first.finish()
    reasons = caught.value.cancellation_reasons
    assert [None if r is None else (r.code, r.message) for r in reasons] == [
        ("TransactionConflict", "Transaction is ongoing for the item"),
        None,
    ]


@pytest.mark.parametrize("write", ["put_item", "update_item", "delete_item"])
def test_a_single_write_to_an_item_in_flight_fails_with_transaction_conflict_exception(
    table, conflicts, monkeypatch, write
):
    first = _InFlight(table, monkeypatch, [_update("a"), _put("b")])
    key = {"pk": {"S": "a"}, "sk": {"S": "1"}}
    calls = {
        "put_item": lambda: table.put_item(TableName="t", Item={**key, "n": {"N": "100"}}),
        "update_item": lambda: table.update_item(
            TableName="t", Key=key, UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": {"N": "100"}}
        ),
        "delete_item": lambda: table.delete_item(TableName="t", Key=key),
    }

    with pytest.raises(ClientError) as caught:
        calls[write]()

    assert first.finish() == "ok"
    assert caught.value.response["Error"] == {
        "Code": "TransactionConflictException",
        "Message": "Transaction is ongoing for the item",
    }
    assert _n(table, "a") == "2"  # refused, not queued behind the transaction


def test_disjoint_transactions_and_writes_wait_for_their_turn_and_all_succeed(table, conflicts, monkeypatch):
    first = _InFlight(table, monkeypatch, [_update("a"), _put("b")])
    outcomes: list[str] = []
    second = threading.Thread(
        target=lambda: outcomes.append(str(table.transact_write_items(TransactItems=[_update("c"), _check("taken")])))
    )
    third = threading.Thread(
        target=lambda: outcomes.append(str(table.put_item(TableName="t", Item=_put("d")["Put"]["Item"])))
    )
    second.start()
    third.start()

    assert first.finish() == "ok"
    second.join(10)
    third.join(10)
    assert len(outcomes) == 2
    assert (_n(table, "a"), _n(table, "b"), _n(table, "c"), _n(table, "d")) == ("2", "-", "1", "-")


def test_a_transaction_holds_its_items_while_it_waits_for_its_turn(table, conflicts, monkeypatch):
    from infra.local import moto_patches

    first = _InFlight(table, monkeypatch, [_put("b")])
    waiting = threading.Thread(target=lambda: table.transact_write_items(TransactItems=[_update("a")]))
    held_before = len(moto_patches._HELD)
    waiting.start()
    for _ in range(1000):  # until the waiting transaction holds "a" (before its turn comes)
        if len(moto_patches._HELD) > held_before:
            break
        waiting.join(0.01)

    with pytest.raises(ClientError) as caught:
        table.transact_write_items(TransactItems=[_update("a")])

    first.finish()
    waiting.join(10)
    assert [r["Code"] for r in caught.value.response["CancellationReasons"]] == ["TransactionConflict"]
    assert _n(table, "a") == "2"


def test_the_items_are_free_again_once_the_transaction_ended_committed_or_cancelled(table, conflicts, monkeypatch):
    from infra.local import moto_patches

    with pytest.raises(ClientError):
        table.transact_write_items(TransactItems=_transaction("attribute_exists(pk)"))  # cancelled: condition
    table.transact_write_items(TransactItems=[_update("a"), _put("b")])  # committed

    table.put_item(TableName="t", Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "7"}})
    table.transact_write_items(TransactItems=[_update("a"), _put("b")])
    assert not moto_patches._HELD
    assert _n(table, "a") == "8"


def test_with_conflicts_off_a_transaction_sharing_an_item_waits_and_succeeds(table, monkeypatch):
    from infra.local import faults

    with faults.injected(transaction_conflicts=False):
        first = _InFlight(table, monkeypatch, [_update("a")])
        second = threading.Thread(target=lambda: table.transact_write_items(TransactItems=[_update("a")]))
        second.start()
        assert first.finish() == "ok"
        second.join(10)

    assert _n(table, "a") == "3"


def test_concurrent_single_writes_each_answer_their_own_before_and_after(table, monkeypatch):
    """Writes to one item at once each answer the item as their own write left it or found it, as DynamoDB does,
    even when moto is slow to write its answer (it reads the item before the write and again after it)."""
    from moto.dynamodb.models.dynamo_type import Item

    to_json = Item.to_json

    def slow_to_json(self: Any) -> Any:
        time.sleep(0.002)  # room for another write between moto's write and its answer
        return to_json(self)

    monkeypatch.setattr(Item, "to_json", slow_to_json)
    key = {"pk": {"S": "a"}, "sk": {"S": "1"}}

    def at_once(write: Callable[[int], int]) -> list[int]:
        answers: list[int] = []
        threads = [threading.Thread(target=lambda i=i: answers.append(write(i))) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return answers

    def add(_: int) -> int:
        answer = table.update_item(
            TableName="t",
            Key=key,
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="ALL_NEW",
        )
        return int(answer["Attributes"]["n"]["N"])

    def put(i: int) -> int:
        answer = table.put_item(TableName="t", Item={**key, "n": {"N": str(100 + i)}}, ReturnValues="ALL_OLD")
        return int(answer["Attributes"]["n"]["N"])

    assert sorted(at_once(add)) == list(range(2, 22))  # n was 1: each ADD answers the count it made
    replaced = at_once(put)
    final = int(_n(table, "a") or 0)
    assert sorted(replaced) == sorted({21} | {100 + i for i in range(20)} - {final})  # each value replaced once


@pytest.mark.parametrize("read", ["get_item", "query", "scan", "batch_get_item", "transact_get_items"])
def test_a_read_sees_a_concurrent_write_whole_or_not_at_all(table, monkeypatch, read):
    """An update setting two attributes at once, read while it runs: both old or both new, never one of each, even
    when moto is slow to turn the item it read into its answer."""
    from moto.dynamodb import responses
    from moto.dynamodb.models import utilities

    to_dict = utilities.dynamo_to_dict

    def slow_to_dict(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"a", "b", "pk", "sk"}:  # an item: one attribute at a time
            converted = {}
            for name in sorted(value):
                converted[name] = to_dict(value[name])
                time.sleep(0.0005)
            return converted
        return to_dict(value)

    monkeypatch.setattr(responses, "dynamo_to_dict", slow_to_dict)
    monkeypatch.setattr(utilities, "dynamo_to_dict", slow_to_dict)  # moto's recursion calls it there
    key = {"pk": {"S": "a"}, "sk": {"S": "1"}}
    table.put_item(TableName="t", Item={**key, "a": {"N": "0"}, "b": {"N": "0"}})
    reads = {
        "get_item": lambda: [table.get_item(TableName="t", Key=key)["Item"]],
        "query": lambda: table.query(
            TableName="t", KeyConditionExpression="pk = :a", ExpressionAttributeValues={":a": {"S": "a"}}
        )["Items"],
        "scan": lambda: [i for i in table.scan(TableName="t")["Items"] if i["pk"]["S"] == "a"],
        "batch_get_item": lambda: table.batch_get_item(RequestItems={"t": {"Keys": [key]}})["Responses"]["t"],
        "transact_get_items": lambda: [
            r["Item"]
            for r in table.transact_get_items(TransactItems=[{"Get": {"TableName": "t", "Key": key}}])["Responses"]
        ],
    }
    done = threading.Event()
    torn: list[tuple[str, str]] = []
    seen: set[str] = set()

    def write() -> None:
        for v in range(1, 2000):
            if len(seen) > 10:  # the readers have seen this many writes
                break
            time.sleep(0.001)  # the readers' turn: a lock is not fair, the writer could take it back every time
            table.update_item(
                TableName="t",
                Key=key,
                UpdateExpression="SET a = :v, b = :v",
                ExpressionAttributeValues={":v": {"N": str(v)}},
            )
        done.set()

    failed: list[Exception] = []

    def watch() -> None:
        try:
            while not done.is_set():
                for item in reads[read]():
                    seen.add(item["a"]["N"])
                    if item["a"] != item["b"]:
                        torn.append((item["a"]["N"], item["b"]["N"]))
        except Exception as exc:  # shown by the assertion below, not lost with the thread
            failed.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=watch), threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert torn == [] and failed == []
    assert len(seen) > 10  # the reads did run while the writes went on
