"""The keys that sign receipts (contract §6): Ed25519 keys sealed by KMS, opened once per process.

Why not a KMS asymmetric key (``Sign``): one KMS call per receipt — a thousand per thousand results, where intake
costs two per thousand from a cold process today (the data key's ``GenerateDataKey`` and the reference key's
``Decrypt``) — and 10-30 ms more on every 201 (a KMS round trip), with KMS's request quota shared by the peak's
intake. Ed25519 in the function signs in about 50 µs. The price is that the private key is in the memory
of the API function while it runs; it is never in clear anywhere else: made by ``cryptography``, sealed at once
through the one envelope (``adapters/crypto.py``, purpose ``receipt-key``, encryption context of the key's ``kid``),
stored sealed in the state table with its public half (``receipt-keys``, no TTL), and opened by KMS ``Decrypt`` once
per process and key (then kept in memory, like the reference key: ``adapters/reference_key.py``). Only the API
function's role may decrypt that purpose (``infra/iam.py``). It is never logged or returned.

Keys: one item holds them all, oldest first, each with ``active_from`` (signs from then) and ``retired_at`` (signs
no more). The first process of a stage that needs to *sign* makes the first key (a conditional write: a process that
lost the race uses the winner's), or the operator's ``relais receipt rotate-key``; reading the keys (the JWKS, ``relais
receipt verify``) never makes one: a stage that signed nothing publishes ``{"keys": []}``. ``rotate-key`` adds a key
that becomes active ``ACTIVATION_DELAY`` later: long enough for every process's cached copy of the keys
(``REFRESH_SECONDS``) and every verifier's cached JWKS (``JWKS_MAX_AGE``) to hold it before it signs anything. The
previous key is retired then and stays published in the JWKS for as long as results are kept plus one year
(``published``). ``rotate-key --now`` (a compromised key) makes a key that signs at once and retires every other key
at once, a key still waiting included (it signed nothing; it stays published like any retired key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from pynamodb.exceptions import PutError

from chalicelib.adapters.dynamodb import dynamodb_errors, error_code
from chalicelib.adapters.tables import ReceiptKeyMap, ReceiptKeysItem
from chalicelib.domain.receipts import b64url, b64url_decode, public_jwk
from chalicelib.domain.records import new_id, utc_iso
from chalicelib.errors import ConflictError, DecryptionError
from chalicelib.services.ports import Envelope

PURPOSE = "receipt-key"
ITEM_KEY = "receipt-keys"
#: How long a process trusts its copy of the keys (then one GetItem: DynamoDB, not KMS).
REFRESH_SECONDS = 60.0
#: ``Cache-Control: max-age`` of ``GET /.well-known/jwks.json``.
JWKS_MAX_AGE = 300
#: A rotated-in key signs this long after it is published: every cached copy of the keys holds it by then.
ACTIVATION_DELAY = timedelta(seconds=600)
#: Retired keys stay published this long after the results' retention (contract §6: "plus one year").
PUBLISHED_AFTER_RETENTION = timedelta(days=365)


@dataclass(frozen=True)
class ReceiptKey:
    kid: str
    x: str  # public key, raw, base64url
    sealed: bytes
    created_at: datetime
    active_from: datetime
    retired_at: datetime | None = None

    def jwk(self, now: datetime) -> dict[str, str]:
        extra = {"retired_at": utc_iso(self.retired_at)} if self.retired_at and self.retired_at <= now else {}
        return public_jwk(self.kid, Ed25519PublicKey.from_public_bytes(b64url_decode(self.x)), **extra)


def _context(kid: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "key_id": kid}


def _to_key(entry: ReceiptKeyMap) -> ReceiptKey:
    return ReceiptKey(
        kid=str(entry.kid),
        x=str(entry.x),
        sealed=bytes(entry.sealed),
        created_at=entry.created_at,
        active_from=entry.active_from,
        retired_at=entry.retired_at,
    )


def _to_map(key: ReceiptKey) -> ReceiptKeyMap:
    return ReceiptKeyMap(  # type: ignore[no-untyped-call]
        kid=key.kid,
        x=key.x,
        sealed=key.sealed,
        created_at=key.created_at,
        active_from=key.active_from,
        retired_at=key.retired_at,
    )


class ReceiptKeyring:
    """The stage's receipt keys: the one that signs now (opened once per process), and those to publish."""

    def __init__(
        self,
        envelope: Envelope,
        clock: Callable[[], datetime],
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._envelope = envelope
        self._clock = clock
        self._refresh = refresh_seconds
        self._monotonic = monotonic
        self._keys: tuple[ReceiptKey, ...] = ()
        self._read_at: float | None = None  # when ``_keys`` was read (monotonic); None: never
        self._opened: dict[str, Ed25519PrivateKey] = {}
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------------------------------------------
    def _stale(self, now: float) -> bool:
        return self._read_at is None or now - self._read_at >= self._refresh

    def keys(self) -> tuple[ReceiptKey, ...]:
        """Every key, oldest first, from a copy at most ``refresh_seconds`` old; none before the stage's first (a
        read never makes one: only ``signer`` and ``rotate`` do)."""
        now = self._monotonic()
        if self._stale(now):
            with self._lock:
                if self._stale(now):
                    current = self._read()
                    self._keys, self._read_at = (current[0] if current else ()), now
        return self._keys

    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        """The key that signs now: its kid and private key (one KMS Decrypt the first time in this process). The
        stage's first key is made here when it has none."""
        now = self._clock()
        keys = self.keys()
        if not keys:
            with self._lock:  # read again, not from the copy: another process may have made it meanwhile
                keys = (self._read() or self._make_first())[0]
                self._keys, self._read_at = keys, self._monotonic()
        live = [k for k in keys if k.retired_at is None or k.retired_at > now] or list(keys)
        active = [k for k in live if k.active_from <= now] or [min(live, key=lambda k: k.active_from)]
        key = max(active, key=lambda k: k.active_from)
        opened = self._opened.get(key.kid)
        if opened is None:
            with self._lock:
                opened = self._opened.get(key.kid) or self._open(key)
                self._opened[key.kid] = opened
        return key.kid, opened

    def published(self, retention_days: int) -> dict[str, Any]:
        """The JWKS document: every key, retired ones while receipts they signed may still be shown."""
        now = self._clock()
        keep = timedelta(days=retention_days) + PUBLISHED_AFTER_RETENTION
        return {"keys": [k.jwk(now) for k in self.keys() if k.retired_at is None or k.retired_at + keep > now]}

    def _open(self, key: ReceiptKey) -> Ed25519PrivateKey:
        private = Ed25519PrivateKey.from_private_bytes(self._envelope.decrypt(key.sealed, _context(key.kid)))
        if b64url(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) != key.x:
            raise DecryptionError("a receipt key's private half does not match its public half")
        return private

    @staticmethod
    def _read() -> tuple[tuple[ReceiptKey, ...], int] | None:
        with dynamodb_errors():
            try:
                item = ReceiptKeysItem.get(ITEM_KEY, consistent_read=True)
            except ReceiptKeysItem.DoesNotExist:
                return None
        return tuple(_to_key(entry) for entry in item.keys), int(item.revision)

    # -- writing ------------------------------------------------------------------------------------------------
    def _new_key(self, active_from: datetime) -> tuple[ReceiptKey, Ed25519PrivateKey]:
        private = Ed25519PrivateKey.generate()
        kid = new_id(16)
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        sealed = self._envelope.encrypt(raw, _context(kid))
        return ReceiptKey(kid, b64url(public), sealed, created_at=self._clock(), active_from=active_from), private

    def _save(self, keys: tuple[ReceiptKey, ...], revision: int, previous: int | None) -> bool:
        item = ReceiptKeysItem(pk=ITEM_KEY, keys=[_to_map(k) for k in keys], revision=revision)
        condition = ReceiptKeysItem.pk.does_not_exist() if previous is None else ReceiptKeysItem.revision == previous
        with dynamodb_errors():
            try:
                item.save(condition=condition)
            except PutError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return False
        return True

    def _make_first(self) -> tuple[tuple[ReceiptKey, ...], int]:
        """The stage's first key, active at once; when another process made one meanwhile, that one."""
        key, private = self._new_key(active_from=self._clock())
        if self._save((key,), 1, None):
            self._opened[key.kid] = private  # the process that made it need not ask KMS to open it
            return (key,), 1
        existing = self._read()
        assert existing is not None, "a keyring that exists is read"
        return existing

    def ensure_key(self) -> str:
        """The kid of a key of this stage, the first one made (active at once) when it has none: run when a stage
        starts, so that its JWKS is never empty (``infra/local/stack.py``)."""
        keys, _revision = self._read() or self._make_first()
        self._read_at = None  # this process reads them again
        return keys[-1].kid

    def rotate(self, activate_in: timedelta = ACTIVATION_DELAY) -> ReceiptKey:
        """Add a key that signs from ``activate_in`` from now; every other key retires then (and stays published).

        A routine rotation (``activate_in`` > 0) while a key waits is a ConflictError; an immediate one (0: a
        compromised key) is never held up: the waiting key retires at once with the others, having signed nothing.
        ConflictError too when another rotation happened meanwhile (nothing written: run it again)."""
        current, revision = self._read() or self._make_first()
        now = self._clock()
        start = now + activate_in
        if activate_in > timedelta(0) and any(k.active_from > now for k in current):
            raise ConflictError("a later key is already waiting to become active")
        new, _private = self._new_key(active_from=start)
        retired = tuple(k if k.retired_at and k.retired_at <= start else _retire(k, start) for k in current)
        if not self._save((*retired, new), revision + 1, revision):
            raise ConflictError("the receipt keys changed meanwhile")
        self._read_at = None  # this process reads them again
        return new


def _retire(key: ReceiptKey, at: datetime) -> ReceiptKey:
    return ReceiptKey(key.kid, key.x, key.sealed, key.created_at, key.active_from, at)
