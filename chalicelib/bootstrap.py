"""The one wiring point: builds settings, clients, the encryption envelope and services lazily.

Each component is a function decorated with :func:`component`: built at first use, then kept for warm
Lambda starts. One registry serves :func:`reset` (forget everything: tests call it after starting moto, so
that no client or cache outlives its mock) and :func:`override` (serve a replacement instead of a component,
``clock`` or ``settings``; everything already built is forgotten, so dependents are rebuilt around it).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from chalicelib.config import Settings, get_settings

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.session import Session as BotocoreSession

    from chalicelib.adapters.audit_chain import AuditChain
    from chalicelib.adapters.aws import CallBudget
    from chalicelib.adapters.crypto import Envelope
    from chalicelib.adapters.key_cache import CachedKeyDirectory, CachedPharmacies
    from chalicelib.adapters.links import LinkStore
    from chalicelib.adapters.messaging import Messaging
    from chalicelib.adapters.metrics import EmfMetrics
    from chalicelib.adapters.national_client import NationalClient
    from chalicelib.adapters.national_status import NationalStatusStore
    from chalicelib.adapters.pacing import AccountPacer, PharmacyDailyCap
    from chalicelib.adapters.queues import WorkQueue
    from chalicelib.adapters.receipt_keys import ReceiptKeyring
    from chalicelib.adapters.reference_key import ReferenceKey
    from chalicelib.adapters.registry import Registry
    from chalicelib.adapters.results_store import DynamoStore
    from chalicelib.services.authn import Principal
    from chalicelib.services.corrections import CorrectionService
    from chalicelib.services.national import NationalDelivery
    from chalicelib.services.notify import NotifyService
    from chalicelib.services.patient import PatientService
    from chalicelib.services.pharmacy_request import PharmacyGate
    from chalicelib.services.receipts import Receipts, StatementService
    from chalicelib.services.resend import ResendService
    from chalicelib.services.results import ResultsService
    from chalicelib.services.slip import SlipService
    from chalicelib.services.vault import ResultVault

T = TypeVar("T")

_lock = threading.RLock()  # factories call one another; the local stack's poller runs threads
_factories: dict[str, Callable[[], object]] = {}
_built: dict[str, object] = {}
_clients: dict[str, Any] = {}
_overrides: dict[str, object] = {}
_PLAIN = frozenset({"clock", "settings"})  # overridable, but read on every call rather than built


def component(factory: Callable[[], T]) -> Callable[[], T]:
    """Register ``factory`` under its name; the returned function builds it once and serves the overrides."""
    name = factory.__name__
    if name in _factories or name in _PLAIN:
        raise ValueError(f"component {name!r} registered twice")
    _factories[name] = factory

    @functools.wraps(factory)
    def get() -> T:
        if name in _overrides:
            return cast(T, _overrides[name])
        try:
            return cast(T, _built[name])
        except KeyError:
            pass
        with _lock:
            if name not in _built:
                _built[name] = _factories[name]()
            return cast(T, _built[name])

    return get


def components() -> frozenset[str]:
    """The names :func:`override` accepts."""
    return frozenset(_factories) | _PLAIN


def override(**replacements: object) -> None:
    """Serve ``replacements`` (``messaging=fake``, ``clock=lambda: moment``…) instead of the real components.

    Everything already built is forgotten, so that whatever depends on a replaced component is rebuilt with
    the replacement. Unknown names are a TypeError (a typo would otherwise override nothing).
    """
    unknown = set(replacements) - components()
    if unknown:
        raise TypeError(f"no such component: {', '.join(sorted(unknown))}")
    with _lock:
        _overrides.update(replacements)
        _built.clear()
        _clients.clear()


def reset() -> None:
    """Forget every built component, client, setting and override."""
    with _lock:
        _overrides.clear()
        _built.clear()
        _clients.clear()
        get_settings.cache_clear()


def utc_now() -> datetime:
    return datetime.now(UTC)


def settings() -> Settings:
    return cast(Settings, _overrides["settings"]) if "settings" in _overrides else get_settings()


def clock() -> datetime:
    """Now, from the overriding clock if there is one (components hold this function, not a time)."""
    fn = cast(Callable[[], datetime], _overrides.get("clock", utc_now))
    return fn()


# -- AWS -------------------------------------------------------------------------------------------
@component
def botocore_session() -> BotocoreSession:
    """One botocore session for our own clients and the encryption SDK (shares credentials, hooks); every
    client it creates — the SDK's KMS clients included — has the function's timeouts and standard retries."""
    import botocore.session

    session = botocore.session.get_session()
    session.set_default_client_config(call_budget().botocore_config())
    return session


def call_budget() -> CallBudget:
    """Timeouts and attempts of every AWS call in this function (``adapters/aws.py``)."""
    from chalicelib.adapters.aws import call_budget as budget_for

    return budget_for(settings().function_timeout_seconds)


def client(service: str) -> BaseClient:
    """A client of our botocore session, cached per service: what ``boto3.client`` returns is this same botocore
    client, and boto3 (31 ms of imports with s3transfer) is then imported only where the encryption SDK needs it."""
    return _cached_client(service, service, None)


def one_attempt_client(service: str) -> BaseClient:
    """A client of ``service`` whose calls botocore never repeats (the function's timeouts, one attempt): for
    calls that are not idempotent, such as a patient's SMS (SNS ``Publish``) or e-mail (SES ``SendEmail``). With
    retries, an answer lost after the provider accepted the message (a read timeout) would be followed at once by a
    second copy, within one call that reports one send; the failure goes up instead, to the notifier, which records
    a lost answer as an unconfirmed send and retries only a refused one, audited (``services/notify.py``)."""
    from chalicelib.adapters.aws import call_budget as budget_for

    once = budget_for(settings().function_timeout_seconds, attempts=1)  # its one attempt waits the whole budget
    return _cached_client(f"{service}:one-attempt", service, once.botocore_config())


def _cached_client(key: str, service: str, config: Any) -> BaseClient:
    try:
        return _clients[key]
    except KeyError:
        pass
    with _lock:
        if key not in _clients:
            _clients[key] = botocore_session().create_client(service, region_name=settings().region, config=config)
        return _clients[key]


@component
def envelope() -> Envelope:
    from chalicelib.adapters.crypto import Envelope

    s = settings()
    return Envelope(
        key_arn=s.kms_key_arn,
        stage=s.stage,
        botocore_session=botocore_session(),
        max_age_seconds=s.data_key_max_age_seconds,
        max_messages=s.data_key_max_messages,
    )


@component
def vault() -> ResultVault:
    """Seals and opens results (the one owner of their encryption context); counts each decryption."""
    from chalicelib.services.vault import DECRYPTED_METRIC, ResultVault

    return ResultVault(envelope(), on_open=lambda: metrics().count(DECRYPTED_METRIC))


def _bind() -> None:
    from chalicelib.adapters.tables import bind_tables

    bind_tables(settings(), botocore_session())


# -- registry and pharmacy requests ----------------------------------------------------------------
@component
def registry() -> Registry:
    from chalicelib.adapters.registry import Registry

    _bind()
    return Registry(clock=clock)


@component
def store() -> DynamoStore:
    from chalicelib.adapters.results_store import DynamoStore

    _bind()
    s = settings()
    return DynamoStore(region=s.region, audit_retention_days=s.audit_retention_days, clock=clock)


@component
def pharmacies() -> CachedPharmacies:
    """Pharmacy profiles (name, FINESS, quota), cached 60 s per process and shared by every use case."""
    from chalicelib.adapters.key_cache import CachedPharmacies

    return CachedPharmacies(registry(), ttl_seconds=60)


@component
def key_directory() -> CachedKeyDirectory:
    """Pharmacy public keys, cached for the process (revocation is re-checked by every commit)."""
    from chalicelib.adapters.key_cache import CachedKeyDirectory

    return CachedKeyDirectory(registry())


@component
def pharmacy_gate() -> PharmacyGate:
    from chalicelib.adapters.rate_limits import KeyRateLimiter
    from chalicelib.services.pharmacy_request import PharmacyGate

    s = settings()
    _bind()
    return PharmacyGate(
        store=store(),
        keys=key_directory(),
        clock=clock,
        signature_window_seconds=s.signature_window_seconds,
        allowed_authorities=s.pinned_authorities(),
        accept_test_key=s.stage == "local",
        observe=_log_principal,
        limiter=KeyRateLimiter(per_second=s.key_requests_per_second),
    )


def _log_principal(principal: Principal) -> None:
    """The authenticated pharmacy goes on the request's log lines (a pharmacy's traffic in Logs Insights)."""
    from chalicelib.observability import log_request_keys

    log_request_keys(pharmacy_id=principal.pharmacy_id)


@component
def results_service() -> ResultsService:
    from chalicelib.services.results import ResultsService

    s = settings()
    return ResultsService(
        gate=pharmacy_gate(),
        store=store(),
        pharmacies=pharmacies(),
        vault=vault(),
        clock=clock,
        reference_digest=reference_key().digest,
        receipts=receipts(),
        daily_quota_default=s.daily_quota_default,
        retention_days=s.result_retention_days,
        sms_extra_regions=s.sms_extra_region_codes,
    )


@component
def reference_key() -> ReferenceKey:
    """The stage's secret for the keyed hashes of pharmacy references, opened once per process."""
    from chalicelib.adapters.reference_key import ReferenceKey

    _bind()
    return ReferenceKey(envelope(), clock)


