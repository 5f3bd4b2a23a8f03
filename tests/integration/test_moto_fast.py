"""The embedded AWS's fast paths (infra/local/moto_fast.py) answer exactly what moto's own serializer answers, and
give every caller of the update-expression parser a tree of its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.local import moto_fast

EVERY_TYPE = {
    "pk": {"S": "every"},
    "sk": {"N": "1"},
    "blob": {"B": b"\x00\xffciphertext\n"},
    "n": {"N": "12.5"},
    "yes": {"BOOL": True},
    "nothing": {"NULL": True},
    "strings": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2"]},
    "blobs": {"BS": [b"\x01", b"\x02"]},
    "list": {"L": [{"S": "x"}, {"N": "3"}, {"B": b"\x03"}, {"M": {"deep": {"BOOL": False}}}]},
    "map": {"M": {"s": {"S": "y"}, "l": {"L": []}, "b": {"B": b"\x04"}}},
}


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any, Any]]]:
    """Every fast answer also written by moto's serializer; the differences collected."""
    differences: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(moto_fast, "compare", differences)
    with mock_aws():
        yield differences


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations answered by the fast path, in order."""
    taken: list[str] = []
    answer = moto_fast.fast_answer

    def counted(operation: str, result: object) -> str | None:
        body = answer(operation, result)
        if body is not None:
            taken.append(operation)
        return body

    monkeypatch.setattr(moto_fast, "fast_answer", counted)
    return taken


def _table(client: Any) -> None:
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def test_every_fast_operation_answers_as_moto_serializer_does(compared, fast):
    client = boto3.client("dynamodb", region_name="eu-west-3")
    _table(client)
    fast.clear()
    key = {"pk": {"S": "every"}, "sk": {"N": "1"}}
    capacity = {"ReturnConsumedCapacity": "TOTAL"}

    client.put_item(TableName="t", Item=EVERY_TYPE, **capacity)
    assert client.get_item(TableName="t", Key=key, ConsistentRead=True, **capacity)["Item"] == EVERY_TYPE
    assert client.put_item(TableName="t", Item=EVERY_TYPE, ReturnValues="ALL_OLD")["Attributes"] == EVERY_TYPE
    updated = client.update_item(
        TableName="t",
        Key=key,
        UpdateExpression="SET #n = #n + :one, #new = :blob REMOVE #nothing",
        ExpressionAttributeNames={"#n": "n", "#new": "new", "#nothing": "nothing"},
        ExpressionAttributeValues={":one": {"N": "1"}, ":blob": {"B": b"\xfe"}},
        ReturnValues="ALL_NEW",
        **capacity,
    )["Attributes"]
    assert updated["n"] == {"N": "13.5"} and updated["new"] == {"B": b"\xfe"} and "nothing" not in updated
    client.batch_write_item(
        RequestItems={"t": [{"PutRequest": {"Item": {"pk": {"S": "every"}, "sk": {"N": str(i)}}}} for i in (2, 3)]},
        **capacity,
    )
    got = client.batch_get_item(RequestItems={"t": {"Keys": [key, {"pk": {"S": "every"}, "sk": {"N": "2"}}]}})
    assert len(got["Responses"]["t"]) == 2 and got["UnprocessedKeys"] == {}
    queried = client.query(
        TableName="t",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "every"}},
        Limit=2,
        **capacity,
    )
    assert queried["Count"] == 2 and queried["LastEvaluatedKey"] == {"pk": {"S": "every"}, "sk": {"N": "2"}}
    assert client.scan(TableName="t", **capacity)["Count"] == 3
    client.transact_write_items(
        TransactItems=[
            {"Update": {"TableName": "t", "Key": key, "UpdateExpression": "ADD #n :one",
                        "ExpressionAttributeNames": {"#n": "n"}, "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"Delete": {"TableName": "t", "Key": {"pk": {"S": "every"}, "sk": {"N": "3"}}}},
        ]
    )  # fmt: skip
    pair = client.transact_get_items(TransactItems=[{"Get": {"TableName": "t", "Key": key}}])["Responses"]
    assert pair[0]["Item"]["n"] == {"N": "14.5"}
    deleted = client.delete_item(TableName="t", Key=key, ReturnValues="ALL_OLD")["Attributes"]
    assert deleted["blob"] == EVERY_TYPE["blob"]

    assert sorted(set(fast)) == sorted(moto_fast.FAST_OPERATIONS), "every fast operation took the fast path"
    assert len(fast) == 11, "every call of one"
    assert compared == []


def test_errors_and_other_operations_keep_moto_serializer(compared, fast):
    client = boto3.client("dynamodb", region_name="eu-west-3")
    _table(client)
    fast.clear()
    assert client.describe_table(TableName="t")["Table"]["CreationDateTime"]  # a timestamp: moto's serializer
    with pytest.raises(ClientError) as refused:
        client.put_item(
            TableName="t", Item={"pk": {"S": "a"}, "sk": {"N": "1"}}, ConditionExpression="attribute_exists(pk)"
        )
    assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert fast == []
    assert moto_fast.fast_answer("DescribeTable", {"Table": {}}) is None
    assert moto_fast.fast_answer("GetItem", {"Item": {"when": object()}}) is None, "not plain: moto's path"
    assert moto_fast.fast_answer("GetItem", {"Item": {"b": {"B": b"\x00"}}, "ConsumedCapacity": None}) == (
        '{"Item":{"b":{"B":"AA=="}}}'
    )


def _shape(node: Any) -> Any:
    """A parsed tree as plain data: each node's class and attributes, recursively."""
    if isinstance(node, list | tuple):
        return [_shape(child) for child in node]
    if hasattr(node, "__dict__"):
        return (type(node).__name__, {k: _shape(v) for k, v in vars(node).items() if k != "parent"})
    return node


