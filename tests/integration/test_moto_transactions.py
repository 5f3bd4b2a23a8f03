"""The embedded AWS's transactions (infra/local/moto_patches.py): all or nothing, streams included."""

from __future__ import annotations

from collections.abc import Iterator
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
