"""The results table and the request's transaction: every authenticated request commits in one.

A request's nonce (single use), its audit event and its change (a new result, its pharmacy reference, the daily
quota and the month's billable count, in the state table) are written in a single ``TransactWriteItems``
(``adapters/transaction.py``): either all of it holds or nothing is stored. Failed conditions are translated into
domain errors here.

No item of that transaction is shared by a pharmacy's concurrent requests, because DynamoDB cancels a transaction
whose items another one holds (TransactionConflict): the nonce, audit event, reference and result are the
request's own; the quota and usage counters are sharded (``tables.COUNTER_SHARDS``), so two requests meet on one
only by chance and the loser retries with jitter. The key (not revoked) and the pharmacy (active) are therefore not
condition checks in the transaction — every request would hold them — but one strongly consistent read just
before it: a revocation or suspension that has completed is seen by every request that commits after it. A request
whose read came before the revocation completed may still commit during the few milliseconds its transaction takes;
the audit trail records both times (``docs/operations.md``, "Revoking a key").
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.connection import Connection

from chalicelib.adapters.audit import audit_item, count_failure, events_of, events_since
from chalicelib.adapters.dynamodb import dynamodb_errors
from chalicelib.adapters.tables import (
    KeyItem,
    ResultItem,
    StateItem,
    counter_shard,
    counter_shards,
    epoch_seconds,
    pending_key,
    quota_key,
    reported_key,
    shard_limit,
    sortable_time,
    usage_key,
)
from chalicelib.adapters.tables import connection as dynamodb_connection
from chalicelib.adapters.transaction import Transaction
from chalicelib.domain.records import AuditEvent, AuthGrant, Correction, ResultRecord, seconds_to_midnight_utc
from chalicelib.errors import (
    AuthenticationError,
    DependencyUnavailableError,
    DuplicateReferenceError,
    NotFoundError,
    RateLimitedError,
)

#: Usage counters outlive results: billing and disputes need them for a while (13 months).
USAGE_DAYS = 400


def _state_key(kind: str, *parts: str) -> str:
    return "#".join((kind, *parts))


def nonce_key(key_id: str, nonce: str) -> str:
    """Nonces are hashed: bounded key length, and nothing of the header verbatim in a key."""
    return _state_key("nonce", key_id, hashlib.sha256(nonce.encode()).hexdigest()[:40])


def _to_record(item: ResultItem) -> ResultRecord:
    return ResultRecord(
        id=item.id,
        pharmacy_id=item.pharmacy_id,
        reference_digest=item.reference_digest,
        key_id=item.key_id,
        received_at=datetime.fromisoformat(item.received_at.replace("Z", "+00:00")),
        expires_at=int(item.expires_at),
        ciphertext=bytes(item.payload or b""),
        reference_ciphertext=bytes(item.reference_sealed or b""),
        channels=tuple(str(c) for c in (item.channels or ())),
        national_status=item.national_status,
        national_reported_at=item.national_reported_at,
        national_failure=item.national_failure,
        national_attempts=int(item.national_attempts or 0),
        national_dead_lettered=item.national_dead_lettered_at is not None,
        patient_status=item.patient_status,
        patient_sent_at=item.patient_sent_at,
        link_expires_at=item.link_expires_at,
        version=int(item.version or 1),
        withdrawn=item.withdrawn_at is not None,
        corrections=tuple(
            Correction(int(c.version), str(c.reason), c.at, str(c.reference)) for c in item.corrections or ()
        ),
        earlier_ciphertexts=tuple(bytes(payload) for payload in item.earlier_payloads or ()),
    )


class AuthenticatedTransaction(Transaction):
    """A request's transaction: it consumes the nonce with the request's own items; ``commit`` first reads the key
    and the pharmacy (strongly consistent) and raises AuthenticationError when the key is revoked, the pharmacy not
    active, or the nonce already used."""

    def __init__(self, connection: Connection, grant: AuthGrant) -> None:
        super().__init__(connection)
        self._grant = grant
        self.put(
            "nonce",
            StateItem(pk=nonce_key(grant.key_id, grant.nonce), expires_at=grant.nonce_expires_at),
            condition=StateItem.pk.does_not_exist(),
        )

    def commit(self) -> bool:
        check_standing(self._connection, self._grant)
        if super().commit():
            return True
        if self.failed("nonce"):
            raise AuthenticationError("replayed_nonce", self._grant.key_id)
        return False


def check_standing(connection: Connection, grant: AuthGrant) -> None:
    """The key is not revoked and its pharmacy active, read now (one strongly consistent BatchGetItem of the
    registry), never from a cache; AuthenticationError otherwise."""
    table = KeyItem.Meta.table_name
    key_pk, pharmacy_pk = f"key#{grant.key_id}", f"pharmacy#{grant.pharmacy_id}"
    request: dict[str, Any] = {
        table: {
            "Keys": [{"pk": {"S": key_pk}}, {"pk": {"S": pharmacy_pk}}],
            "ConsistentRead": True,
            "ProjectionExpression": "pk, revoked_at, #status",
            "ExpressionAttributeNames": {"#status": "status"},
        }
    }
    found: dict[str, dict[str, Any]] = {}
    for _ in range(5):  # DynamoDB may leave keys unprocessed under load: ask again for those
        try:
            answer = connection.dispatch("BatchGetItem", {"RequestItems": request})
        except (BotoCoreError, ClientError) as exc:
            raise DependencyUnavailableError("dynamodb") from exc
        for item in answer.get("Responses", {}).get(table, []):
            found[item["pk"]["S"]] = item
        request = answer.get("UnprocessedKeys") or {}
        if not request:
            break
    else:
        raise DependencyUnavailableError("dynamodb")
    key = found.get(key_pk)
    if key is None or "revoked_at" in key:
        raise AuthenticationError("revoked_key", grant.key_id)
    if found.get(pharmacy_pk, {}).get("status", {}).get("S") != "active":
        raise AuthenticationError("suspended_pharmacy", grant.key_id)


class DynamoStore:
    """Results, pharmacy references, quotas, nonces and audit events in DynamoDB."""

    def __init__(self, *, region: str, audit_retention_days: int, clock: Callable[[], datetime]) -> None:
        self._connection = dynamodb_connection(region)
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
            reference_digest=record.reference_digest,
            key_id=record.key_id,
            received_at=sortable_time(received),
            expires_at=record.expires_at,
            payload=record.ciphertext,
            reference_sealed=record.reference_ciphertext,
            channels=list(record.channels),
            national_status=record.national_status,
            pending_national=pending_key(record.id),
            patient_status=record.patient_status,
        )
        ref = StateItem(
            pk=_state_key("ref", record.pharmacy_id, record.reference_digest),
            expires_at=record.expires_at,
            result_id=record.id,
        )
        quota_prefix = quota_key(record.pharmacy_id, quota_day)
        usage = StateItem(pk=counter_shard(usage_key(record.pharmacy_id, received.strftime("%Y-%m")), record.id))
        shard = counter_shard(quota_prefix, record.id)

        for _ in range(len(counter_shards(quota_prefix)) + 1):
            limit = shard_limit(quota_limit, int(shard.rsplit("#", 1)[1]))
            if limit == 0:  # a quota below the number of shards leaves some shards no part of it
                shard = self._shard_with_room(quota_prefix, quota_limit, record)
                continue
            tx = self.authenticated(grant)
            tx.put("audit", audit_item(audit, self._audit_retention_days))
            tx.put("reference", ref, condition=StateItem.pk.does_not_exist())
            tx.put("result", item, condition=ResultItem.id.does_not_exist())
            tx.update(  # this request's shard of the day's count, within the shard's part of the quota
                "quota",
                StateItem(pk=shard),
                actions=[StateItem.n.add(1), StateItem.expires_at.set(epoch_seconds(received + timedelta(days=2)))],
                condition=StateItem.n.does_not_exist() | (StateItem.n < limit),
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
            if not tx.failed("quota"):
                raise DependencyUnavailableError("dynamodb")
            # This shard's part is used up: count in a shard that still has room, if any is left today.
            shard = self._shard_with_room(quota_prefix, quota_limit, record)
        raise DependencyUnavailableError("dynamodb")

    def _shard_with_room(self, prefix: str, limit: int, record: ResultRecord) -> str:
        """A shard of the day's quota below its part of ``limit`` (a strongly consistent read of every shard).
        When none is left the day's quota is reached: RateLimitedError — unless the reference is already taken,
        which answers first, as in one transaction (an identical retry past the quota is still a 200)."""
        counts = dict.fromkeys(counter_shards(prefix), 0)
        with dynamodb_errors():
            for item in StateItem.batch_get(list(counts), consistent_read=True):
                counts[item.pk] = int(item.n or 0)
        roomy = [key for index, (key, n) in enumerate(counts.items()) if n < shard_limit(limit, index)]
        if not roomy:
            if self.find_reference(record.pharmacy_id, record.reference_digest) is not None:
                raise DuplicateReferenceError("pharmacy_reference already used")
            retry_after = seconds_to_midnight_utc(record.received_at)
            raise RateLimitedError("daily submission quota reached", retry_after=retry_after)
        return random.choice(roomy)  # noqa: S311 - spreads concurrent spill-overs, not a secret

    # -- reads ----------------------------------------------------------------------------------
    def find_reference(self, pharmacy_id: str, reference_digest: str) -> str | None:
        """The result stored under this reference (by its keyed hash: the reference is in no key), or None."""
        with dynamodb_errors():
            try:
                item = StateItem.get(_state_key("ref", pharmacy_id, reference_digest), consistent_read=True)
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

    def statement_counts(self, pharmacy_id: str, month: str) -> tuple[int, int]:
        """A pharmacy's billed results of ``month`` (the usage count: duplicates never counted, results withdrawn on
        the day they were received taken out) and how many of that month's results were reported nationally: one
        strongly consistent BatchGetItem of the counters' shards, no scan."""
        usage, reported = usage_key(pharmacy_id, month), reported_key(pharmacy_id, month)
        counts = {usage: 0, reported: 0}
        with dynamodb_errors():
            for item in StateItem.batch_get([*counter_shards(usage), *counter_shards(reported)], consistent_read=True):
                counter = item.pk.rsplit("#", 1)[0]
                counts[counter] += int(item.n or 0)
        return counts[usage], counts[reported]

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
            actions=[
                ResultItem.payload.remove(),
                ResultItem.earlier_payloads.remove(),
                ResultItem.reference_sealed.remove(),
                ResultItem.erased_at.set(now),
                ResultItem.pending_national.remove(),
            ],
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

    def count_failure(self, event: AuditEvent) -> None:
        """Add one to the aggregate audit event ``event`` names (``event_id``): failures counted, not one item each."""
        count_failure(event, self._audit_retention_days)

    def audit_events(self, result_id: str) -> list[dict[str, Any]]:
        """Audit events of one result, oldest first: who did what to it, when (operator queries)."""
        return events_of(result_id)

    def audit_since(self, since: datetime, *, pharmacy_id: str | None = None) -> list[dict[str, Any]]:
        """Audit events at or after ``since`` (optionally of one pharmacy), oldest first, day by day."""
        return events_since(since, self._clock(), pharmacy_id=pharmacy_id)
