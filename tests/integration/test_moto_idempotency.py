"""The local AWS honours a transaction's ClientRequestToken as DynamoDB does (infra/local/moto_idempotency.py)."""

from __future__ import annotations

import os

import boto3
import pytest
from botocore.exceptions import ClientError

from infra.local import moto_idempotency


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


def test_the_same_token_while_the_first_call_is_in_progress_is_refused_then_answered(aws):
    """A retry that overtakes its first try (read timeout while the first waits for its turn) does not run again."""
    import threading

    from botocore.config import Config

    from infra.local import moto_patches

    once = Config(retries={"total_max_attempts": 1})  # see DynamoDB's answer itself, not botocore's retry of it
    client = boto3.client("dynamodb", region_name="eu-west-3", config=once)
    table = os.environ["RELAIS_STATE_TABLE"]
    first_done: list[dict] = []
    with moto_patches._LOCK:  # moto's writes wait for it: the first call stays in progress
        first = threading.Thread(
            target=lambda: first_done.append(
                client.transact_write_items(TransactItems=[_add_one(table, "slow")], ClientRequestToken="t-4")
            )
        )
        first.start()
        while "t-4" not in moto_idempotency._IN_PROGRESS:
            first.join(0.01)
        with pytest.raises(ClientError) as caught:
            client.transact_write_items(TransactItems=[_add_one(table, "slow")], ClientRequestToken="t-4")
        assert caught.value.response["Error"]["Code"] == "TransactionInProgressException"
    first.join(10)
    assert first_done, "the first call completed"
    client.transact_write_items(TransactItems=[_add_one(table, "slow")], ClientRequestToken="t-4")  # its answer
    item = client.get_item(TableName=table, Key={"pk": {"S": "slow"}}, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": "1"}, "the retry did not write again"


def test_expired_tokens_are_forgotten_looking_at_those_alone(monkeypatch):
    """Each transaction forgets the tokens older than DynamoDB's 10 minutes: it looks at the expired ones and the
    first that is not, never at every token remembered (that made each transaction O(transactions in 10 min))."""
    from collections import OrderedDict

    seen: OrderedDict[str, tuple[str, float, object]] = OrderedDict(
        (f"t{i}", ("digest", 1000.0 + i, None)) for i in range(10_000)
    )
    monkeypatch.setattr(moto_idempotency, "_SEEN", seen)

    assert moto_idempotency._forget_expired(1000.0 + moto_idempotency.TOKEN_SECONDS) == 1  # none expired yet
    assert moto_idempotency._forget_expired(1003.5 + moto_idempotency.TOKEN_SECONDS) == 5  # t0..t3 expired
    assert len(seen) == 9_996 and next(iter(seen)) == "t4"
    assert moto_idempotency._forget_expired(1e9) == 9_996 and not seen
