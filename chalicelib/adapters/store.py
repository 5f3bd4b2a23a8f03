"""DynamoDB adapter: every authenticated request commits in one transaction.

A request's authentication facts (key not revoked, pharmacy active, nonce unused), its audit
event and its change (a new result, its pharmacy reference, the daily quota) are written in a
single ``TransactWriteItems``: either all of it holds or nothing is stored. Errors of the SDK are
translated into domain errors here.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.connection import Connection

from chalicelib.adapters.dynamodb import dynamodb_errors, update_if
from chalicelib.adapters.tables import (
    AuditItem,
    FinessItem,
    KeyItem,
    PharmacyItem,
    ResultItem,
    StateItem,
    day_key,
    epoch_seconds,
    pending_key,
    shard_keys,
    sharded_key,
    sortable_time,
)
from chalicelib.adapters.transaction import Transaction
from chalicelib.domain.links import seconds_to_midnight_utc
from chalicelib.domain.records import AuditEvent, AuthGrant, Pharmacy, PharmacyKey, ResultRecord
from chalicelib.errors import (
    AuthenticationError,
    ConflictError,
    DependencyUnavailableError,
    DuplicateReferenceError,
    NotFoundError,
    RateLimitedError,
)


def _state_key(kind: str, *parts: str) -> str:
    return "#".join((kind, *parts))


def nonce_key(key_id: str, nonce: str) -> str:
    """Nonces are hashed: bounded key length, and nothing of the header verbatim in a key."""
    return _state_key("nonce", key_id, hashlib.sha256(nonce.encode()).hexdigest()[:40])


#: Usage counters outlive results: billing and disputes need them for a while (13 months).
USAGE_DAYS = 400


def usage_key(pharmacy_id: str, month: str) -> str:
    """Billable results of one pharmacy in one month (``YYYY-MM``)."""
    return _state_key("usage", pharmacy_id, month)


def _audit_subject(event: AuditEvent) -> str:
    """The audit partition: the result, else the actor; ``anonymous`` (unknown keys and links, often an attack's
    traffic) is sharded like the indexes so that a flood of failures has no single partition to throttle."""
    if event.record:
        return f"result#{event.record}"
    if event.actor == "anonymous":
        return sharded_key("actor#anonymous", event.event_id)
    return f"actor#{event.actor}"


def audit_item(event: AuditEvent, retention_days: int) -> AuditItem:
    at = event.at.astimezone(UTC)
    iso = sortable_time(at)
    return AuditItem(
        subject=_audit_subject(event),
        sk=f"{iso}#{event.event_id}",
        day=day_key(at.strftime("%Y-%m-%d"), event.event_id),
        event_id=event.event_id,
        at=iso,
        actor=event.actor,
        action=event.action,
        outcome=event.outcome,
        record=event.record,
        pharmacy_id=event.pharmacy_id,
        reason=event.reason,
        request_id=event.request_id,
        expires_at=epoch_seconds(at + timedelta(days=retention_days)),
    )


AUDIT_FIELDS = ("at", "actor", "action", "outcome", "record", "pharmacy_id", "reason", "request_id", "event_id")


def _audit_view(item: AuditItem) -> dict[str, Any]:
    return {k: getattr(item, k) for k in AUDIT_FIELDS}


def _to_record(item: ResultItem) -> ResultRecord:
    return ResultRecord(
        id=item.id,
        pharmacy_id=item.pharmacy_id,
        pharmacy_reference=item.pharmacy_reference,
        key_id=item.key_id,
        received_at=datetime.fromisoformat(item.received_at.replace("Z", "+00:00")),
        expires_at=int(item.expires_at),
        ciphertext=bytes(item.payload or b""),
        channels=tuple(str(c) for c in (item.channels or ())),
        national_status=item.national_status,
        national_reported_at=item.national_reported_at,
        patient_status=item.patient_status,
        patient_sent_at=item.patient_sent_at,
        link_expires_at=item.link_expires_at,
    )


#: The authentication items every request's transaction starts with, and the refusal each one's failure means.
AUTH_REASONS = {"key": "revoked_key", "pharmacy": "suspended_pharmacy", "nonce": "replayed_nonce"}


class AuthenticatedTransaction(Transaction):
    """A request's transaction: it re-checks the key (not revoked) and the pharmacy (active) and consumes the
    nonce, with the request's own items; ``commit`` raises AuthenticationError when one of those three failed."""

    def __init__(self, connection: Connection, grant: AuthGrant) -> None:
        super().__init__(connection)
        self._key_id = grant.key_id
        self.check(
            "key", KeyItem, f"key#{grant.key_id}", condition=KeyItem.pk.exists() & KeyItem.revoked_at.does_not_exist()
        )
        self.check("pharmacy", PharmacyItem, f"pharmacy#{grant.pharmacy_id}", condition=PharmacyItem.status == "active")
        self.put(
            "nonce",
            StateItem(pk=nonce_key(grant.key_id, grant.nonce), expires_at=grant.nonce_expires_at),
            condition=StateItem.pk.does_not_exist(),
        )

    def commit(self) -> bool:
        if super().commit():
            return True
        for name, reason in AUTH_REASONS.items():
            if self.failed(name):
                raise AuthenticationError(reason, self._key_id)
        return False


