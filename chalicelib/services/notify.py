"""Patient notification: issue a link and send it by SMS and/or e-mail; and the pharmacy's resend.

Idempotency. Each result has a link *generation* (0 at intake, +1 per resend). Sending generation
``g`` takes the lease of the claim ``notify#<result>#<g>``; every channel sent is recorded in that
claim together with its audit event, in one transaction. A redelivered queue message therefore finds
the channel already sent and sends nothing; a message of an older generation (superseded by a resend)
is dropped. The one window left is a crash between the provider accepting a message and the claim
being written: then, and only then, a retry sends it again (at-least-once, like SNS itself).

Failures raise, so that the queue retries the message; the attempt that reaches ``max_attempts``
(the notify queue's ``maxReceiveCount``) sets ``patient.status = failed`` before the message goes to
the dead-letter queue.

SMS rate. :class:`RateLimiter` spaces SMS to ``sms_per_second`` *per process*; messages beyond wait
(sleep) in the batch. In AWS the notifier's reserved concurrency times this rate must stay within the
account's SNS SMS quota (transactional messages per second): e.g. reserved concurrency 2 at 10/s for a
20/s quota. What cannot be sent in time stays in the queue (the queue is the buffer).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain.channels import channel_spec
from chalicelib.domain.links import Link, SupersededError, link_expiry, new_token, token_hash
from chalicelib.domain.messages import DEFAULT_LANGUAGE, Language, link_url
from chalicelib.domain.model import Submission
from chalicelib.domain.records import AuditEvent, AuthGrant, Pharmacy, ResultRecord, new_id
from chalicelib.errors import (
    FieldError,
    NotFoundError,
    RateLimitedError,
    RelaisError,
    UnsupportedMediaTypeError,
    ValidationError,
)

ACTOR = "system:notifier"
ACTION = "patient.notify"
NOTIFY_MAX_ATTEMPTS = 5  # the notify queue's maxReceiveCount (infra/resources.json)
LEASE_SECONDS = 120  # below the notify queue's visibility timeout (180 s)


# -- ports ---------------------------------------------------------------------------------------------
class Sender(Protocol):
    def send_sms(self, phone: str, text: str) -> str: ...

    def send_email(self, address: str, content: Any) -> str: ...


class ClaimView(Protocol):
    @property
    def sent(self) -> frozenset[str]: ...

    @property
    def done(self) -> bool: ...

    @property
    def link_expires_at(self) -> datetime | None: ...


class Links(Protocol):
    def put_link(self, link: Link) -> None: ...

    def current_generation(self, result_id: str) -> int: ...

    def acquire_claim(self, result_id: str, generation: int, *, lease_seconds: int, keep_until: int) -> ClaimView: ...

    def record_send(
        self, result_id: str, generation: int, channel: str, link_expires_at: datetime, audit: AuditEvent
    ) -> None: ...

    def release_claim(self, result_id: str, generation: int) -> None: ...

    def finish(self, result_id: str, generation: int, *, sent_at: datetime, link_expires_at: datetime) -> None: ...

    def mark_failed(self, result_id: str, generation: int) -> None: ...


class Results(Protocol):
    def get_result(self, result_id: str) -> ResultRecord | None: ...

    def record_audit(self, event: AuditEvent) -> None: ...


class NotifyFailedError(RelaisError):
    """Sending failed; the message is to be retried. Its text is a code, never a value."""


class RateLimiter:
    """At most ``rate`` acquisitions per second in this process (thread-safe); callers beyond it sleep."""

    def __init__(
        self, rate: int, *, monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for the next slot; the seconds waited."""
        with self._lock:
            now = self._monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


