"""Each function's IAM policy, enforced locally: moto authorizes every call, AWS does not.

A deployed function may make only the calls its entry in :data:`infra.iam.FUNCTIONS` declares (its role's policy is
built from that entry). moto answers every call, so a call the code makes and the entry forgets passes every local
test and is refused in production. It happened twice: the notifier's ``BatchGetItem`` of earlier send claims (found
by reading), and the API's ``UpdateItem`` counting unauthenticated requests on the audit table (found by this check:
on AWS every such request would have answered 503 instead of 401).

:func:`install` makes this process refuse such calls as AWS does. While a deployed function's handler runs — an API
request through ``Chalice.__call__``, an event through chalice's ``EventSourceHandler`` (the poller, ``chalice.test``,
a test calling the handler), or one of the :data:`DELEGATES` a handler hands its event to, which tests call
directly — each AWS call it makes is checked against that function's entry: the IAM action (a
transaction's items one by one, as IAM authorizes them), the resource (table, index, queue, parameter, secret,
sender) and, for the stage's key, the envelope's encryption context (``purpose`` and ``stage`` only, the purpose
declared). A call outside it fails before reaching moto with the service's own access-denied error, is logged
(function, action, resource: never a parameter's value) and is kept in the list :func:`enforced` yields.

Not checked: calls outside a handler (provisioning, the operator's CLI, the poller receiving messages and reading
streams as Lambda's event source mappings do; a test calling a service directly, unless it says which function it
stands for with :func:`running_as`), calls from threads a handler starts (Relais starts none), a call served from a
cache another function of the same process filled (clients, data keys, pharmacies: on AWS each function has its
own), and what
AWS services do on a function's behalf (DynamoDB, SQS and SSM using the key: the template grants those through
``kms:ViaService`` conditions that ``tests/unit/test_iam_policies.py`` checks).

``RELAIS_LOCAL_IAM=off`` turns the check off in the local stack's processes (debugging only).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Final

from infra.iam import FUNCTIONS, Access

log = logging.getLogger(__name__)

SWITCH: Final = "RELAIS_LOCAL_IAM"
_ROOT: Final = Path(__file__).resolve().parents[2]  # the project: its app.py is the API function

#: The deployed function whose handler runs in this context (its ``FUNCTIONS`` key); ``""``: explicitly none (a
#: test's own step, :func:`running_as`); None: not known here, the stack may hold one of the :data:`DELEGATES`.
_FUNCTION: ContextVar[str | None] = ContextVar("relais_local_function", default=None)

#: What a handler hands its event to, by dotted name → the handler's function. Tests call these directly, without
#: chalice's wrapper: when no handler runs, a call made below one of them on the stack runs as that function. Only
#: code that no other function runs belongs here (``NotifyService.notify`` does not: the API sends in-request too).
DELEGATES: Final = {
    "chalicelib.events.notify.handle_notify_batch": "chalicelib.events.notify.on_notify_message",
    "chalicelib.events.national.handle_national_batch": "chalicelib.events.national.on_national_message",
    "chalicelib.events.national.reconcile_pending": "chalicelib.events.national.on_reconcile_schedule",
    "chalicelib.events.dispatch.dispatch_results": "chalicelib.events.dispatch.on_results_stream",
    "chalicelib.events.audit.chain_audit_events": "chalicelib.events.audit.on_audit_stream",
}

#: DynamoDB transaction item → the IAM action that authorizes it.
_ITEM_ACTIONS: Final = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
#: SQS operation → IAM action (a batch is authorized as its single call).
_SQS_ACTIONS: Final = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
#: Service → (error code, HTTP status) of its access-denied answer.
_DENIED_AS: Final = {
    "sqs": ("AccessDenied", 403),
    "sns": ("AuthorizationError", 403),
    "ses": ("AccessDenied", 403),
}
_DEFAULT_DENIED_AS: Final = ("AccessDeniedException", 400)  # DynamoDB, KMS, SSM, Secrets Manager


@dataclass(frozen=True)
class Denial:
    """A call a function's policy does not allow: which function, which IAM action, on which resource (a template
    logical id or a description without any value of the call)."""

    handler: str
    action: str
    resource: str

    def __str__(self) -> str:
        return f"{FUNCTIONS[self.handler].name} function: {self.action} on {self.resource}"


@dataclass(frozen=True)
class Resources:
    """The stage's resources by physical name, as the functions' settings name them."""

    tables: Mapping[str, str]  # table name → logical id
    queues: Mapping[str, str]  # queue URL → logical id
    key_arn: str
    stage: str
    national_parameter: str
    national_secret: str
    email_sender: str
    ses_configuration_set: str

    @classmethod
    def of(cls, s: Any) -> Resources:
        """From :class:`chalicelib.config.Settings` (the names the template hands each function)."""
        from infra.provision import OUTPUT_ENV

        # each stack output's logical id → the setting that names it (RELAIS_RESULTS_TABLE → results_table), if any
        named = {
            output.removesuffix("Url"): getattr(s, env.removeprefix("RELAIS_").lower(), "")
            for output, env in OUTPUT_ENV.items()
        }
        return cls(
            tables={name: logical for logical, name in named.items() if name and logical.endswith("Table")},
            queues={url: logical for logical, url in named.items() if url and logical.endswith("Queue")},
            key_arn=s.kms_key_arn,
            stage=s.stage,
            national_parameter=s.national_token_parameter,
            national_secret=s.national_client_cert_secret,
            email_sender=s.email_sender,
            ses_configuration_set=s.ses_configuration_set,
        )


def denials(handler: str, service: str, operation: str, params: Mapping[str, Any], r: Resources) -> list[Denial]:
    """What of ``service.operation(**params)`` the policy of ``handler``'s function refuses (empty: allowed)."""
    access = FUNCTIONS[handler].access
    check = _CHECKS.get(service)
    refused = check(access, operation, params, r) if check else [(f"{service}:{operation}", "any resource")]
    return [Denial(handler, action, resource) for action, resource in refused]