def test_a_parsed_update_expression_is_shared_and_its_validator_works_on_a_copy():
    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    text = "SET #a = :a, #b = if_not_exists(#b, :b) ADD #c :c"
    first, second = UpdateExpressionParser.make(text), UpdateExpressionParser.make(text)
    assert first is second, "parsed once per text"
    fresh = UpdateExpressionParser.make.__wrapped__(text)
    assert _shape(first) == _shape(fresh)
    assert "if_not_exists" in str(_shape(first)), "the comparison sees the tree's content"
    copied = validators.deepcopy(first)
    assert copied is not first and _shape(copied) == _shape(fresh)
    with pytest.raises(Exception, match=r"Invalid UpdateExpression|Syntax error"):
        UpdateExpressionParser.make("SET = = nonsense")


def test_an_update_expression_used_twice_updates_with_each_call_values(compared):
    client = boto3.client("dynamodb", region_name="eu-west-3")
    _table(client)
    key = {"pk": {"S": "k"}, "sk": {"N": "1"}}
    for value in ("first", "second", "third"):
        client.update_item(
            TableName="t",
            Key=key,
            UpdateExpression="SET #v = :v",
            ExpressionAttributeNames={"#v": "v"},
            ExpressionAttributeValues={":v": {"S": value}},
        )
        assert client.get_item(TableName="t", Key=key)["Item"]["v"] == {"S": value}
    assert compared == []
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    shared = UpdateExpressionParser.make("SET #v = :v")
    assert _shape(shared) == _shape(UpdateExpressionParser.make.__wrapped__("SET #v = :v")), "no update changed it"


def test_a_handler_class_methods_are_listed_once():
    from moto.core import responses
    from moto.dynamodb.responses import DynamoHandler

    assert responses.method_names_from_class(DynamoHandler) is responses.method_names_from_class(DynamoHandler)
    assert "transact_write_items" in responses.method_names_from_class(DynamoHandler)
