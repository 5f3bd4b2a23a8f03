"""Throttling, as DynamoDB, KMS, SNS, SES and SQS throttle: at ``throttle_rate`` (:mod:`infra.local.faults`), a data
call is refused before it does anything, with the service's own error code, HTTP status and body, so that the SDK
(its retry rules included) and the application see what AWS sends them.

=========== ==================================================== ====== =============================================
service     code                                                 status retried by botocore (legacy / standard mode)
=========== ==================================================== ====== =============================================
DynamoDB    ``ProvisionedThroughputExceededException`` (on-demand   400  yes / yes
            tables too, on a hot partition); a TransactWriteItems
            is instead, half the time, cancelled with a
            ``ThrottlingError`` cancellation reason at one item
KMS         ``ThrottlingException``                                400  yes / yes
SNS         ``Throttling`` ("Rate exceeded")                       400  yes / yes
SES         ``Throttling`` ("Maximum sending rate exceeded.")      400  yes / yes
SQS         ``RequestThrottled`` ("Request is throttled")          403  yes / yes
=========== ==================================================== ====== =============================================

A cancelled transaction is never retried by the SDK: the application must retry it. Only data calls are throttled
(those listed in ``OPERATIONS``): creating or describing resources never is, and neither are DynamoDB Streams reads.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any, Final

from werkzeug.exceptions import HTTPException

from infra.local import faults

#: The operations throttled, by service.
OPERATIONS: Final = {
    "dynamodb": (
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    ),
    "kms": ("Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncrypt"),
    "sns": ("Publish", "PublishBatch"),
    "ses": ("SendEmail", "SendRawEmail", "SendTemplatedEmail", "SendBulkTemplatedEmail"),
    "sqs": (
        "SendMessage",
        "SendMessageBatch",
        "ReceiveMessage",
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
    ),
}

DYNAMODB_MESSAGE: Final = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your table "
    "or index so please try again shortly. If exceptions persist, check if you have a hot key: "
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html"
)
KMS_MESSAGE: Final = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
SNS_MESSAGE: Final = "Rate exceeded"
SES_MESSAGE: Final = "Maximum sending rate exceeded."
SQS_MESSAGE: Final = "Request is throttled"


class Throttled(HTTPException):
    """A throttling answer, exactly as the service writes it (moto relays an HTTPException's status, headers and
    body as they are)."""

    def __init__(self, status: int, body: str, headers: dict[str, str]) -> None:
        super().__init__(description=body)
        self.code = status
        self._headers = headers

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return list(self._headers.items())


def _json(status: int, type_: str, message: str, content_type: str, **headers: str) -> Throttled:
    body = json.dumps({"__type": type_, "message": message})
    return Throttled(status, body, {"Content-Type": content_type, "x-amzn-RequestId": str(uuid.uuid4()), **headers})


def _xml(status: int, namespace: str, code: str, message: str) -> Throttled:
    request_id = uuid.uuid4()
    body = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return Throttled(status, body, {"Content-Type": "text/xml", "x-amzn-RequestId": str(request_id)})


def throttling_error(service: str, action: str, handler: Any) -> Exception:
    """The error ``service`` answers ``action`` with when it throttles it (``handler``: moto's response object)."""
    if service == "dynamodb":
        items = (getattr(handler, "body", None) or {}).get("TransactItems") if action == "TransactWriteItems" else None
        if items and faults.choice("throttle:dynamodb:transaction-form", 2) == 0:
            from moto.dynamodb.exceptions import TransactionCanceledException

            throttled = faults.choice("throttle:dynamodb:transaction-item", len(items))
            return TransactionCanceledException(
                [
                    ("ThrottlingError", DYNAMODB_MESSAGE, None) if i == throttled else (None, None, None)
                    for i in range(len(items))
                ]
            )
        return _json(
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            DYNAMODB_MESSAGE,
            "application/x-amz-json-1.0",
        )
    if service == "kms":
        return _json(400, "ThrottlingException", KMS_MESSAGE, "application/x-amz-json-1.1")
    if service == "sns":
        return _xml(400, "http://sns.amazonaws.com/doc/2010-03-31/", "Throttling", SNS_MESSAGE)
    if service == "ses":
        return _xml(400, "http://ses.amazonaws.com/doc/2010-12-01/", "Throttling", SES_MESSAGE)
    if service == "sqs":
        if "json" in str(handler.headers.get("Content-Type", "")):
            return _json(
                403,
                "com.amazonaws.sqs#RequestThrottled",
                SQS_MESSAGE,
                "application/x-amz-json-1.0",
                **{"x-amzn-query-error": "RequestThrottled;Sender"},
            )
        return _xml(403, "http://queue.amazonaws.com/doc/2012-11-05/", "RequestThrottled", SQS_MESSAGE)
    raise ValueError(f"no throttling error for {service}")


def _throttled(service: str, action: str, original: Any) -> Any:
    @functools.wraps(original)
    def handle(self: Any) -> Any:
        if faults.happens(f"throttle:{service}:{action}", faults.current().throttle_rate):
            raise throttling_error(service, action, self)
        return original(self)

    return handle


def patch_throttling() -> None:
    """Throttle the operations of ``OPERATIONS`` at ``throttle_rate`` (0, the default: never)."""
    from moto.core.utils import camelcase_to_underscores
    from moto.dynamodb.responses import DynamoHandler
    from moto.kms.responses import KmsResponse
    from moto.ses.responses import EmailResponse
    from moto.sns.responses import SNSResponse
    from moto.sqs.responses import SQSResponse

    handlers = {
        "dynamodb": DynamoHandler,
        "kms": KmsResponse,
        "sns": SNSResponse,
        "ses": EmailResponse,
        "sqs": SQSResponse,
    }
    for service, actions in OPERATIONS.items():
        handler = handlers[service]
        for action in actions:
            name = camelcase_to_underscores(action)
            original = getattr(handler, name, None)
            if original is not None:  # an operation this moto does not implement cannot be throttled either
                setattr(handler, name, _throttled(service, action, original))