@component
def receipt_keyring() -> ReceiptKeyring:
    """The stage's receipt signing keys: the active one opened once per process, all of them published."""
    from chalicelib.adapters.receipt_keys import ReceiptKeyring

    _bind()
    return ReceiptKeyring(envelope(), clock)


@component
def receipts() -> Receipts:
    """Signs receipts (contract §6) with the active receipt key."""
    from chalicelib.services.receipts import Receipts

    return Receipts(keys=receipt_keyring(), stage=settings().stage)


@component
def statement_service() -> StatementService:
    from chalicelib.adapters.results_store import USAGE_DAYS
    from chalicelib.services.receipts import StatementService

    return StatementService(
        gate=pharmacy_gate(), counts=store(), receipts=receipts(), clock=clock, counters_kept_days=USAGE_DAYS
    )


# -- national delivery -----------------------------------------------------------------------------
@component
def metrics() -> EmfMetrics:
    from chalicelib.adapters.metrics import EmfMetrics

    return EmfMetrics()


@component
def national_queue() -> WorkQueue:
    from chalicelib.adapters.queues import WorkQueue

    s = settings()
    return WorkQueue(client("sqs"), queue_url=s.national_queue_url, dlq_url=s.national_dlq_url)


@component
def notify_queue() -> WorkQueue:
    from chalicelib.adapters.queues import WorkQueue

    s = settings()
    return WorkQueue(client("sqs"), queue_url=s.notify_queue_url, dlq_url=s.notify_dlq_url)


