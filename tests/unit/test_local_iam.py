"""The local IAM check (``infra/local/local_iam.py``): a function's call is refused exactly when its entry in
``infra/iam.py`` does not allow it — action, resource, encryption context — as AWS would refuse it."""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

import pytest

from infra.local import local_iam
from infra.local.local_iam import Resources, denials

API = "app.app"
NOTIFY = "chalicelib.events.notify.on_notify_message"
NATIONAL = "chalicelib.events.national.on_national_message"
RECONCILE = "chalicelib.events.national.on_reconcile_schedule"
OUTBOX = "chalicelib.events.dispatch.on_results_stream"
CHAIN = "chalicelib.events.audit.on_audit_stream"
KEY = "arn:aws:kms:eu-west-3:000000000000:key/k"

R = Resources(
    tables={"t-results": "ResultsTable", "t-state": "StateTable", "t-audit": "AuditTable", "t-reg": "RegistryTable"},
    queues={"https://q/notify": "NotifyQueue", "https://q/national": "NationalQueue",
            "https://q/dlq": "NationalDeadLetterQueue"},
    key_arn=KEY,
    stage="test",
    national_parameter="/relais/test/national-token",
    national_secret="",
    email_sender="resultats@relais.example",
    ses_configuration_set="relais-test",
)  # fmt: skip


def refused(handler: str, service: str, operation: str, **params: Any) -> list[str]:
    return [str(d) for d in denials(handler, service, operation, params, R)]


def test_dynamodb_actions_are_checked_per_table_and_per_transaction_item():
    assert refused(API, "dynamodb", "PutItem", TableName="t-audit", Item={}) == []
    assert refused(NOTIFY, "dynamodb", "PutItem", TableName="t-results", Item={}) == [
        "notify function: dynamodb:PutItem on ResultsTable"
    ]
    items = [
        {"Put": {"TableName": "t-state", "Item": {}}},
        {"ConditionCheck": {"TableName": "t-reg", "Key": {}}},  # the API reads the registry, never checks it
        {"Delete": {"TableName": "t-state", "Key": {}}},
    ]
    assert refused(API, "dynamodb", "TransactWriteItems", TransactItems=items) == [
        "api function: dynamodb:ConditionCheckItem on RegistryTable",
        "api function: dynamodb:DeleteItem on StateTable",
    ]
    assert refused(API, "dynamodb", "BatchGetItem", RequestItems={"t-reg": {}, "t-results": {}}) == [
        "api function: dynamodb:BatchGetItem on ResultsTable"
    ]
    assert refused(API, "dynamodb", "GetItem", TableName="another", Key={}) == [
        "api function: dynamodb:GetItem on a table outside the stack"
    ]
    assert refused(API, "dynamodb", "Scan", TableName="t-results") == ["api function: dynamodb:Scan on ResultsTable"]


def test_an_index_query_needs_the_index_granted():
    assert refused(RECONCILE, "dynamodb", "Query", TableName="t-results", IndexName="pending-national") == []
    assert refused(RECONCILE, "dynamodb", "Query", TableName="t-results") == [
        "reconcile function: dynamodb:Query on ResultsTable"
    ]
    assert refused(NOTIFY, "dynamodb", "Query", TableName="t-results", IndexName="pending-national") == [
        "notify function: dynamodb:Query on ResultsTable/index/pending-national"
    ]


def test_an_action_limited_to_partitions_is_refused_outside_them():
    """The API counts failed authentications in place under ``actor#`` partitions only (dynamodb:LeadingKeys)."""
    anonymous = {"subject": {"S": "actor#anonymous#7"}, "sk": {"S": "2026-12-03T10:00#x"}}
    assert refused(API, "dynamodb", "UpdateItem", TableName="t-audit", Key=anonymous) == []
    results = {"subject": {"S": "result#abc"}, "sk": {"S": "2026-12-03T10:00#x"}}
    assert refused(API, "dynamodb", "UpdateItem", TableName="t-audit", Key=results) == [
        "api function: dynamodb:UpdateItem on AuditTable outside the partitions ['actor#*']"
    ]
    assert refused(NOTIFY, "dynamodb", "UpdateItem", TableName="t-audit", Key=anonymous) == [
        "notify function: dynamodb:UpdateItem on AuditTable"
    ]
    assert local_iam.partition_key("AuditTable") == "subject"


