"""National delivery status of results, in the results table."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.connection import Connection

from chalicelib.adapters.dynamodb import dynamodb_errors, update_if
from chalicelib.adapters.results_store import USAGE_DAYS
from chalicelib.adapters.tables import (
    ResultItem,
    StateItem,
    at_version,
    counter_shard,
    epoch_seconds,
    pending_key,
    reported_key,
    shard_keys,
    sortable_time,
)
from chalicelib.adapters.tables import connection as dynamodb_connection
from chalicelib.adapters.transaction import Transaction
from chalicelib.domain.corrections import VersionSupersededError
from chalicelib.errors import NotFoundError


class NationalStatusStore:
    """National delivery status of results (``national_status``; the sparse ``pending_national`` index).

    Standard queues deliver a message more than once, and reconciliation may queue a result again: several copies
    of one result's message can be in flight. A copy delivers only while it holds the result's lease
    (:meth:`claim_delivery`), and the attempt budget is counted on the result (:meth:`count_failure`), not on a
    copy's receive count — so a result is never dead-lettered by one copy while another copy's POST is under way,
    and duplicates never spend its attempts.

    Versions (corrections, contract v2 §8). A copy delivers the version it read; a correction committed meanwhile
    (which set the result pending again with a fresh attempt budget) makes the outcome of that POST moot for the
    status: :meth:`mark_reported` then records only that the national system holds the earlier version
    (``national_version``, which never goes down) and raises VersionSupersededError, :meth:`count_failure` does not
    spend the new version's budget, :meth:`mark_failed` raises VersionSupersededError (no dead letter): the later
    version is then delivered, by the same copy or another.

    Statements (contract §6): the first time a result is reported, :meth:`mark_reported` also counts it in its
    pharmacy's ``reported`` count of the month it was received, in the same transaction, on condition that it was
    never counted (``national_first_reported_at``): a later version reported again is not counted twice.
    """

    def __init__(self) -> None:
        self._connection: Connection | None = None

    def _count_first_report(
        self, result_id: str, at: datetime, version: int, pharmacy_id: str, received_at: datetime
    ) -> bool:
        """Report a result never reported before and count it, in one transaction; False when it was reported
        before (or is not at ``version``: nothing written)."""
        if self._connection is None:
            self._connection = dynamodb_connection(ResultItem.Meta.region)
        received = received_at.astimezone(UTC)
        tx = Transaction(self._connection)
        tx.update(
            "result",
            ResultItem(id=result_id),
            actions=[*_reported_actions(at, version), ResultItem.national_first_reported_at.set(at)],
            condition=ResultItem.id.exists()
            & at_version(version)
            & ResultItem.national_first_reported_at.does_not_exist(),
        )
        tx.update(
            "count",
            StateItem(pk=counter_shard(reported_key(pharmacy_id, received.strftime("%Y-%m")), result_id)),
            actions=[
                StateItem.n.add(1),
                StateItem.expires_at.set(epoch_seconds(received + timedelta(days=USAGE_DAYS))),
            ],
        )
        return tx.commit()

    @staticmethod
    def claim_delivery(result_id: str, now: datetime, until: datetime) -> int | None:
        """Take the result's delivery lease until ``until``: the POSTs it failed so far, or None when another copy
        holds the lease or the result is no longer pending (reported, dead-lettered, erased)."""
        item = ResultItem(id=result_id)
        claimed = update_if(
            item,
            [ResultItem.national_lease_until.set(until)],
            ResultItem.id.exists()
            & (ResultItem.national_status == "pending")
            & (ResultItem.national_lease_until.does_not_exist() | (ResultItem.national_lease_until < now)),
        )
        return int(item.national_attempts) if claimed else None

    def count_failure(self, result_id: str, version: int = 1) -> None:
        """Count one failed POST of ``version``, to be tried again, and give the lease back (a later version keeps
        its own budget: only the lease is given back)."""
        if not update_if(
            ResultItem(id=result_id),
            [ResultItem.national_attempts.add(1), ResultItem.national_lease_until.remove()],
            ResultItem.id.exists() & at_version(version),
        ):
            self._update(result_id, [ResultItem.national_lease_until.remove()])

    def mark_reported(
        self,
        result_id: str,
        at: datetime,
        version: int = 1,
        *,
        pharmacy_id: str | None = None,
        received_at: datetime | None = None,
    ) -> None:
        """The national system holds ``version``: reported, unless a later version is now due
        (VersionSupersededError, after recording that it holds this one). With ``pharmacy_id`` and ``received_at``,
        a first report is counted in the month's statement."""
        counted = pharmacy_id is not None and received_at is not None
        if counted and self._count_first_report(result_id, at, version, pharmacy_id or "", received_at or at):
            return
        if update_if(
            ResultItem(id=result_id), _reported_actions(at, version), ResultItem.id.exists() & at_version(version)
        ):
            return
        self._update(result_id, [ResultItem.national_lease_until.remove()])
        update_if(  # never down: a later version the receiver holds stays recorded
            ResultItem(id=result_id),
            [ResultItem.national_version.set(version)],
            ResultItem.id.exists()
            & (ResultItem.national_version.does_not_exist() | (ResultItem.national_version < version)),
        )
        raise VersionSupersededError("a later version is due")

    def mark_failed(self, result_id: str, reason: str, version: int = 1) -> None:
        """The last failed POST: never over a ``reported`` status (a result the receiver has is not a failure:
        NotFoundError), nor when a later version is due (VersionSupersededError: it has its own attempts)."""
        done = update_if(
            ResultItem(id=result_id),
            [
                ResultItem.national_status.set("failed"),
                ResultItem.national_failure.set(reason),
                ResultItem.national_dead_lettered_at.remove(),  # until this failure's letter is written
                ResultItem.pending_national.remove(),
                ResultItem.national_attempts.add(1),
                ResultItem.national_lease_until.remove(),
            ],
            ResultItem.id.exists() & (ResultItem.national_status != "reported") & at_version(version),
        )
        if done:
            return
        self._update(result_id, [ResultItem.national_lease_until.remove()])
        if self._status(result_id) == "reported":
            raise NotFoundError("no such result")
        raise VersionSupersededError("a later version is due")

    @staticmethod
    def mark_dead_lettered(result_id: str, now: datetime, version: int = 1) -> None:
        """Its dead letter is written: another copy of the message that finds the result ``failed`` sends none
        (without this mark, it sends the letter that SQS refused after the status was set). Nothing when the result
        moved on meanwhile (a redrive, a correction)."""
        update_if(
            ResultItem(id=result_id),
            [ResultItem.national_dead_lettered_at.set(now)],
            ResultItem.id.exists() & (ResultItem.national_status == "failed") & at_version(version),
        )

    @staticmethod
    def _status(result_id: str) -> str | None:
        with dynamodb_errors():
            try:
                return str(ResultItem.get(result_id, consistent_read=True).national_status)
            except ResultItem.DoesNotExist:
                return None

    def mark_pending(self, result_id: str) -> bool:
        """A ``failed`` result back to ``pending`` for a redrive; False, changing nothing, when it is not failed (a
        second letter of a result already redriven and reported, or corrected meanwhile: its message finds it so)."""
        return update_if(
            ResultItem(id=result_id),
            [
                ResultItem.national_status.set("pending"),
                ResultItem.pending_national.set(pending_key(result_id)),
                ResultItem.national_failure.remove(),
                ResultItem.national_dead_lettered_at.remove(),
                ResultItem.national_attempts.set(0),  # a redrive starts a new attempt budget
                ResultItem.national_lease_until.remove(),
            ],
            ResultItem.id.exists() & (ResultItem.national_status == "failed"),
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


def _reported_actions(at: datetime, version: int) -> list[Any]:
    return [
        ResultItem.national_status.set("reported"),
        ResultItem.national_reported_at.set(at),
        ResultItem.pending_national.remove(),
        ResultItem.national_attempts.add(1),
        ResultItem.national_lease_until.remove(),
        ResultItem.national_version.set(version),
    ]
