"""The one wiring point: builds settings, clients, the encryption envelope and services lazily.

Everything is cached for warm Lambda starts. Tests call :func:`reset` (after starting moto, so
that no client or cache outlives its mock) or :func:`override` to inject fakes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from chalicelib.config import Settings, get_settings


def utc_now() -> datetime:
    return datetime.now(UTC)


_overrides: dict[str, Any] = {}


def override(**components: Any) -> None:
    """Replace components (``results_service``, ``clock``…) for tests."""
    _overrides.update(components)


def reset() -> None:
    """Forget every cached component, setting and override."""
    _overrides.clear()
    get_settings.cache_clear()
    for fn in (
        botocore_session,
        boto3_session,
        _client,
        envelope,
        registry,
        store,
        results_service,
        audit_chain,
        metrics,
        national_queue,
        national_statuses,
        national_client,
        national_delivery,
        link_store,
        messaging,
        notify_service,
        resend_service,
        patient_service,
    ):
        fn.cache_clear()


def settings() -> Settings:
    return _overrides.get("settings") or get_settings()


def clock() -> datetime:
    fn = _overrides.get("clock", utc_now)
    result: datetime = fn()
    return result


@cache
def botocore_session() -> Any:
    """One botocore session for our own clients and the encryption SDK (shares credentials, hooks)."""
    import botocore.session

    return botocore.session.get_session()


@cache
def boto3_session() -> Any:
    import boto3

    return boto3.session.Session(botocore_session=botocore_session(), region_name=settings().region)


def client(service: str) -> Any:
    """A boto3 client of our session, cached per service."""
    return _client(service)


@cache
def _client(service: str) -> Any:
    return boto3_session().client(service)


@cache
def envelope() -> Any:
    from chalicelib.adapters.crypto import Envelope

    s = settings()
    return Envelope(
        key_arn=s.kms_key_arn,
        stage=s.stage,
        botocore_session=botocore_session(),
        max_age_seconds=s.data_key_max_age_seconds,
        max_messages=s.data_key_max_messages,
    )


def _bind() -> None:
    from chalicelib.adapters.tables import bind_tables

    bind_tables(settings())


@cache
def registry() -> Any:
    from chalicelib.adapters.registry import Registry

    _bind()
    return Registry(clock=clock)


@cache
def store() -> Any:
    from chalicelib.adapters.results_store import DynamoStore

    _bind()
    s = settings()
    return DynamoStore(region=s.region, audit_retention_days=s.audit_retention_days, clock=clock)


@cache
def pharmacies() -> Any:
    """Pharmacy profiles (name, FINESS, quota), cached 60 s per process and shared by every use case."""
    from chalicelib.adapters.key_cache import CachedPharmacies

    return CachedPharmacies(registry(), ttl_seconds=60)


@cache
def results_service() -> Any:
    if "results_service" in _overrides:
        return _overrides["results_service"]
    from chalicelib.adapters.key_cache import CachedKeyDirectory
    from chalicelib.services.results import ResultsService

    s = settings()
    return ResultsService(
        store=store(),
        keys=CachedKeyDirectory(registry()),
        pharmacies=pharmacies(),
        envelope=envelope(),
        clock=clock,
        stage=s.stage,
        daily_quota_default=s.daily_quota_default,
        signature_window_seconds=s.signature_window_seconds,
        retention_days=s.result_retention_days,
        allowed_authorities=s.authorities,
    )


# -- national delivery -----------------------------------------------------------------------------
@cache
def metrics() -> Any:
    from chalicelib.adapters.metrics import EmfMetrics

    return EmfMetrics()


@cache
def national_queue() -> Any:
    from chalicelib.adapters.queues import WorkQueue

    s = settings()
    return WorkQueue(client("sqs"), queue_url=s.national_queue_url, dlq_url=s.national_dlq_url)


@cache
def national_statuses() -> Any:
    from chalicelib.adapters.national_status import NationalStatusStore

    _bind()
    return NationalStatusStore()


@cache
def national_client() -> Any:
    if "national_client" in _overrides:
        return _overrides["national_client"]
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


@cache
def national_delivery() -> Any:
    from chalicelib.services.national import NationalDelivery

    s = settings()
    results = results_service()
    return NationalDelivery(
        get_result=store().get_result,
        decrypt=results.decrypt_submission,
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


# -- patient notification and result page (issue 4) ----------------------------------------------------
@cache
def link_store() -> Any:
    from chalicelib.adapters.links import LinkStore, bind_link_tables

    _bind()
    s = settings()
    bind_link_tables(s)
    return LinkStore(region=s.region, audit_retention_days=s.audit_retention_days, clock=clock)


@cache
def messaging() -> Any:
    if "messaging" in _overrides:
        return _overrides["messaging"]
    from chalicelib.adapters.messaging import Messaging

    s = settings()
    return Messaging(
        sns=client("sns"),
        ses=client("ses"),
        sms_sender_id=s.sms_sender_id,
        email_sender=s.email_sender,
        configuration_set=s.ses_configuration_set,
    )


@cache
def notify_service() -> Any:
    from chalicelib.services.notify import NotifyService, RateLimiter

    s = settings()
    return NotifyService(
        results=store(),
        links=link_store(),
        sender=messaging(),
        decrypt=results_service().decrypt_submission,
        get_pharmacy=pharmacies().get_pharmacy,
        clock=clock,
        public_base_url=s.public_base_url,
        link_ttl_hours=s.link_ttl_hours,
        limiter=RateLimiter(s.sms_per_second),
    )


@cache
def resend_service() -> Any:
    import json

    from chalicelib.errors import DependencyUnavailableError
    from chalicelib.services.notify import ResendService

    s = settings()

    def enqueue(result_id: str, generation: int) -> None:
        try:
            client("sqs").send_message(
                QueueUrl=s.notify_queue_url, MessageBody=json.dumps({"result_id": result_id, "generation": generation})
            )
        except Exception as exc:
            raise DependencyUnavailableError("sqs") from exc

    return ResendService(
        results_service=results_service(),
        link_store=link_store(),
        notifier=notify_service(),
        enqueue=enqueue,
        clock=clock,
        resend_per_day=s.resend_per_day,
    )


@cache
def patient_service() -> Any:
    from chalicelib.services.patient import PatientService

    s = settings()
    return PatientService(
        results=store(),
        links=link_store(),
        decrypt=results_service().decrypt_submission,
        get_pharmacy=pharmacies().get_pharmacy,
        clock=clock,
        stage=s.stage,
        lock_attempts=s.patient_lock_attempts,
        ip_failures=s.patient_ip_failures,
        ip_window_seconds=s.patient_ip_window_seconds,
    )


# -- audit chain -----------------------------------------------------------------------------------
@cache
def audit_chain() -> Any:
    from chalicelib.adapters.audit_chain import AuditChain, bind_chain_table

    s = settings()
    _bind()
    bind_chain_table(s.audit_chain_table, s.region)
    return AuditChain(envelope=envelope(), region=s.region)
