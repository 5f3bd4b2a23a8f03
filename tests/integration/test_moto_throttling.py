"""Throttling in the embedded AWS (infra/local/throttling.py): each service answers a throttled call with its own
error code, HTTP status and body, which botocore parses (and retries, or not) as it does AWS's; a throttled call
changes nothing; the share of throttled calls follows the rate, and a seed replays the same calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.endpoint
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from infra.local import faults, throttling

REGION = "eu-west-3"
SENDER = "relais@example.org"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A table, a queue, a KMS key and a verified SES sender; botocore's retry back-off does not sleep."""
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=lambda _seconds: None))
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="q")["QueueUrl"]
        key_id = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        yield {"queue_url": queue_url, "key_id": key_id}


def _client(service: str, mode: str, attempts: int = 2) -> Any:
    return boto3.client(
        service, region_name=REGION, config=Config(retries={"mode": mode, "total_max_attempts": attempts})
    )


CALLS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "dynamodb": lambda c, aws: c.put_item(TableName="t", Item={"pk": {"S": "throttled"}}),
    "kms": lambda c, aws: c.generate_data_key(KeyId=aws["key_id"], KeySpec="AES_256"),
    "sns": lambda c, aws: c.publish(PhoneNumber="+33612345678", Message="hello"),
    "ses": lambda c, aws: c.send_email(
        Source=SENDER,
        Destination={"ToAddresses": ["patient@example.org"]},
        Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}},
    ),
    "sqs": lambda c, aws: c.send_message(QueueUrl=aws["queue_url"], MessageBody="throttled"),
}

#: service -> (error code, HTTP status, retried by botocore's default "legacy" mode)
EXPECTED = {
    "dynamodb": ("ProvisionedThroughputExceededException", 400, True),
    "kms": ("ThrottlingException", 400, True),
    "sns": ("Throttling", 400, True),
    "ses": ("Throttling", 400, True),
    "sqs": ("RequestThrottled", 403, True),  # botocore's legacy rules name SQS's RequestThrottled with 403
}


@pytest.mark.parametrize("mode", ["standard", "legacy"])
@pytest.mark.parametrize("service", sorted(CALLS))
def test_a_throttled_call_gets_the_service_s_own_error_and_botocore_s_retry_rules(aws, service, mode):
    client = _client(service, mode)

    with faults.injected(seed=1, throttle_rate=1.0), pytest.raises(ClientError) as caught:
        CALLS[service](client, aws)

    code, status, retried_by_legacy = EXPECTED[service]
    answer = caught.value.response
    assert answer["Error"]["Code"] == code
    assert answer["Error"]["Message"]
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == status
    retried = mode == "standard" or retried_by_legacy
    assert answer["ResponseMetadata"]["RetryAttempts"] == (1 if retried else 0)


def test_a_throttled_call_changes_nothing(aws):
    with faults.injected(seed=1, throttle_rate=1.0):
        for service in ("dynamodb", "sqs"):
            with pytest.raises(ClientError):
                CALLS[service](_client(service, "standard", attempts=1), aws)

    assert "Item" not in boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="t", Key={"pk": {"S": "throttled"}}
    )
    assert "Messages" not in boto3.client("sqs", region_name=REGION).receive_message(QueueUrl=aws["queue_url"])


def test_control_calls_are_never_throttled(aws):
    with faults.injected(seed=1, throttle_rate=1.0):
        boto3.client("sqs", region_name=REGION).create_queue(QueueName="another")
        boto3.client("dynamodb", region_name=REGION).describe_table(TableName="t")
        boto3.client("kms", region_name=REGION).describe_key(KeyId=aws["key_id"])


def test_a_throttled_transaction_is_either_refused_whole_or_cancelled_with_throttling_error_at_one_item(aws):
    client = _client("dynamodb", "standard", attempts=1)
    items = [{"Put": {"TableName": "t", "Item": {"pk": {"S": f"p{i}"}}}} for i in range(4)]
    forms: dict[str, int] = {}
    with faults.injected(seed=1, throttle_rate=1.0):
        for _ in range(20):
            with pytest.raises(ClientError) as caught:
                client.transact_write_items(TransactItems=items)
            answer = caught.value.response
            code = answer["Error"]["Code"]
            forms[code] = forms.get(code, 0) + 1
            if code == "TransactionCanceledException":
                reasons = answer["CancellationReasons"]
                assert sorted(r["Code"] for r in reasons) == ["None", "None", "None", "ThrottlingError"]
                (throttled,) = [r for r in reasons if r["Code"] == "ThrottlingError"]
                assert throttled["Message"] == throttling.DYNAMODB_MESSAGE
            else:
                assert code == "ProvisionedThroughputExceededException"

    assert set(forms) == {"TransactionCanceledException", "ProvisionedThroughputExceededException"}
    assert boto3.client("dynamodb", region_name=REGION).scan(TableName="t")["Count"] == 0


def _throttled_calls(seed: int, rate: float, calls: int = 100) -> list[bool]:
    client = _client("dynamodb", "standard", attempts=1)
    pattern = []
    with faults.injected(seed=seed, throttle_rate=rate):
        for _ in range(calls):
            try:
                client.get_item(TableName="t", Key={"pk": {"S": "any"}})
                pattern.append(False)
            except ClientError:
                pattern.append(True)
    return pattern


def test_the_share_of_throttled_calls_follows_the_rate_and_a_seed_replays_the_same_calls(aws):
    once = _throttled_calls(seed=5, rate=0.25)

    assert 10 <= sum(once) <= 45  # 100 calls at 0.25
    assert _throttled_calls(seed=5, rate=0.25) == once
    assert _throttled_calls(seed=6, rate=0.25) != once
    assert not any(_throttled_calls(seed=5, rate=0.0))


def test_the_application_s_clients_retry_a_throttled_write_transparently(aws, monkeypatch):
    """pynamodb (standard mode, 3 attempts, as chalicelib's adapters use it) gets through a throttle that does not
    last."""
    from pynamodb.attributes import NumberAttribute, UnicodeAttribute
    from pynamodb.models import Model

    class Item(Model):
        class Meta:
            table_name = "t"
            region = REGION
            max_retry_attempts = 2

        pk = UnicodeAttribute(hash_key=True)
        n = NumberAttribute()

    throttled: list[str] = []
    error = throttling.throttling_error
    monkeypatch.setattr(throttling, "throttling_error", lambda *a: throttled.append(a[1]) or error(*a))
    with faults.injected(seed=2, throttle_rate=0.3):
        for i in range(10):
            Item(f"k{i}", n=i).save()

    assert boto3.client("dynamodb", region_name=REGION).scan(TableName="t")["Count"] == 10
    assert "PutItem" in throttled