@component
def national_statuses() -> NationalStatusStore:
    from chalicelib.adapters.national_status import NationalStatusStore

    _bind()
    return NationalStatusStore()


@component
def national_client() -> NationalClient:
    from chalicelib.adapters.national_client import NationalClient

    s = settings()
    return NationalClient(
        url=s.national_url,
        timeout_seconds=s.national_timeout_seconds,
        ssm=client("ssm") if s.national_token_parameter else None,
        token_parameter=s.national_token_parameter,
        secrets=client("secretsmanager") if s.national_client_cert_secret else None,
        client_cert_secret=s.national_client_cert_secret,
    )


@component
def national_delivery() -> NationalDelivery:
    from chalicelib.services.national import NationalDelivery

    s = settings()
    return NationalDelivery(
        get_result=store().get_result,
        decrypt=vault().open_submission,
        get_pharmacy=pharmacies().get_pharmacy,
        national=national_client(),
        statuses=national_statuses(),
        queue=national_queue(),
        audit=store().record_audit,
        metrics=metrics(),
        clock=clock,
        max_attempts=s.national_max_attempts,
        backoff_base=s.national_backoff_base_seconds,
        backoff_cap=s.national_backoff_cap_seconds,
    )


# -- patient notification, resend and result page ----------------------------------------------------
@component
def link_store() -> LinkStore:
    from chalicelib.adapters.links import LinkStore, bind_link_tables

    _bind()
    s = settings()
    bind_link_tables(s)
    return LinkStore(region=s.region, audit_retention_days=s.audit_retention_days, clock=clock)


@component
def messaging() -> Messaging:
    from chalicelib.adapters.messaging import Messaging

    s = settings()
    return Messaging(
        sns=one_attempt_client("sns"),
        ses=one_attempt_client("ses"),
        sms_sender_id=s.sms_sender_id,
        email_sender=s.email_sender,
        configuration_set=s.ses_configuration_set,
    )


@component
def notify_service() -> NotifyService:
    from chalicelib.services.notify import NotifyService

    s = settings()
    return NotifyService(
        results=store(),
        links=link_store(),
        sender=messaging(),
        decrypt=vault().open_submission,
        get_pharmacy=pharmacies().get_pharmacy,
        clock=clock,
        public_base_url=s.public_base_url,
        link_ttl_hours=s.link_ttl_hours,
        pacers=pacers(),
        caps=pharmacy_caps(),
    )