def test_sqs_calls_are_checked_per_queue_and_role():
    assert refused(API, "sqs", "SendMessage", QueueUrl="https://q/notify") == []
    assert refused(API, "sqs", "SendMessageBatch", QueueUrl="https://q/national") == []
    assert refused(API, "sqs", "SendMessage", QueueUrl="https://q/dlq") == [
        "api function: sqs:SendMessage on NationalDeadLetterQueue"
    ]
    assert refused(NATIONAL, "sqs", "ChangeMessageVisibility", QueueUrl="https://q/national") == []
    assert refused(OUTBOX, "sqs", "ChangeMessageVisibility", QueueUrl="https://q/national") == [
        "outbox function: sqs:ChangeMessageVisibility on NationalQueue"
    ]
    assert refused(NATIONAL, "sqs", "PurgeQueue", QueueUrl="https://q/national") == [
        "national function: sqs:PurgeQueue on NationalQueue"
    ]
    assert refused(NATIONAL, "sqs", "SendMessage", QueueUrl="https://elsewhere") == [
        "national function: sqs:SendMessage on a queue outside the stack"
    ]


def test_the_key_only_for_declared_purposes_under_the_envelope_context():
    context = {"purpose": "result", "stage": "test"}
    assert refused(NOTIFY, "kms", "Decrypt", KeyId=KEY, EncryptionContext=context) == []
    assert refused(NOTIFY, "kms", "GenerateDataKey", KeyId=KEY, EncryptionContext=context) == [
        "notify function: kms:GenerateDataKey on DataKey for purpose 'result'"
    ]
    assert (
        refused(CHAIN, "kms", "GenerateDataKey", KeyId=KEY, EncryptionContext={**context, "purpose": "audit-seal"})
        == []
    )
    assert refused(NOTIFY, "kms", "Decrypt", KeyId=KEY, EncryptionContext={**context, "purpose": "receipt-key"}) == [
        "notify function: kms:Decrypt on DataKey for purpose 'receipt-key'"
    ]
    assert refused(NOTIFY, "kms", "Decrypt", KeyId=KEY, EncryptionContext={**context, "stage": "prod"}) == [
        "notify function: kms:Decrypt on DataKey under keys ['purpose', 'stage'] of the encryption context"
    ]
    extra = {**context, "aws-crypto-public-key": "x"}  # what a signing algorithm suite would add
    assert refused(NOTIFY, "kms", "Decrypt", KeyId=KEY, EncryptionContext=extra) == [
        "notify function: kms:Decrypt on DataKey under keys ['aws-crypto-public-key', 'purpose', 'stage'] of the "
        "encryption context"
    ]
    assert refused(NOTIFY, "kms", "Decrypt", KeyId="arn:aws:kms:eu-west-3:1:key/other", EncryptionContext=context) == [
        "notify function: kms:Decrypt on a key other than the stage's DataKey, or none named"
    ]
    assert refused(NOTIFY, "kms", "Decrypt", EncryptionContext=context) == [
        "notify function: kms:Decrypt on a key other than the stage's DataKey, or none named"
    ]
    assert refused(NOTIFY, "kms", "Encrypt", KeyId=KEY, EncryptionContext=context) == [
        "notify function: kms:Encrypt on DataKey for purpose 'result'"
    ]  # fmt: skip


def test_messages_parameters_and_other_services():
    assert refused(NOTIFY, "sns", "Publish", PhoneNumber="+33600000000", Message="m") == []
    assert refused(NOTIFY, "sns", "Publish", TopicArn="arn:aws:sns:eu-west-3:1:t", Message="m") == [
        "notify function: sns:Publish on a topic or an endpoint"
    ]
    assert refused(OUTBOX, "sns", "Publish", PhoneNumber="+33600000000", Message="m") == [
        "outbox function: sns:Publish on a phone number"
    ]
    assert refused(NOTIFY, "sns", "SetSMSAttributes", attributes={}) == ["notify function: sns:SetSMSAttributes on *"]
    email = {"Destination": {}, "Message": {}, "ConfigurationSetName": "relais-test"}
    assert refused(NOTIFY, "ses", "SendEmail", Source="resultats@relais.example", **email) == []
    assert refused(NOTIFY, "ses", "SendEmail", Source="Relais <resultats@relais.example>", **email) == []
    assert refused(NOTIFY, "ses", "SendEmail", Source="Resultats@relais.example", **email) == [
        "notify function: ses:SendEmail on a sender other than EmailSender"
    ]  # ses:FromAddress under StringEquals: case counts
    assert refused(NOTIFY, "ses", "SendEmail", Source="other@relais.example", **email) == [
        "notify function: ses:SendEmail on a sender other than EmailSender"
    ]
    assert refused(NOTIFY, "ses", "SendEmail", Source="resultats@relais.example", ConfigurationSetName="x") == [
        "notify function: ses:SendEmail on a configuration set other than SesConfigurationSet"
    ]
    assert refused(NATIONAL, "ssm", "GetParameter", Name="/relais/test/national-token", WithDecryption=True) == []
    assert refused(NATIONAL, "ssm", "GetParameter", Name="/other") == [
        "national function: ssm:GetParameter on NationalTokenParameter"
    ]
    assert refused(NOTIFY, "ssm", "GetParameter", Name="/relais/test/national-token") == [
        "notify function: ssm:GetParameter on any parameter"
    ]
    assert refused(NATIONAL, "secretsmanager", "GetSecretValue", SecretId="anything") == [
        "national function: secretsmanager:GetSecretValue on NationalClientCertSecretArn"
    ]
    assert refused(API, "cloudwatch", "PutMetricData", Namespace="Relais") == [
        "api function: cloudwatch:PutMetricData on any resource"
    ]