class DynamoStore:
    """Results, pharmacy references, quotas, nonces and audit events in DynamoDB."""

    def __init__(self, *, region: str, audit_retention_days: int, clock: Callable[[], datetime]) -> None:
        self._connection = Connection(region=region, max_retry_attempts=2)
        self._audit_retention_days = audit_retention_days
        self._clock = clock

    # -- transactions -------------------------------------------------------------------------
    def authenticated(self, grant: AuthGrant) -> AuthenticatedTransaction:
        """A new transaction holding the authentication items of ``grant``; add the request's own and commit."""
        return AuthenticatedTransaction(self._connection, grant)

    def commit_auth(self, grant: AuthGrant, audit: AuditEvent) -> None:
        """Re-check the key and pharmacy, consume the nonce and record ``audit``, atomically."""

        tx = self.authenticated(grant)
        tx.put("audit", audit_item(audit, self._audit_retention_days))
        if not tx.commit():
            raise DependencyUnavailableError("dynamodb")

    def commit_new_result(
        self, grant: AuthGrant, audit: AuditEvent, record: ResultRecord, *, quota_day: str, quota_limit: int
    ) -> None:
        """Store a new result with its reference, quota count, nonce and audit event, or nothing.

        Raises DuplicateReferenceError when the pharmacy reference is taken, RateLimitedError past
        the daily quota, AuthenticationError when the key, pharmacy or nonce no longer hold.
        """
        received = record.received_at.astimezone(UTC)
        item = ResultItem(
            id=record.id,
            pharmacy_id=record.pharmacy_id,
            pharmacy_reference=record.pharmacy_reference,
            key_id=record.key_id,
            received_at=sortable_time(received),
            expires_at=record.expires_at,
            payload=record.ciphertext,
            channels=list(record.channels),
            national_status=record.national_status,
            pending_national=pending_key(record.id),
            patient_status=record.patient_status,
        )
        ref = StateItem(
            pk=_state_key("ref", record.pharmacy_id, record.pharmacy_reference),
            expires_at=record.expires_at,
            result_id=record.id,
        )
        quota = StateItem(pk=_state_key("quota", record.pharmacy_id, quota_day))
        usage = StateItem(pk=usage_key(record.pharmacy_id, received.strftime("%Y-%m")))

        tx = self.authenticated(grant)
        tx.put("audit", audit_item(audit, self._audit_retention_days))
        tx.put("reference", ref, condition=StateItem.pk.does_not_exist())
        tx.put("result", item, condition=ResultItem.id.does_not_exist())
        tx.update(
            "quota",
            quota,
            actions=[StateItem.n.add(1), StateItem.expires_at.set(epoch_seconds(received + timedelta(days=2)))],
            condition=StateItem.n.does_not_exist() | (StateItem.n < quota_limit),
        )
        tx.update(  # billing: counted once per accepted result, never for a duplicate
            "usage",
            usage,
            actions=[
                StateItem.n.add(1),
                StateItem.expires_at.set(epoch_seconds(received + timedelta(days=USAGE_DAYS))),
            ],
        )
        if tx.commit():
            return
        if tx.failed("reference"):
            raise DuplicateReferenceError("pharmacy_reference already used")
        if tx.failed("quota"):
            raise RateLimitedError("daily submission quota reached", retry_after=seconds_to_midnight_utc(received))
        raise DependencyUnavailableError("dynamodb")

    # -- reads ----------------------------------------------------------------------------------
    def find_reference(self, pharmacy_id: str, reference: str) -> str | None:
        with dynamodb_errors():
            try:
                item = StateItem.get(_state_key("ref", pharmacy_id, reference), consistent_read=True)
            except StateItem.DoesNotExist:
                return None
        return item.result_id

    def get_result(self, result_id: str) -> ResultRecord | None:
        """A live result, or None: unknown, erased, or past its retention (checked here, not only by TTL)."""
        with dynamodb_errors():
            try:
                item = ResultItem.get(result_id, consistent_read=True)
            except ResultItem.DoesNotExist:
                return None
        if item.erased_at is not None or item.payload is None or int(item.expires_at) <= epoch_seconds(self._clock()):
            return None
        return _to_record(item)

    def erase(self, result_id: str, audit: AuditEvent) -> datetime:
        """Erase a result's personal data at once (the ciphertext is deleted), with its audit event.

        The item keeps only opaque ids, statuses and ``erased_at`` until its TTL, so that a pharmacy's
        retry of the same reference is still recognised (409) and billing stays true. Unknown: NotFoundError.
        """
        now = self._clock()
        tx = Transaction(self._connection)
        tx.update(
            "result",
            ResultItem(id=result_id),
            actions=[ResultItem.payload.remove(), ResultItem.erased_at.set(now), ResultItem.pending_national.remove()],
            condition=ResultItem.id.exists(),
        )
        tx.put("audit", audit_item(audit, self._audit_retention_days))
        if not tx.commit():
            raise NotFoundError("no such result")
        return now

    def record_audit(self, event: AuditEvent) -> None:
        """Write one audit event on its own (failures that have no transaction to join)."""
        with dynamodb_errors():
            audit_item(event, self._audit_retention_days).save()

    def audit_events(self, result_id: str) -> list[dict[str, Any]]:
        """Audit events of one result, oldest first: who did what to it, when (operator queries)."""
        with dynamodb_errors():
            return [_audit_view(item) for item in AuditItem.query(f"result#{result_id}")]

    def audit_since(self, since: datetime, *, pharmacy_id: str | None = None) -> list[dict[str, Any]]:
        """Audit events at or after ``since`` (optionally of one pharmacy), oldest first, day by day."""
        since = since.astimezone(UTC)
        start = sortable_time(since)
        day, last = since.date(), self._clock().astimezone(UTC).date()
        events: list[dict[str, Any]] = []
        with dynamodb_errors():
            while day <= last:
                shards = [AuditItem.by_day.query(key, AuditItem.sk >= start) for key in shard_keys(day.isoformat())]
                items = heapq.merge(*shards, key=lambda item: item.sk)  # each shard is in time order already
                events.extend(_audit_view(i) for i in items if pharmacy_id is None or i.pharmacy_id == pharmacy_id)
                day += timedelta(days=1)
        return events


