"""Read-through caches of the registry for the request path.

A key's public key and pharmacy never change, so they are cached for the life of a warm
process; whether a key is revoked or its pharmacy suspended is *not* trusted from the cache:
every request's commit re-checks both atomically (``AuthenticatedTransaction``), so revocation and
suspension take effect at once. A key seen revoked is remembered as revoked (revocation is final).
Pharmacy profiles (name, quota) are cached for ``ttl_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chalicelib.adapters.registry import Registry
from chalicelib.domain.records import Pharmacy
from chalicelib.services.authn import KeyRecord


class CachedKeyDirectory:
    def __init__(self, registry: Registry, *, max_entries: int = 10_000) -> None:
        self._registry = registry
        self._keys: dict[str, KeyRecord] = {}
        self._max_entries = max_entries

    def get_key(self, key_id: str) -> KeyRecord | None:
        cached = self._keys.get(key_id)
        if cached is not None:
            return cached
        key = self._registry.get_key(key_id)
        if key is None:
            return None  # unknown keys are not cached: a key registered a second later must work
        pharmacy = self._registry.get_pharmacy(key.pharmacy_id)
        record = KeyRecord(
            key_id=key.key_id,
            pharmacy_id=key.pharmacy_id,
            public_key_pem=key.public_key_pem,
            revoked_at=key.revoked_at,
            pharmacy_active=pharmacy.status == "active",
        )
        if key.revoked_at is None and record.pharmacy_active:
            if len(self._keys) >= self._max_entries:
                self._keys.clear()
            self._keys[key_id] = record
        return record


class CachedPharmacies:
    def __init__(
        self, registry: Registry, *, ttl_seconds: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._registry = registry
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, Pharmacy]] = {}

    def get_pharmacy(self, pharmacy_id: str) -> Pharmacy:
        now = self._monotonic()
        entry = self._entries.get(pharmacy_id)
        if entry is not None and now - entry[0] < self._ttl:
            return entry[1]
        pharmacy = self._registry.get_pharmacy(pharmacy_id)
        self._entries[pharmacy_id] = (now, pharmacy)
        return pharmacy