def test_the_switch_is_on_unless_off_and_refuses_nonsense():
    assert local_iam.enabled({}) and local_iam.enabled({"RELAIS_LOCAL_IAM": "on"})
    assert not local_iam.enabled({"RELAIS_LOCAL_IAM": "off"})
    with pytest.raises(ValueError, match="RELAIS_LOCAL_IAM must be on or off"):
        local_iam.enabled({"RELAIS_LOCAL_IAM": "maybe"})


def test_only_the_project_s_own_app_runs_as_the_api_function(monkeypatch):
    """The benchmark's floor app is a ``Chalice`` in a module ``app`` too: it is no deployed function."""
    import app
    from chalicelib.events.notify import on_notify_message

    assert local_iam._handler_key(app.app) == API
    assert local_iam._handler_key(on_notify_message) == NOTIFY
    floor = types.ModuleType("app")
    floor.__file__ = "/elsewhere/floor_app/app.py"
    floor.app = object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "app", floor)
    assert local_iam._handler_key(floor.app) is None  # type: ignore[attr-defined]


def test_every_delegate_resolves_to_a_deployed_function():
    codes = local_iam._delegate_codes()
    assert len(codes) == len(local_iam.DELEGATES)
    assert set(codes.values()) <= set(local_iam.FUNCTIONS)


def test_which_function_runs_handler_then_delegate_on_the_stack_and_a_test_s_own_step(monkeypatch):
    def delegate() -> str | None:
        return innermost()

    def innermost() -> str | None:
        return local_iam._current_function()

    monkeypatch.setattr(local_iam, "_delegate_codes", lambda: {delegate.__code__: NOTIFY})
    assert innermost() is None  # no handler, no delegate: the test's own call, unchecked
    assert delegate() == NOTIFY  # a test calling what the notifier's handler hands its event to
    with local_iam.running_as(API):
        assert delegate() == API  # a handler that runs decides, whatever it calls
        with local_iam.running_as(None):
            assert delegate() is None  # a test's step inside it: as the test
    assert delegate() == NOTIFY


def test_a_visibility_change_needs_the_queue_consumed_too(monkeypatch):
    """infra/iam.py grants ChangeMessageVisibility inside the consuming statement only."""
    from dataclasses import replace

    from infra import iam

    spec = iam.FUNCTIONS[OUTBOX]
    monkeypatch.setitem(
        iam.FUNCTIONS, OUTBOX, replace(spec, access=replace(spec.access, changes_visibility=("NationalQueue",)))
    )
    assert refused(OUTBOX, "sqs", "ChangeMessageVisibility", QueueUrl="https://q/national") == [
        "outbox function: sqs:ChangeMessageVisibility on NationalQueue"
    ]


def test_partition_patterns_are_iam_string_like():
    like = local_iam._string_like
    assert like("actor#*").fullmatch("actor#anonymous#7") and not like("actor#*").fullmatch("result#x")
    assert like("a?c").fullmatch("abc") and not like("a?c").fullmatch("abbc")
    assert like("[ab]*").fullmatch("[ab]x") and not like("[ab]*").fullmatch("ax")  # brackets are literal


def test_each_enforced_block_keeps_its_own_refusals():
    with local_iam.enforced() as outer:
        outer.append("outer")  # type: ignore[arg-type]
        with local_iam.enforced() as inner:
            assert inner == [] and local_iam.refused() is inner
        assert local_iam.refused() is outer and outer == ["outer"]
    with pytest.raises(RuntimeError, match="no enforced"):
        local_iam.refused()


def test_a_lambda_function_wrapper_is_seen_through():
    from chalicelib.events.notify import on_notify_message

    wrapper = types.SimpleNamespace(func=types.SimpleNamespace(_original_func=on_notify_message.func))
    assert local_iam._handler_key(wrapper) == NOTIFY
    assert local_iam._handler_key(types.SimpleNamespace(func=functools.partial(print))) is None