class Registry:
    """Pharmacies and their public keys (operators write; the API reads through ``key_cache``)."""

    def __init__(self, *, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._connection: Connection | None = None

    def add_pharmacy(self, pharmacy: Pharmacy, key: PharmacyKey) -> None:
        """Register a pharmacy with its first key; FINESS numbers are unique (ConflictError)."""
        if self._connection is None:  # one client for the process, not one per registration
            self._connection = Connection(region=PharmacyItem.Meta.region, max_retry_attempts=2)
        tx = Transaction(self._connection)
        tx.put(
            "finess",
            FinessItem(pk=f"finess#{pharmacy.finess}", pharmacy_id=pharmacy.pharmacy_id),
            condition=FinessItem.pk.does_not_exist(),
        )
        tx.put(
            "pharmacy",
            PharmacyItem(
                pk=f"pharmacy#{pharmacy.pharmacy_id}",
                pharmacy_id=pharmacy.pharmacy_id,
                finess=pharmacy.finess,
                name=pharmacy.name,
                status=pharmacy.status,
                daily_quota=pharmacy.daily_quota,
                created_at=pharmacy.created_at or self._clock(),
            ),
            condition=PharmacyItem.pk.does_not_exist(),
        )
        tx.put("key", self._key_item(key), condition=KeyItem.pk.does_not_exist())
        if not tx.commit():  # ids are random: a FINESS already registered, in practice
            raise ConflictError("a pharmacy with this FINESS is already registered")

    @staticmethod
    def _key_item(key: PharmacyKey) -> KeyItem:
        return KeyItem(
            pk=f"key#{key.key_id}",
            key_id=key.key_id,
            pharmacy_id=key.pharmacy_id,
            public_key_pem=key.public_key_pem,
            created_at=key.created_at,
        )

    def add_key(self, key: PharmacyKey) -> None:
        """Add a key to an existing pharmacy (key rotation: add the new one, then revoke the old)."""
        self.get_pharmacy(key.pharmacy_id)
        with dynamodb_errors():
            self._key_item(key).save(condition=KeyItem.pk.does_not_exist())

    def revoke_key(self, key_id: str) -> datetime:
        """Revoke a key at once; revoking twice keeps the first time. Unknown key: NotFoundError."""
        now = self._clock()
        item = KeyItem(pk=f"key#{key_id}")
        if update_if(
            item,
            [KeyItem.revoked_at.set(now)],
            KeyItem.pk.exists() & KeyItem.revoked_at.does_not_exist(),
        ):
            return now
        existing = self.get_key(key_id)
        if existing is None:
            raise NotFoundError("unknown key")
        assert existing.revoked_at is not None
        return existing.revoked_at

    def set_status(self, pharmacy_id: str, status: str) -> Pharmacy:
        item = PharmacyItem(pk=f"pharmacy#{pharmacy_id}")
        if not update_if(item, [PharmacyItem.status.set(status)], PharmacyItem.pk.exists()):
            raise NotFoundError("unknown pharmacy")
        return self.get_pharmacy(pharmacy_id)

    def get_pharmacy(self, pharmacy_id: str) -> Pharmacy:
        with dynamodb_errors():
            try:
                item = PharmacyItem.get(f"pharmacy#{pharmacy_id}", consistent_read=True)
            except PharmacyItem.DoesNotExist as exc:
                raise NotFoundError("unknown pharmacy") from exc
        return _to_pharmacy(item)

    def get_key(self, key_id: str) -> PharmacyKey | None:
        with dynamodb_errors():
            try:
                item = KeyItem.get(f"key#{key_id}", consistent_read=True)
            except KeyItem.DoesNotExist:
                return None
        return PharmacyKey(
            key_id=item.key_id,
            pharmacy_id=item.pharmacy_id,
            public_key_pem=item.public_key_pem,
            created_at=item.created_at,
            revoked_at=item.revoked_at,
        )

    def usage(self, month: str) -> list[dict[str, Any]]:
        """Billable results per pharmacy for ``month`` (``YYYY-MM``): every registered pharmacy, zero included."""
        pharmacies = self.list_pharmacies()
        counts: dict[str, int] = {}
        keys = [usage_key(p.pharmacy_id, month) for p in pharmacies]
        with dynamodb_errors():
            for item in StateItem.batch_get(keys):
                counts[item.pk] = int(item.n or 0)
        return [
            {
                "pharmacy_id": p.pharmacy_id,
                "finess": p.finess,
                "results": counts.get(usage_key(p.pharmacy_id, month), 0),
            }
            for p in sorted(pharmacies, key=lambda p: p.finess)
        ]

    def list_pharmacies(self) -> list[Pharmacy]:
        with dynamodb_errors():
            return [_to_pharmacy(item) for item in PharmacyItem.scan(PharmacyItem.pk.startswith("pharmacy#"))]


def _to_pharmacy(item: PharmacyItem) -> Pharmacy:
    return Pharmacy(
        pharmacy_id=item.pharmacy_id,
        finess=item.finess,
        name=item.name,
        status=item.status,
        daily_quota=int(item.daily_quota) if item.daily_quota is not None else None,
        created_at=item.created_at,
    )


class NationalStatusStore:
    """National delivery status of results (``national_status``; the sparse ``pending_national`` index)."""

    def mark_reported(self, result_id: str, at: datetime) -> None:
        self._update(
            result_id,
            [
                ResultItem.national_status.set("reported"),
                ResultItem.national_reported_at.set(at),
                ResultItem.pending_national.remove(),
                ResultItem.national_attempts.add(1),
            ],
        )

    def mark_failed(self, result_id: str, reason: str) -> None:
        """Never over a ``reported`` status: a result the receiver has is not a failure."""
        self._update(
            result_id,
            [
                ResultItem.national_status.set("failed"),
                ResultItem.national_failure.set(reason),
                ResultItem.pending_national.remove(),
            ],
            condition=ResultItem.national_status != "reported",
        )

    def mark_pending(self, result_id: str) -> None:
        self._update(
            result_id,
            [
                ResultItem.national_status.set("pending"),
                ResultItem.pending_national.set(pending_key(result_id)),
                ResultItem.national_failure.remove(),
            ],
        )

    @staticmethod
    def _update(result_id: str, actions: list[Any], condition: Any = None) -> None:
        required = ResultItem.id.exists() if condition is None else ResultItem.id.exists() & condition
        if not update_if(ResultItem(id=result_id), actions, required):
            raise NotFoundError("no such result")

    @staticmethod
    def claim_requeue(result_id: str, now: datetime, cutoff: datetime) -> bool:
        """Mark a pending result as queued again unless that already happened since ``cutoff``.

        Reconciliation queues a stranded result once per threshold, not once per run: a backlog must not
        snowball into duplicate messages.
        """
        return update_if(
            ResultItem(id=result_id),
            [ResultItem.national_requeued_at.set(now)],
            (ResultItem.national_status == "pending")
            & (ResultItem.national_requeued_at.does_not_exist() | (ResultItem.national_requeued_at < cutoff)),
        )

    @staticmethod
    def pending_before(cutoff: datetime, limit: int = 1000) -> list[str]:
        """Ids of results still pending national delivery that were received before ``cutoff``."""
        bound = sortable_time(cutoff)
        with dynamodb_errors():
            shards = [
                ResultItem.pending_index.query(key, ResultItem.received_at < bound, limit=limit)
                for key in shard_keys("pending")
            ]
            oldest = heapq.merge(*shards, key=lambda item: item.received_at)
            return [item.id for _, item in zip(range(limit), oldest, strict=False)]
