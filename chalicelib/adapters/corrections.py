"""The commit of a correction or withdrawal (contract v2 §8): one transaction with the request's own items.

It writes, or nothing at all: the request's nonce and audit event (``results_store.AuthenticatedTransaction``); the
result's next version (its new ciphertext, the previous one moved to ``earlier_payloads``, the correction appended),
on condition that the result is still at the version the correction was made from (a concurrent correction makes
the loser start again from the new version); the result set pending national delivery again with a fresh attempt
budget; the next link generation, which revokes every earlier link at once; the patient status; and, for a result
withdrawn on the UTC day it was received, its usage count moved to the month's ``withdrawn`` count (not billed).
A withdrawal decided on "no message has gone out" (nothing to tell the patient) also requires that this still holds:
the result has no ``patient_sent_at`` and the send claims of the current generation and the few before it are
neither leased nor used.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from pynamodb.expressions.update import Action

from chalicelib.adapters.audit import audit_item
from chalicelib.adapters.links import next_generation, require_no_message_out
from chalicelib.adapters.results_store import USAGE_DAYS, DynamoStore
from chalicelib.adapters.tables import (
    CorrectionMap,
    ResultItem,
    StateItem,
    at_version,
    counter_shard,
    epoch_seconds,
    pending_key,
    usage_key,
    withdrawn_key,
)
from chalicelib.domain.corrections import NextVersion
from chalicelib.domain.records import AuditEvent, AuthGrant, ResultRecord
from chalicelib.errors import DependencyUnavailableError, RelaisError


class VersionConflictError(RelaisError):
    """Another correction of the same result committed first: read it again and start over."""


class CorrectionStore:
    """Commits corrections against the results and state tables, through the store's authenticated transaction."""

    def __init__(self, store: DynamoStore, *, audit_retention_days: int) -> None:
        self._store = store
        self._audit_retention_days = audit_retention_days

    def commit_correction(self, grant: AuthGrant, audit: AuditEvent, record: ResultRecord, change: NextVersion) -> None:
        """Write the next version of ``record`` with the request's items; VersionConflictError when the result
        moved on meanwhile, AuthenticationError when the key, pharmacy or nonce no longer hold."""
        correction = change.correction
        actions: list[Action] = [
            ResultItem.version.set(correction.version),
            ResultItem.payload.set(change.ciphertext),
            ResultItem.earlier_payloads.set([*record.earlier_ciphertexts, record.ciphertext]),  # type: ignore[list-item]
            ResultItem.corrections.set(
                [
                    CorrectionMap(version=c.version, reason=c.reason, at=c.at, reference=c.reference)  # type: ignore[no-untyped-call]
                    for c in (*record.corrections, correction)
                ]
            ),
            # National delivery starts again for the new version, with its own attempt budget (the lease, if a
            # copy holds one for an earlier version, stays: that copy ends and the new version follows).
            ResultItem.national_status.set("pending"),
            ResultItem.national_reported_at.remove(),  # the new version's, once reported (the first is audited)
            ResultItem.pending_national.set(pending_key(record.id)),
            ResultItem.national_attempts.set(0),
            ResultItem.national_failure.remove(),
            # Reconciliation queues it again only if it is still pending a threshold after the correction: the
            # correction queues it itself, and a lost message is found like any other.
            ResultItem.national_requeued_at.set(correction.at),
            ResultItem.patient_status.set(change.patient_status),
        ]
        if change.withdrawn:
            actions.append(ResultItem.withdrawn_at.set(correction.at))
        condition = ResultItem.id.exists() & ResultItem.erased_at.does_not_exist() & at_version(record.version)
        tx = self._store.authenticated(grant)
        tx.put("audit", audit_item(audit, self._audit_retention_days))
        claims: list[str] = []
        if change.nothing_sent:  # a message recorded or on its way since it was read: decide again
            condition = condition & ResultItem.patient_sent_at.does_not_exist()
            claims = require_no_message_out(tx, record.id, change.previous_generation, epoch_seconds(correction.at))
        tx.update("result", ResultItem(id=record.id), actions=actions, condition=condition)
        next_generation(tx, record.id, change.previous_generation, record.expires_at)
        if change.unbill:
            received = record.received_at.astimezone(UTC)
            month = received.strftime("%Y-%m")
            keep = epoch_seconds(received + timedelta(days=USAGE_DAYS))
            tx.update(
                "usage",
                StateItem(pk=counter_shard(usage_key(record.pharmacy_id, month), record.id)),
                actions=[StateItem.n.add(-1)],
                condition=StateItem.n > 0,
            )
            tx.update(
                "withdrawn",
                StateItem(pk=counter_shard(withdrawn_key(record.pharmacy_id, month), record.id)),
                actions=[StateItem.n.add(1), StateItem.expires_at.set(keep)],
            )
        if tx.commit():
            return
        if tx.failed("result") or tx.failed("generation") or any(tx.failed(name) for name in claims):
            raise VersionConflictError("the result changed meanwhile")
        raise DependencyUnavailableError("dynamodb", retry_after=1)