@component
def pacers() -> dict[str, AccountPacer]:
    """The account-wide pacer of each channel: SNS's SMS rate and SES's sending rate, with monthly budgets."""
    from chalicelib.adapters.pacing import AccountPacer

    _bind()
    s = settings()

    def budget_used(channel: str, count: int, budget: int) -> None:  # the metric the budget alarm watches
        if budget > 0:
            metrics().percent(f"{channel.capitalize()}BudgetUsedPercent", 100.0 * count / budget)

    return {
        "sms": AccountPacer("sms", s.sms_per_second, s.sms_monthly_budget, on_count=budget_used),
        "email": AccountPacer("email", s.email_per_second, s.email_monthly_budget, on_count=budget_used),
    }


@component
def pharmacy_caps() -> dict[str, PharmacyDailyCap]:
    """The per-pharmacy daily cap of each capped channel (SMS): what one pharmacy's key can make Relais send."""
    from chalicelib.adapters.pacing import PharmacyDailyCap

    _bind()
    return {"sms": PharmacyDailyCap("sms", settings().sms_per_pharmacy_per_day, clock)}


def _enqueue_notify(result_id: str, generation: int, delay_seconds: int = 0) -> None:
    """Queue the patient's message of ``generation``, to be received in ``delay_seconds`` (at most SQS's 900): the
    backstop of a message the request sends itself (``services.notify.send_in_request``)."""
    from chalicelib.domain.queue_messages import build_queue_message
    from chalicelib.errors import DependencyUnavailableError

    try:
        client("sqs").send_message(
            QueueUrl=settings().notify_queue_url,
            MessageBody=build_queue_message(result_id, generation),
            DelaySeconds=min(delay_seconds, 900),
        )
    except Exception as exc:
        raise DependencyUnavailableError("sqs") from exc


@component
def resend_service() -> ResendService:
    from chalicelib.services.resend import ResendService

    return ResendService(
        gate=pharmacy_gate(),
        results=store(),
        link_store=link_store(),
        notifier=notify_service(),
        enqueue=_enqueue_notify,
        clock=clock,
        resend_per_day=settings().resend_per_day,
        request_seconds=settings().function_timeout_seconds,
    )


@component
def slip_service() -> SlipService:
    """The paper slip's use case; it alone imports the PDF and QR code libraries (``adapters/slip_pdf.py``)."""
    from chalicelib.adapters.slip_pdf import render_slip
    from chalicelib.services.slip import SlipService

    s = settings()
    return SlipService(
        gate=pharmacy_gate(),
        results=store(),
        link_store=link_store(),
        get_pharmacy=pharmacies().get_pharmacy,
        render=render_slip,
        clock=clock,
        public_base_url=s.public_base_url,
        link_ttl_hours=s.link_ttl_hours,
        resend_per_day=s.resend_per_day,
    )


@component
def correction_service() -> CorrectionService:
    from chalicelib.adapters.corrections import CorrectionStore, VersionConflictError
    from chalicelib.services.corrections import CorrectionService

    return CorrectionService(
        gate=pharmacy_gate(),
        get_result=store().get_result,
        commits=CorrectionStore(store(), audit_retention_days=settings().audit_retention_days),
        vault=vault(),
        generations=link_store(),
        notify=notify_service().notify,
        enqueue_notify=_enqueue_notify,
        enqueue_national=lambda result_id: national_queue().enqueue([result_id]),
        metrics=metrics(),
        clock=clock,
        version_conflict=VersionConflictError,
        sms_extra_regions=settings().sms_extra_region_codes,
        request_seconds=settings().function_timeout_seconds,
        reference_digest=reference_key().digest,
    )


@component
def patient_service() -> PatientService:
    from chalicelib.services.patient import PatientService

    s = settings()
    return PatientService(
        results=store(),
        links=link_store(),
        decrypt=vault().open_submission,
        get_pharmacy=pharmacies().get_pharmacy,
        clock=clock,
        stage=s.stage,
        lock_attempts=s.patient_lock_attempts,
        ip_failures=s.patient_ip_failures,
        ip_window_seconds=s.patient_ip_window_seconds,
    )


# -- audit chain -----------------------------------------------------------------------------------
@component
def audit_chain() -> AuditChain:
    from chalicelib.adapters.audit_chain import AuditChain, bind_chain_table

    s = settings()
    _bind()
    bind_chain_table(s.audit_chain_table, s.region)
    return AuditChain(envelope=envelope(), region=s.region, clock=clock, retention_days=s.audit_retention_days)