def parse_notify_message(body: str) -> tuple[str, int]:
    """``{"result_id": id, "generation"?: n}`` → ``(id, n)``; anything else is NotFoundError."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise NotFoundError("malformed notify message") from None
    if not isinstance(data, dict):
        raise NotFoundError("malformed notify message")
    result_id = data.get("result_id")
    generation = data.get("generation", 0)
    if not isinstance(result_id, str) or not 16 <= len(result_id) <= 64 or not isinstance(generation, int):
        raise NotFoundError("malformed notify message")
    return result_id, generation


@dataclass
class NotifyService:
    """Send a result's link on its channels, once per generation."""

    results: Results
    links: Links
    sender: Sender
    decrypt: Callable[[ResultRecord], Submission]
    get_pharmacy: Callable[[str], Pharmacy]
    clock: Callable[[], datetime]
    public_base_url: str
    link_ttl_hours: int = 72
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(20))
    language: Language = DEFAULT_LANGUAGE
    max_attempts: int = NOTIFY_MAX_ATTEMPTS

    def notify(self, result_id: str, generation: int = 0, *, attempt: int = 1) -> str:
        """Send generation ``generation`` of the result's link; the outcome (a code).

        ``"sent"``; or, acknowledging without sending: ``"unknown"``, ``"not_pending"``, ``"superseded"``,
        ``"duplicate"``. Raises (to be retried) when sending fails; at ``attempt >= max_attempts`` the
        patient status becomes ``failed`` first.
        """
        record = self.results.get_result(result_id)
        if record is None:
            return "unknown"
        if record.patient_status != "pending" or not record.channels:
            return "not_pending"
        if self.links.current_generation(result_id) != generation:
            return "superseded"
        claim = self.links.acquire_claim(
            result_id, generation, lease_seconds=LEASE_SECONDS, keep_until=record.expires_at
        )
        if claim.done:
            return "duplicate"
        try:
            expires = self._send(record, generation, claim)
            try:
                self.links.finish(result_id, generation, sent_at=self.clock(), link_expires_at=expires)
            except SupersededError:
                return "superseded"
        except Exception as exc:
            self._failed(record, generation, attempt, exc)
            raise NotifyFailedError(_code(exc)) from None
        return "sent"

    def _send(self, record: ResultRecord, generation: int, claim: ClaimView) -> datetime:
        # Every channel is looked up before anything is issued or sent: an unknown one fails the attempt.
        remaining = [channel_spec(c) for c in record.channels if c not in claim.sent]
        if not remaining:
            assert claim.link_expires_at is not None
            return claim.link_expires_at
        submission = self.decrypt(record)
        pharmacy = self.get_pharmacy(record.pharmacy_id)
        now = self.clock()
        token = new_token()
        link = Link(
            link_id=new_id(16),
            token_hash=token_hash(token),
            result_id=record.id,
            pharmacy_id=record.pharmacy_id,
            generation=generation,
            created_at=now,
            expires_at=link_expiry(now, self.link_ttl_hours),
        )
        self.links.put_link(link)
        url = link_url(self.public_base_url, token)
        for channel in remaining:
            address = channel.address(submission.patient)
            if address is None:
                raise NotifyFailedError(f"no_{channel.address_field}")
            message = channel.template(
                pharmacy_name=pharmacy.name,
                url=url,
                expires_at=link.expires_at,
                ttl_hours=self.link_ttl_hours,
                lang=self.language,
            )
            if channel.rate_limited:
                self.limiter.acquire()
            getattr(self.sender, channel.transport)(address, message)
            self.links.record_send(
                record.id,
                generation,
                channel.name,
                link.expires_at,
                AuditEvent(
                    actor=ACTOR,
                    action=ACTION,
                    outcome="success",
                    at=self.clock(),
                    record=record.id,
                    pharmacy_id=record.pharmacy_id,
                    reason=f"{channel.name}:link:{link.link_id}",
                ),
            )
        return link.expires_at

    def _failed(self, record: ResultRecord, generation: int, attempt: int, exc: Exception) -> None:
        """Best effort bookkeeping of a failed attempt: release the lease, audit, and on the last one fail."""
        final = attempt >= self.max_attempts
        event = AuditEvent(
            actor=ACTOR,
            action=ACTION,
            outcome="failed" if final else "retry",
            at=self.clock(),
            record=record.id,
            pharmacy_id=record.pharmacy_id,
            reason=_code(exc),
        )
        steps: list[Callable[[], None]] = [
            lambda: self.links.release_claim(record.id, generation),
            lambda: self.results.record_audit(event),
        ]
        if final:
            steps.append(lambda: self.links.mark_failed(record.id, generation))
        for step in steps:
            try:
                step()
            except Exception:  # noqa: S112 - the original failure is what the queue must see
                continue


