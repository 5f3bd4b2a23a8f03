"""The registry table: pharmacies, their FINESS numbers and their public keys (operators write; the API reads
through ``key_cache``); and the billable usage counters of the state table, by pharmacy."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pynamodb.connection import Connection

from chalicelib.adapters.dynamodb import READ_BATCH, Progress, dynamodb_errors, update_if
from chalicelib.adapters.tables import (
    FinessItem,
    KeyItem,
    PharmacyItem,
    StateItem,
    counter_shards,
    usage_key,
    withdrawn_key,
)
from chalicelib.adapters.tables import connection as dynamodb_connection
from chalicelib.adapters.transaction import Transaction
from chalicelib.domain.records import Pharmacy, PharmacyKey
from chalicelib.errors import ConflictError, NotFoundError


class Registry:
    """Pharmacies and their public keys (operators write; the API reads through ``key_cache``)."""

    def __init__(self, *, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._connection: Connection | None = None

    def add_pharmacy(self, pharmacy: Pharmacy, key: PharmacyKey) -> None:
        """Register a pharmacy with its first key; FINESS numbers are unique (ConflictError)."""
        if self._connection is None:  # one client for the process, not one per registration
            self._connection = dynamodb_connection(PharmacyItem.Meta.region)
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

    def usage(self, month: str, *, progress: Progress | None = None) -> list[dict[str, Any]]:
        """Billable results per pharmacy for ``month`` (``YYYY-MM``): every registered pharmacy, zero included, with
        ``withdrawn_same_day``: the results withdrawn (recorded in error) on the day they were received, which are
        not billed (not in ``results``).

        Counter shards are read in batches of ``READ_BATCH``; ``progress(done, total)`` follows them.
        """
        pharmacies = self.list_pharmacies()
        counts: dict[str, int] = {}
        keys = [
            shard
            for p in pharmacies
            for counter in (usage_key(p.pharmacy_id, month), withdrawn_key(p.pharmacy_id, month))
            for shard in counter_shards(counter)
        ]
        with dynamodb_errors():
            for start in range(0, len(keys), READ_BATCH):
                batch = keys[start : start + READ_BATCH]
                for item in StateItem.batch_get(batch, consistent_read=True):
                    total = item.pk.rsplit("#", 1)[0]  # the counter, without its shard
                    counts[total] = counts.get(total, 0) + int(item.n or 0)
                if progress is not None:
                    progress(len(batch), len(keys))
        return [
            {
                "pharmacy_id": p.pharmacy_id,
                "finess": p.finess,
                "results": counts.get(usage_key(p.pharmacy_id, month), 0),
                "withdrawn_same_day": counts.get(withdrawn_key(p.pharmacy_id, month), 0),
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