_Refused = list[tuple[str, str]]  # (IAM action, resource)


def _dynamodb(a: Access, operation: str, params: Mapping[str, Any], r: Resources) -> _Refused:
    wanted: list[tuple[str, str, str | None, Mapping[str, Any]]] = []  # action, table name, index, key or item
    if operation in ("TransactWriteItems", "TransactGetItems"):
        for item in params.get("TransactItems", []):
            for kind, body in item.items():
                key = body.get("Key") or body.get("Item") or {}
                wanted.append((_ITEM_ACTIONS.get(kind, kind), body.get("TableName", ""), None, key))
    elif operation in ("BatchGetItem", "BatchWriteItem"):
        wanted = [(operation, table, None, {}) for table in params.get("RequestItems", {})]
    else:
        key = params.get("Key") or params.get("Item") or {}
        wanted = [(operation, params.get("TableName", ""), params.get("IndexName"), key)]
    refused = []
    for operation_name, name, index, key in wanted:
        action, table = f"dynamodb:{operation_name}", r.tables.get(name)
        if table is None:
            refused.append((action, "a table outside the stack"))
        elif index is not None:
            if action not in a.indexes.get((table, index), ()):
                refused.append((action, f"{table}/index/{index}"))
        elif action in a.tables.get(table, ()):
            continue
        elif (table, action) in a.on_keys:
            leading = next(iter(key.get(partition_key(table), {}).values()), "")
            if not any(_string_like(p).fullmatch(str(leading)) for p in a.on_keys[table, action]):
                refused.append((action, f"{table} outside the partitions {list(a.on_keys[table, action])}"))
        else:
            refused.append((action, table))
    return refused


