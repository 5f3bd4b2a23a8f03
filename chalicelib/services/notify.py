"""Patient notification: issue a link and send it by SMS and/or e-mail.

Idempotency. Each result has a link *generation* (0 at intake, +1 per resend). Sending generation
``g`` takes the lease of the claim ``notify#<result>#<g>``; every channel sent is recorded in that
claim together with its audit event, in one transaction. A redelivered queue message therefore finds
the channel already sent and sends nothing; a message of an older generation (superseded by a resend)
is dropped. A send whose answer was lost after the request reached the provider (a read timeout) may have
been taken: it is recorded as sent, its event's reason ending in
``:unconfirmed:<code>``, and never sent again (outcome ``unconfirmed``, metric ``PatientNotifyUnconfirmed``);
botocore never repeats a send itself (``bootstrap.one_attempt_client``). The one window left is a crash between
the provider accepting a message and the claim being written: then, and only then, a retry sends it again
(at-least-once, like SNS itself).

Failures raise, so that the queue retries the message, after :func:`retry_delay` (the consumer shortens the
message's visibility timeout to it: the queue's own 180 s would hold every retried SMS back three minutes); the
attempt that reaches ``max_attempts`` (the notify queue's ``maxReceiveCount``) sets ``patient.status = failed``
before the message goes to the dead-letter queue.

Audit. The contact details are decrypted once per channel, just before its send, and each of these reads is audited
once: by the send's ``success`` event (written with the claim, in one transaction: a send whose event cannot be
written fails the attempt), or, when the attempt fails after the read, by the attempt's ``retry``/``failed`` event.

Pacing. Before each send, the channel's :class:`Pacer` grants a slot: the account's rate (SNS SMS, SES) and
monthly budget are counted in DynamoDB (``adapters/pacing.py``), so they hold whatever the number of notifier
instances. A send that gets no slot in time, or past the budget, fails the attempt: the message stays queued.

Per-pharmacy caps. Before the account's slot, a channel's :class:`DailyCap` (SMS: ``RELAIS_SMS_PER_PHARMACY_PER_DAY``)
counts the message against its pharmacy's day. Past the cap the message is not sent and not retried (the cap holds
until midnight UTC): the channel's ``patient.notify`` event says ``failed`` with the reason ``<channel>:daily_cap``,
and the result's patient status becomes ``failed``, which the pharmacy sees when it follows the result and may
resend the next day. The other channels are still sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain.channels import channel_spec, message_channels
from chalicelib.domain.delivery import backoff_seconds
from chalicelib.domain.links import (
    ClaimBusyError,
    Link,
    SendRecord,
    SupersededError,
    link_expiry,
    new_token,
    token_hash,
)
from chalicelib.domain.messages import DEFAULT_LANGUAGE, Language, MessageKind, link_url
from chalicelib.domain.model import Submission
from chalicelib.domain.records import AuditEvent, Pharmacy, ResultRecord, new_id
from chalicelib.errors import NoSendSlotError, RateLimitedError, RelaisError, SendNotRecordedError

ACTOR = "system:notifier"
ACTION = "patient.notify"
NOTIFY_MAX_ATTEMPTS = 5  # the notify queue's maxReceiveCount (infra/resources.json)
LEASE_SECONDS = 120  # below the notify queue's visibility timeout (180 s)
#: A failed attempt comes back after an exponential pause with equal jitter: 7.5-15 s, 15-30 s, 30-60 s, 60-120 s.
RETRY_BASE_SECONDS = 15
RETRY_CAP_SECONDS = 180


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

    def may_have_sent(self, result_id: str, generation: int) -> bool: ...

    def acquire_claim(self, result_id: str, generation: int, *, lease_seconds: int, keep_until: int) -> ClaimView: ...

    def record_send(self, result_id: str, generation: int, send: SendRecord) -> None: ...

    def release_claim(self, result_id: str, generation: int) -> None: ...

    def finish(
        self,
        result_id: str,
        generation: int,
        *,
        sent_at: datetime,
        link_expires_at: datetime | None,
        last_send: SendRecord | None = None,
    ) -> None: ...

    def mark_failed(self, result_id: str, generation: int) -> None: ...


class Results(Protocol):
    def get_result(self, result_id: str) -> ResultRecord | None: ...

    def record_audit(self, event: AuditEvent) -> None: ...


class NotifyFailedError(RelaisError):
    """Sending failed; the message is to be retried. Its text is a code, never a value; ``no_slot``: it failed for
    want of a send slot (the account's rate or budget), not for an error."""

    def __init__(self, code: str, *, no_slot: bool = False) -> None:
        super().__init__(code)
        self.no_slot = no_slot


class Pacer(Protocol):
    """Grants send slots on one channel, account-wide; raises when none may be had (the attempt then fails)."""

    def acquire(self) -> object: ...


class DailyCap(Protocol):
    """Counts one pharmacy's messages on one channel per UTC day; RateLimitedError past the cap."""

    def acquire(self, pharmacy_id: str) -> str: ...  # the count's key (its day), for release

    def release(self, counted: str) -> None: ...

    def check(self, pharmacy_id: str) -> None: ...


@dataclass(frozen=True)
class _Sent:
    """What one attempt did: the link's expiry, and the channels refused by their pharmacy's daily cap."""

    link_expires_at: datetime | None  # None: a withdrawal's message, which has no link
    capped: tuple[str, ...] = ()
    pending: SendRecord | None = None  # the last channel sent, recorded by finish (or on its own when capped)
    unconfirmed: bool = False  # a channel's provider may have taken its message (its answer was lost)


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
    pacers: Mapping[str, Pacer] = field(default_factory=dict)  # channel → its account-wide pacer
    caps: Mapping[str, DailyCap] = field(default_factory=dict)  # channel → its per-pharmacy daily cap
    language: Language = DEFAULT_LANGUAGE
    max_attempts: int = NOTIFY_MAX_ATTEMPTS

    def notify(self, result_id: str, generation: int = 0, *, attempt: int = 1) -> str:
        """Send generation ``generation`` of the result's link; the outcome (a code).

        ``"sent"``; ``"unconfirmed"`` when a channel's provider may have taken its message without saying so (it is
        recorded as sent, never sent again); ``"capped"`` when a channel was refused by the pharmacy's daily cap (the
        others were sent); or, acknowledging without sending: ``"unknown"``, ``"not_pending"``, ``"superseded"``,
        ``"duplicate"`` (``not_pending`` too for a result whose only channel is ``paper``: nothing is sent on it,
        the pharmacy prints a slip). Raises (to be retried) when sending fails; at ``attempt >= max_attempts`` the
        patient status becomes ``failed`` first.
        """
        record = self.results.get_result(result_id)
        if record is None:
            return "unknown"
        if record.patient_status != "pending" or not message_channels(record.channels):
            return "not_pending"
        try:
            claim = self.links.acquire_claim(
                result_id, generation, lease_seconds=LEASE_SECONDS, keep_until=record.expires_at
            )
        except Exception as exc:  # nothing sent; the last attempt still ends as failed (a lease it lacks is kept)
            if attempt >= self.max_attempts:
                self._failed(record, generation, attempt, exc, holds_claim=False)
            raise
        if claim.done:
            return "duplicate"
        try:
            # Read with the lease held, not before: a withdrawal that found no message out moves the generation on
            # only while no lease is held (adapters/corrections.py), so a message it did not count never goes out.
            current = self.links.current_generation(result_id)
        except Exception as exc:
            self._failed(record, generation, attempt, exc)
            raise
        if current != generation:
            with contextlib.suppress(Exception):  # the lease runs out anyway
                self.links.release_claim(result_id, generation)
            return "superseded"
        try:
            sent = self._send(record, generation, claim)
            try:
                if sent.capped:
                    if sent.pending is not None:
                        self.links.record_send(result_id, generation, sent.pending)
                    self._capped(record, generation, sent.capped)
                    with contextlib.suppress(Exception):  # a lease left held reads as a message on its way
                        self.links.release_claim(result_id, generation)
                    return "capped"
                self.links.finish(
                    result_id,
                    generation,
                    sent_at=self.clock(),
                    link_expires_at=sent.link_expires_at,
                    last_send=sent.pending,
                )
            except SupersededError:
                return "superseded"
        except Exception as exc:
            # A send whose record could not be written keeps the lease until it runs out: meanwhile a withdrawal
            # counts the message as on its way (``LinkStore.may_have_sent``), as it may well have reached the patient.
            self._failed(record, generation, attempt, exc, holds_claim=not isinstance(exc, SendNotRecordedError))
            raise NotifyFailedError(_code(exc), no_slot=isinstance(exc, NoSendSlotError)) from None
        return "unconfirmed" if sent.unconfirmed else "sent"

    def _send(self, record: ResultRecord, generation: int, claim: ClaimView) -> _Sent:
        """Send on every channel not sent yet (a withdrawal's message has no link: no expiry)."""
        # Every channel is looked up before anything is issued or sent: an unknown one fails the attempt.
        remaining = [channel_spec(c) for c in message_channels(record.channels) if c not in claim.sent]
        if not remaining:
            return _Sent(claim.link_expires_at)
        pharmacy = self.get_pharmacy(record.pharmacy_id)
        now = self.clock()
        kind = message_kind(record)
        if (
            kind == "ready"
            and record.corrections
            and generation > 0
            and self.links.may_have_sent(record.id, generation - 1)
        ):
            kind = "corrected"  # the previous generation's message went out, or was going out, unrecorded when read
        expires = link_expiry(now, self.link_ttl_hours)
        url, sent = "", str(kind)  # a withdrawal's message has no link
        if kind != "withdrawn":
            token = new_token()
            link = Link(
                link_id=new_id(16),
                token_hash=token_hash(token),
                result_id=record.id,
                pharmacy_id=record.pharmacy_id,
                generation=generation,
                created_at=now,
                expires_at=expires,
            )
            self.links.put_link(link)
            url, sent = link_url(self.public_base_url, token), f"link:{link.link_id}"
        capped: list[str] = []
        unconfirmed = False  # a channel whose provider's answer was lost
        pending: SendRecord | None = None  # the last channel sent, not recorded yet (finish records it)
        for channel in remaining:
            if pending is not None:  # the previous channel sent: recorded before anything else is tried
                self.links.record_send(record.id, generation, pending)
                pending = None
            message = channel.template(
                pharmacy_name=pharmacy.name,
                url=url,
                expires_at=expires,
                ttl_hours=self.link_ttl_hours,
                lang=self.language,
                kind=kind,
            )
            cap = self.caps.get(channel.name)
            counted = None
            try:
                if cap is not None:  # before the account's slot: a capped pharmacy spends none of its budget
                    counted = cap.acquire(record.pharmacy_id)
            except RateLimitedError:
                capped.append(channel.name)
                continue
            pacer = self.pacers.get(channel.name)
            try:
                if pacer is not None:
                    pacer.acquire()
                # One read per channel, audited by its send's event below or, when the attempt fails, by _failed's.
                address = channel.address(self.decrypt(record).patient)
                if address is None:
                    raise NotifyFailedError(f"no_{channel.address_field}")
                getattr(self.sender, channel.transport)(address, message)
                reason = f"{channel.name}:{sent}"
            except Exception as exc:
                if not getattr(exc, "unconfirmed", False):
                    if cap is not None and counted is not None:  # not sent (no slot, provider error): counted again
                        cap.release(counted)  # on the day it was counted, even past midnight since
                    raise
                # The provider may have taken it (its answer was lost): recorded as sent, never sent again.
                reason, unconfirmed = f"{channel.name}:{sent}:unconfirmed:{_code(exc)}", True
            pending = SendRecord(channel.name, expires if url else None, self._event(record, "success", reason))
        return _Sent(expires if url else None, tuple(capped), pending, unconfirmed)

    def _capped(self, record: ResultRecord, generation: int, channels: tuple[str, ...]) -> None:
        """Channels refused by the pharmacy's daily cap: audited, and the patient status ``failed`` for good
        (retrying before midnight UTC could not help); the pharmacy sees it and may resend."""
        for name in channels:
            self.results.record_audit(self._event(record, "failed", f"{name}:daily_cap"))
        self.links.mark_failed(record.id, generation)

    def _event(self, record: ResultRecord, outcome: str, reason: str) -> AuditEvent:
        """The notifier's audit event about ``record``: one per send, refusal or failed attempt."""
        return AuditEvent(
            actor=ACTOR,
            action=ACTION,
            outcome=outcome,
            at=self.clock(),
            record=record.id,
            pharmacy_id=record.pharmacy_id,
            reason=reason,
        )

    def _failed(
        self, record: ResultRecord, generation: int, attempt: int, exc: Exception, *, holds_claim: bool = True
    ) -> None:
        """Best effort bookkeeping of a failed attempt: release the lease (``holds_claim``: never another worker's),
        audit, and on the last one fail (unless a copy of the message has sent it meanwhile)."""
        final = attempt >= self.max_attempts
        event = self._event(record, "failed" if final else "retry", _code(exc))
        steps: list[Callable[[], None]] = [lambda: self.results.record_audit(event)]
        if holds_claim:
            steps.insert(0, lambda: self.links.release_claim(record.id, generation))
        if final:
            steps.append(lambda: self.links.mark_failed(record.id, generation))
        for step in steps:
            try:
                step()
            except Exception:  # noqa: S112 - the original failure is what the queue must see
                continue


class QueueNotify(Protocol):
    """Queues the notification of a link generation (``bootstrap._enqueue_notify``): 503 when SQS refuses."""

    def __call__(self, result_id: str, generation: int, delay_seconds: int = 0) -> None: ...


#: How long after a request's own time limit the backstop of its message arrives (:func:`send_in_request`).
BACKSTOP_MARGIN_SECONDS = 5


def send_in_request(
    notify: Callable[[str, int], object],
    enqueue: QueueNotify,
    result_id: str,
    generation: int,
    *,
    request_seconds: int,
) -> None:
    """Send the message of a link generation the request has just committed (a resend, a correction), backed up.

    A copy of its queue message goes first, delayed past the request's time limit (``request_seconds`` + 5 s): when
    the request dies mid-send (its time limit, a crash) or the send fails, the notifier sends the message then;
    when the send succeeded, the copy finds the result ``sent`` and sends nothing (and a claim never sends a channel
    twice). Only when neither the copy nor the send could be made does the error go up (503: the pharmacy retries;
    the link generation, committed, stays ``pending``, and the retry sends it: a resend makes a new generation, the
    same correction again sends the pending one)."""
    try:
        enqueue(result_id, generation, request_seconds + BACKSTOP_MARGIN_SECONDS)
        queued = True
    except Exception as exc:
        from chalicelib.observability import logger

        logger().warning("notify backstop not queued", extra={"result_id": result_id, "error": type(exc).__name__})
        queued = False
    try:
        notify(result_id, generation)
    except Exception:
        if not queued:
            enqueue(result_id, generation)


def retry_delay(exc: Exception, attempt: int) -> int | None:
    """Seconds before a message whose attempt ``attempt`` raised ``exc`` is tried again; None: the queue's own
    visibility timeout (180 s).

    A message that found no send slot (the account's rate is spent, or its month's budget) waits the queue's whole
    timeout: a backlog drains at the account's rate, and shorter pauses would only spend its attempts (five) sooner
    and fail patients' messages that a slower retry sends. A claim leased by another worker (a duplicate delivery,
    or a worker that died mid-send) is tried once the lease has run out: by then the holder has finished (the copy
    is then a ``duplicate``) or died (the lease is free). Any other failure backs off exponentially with jitter, so
    that retries after a provider's throttling or outage spread out instead of coming back together.
    """
    if isinstance(exc, NotifyFailedError) and exc.no_slot:
        return None
    if isinstance(exc, ClaimBusyError):
        return min(exc.lease_left_seconds + 1, LEASE_SECONDS + 1)
    return backoff_seconds(attempt, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)


def message_kind(record: ResultRecord) -> MessageKind:
    """What the patient is told for the result as it stands: withdrawn (no link), corrected, or ready. "Corrected"
    (whose text says the link sent earlier no longer works) only to a patient who was given a link before; one whose
    first message had not gone out yet (still queued, or failed) gets the first message, for the corrected result."""
    if record.withdrawn:
        return "withdrawn"
    return "corrected" if record.corrections and record.patient_sent_at is not None else "ready"


def _code(exc: Exception) -> str:
    """A failure as a code: the error type, plus the provider's code when it has one. Never a message."""
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}:{code}" if isinstance(code, str) else type(exc).__name__
