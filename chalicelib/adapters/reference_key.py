"""The secret key of the pharmacy references' keyed hashes: sealed by KMS, opened once per process.

``pharmacy_reference`` must be findable (idempotency: same reference and body → 200, another body → 409), so it is
part of a DynamoDB key — and pharmacy software may put a NIR, a phone number or a name in it. Relais therefore keeps
only ``HMAC-SHA256(key, pharmacy id ‖ reference)`` (``domain.records.reference_digest``): the reference itself is in
no key, no attribute, no log, only inside the result's ciphertext.

The key: 32 random bytes made by the first process that needs it, sealed through the one envelope
(``adapters/crypto.py``, purpose ``reference-key``) and stored in the state table (``sealed#reference-key``, no TTL);
every other process reads it and opens it once (one KMS ``Decrypt`` per cold start, then the key stays in memory).
Why not KMS ``GenerateMac``: one KMS call per result (intake today costs one KMS call per 1,000 results from a cold
process; this costs one more). Why not refusing references shaped like personal data: a name cannot be told from a
reference by its shape. The key is never rotated: the digests stored with results (90 days) must still match.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import datetime

from pynamodb.exceptions import PutError

from chalicelib.adapters.dynamodb import dynamodb_errors
from chalicelib.adapters.tables import SealedKeyItem
from chalicelib.domain.records import reference_digest
from chalicelib.services.ports import Envelope

PURPOSE = "reference-key"
ITEM_KEY = f"sealed#{PURPOSE}"
KEY_BYTES = 32


class ReferenceKey:
    """Keyed hashes of pharmacy references under the stage's sealed secret (loaded, or made, at first use)."""

    def __init__(self, envelope: Envelope, clock: Callable[[], datetime]) -> None:
        self._envelope = envelope
        self._clock = clock
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def digest(self, pharmacy_id: str, reference: str) -> str:
        """What Relais stores and looks up instead of ``reference``."""
        return reference_digest(self._secret(), pharmacy_id, reference)

    def _secret(self) -> bytes:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._open() or self._make()
        return self._key

    def _open(self) -> bytes | None:
        with dynamodb_errors():
            try:
                item = SealedKeyItem.get(ITEM_KEY, consistent_read=True)
            except SealedKeyItem.DoesNotExist:
                return None
        return self._envelope.decrypt(bytes(item.sealed), {"purpose": PURPOSE})

    def _make(self) -> bytes:
        """The first process of a stage makes the key; when another made one meanwhile, that one is used."""
        key = secrets.token_bytes(KEY_BYTES)
        item = SealedKeyItem(
            pk=ITEM_KEY, sealed=self._envelope.encrypt(key, {"purpose": PURPOSE}), created_at=self._clock()
        )
        with dynamodb_errors():
            try:
                item.save(condition=SealedKeyItem.pk.does_not_exist())
            except PutError as exc:
                if exc.cause_response_code != "ConditionalCheckFailedException":
                    raise
                opened = self._open()
                assert opened is not None, "a sealed key that exists opens"
                return opened
        return key