def _code(exc: Exception) -> str:
    """A failure as a code: the error type, plus the provider's code when it has one. Never a message."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}:{code}" if isinstance(code, str) else type(exc).__name__


# -- resend ----------------------------------------------------------------------------------------------
class NoChannelError(RelaisError):
    """The patient asked for no message: there is nothing to resend (HTTP 409)."""


class ResendStore(Protocol):
    def commit_resend(
        self, store: Any, grant: AuthGrant, audit: AuditEvent, *, result_id: str, day: str, limit: int, keep_until: int
    ) -> int: ...


@dataclass
class ResendService:
    """``POST /v1/results/{id}/resend``: a new link for the patient, older ones revoked.

    Authentication reuses the pharmacy API's (``ResultsService``); the resend is counted, the
    generation bumped (revoking every older link) and the audit event written in the same transaction
    that consumes the request's nonce. The new link is then sent at once, in the request; when that
    fails, the job goes to the notify queue (``enqueue``) and is retried like any notification.
    """

    results_service: Any  # chalicelib.services.results.ResultsService (its authentication and store)
    link_store: ResendStore
    notifier: NotifyService
    enqueue: Callable[[str, int], None]
    clock: Callable[[], datetime]
    resend_per_day: int = 3

    def resend(
        self, request: Any, result_id: str, *, content_type: str | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Authenticate, check the body, ownership and the daily limit, revoke, issue and send; the 202 body.

        The body is ``{}`` (an empty body is accepted too); anything else is 400, a non-JSON type 415.
        """
        rs = self.results_service
        grant: AuthGrant = rs._authenticate(request, "result.resend", request_id)
        try:
            _check_empty_body(request.body, content_type)
        except (UnsupportedMediaTypeError, ValidationError) as exc:
            rs._commit_auth(
                grant,
                rs._event(grant, "result.resend", "rejected", None, request_id, reason=type(exc).__name__),
                request_id,
            )
            raise
        plausible = 16 <= len(result_id) <= 64 and all(c.isalnum() or c in "-_" for c in result_id)
        record = rs.store.get_result(result_id) if plausible else None
        if record is None or record.pharmacy_id != grant.pharmacy_id:
            rs._commit_auth(
                grant,
                rs._event(
                    grant,
                    "result.resend",
                    "not_found",
                    result_id if plausible else None,
                    request_id,
                    reason="unknown_or_foreign",
                ),
                request_id,
            )
            raise NotFoundError("no such result")
        if not record.channels:
            rs._commit_auth(
                grant,
                rs._event(grant, "result.resend", "rejected", result_id, request_id, reason="no_channel"),
                request_id,
            )
            raise NoChannelError("no channel to resend on")
        now = self.clock()
        try:
            generation = self.link_store.commit_resend(
                rs.store,
                grant,
                rs._event(grant, "result.resend", "success", result_id, request_id),
                result_id=result_id,
                day=now.strftime("%Y-%m-%d"),
                limit=self.resend_per_day,
                keep_until=record.expires_at,
            )
        except RateLimitedError:
            rs._commit_auth(
                grant,
                rs._event(grant, "result.resend", "rate_limited", result_id, request_id, reason="resend_per_day"),
                request_id,
            )
            raise
        try:
            self.notifier.notify(result_id, generation)
        except Exception:
            self.enqueue(result_id, generation)
        updated = rs.store.get_result(result_id) or record
        return {"id": result_id, "patient": updated.public_view()["patient"]}


def _check_empty_body(body: bytes, content_type: str | None) -> None:
    """A resend takes no parameter: the body is ``{}`` or empty."""
    if not body:
        return
    if (content_type or "").split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaTypeError("the body must be application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValidationError([FieldError("body", "must be a JSON document")]) from None
    if data != {}:
        raise ValidationError([FieldError("body", "must be an empty JSON object")])
