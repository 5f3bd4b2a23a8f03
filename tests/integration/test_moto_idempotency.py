"""The local AWS honours a transaction's ClientRequestToken as DynamoDB does (infra/local/moto_idempotency.py)."""

from __future__ import annotations

import os

import boto3
import pytest
from botocore.exceptions import ClientError


def _add_one(table: str, pk: str) -> dict:
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": pk}},
            "UpdateExpression": "ADD n :one SET expires_at = :e, payload = :p",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":e": {"N": "1"}, ":p": {"B": b"\x00ciphertext"}},
        }
    }


def test_a_repeated_successful_transaction_succeeds_without_writing_twice(aws):
    client = boto3.client("dynamodb", region_name="eu-west-3")
    table = os.environ["RELAIS_STATE_TABLE"]
    for _ in range(2):  # the second is botocore's retry after a lost answer: same token, same items
        client.transact_write_items(TransactItems=[_add_one(table, "counter")], ClientRequestToken="t-1")
    item = client.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": "1"}

    client.transact_write_items(TransactItems=[_add_one(table, "counter")], ClientRequestToken="t-2")
    item = client.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": "2"}, "another token is another transaction"


def test_the_same_token_with_other_items_is_a_parameter_mismatch(aws):
    client = boto3.client("dynamodb", region_name="eu-west-3")
    table = os.environ["RELAIS_STATE_TABLE"]
    client.transact_write_items(TransactItems=[_add_one(table, "a")], ClientRequestToken="t-3")
    with pytest.raises(ClientError) as caught:
        client.transact_write_items(TransactItems=[_add_one(table, "b")], ClientRequestToken="t-3")
    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
