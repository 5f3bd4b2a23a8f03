"""What each deployed function may do, and its least-privilege IAM policy (pure: no I/O, no AWS).

:data:`FUNCTIONS` declares, per Chalice handler, every AWS call the function makes, by template resource; it is
derived from the code (``chalicelib/bootstrap.py`` wiring, the adapters' calls). :func:`function_policy` turns one
declaration into a policy document: every resource named (``Ref``/``Fn::GetAtt`` of the template), KMS only on the
stage's key and only under encryption contexts — ``purpose`` and ``stage`` for the application's envelopes
(``chalicelib/adapters/crypto.py``), the service's own context (queue ARN, table name, parameter ARN…) when an AWS
service uses the key on the function's behalf.

Two wildcards remain, both unavoidable and documented in ``infra/iac-skips.md``: ``sns:Publish`` on ``*`` (SMS to a
phone number has no ARN; a Deny on every SNS ARN keeps topics out) and ``dynamodb:ListStreams`` on the stream pattern
of one table. ``tests/unit/test_iam_policies.py`` enforces all of this on the packaged template.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Access:
    """The AWS calls one function makes, by template resource (logical id) — the source of its IAM policy."""

    tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table → dynamodb actions
    indexes: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (table, index) → actions
    # (table, action) → the partition keys it is limited to (IAM patterns, condition dynamodb:LeadingKeys)
    on_keys: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    stream_of: str | None = None  # table whose stream triggers the function
    consumes: tuple[str, ...] = ()  # queues the function is triggered by (event source mapping)
    changes_visibility: tuple[str, ...] = ()  # queues whose messages it puts back with a delay
    sends_to: tuple[str, ...] = ()  # queues it sends to (SendMessage, SendMessageBatch)
    decrypts: tuple[str, ...] = ()  # envelope purposes it decrypts (kms:Decrypt)
    encrypts: tuple[str, ...] = ()  # envelope purposes it encrypts (kms:GenerateDataKey)
    national: bool = False  # reads the national token (SSM) and the optional mTLS secret (Secrets Manager)
    sms: bool = False  # SNS Publish to phone numbers
    email: bool = False  # SES SendEmail from the stage's sender, with its configuration set


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # short name: log group /relais/<stage>/<name>, alarms relais-<stage>-<name>-…
    timeout: int  # seconds
    memory: int  # MB
    reserved_concurrency: int
    access: Access
    max_concurrency: int | None = None  # SQS event source: at most this many concurrent batches


_READ_WRITE = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem")

#: Chalice handler → function. DynamoDB goes through pynamodb: get → GetItem, save → PutItem, update → UpdateItem,
#: TransactWrite → PutItem / UpdateItem / ConditionCheckItem per item, index query → Query. A new AWS call in the code
#: needs its line here (docs/deploy.md, "Adding an AWS call"); a new handler without an entry fails the build.
FUNCTIONS: dict[str, FunctionSpec] = {
    # Pharmacy API (submit, follow, resend and correction — which send at once; a correction also queues the result's
    # new version for national delivery) and patient API (view: decrypt, lock counters).
    "app.app": FunctionSpec(
        name="api",
        timeout=10,
        memory=512,
        reserved_concurrency=100,
        access=Access(
            tables={
                # key and pharmacy standing: one consistent BatchGetItem before each commit
                "RegistryTable": ("dynamodb:GetItem", "dynamodb:BatchGetItem"),
                "StateTable": (*_READ_WRITE, "dynamodb:BatchGetItem"),  # quota shards read when one is full
                "ResultsTable": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
                "AuditTable": ("dynamodb:PutItem",),
            },
            # The minute's aggregate of failed authentications is counted in place (adapters/audit.py
            # count_failure): UpdateItem under an actor's partitions only, never a result's events.
            on_keys={("AuditTable", "dynamodb:UpdateItem"): ("actor#*",)},
            sends_to=("NotifyQueue", "NationalQueue"),
            # reference-key and receipt-key: opened once per process (reference_key.py, receipt_keys.py), sealed by
            # the first process of the stage that needs one (a receipt key rotated in: by the operator's command)
            decrypts=("result", "reference-key", "receipt-key"),
            encrypts=("result", "reference-key", "receipt-key"),
            sms=True,
            email=True,
        ),
    ),
    # The outbox relay: results stream → national and notify queues (ids only).
    "chalicelib.events.dispatch.on_results_stream": FunctionSpec(
        name="outbox",
        timeout=30,
        memory=256,
        reserved_concurrency=5,
        access=Access(stream_of="ResultsTable", sends_to=("NationalQueue", "NotifyQueue")),
    ),
    # Audit chain: the audit table's stream → chained, sealed entries (chalicelib/adapters/audit_chain.py).
    "chalicelib.events.audit.on_audit_stream": FunctionSpec(
        name="audit-chain",
        timeout=60,
        memory=256,
        reserved_concurrency=2,
        access=Access(
            tables={"AuditChainTable": ("dynamodb:GetItem", "dynamodb:PutItem")},
            stream_of="AuditTable",
            encrypts=("audit-seal",),
        ),
    ),
    # National reporter: decrypt, FHIR to the national system, status, audit; retry or dead-letter.
    "chalicelib.events.national.on_national_message": FunctionSpec(
        name="national",
        timeout=60,
        memory=512,
        reserved_concurrency=120,
        max_concurrency=110,
        access=Access(
            tables={
                "ResultsTable": ("dynamodb:GetItem", "dynamodb:UpdateItem"),
                "RegistryTable": ("dynamodb:GetItem",),
                "AuditTable": ("dynamodb:PutItem",),
                "StateTable": ("dynamodb:UpdateItem",),  # a first report counted in the month's statement
            },
            consumes=("NationalQueue",),
            changes_visibility=("NationalQueue",),
            sends_to=("NationalDeadLetterQueue",),
            decrypts=("result",),
            national=True,
        ),
    ),
    # Reconciliation: results still pending → national queue again.
    "chalicelib.events.national.on_reconcile_schedule": FunctionSpec(
        name="reconcile",
        timeout=60,
        memory=256,
        reserved_concurrency=1,
        access=Access(
            # Query the pending index; claim each re-queue with a conditional UpdateItem (national_requeued_at).
            tables={"ResultsTable": ("dynamodb:UpdateItem",)},
            indexes={("ResultsTable", "pending-national"): ("dynamodb:Query",)},
            sends_to=("NationalQueue",),
        ),
    ),
    # Notifier: link, claim, SMS and e-mail, status, audit.
    "chalicelib.events.notify.on_notify_message": FunctionSpec(
        name="notify",
        timeout=30,
        memory=512,
        reserved_concurrency=90,
        max_concurrency=80,
        access=Access(
            tables={
                "ResultsTable": ("dynamodb:GetItem", "dynamodb:UpdateItem"),
                # BatchGetItem: the send claims of earlier generations, for a corrected result (LinkStore.may_have_sent)
                "StateTable": (*_READ_WRITE, "dynamodb:BatchGetItem"),
                "RegistryTable": ("dynamodb:GetItem",),
                "AuditTable": ("dynamodb:PutItem",),
            },
            consumes=("NotifyQueue",),
            changes_visibility=("NotifyQueue",),
            decrypts=("result",),
            sms=True,
            email=True,
        ),
    ),
}

Statement = dict[str, Any]
_KEY = {"Fn::GetAtt": ["DataKey", "Arn"]}
_ACCOUNT = "arn:${AWS::Partition}:{service}:${AWS::Region}:${AWS::AccountId}:"


def _sub(text: str) -> dict[str, Any]:
    return {"Fn::Sub": text}


def _arn(logical_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def _allow(sid: str, actions: Iterable[str], resources: Sequence[Any], **extra: Any) -> Statement:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": list(resources), **extra}


def _via(service: str, context_key: str, values: Sequence[Any]) -> dict[str, Any]:
    """KMS used by an AWS service on the function's behalf, for these resources only (the service's context)."""
    return {
        "StringEquals": {
            "kms:ViaService": _sub(f"{service}.${{AWS::Region}}.amazonaws.com"),
            f"kms:EncryptionContext:{context_key}": list(values),
        }
    }


def _key_via(sid: str, actions: Sequence[str], service: str, context_key: str, values: Sequence[Any]) -> Statement:
    return _allow(sid, actions, [_KEY], Condition=_via(service, context_key, values))


def envelope_condition(purposes: Sequence[str]) -> dict[str, Any]:
    """The only encryption contexts under which a function may use the key for envelopes (``adapters/crypto.py``)."""
    return {
        "StringEquals": {
            "kms:EncryptionContext:purpose": sorted(purposes),
            "kms:EncryptionContext:stage": {"Ref": "Stage"},
        },
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["purpose", "stage"]},
    }


def _dynamodb(a: Access) -> list[Statement]:
    statements = [_allow(f"Table{table}", actions, [_arn(table)]) for table, actions in sorted(a.tables.items())]
    for (table, index), actions in sorted(a.indexes.items()):
        statements.append(_allow(f"Index{table}", actions, [_sub(f"${{{table}.Arn}}/index/{index}")]))
    for (table, action), patterns in sorted(a.on_keys.items()):
        on_keys = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(patterns)}}
        sid = f"Table{table}{action.removeprefix('dynamodb:')}OnKeys"
        statements.append(_allow(sid, [action], [_arn(table)], Condition=on_keys))
    if a.stream_of:
        read = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"]
        statements.append(_allow("ReadStream", read, [_arn(a.stream_of, "StreamArn")]))
        # ListStreams is authorised on the table's stream pattern (DynamoDB developer guide, Lambda triggers).
        pattern = _ACCOUNT.replace("{service}", "dynamodb") + f"table/${{{a.stream_of}}}/stream/*"
        statements.append(_allow("ListStreamsOfTable", ["dynamodb:ListStreams"], [_sub(pattern)]))
    used = sorted({*a.tables, *(t for t, _ in (*a.indexes, *a.on_keys)), *([a.stream_of] if a.stream_of else [])})
    if used:
        # The tables are under the stage's key: DynamoDB decrypts the table key on the caller's behalf.
        tables = [{"Ref": t} for t in used]
        statements.append(_key_via("TableEncryption", ["kms:Decrypt"], "dynamodb", "aws:dynamodb:tableName", tables))
    return statements


def _sqs(a: Access) -> list[Statement]:
    statements = []
    for queue in a.consumes:
        receive = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
        if queue in a.changes_visibility:
            receive.append("sqs:ChangeMessageVisibility")
        statements.append(_allow(f"Consume{queue}", receive, [_arn(queue)]))
    if a.consumes:
        queues = [_arn(q) for q in a.consumes]
        statements.append(_key_via("QueueEncryptionForReceiving", ["kms:Decrypt"], "sqs", "aws:sqs:arn", queues))
    if a.sends_to:
        queues = [_arn(q) for q in a.sends_to]
        statements.append(_allow("SendToQueues", ["sqs:SendMessage"], queues))
        send_keys = ["kms:GenerateDataKey", "kms:Decrypt"]
        statements.append(_key_via("QueueEncryptionForSending", send_keys, "sqs", "aws:sqs:arn", queues))
    return statements


def _envelopes(a: Access) -> list[Statement]:
    statements = []
    if a.decrypts:
        statements.append(_allow("EnvelopeDecrypt", ["kms:Decrypt"], [_KEY], Condition=envelope_condition(a.decrypts)))
    if a.encrypts:
        condition = envelope_condition(a.encrypts)
        statements.append(_allow("EnvelopeEncrypt", ["kms:GenerateDataKey"], [_KEY], Condition=condition))
    return statements


def _when_client_certificate(statement: Statement) -> Statement:
    return {"Fn::If": ["HasClientCertSecret", statement, {"Ref": "AWS::NoValue"}]}


def _national() -> list[Statement]:
    parameter = _sub(_ACCOUNT.replace("{service}", "ssm") + "parameter${NationalTokenParameter}")
    secret = {"Ref": "NationalClientCertSecretArn"}
    return [
        _allow("NationalToken", ["ssm:GetParameter"], [parameter]),
        _key_via("NationalTokenKey", ["kms:Decrypt"], "ssm", "PARAMETER_ARN", [parameter]),
        _when_client_certificate(_allow("NationalClientCertificate", ["secretsmanager:GetSecretValue"], [secret])),
        _when_client_certificate(
            _key_via("NationalClientCertificateKey", ["kms:Decrypt"], "secretsmanager", "SecretARN", [secret])
        ),
    ]


def _sms() -> list[Statement]:
    # SNS authorises SMS to a phone number only on "*" (a phone number has no ARN). The Deny removes every topic
    # and platform endpoint from it: the function can text patients, and publish nowhere else.
    deny = {"Effect": "Deny", "Action": ["sns:Publish"], "Resource": [_sub("arn:${AWS::Partition}:sns:*")]}
    return [_allow("SmsToPatients", ["sns:Publish"], ["*"]), {"Sid": "NoPublishToTopics", **deny}]


def _email() -> list[Statement]:
    identity = _ACCOUNT.replace("{service}", "ses") + "identity/"
    domain = {"Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "EmailSender"}]}]}
    resources = [
        _sub(identity + "${EmailSender}"),  # the address, when it is the verified identity
        {"Fn::Sub": [identity + "${Domain}", {"Domain": domain}]},  # or its domain
        _sub(_ACCOUNT.replace("{service}", "ses") + "configuration-set/${SesConfigurationSet}"),
    ]
    condition = {"StringEquals": {"ses:FromAddress": {"Ref": "EmailSender"}}}
    return [_allow("EmailToPatients", ["ses:SendEmail"], resources, Condition=condition)]


def function_policy(spec: FunctionSpec, log_group: str) -> dict[str, Any]:
    """The IAM policy document of one function, writing its logs to the template's ``log_group``."""
    a = spec.access
    statements = [_allow("OwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [_arn(log_group)])]
    statements += _dynamodb(a) + _sqs(a) + _envelopes(a)
    statements += (_national() if a.national else []) + (_sms() if a.sms else []) + (_email() if a.email else [])
    return {"Version": "2012-10-17", "Statement": statements}


def log_group_id(handler: str) -> str:
    """Logical id of a function's log group: ``audit-chain`` → ``AuditChainLogGroup``."""
    return "".join(part.capitalize() for part in FUNCTIONS[handler].name.split("-")) + "LogGroup"


def all_policies() -> dict[str, dict[str, Any]]:
    """Every function's policy document, by handler (what the packaged template's roles hold)."""
    return {handler: function_policy(spec, log_group_id(handler)) for handler, spec in FUNCTIONS.items()}