@functools.cache
def _string_like(pattern: str) -> re.Pattern[str]:
    """IAM's ``StringLike``: ``*`` any characters, ``?`` one; everything else literal (``[`` included)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


@functools.cache
def partition_key(table: str) -> str:
    """The partition key's attribute of a template table (``dynamodb:LeadingKeys`` is its value)."""
    from infra.provision import load_template

    schema = load_template()["Resources"][table]["Properties"]["KeySchema"]
    return str(next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH"))


def _sqs(a: Access, operation: str, params: Mapping[str, Any], r: Resources) -> _Refused:
    action = _SQS_ACTIONS.get(operation, operation)
    queue = r.queues.get(params.get("QueueUrl", ""))
    allowed_on: tuple[str, ...] = ()
    if action == "SendMessage":
        allowed_on = a.sends_to
    elif action == "ChangeMessageVisibility":  # granted with the queue's consumption only (infra/iam.py _sqs)
        allowed_on = tuple(q for q in a.changes_visibility if q in a.consumes)
    elif action in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes"):
        allowed_on = a.consumes
    if queue is not None and queue in allowed_on:
        return []
    return [(f"sqs:{action}", queue or "a queue outside the stack")]


def _kms(a: Access, operation: str, params: Mapping[str, Any], r: Resources) -> _Refused:
    purposes = {"GenerateDataKey": a.encrypts, "Decrypt": a.decrypts}.get(operation, ())
    if params.get("KeyId") != r.key_arn:  # the encryption SDK names the key, Decrypt included (strict mode)
        return [(f"kms:{operation}", "a key other than the stage's DataKey, or none named")]
    context = dict(params.get("EncryptionContext") or {})
    purpose = context.get("purpose")
    if set(context) != {"purpose", "stage"} or context["stage"] != r.stage:
        return [(f"kms:{operation}", f"DataKey under keys {sorted(context)} of the encryption context")]
    if purpose not in purposes:
        return [(f"kms:{operation}", f"DataKey for purpose {purpose!r}")]
    return []


def _ssm(a: Access, operation: str, params: Mapping[str, Any], r: Resources) -> _Refused:
    if a.national and operation == "GetParameter" and params.get("Name") == r.national_parameter:
        return []
    return [(f"ssm:{operation}", "NationalTokenParameter" if a.national else "any parameter")]


def _secrets(a: Access, operation: str, params: Mapping[str, Any], r: Resources) -> _Refused:
    secret = r.national_secret
    if a.national and operation == "GetSecretValue" and secret and params.get("SecretId") == secret:
        return []
    return [(f"secretsmanager:{operation}", "NationalClientCertSecretArn" if a.national else "any secret")]


def _sns(a: Access, operation: str, params: Mapping[str, Any], r: Resources) -> _Refused:
    if operation != "Publish":
        return [(f"sns:{operation}", "*")]
    if "PhoneNumber" not in params or params.get("TopicArn") or params.get("TargetArn"):
        return [("sns:Publish", "a topic or an endpoint")]
    return [] if a.sms else [("sns:Publish", "a phone number")]


def _ses(a: Access, operation: str, params: Mapping[str, Any], r: Resources) -> _Refused:
    if operation != "SendEmail" or not a.email:
        return [(f"ses:{operation}", "EmailSender")]
    if parseaddr(params.get("Source", ""))[1] != r.email_sender:  # ses:FromAddress, StringEquals: case counts
        return [("ses:SendEmail", "a sender other than EmailSender")]
    if params.get("ConfigurationSetName", r.ses_configuration_set) != r.ses_configuration_set:
        return [("ses:SendEmail", "a configuration set other than SesConfigurationSet")]
    return []


_CHECKS: Final[dict[str, Callable[[Access, str, Mapping[str, Any], Resources], _Refused]]] = {
    "dynamodb": _dynamodb,
    "sqs": _sqs,
    "kms": _kms,
    "ssm": _ssm,
    "secretsmanager": _secrets,
    "sns": _sns,
    "ses": _ses,
}


# --- the process's check ---------------------------------------------------------------------------------------


@dataclass
class _State:
    lock: threading.Lock
    installed: bool = False
    enforcing: bool = False
    denied: list[Denial] | None = None  # the innermost enforced() block's list; outside one, refusals are only logged


_state = _State(threading.Lock())


def enabled(env: Mapping[str, str]) -> bool:
    """Whether ``RELAIS_LOCAL_IAM`` leaves the check on (it is, unless ``off``); ValueError for another value."""
    value = env.get(SWITCH, "on").strip().lower()
    if value not in ("on", "off", "1", "0", "true", "false", "yes", "no", ""):
        raise ValueError(f"{SWITCH} must be on or off, not {value!r}")
    return value in ("on", "1", "true", "yes", "")


def install(*, enforce: bool = True) -> None:
    """Patch chalice's entry points (which function runs) and botocore's calls (what it asks); ``enforce``: from
    now on, for the life of the process. Idempotent."""
    with _state.lock:
        if not _state.installed:
            _patch()
            _state.installed = True
        _state.enforcing = _state.enforcing or enforce


@contextlib.contextmanager
def enforced() -> Iterator[list[Denial]]:
    """The check on for a block (a test); yields the calls refused in it."""
    install(enforce=False)
    denied: list[Denial] = []
    with _state.lock:
        before = _state.enforcing, _state.denied
        _state.enforcing, _state.denied = True, denied
    try:
        yield denied
    finally:
        with _state.lock:
            _state.enforcing, _state.denied = before


def refused() -> list[Denial]:
    """The calls refused in the innermost :func:`enforced` block so far (the list it yields)."""
    if _state.denied is None:
        raise RuntimeError("no enforced() block is running")
    return _state.denied


@contextlib.contextmanager
def running_as(handler: str | None) -> Iterator[None]:
    """The block's calls made as ``handler``'s function (a ``FUNCTIONS`` key), or as no function (None: the test
    itself, unchecked): a test's step put inside another function's handler, to arrange a race."""
    token = _FUNCTION.set(handler or "")
    try:
        yield
    finally:
        _FUNCTION.reset(token)


def install_from_environment() -> None:
    """What the local stack's processes call at start: the check on unless ``RELAIS_LOCAL_IAM=off``."""
    if enabled(os.environ):
        install()
    else:
        log.warning("local IAM: %s=off, every function may call anything (unlike AWS)", SWITCH)


def _handler_key(target: Any) -> str | None:
    """The ``FUNCTIONS`` key of a chalice handler object, or None (an app or handler the template does not deploy:
    the benchmark's floor app, say, also a ``Chalice`` in a module ``app``)."""
    func = getattr(target, "func", None)
    func = getattr(func, "_original_func", func)  # chalice's PureLambdaWrapper (@app.lambda_function)
    if func is not None:
        key = f"{getattr(func, '__module__', '')}.{getattr(func, '__name__', '')}"
        return key if key in FUNCTIONS else None
    for key in FUNCTIONS:
        module_name, _, attribute = key.rpartition(".")
        module = sys.modules.get(module_name)
        source = getattr(module, "__file__", None)
        if getattr(module, attribute, None) is target and source and _in_project(source):
            return key
    return None


@functools.cache
def _in_project(source: str) -> bool:
    """Whether a module file is the project's own (``app.py`` beside ``infra/``); resolved once per file, not per
    request."""
    return Path(source).resolve().parent == _ROOT


def _as_function(call: Callable[..., Any]) -> Callable[..., Any]:
    def running(self: Any, event: Any, context: Any) -> Any:
        token = _FUNCTION.set(_handler_key(self))
        try:
            return call(self, event, context)
        finally:
            _FUNCTION.reset(token)

    return running


def _patch() -> None:
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError
    from chalice import app as chalice_app

    chalice_app.EventSourceHandler.__call__ = _as_function(chalice_app.EventSourceHandler.__call__)  # type: ignore[method-assign]
    chalice_app.Chalice.__call__ = _as_function(chalice_app.Chalice.__call__)  # type: ignore[method-assign]
    real = BaseClient._make_api_call

    def checked(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        handler = _current_function() if _state.enforcing else None
        if handler is not None:
            service = self.meta.service_model.service_name
            refused = denials(handler, service, operation_name, api_params, _resources())
            if refused:
                with _state.lock:
                    if _state.denied is not None:
                        _state.denied.extend(refused)
                for denial in refused:
                    log.error("local IAM refused a call: %s (infra/iam.py does not allow it)", denial)
                code, status = _DENIED_AS.get(service, _DEFAULT_DENIED_AS)
                message = f"not authorized to perform: {refused[0].action} on resource: {refused[0].resource}"
                error = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
                raise ClientError(error, operation_name)  # type: ignore[arg-type]
        return real(self, operation_name, api_params)

    BaseClient._make_api_call = checked  # type: ignore[method-assign]


def _current_function() -> str | None:
    """The function whose code runs here: the handler that set it, else a delegate on the stack; None: none."""
    running = _FUNCTION.get()
    return _delegate_on_stack() if running is None else (running or None)


def _delegate_on_stack() -> str | None:
    """The function of the innermost :data:`DELEGATES` entry on the calling thread's stack, if any."""
    codes = _delegate_codes()
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        key = codes.get(frame.f_code)
        if key is not None:
            return key
        frame = frame.f_back
    return None


@functools.cache
def _delegate_codes() -> dict[CodeType, str]:
    from infra.local.poller import handler_spec, resolve

    return {resolve(handler_spec(dotted)).__code__: key for dotted, key in DELEGATES.items()}  # type: ignore[attr-defined]


def _resources() -> Resources:
    from chalicelib import bootstrap

    return _resources_of(bootstrap.settings())


@functools.lru_cache(maxsize=4)
def _resources_of(settings: Any) -> Resources:
    return Resources.of(settings)
