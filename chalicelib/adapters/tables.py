"""PynamoDB models of the Relais tables (declared in ``infra/resources.json``).

Table names come from settings: :func:`bind_tables` points every model at its table, once,
from ``bootstrap``. Keys hold opaque ids only; personal data lives in ``payload`` ciphertext.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.adapters.aws import call_budget
from chalicelib.config import Settings

if TYPE_CHECKING:
    from botocore.session import Session as BotocoreSession


class TableMeta:
    """Connection settings shared by every Relais model; ``bind_*`` functions set the table names, and
    :func:`bind_tables` the timeouts and retries of the function's AWS call budget (``adapters/aws.py``)."""

    table_name = "unbound"
    region: str | None = None
    max_retry_attempts = 1  # retries after the first try (pynamodb's own count; botocore's standard mode)
    connect_timeout_seconds: float = 0.5
    read_timeout_seconds: float = 1.5


class _Clients:
    """Where every pynamodb connection gets its botocore client: once, from one session, under a lock.

    Left to itself, pynamodb creates a botocore session per thread and connection, and a connection's first
    callers race to create its client: under 80 concurrent first requests to ``chalice local`` (one thread each),
    80 threads each built sessions and clients for every model — loading botocore's service models from disk,
    resolving credentials, logging — and the API answered its first requests after 48 to 60 s. One session
    (``bootstrap.botocore_session``: the function's timeouts and retries) and one client per connection, created
    by whichever thread comes first while the others wait, cost one model load per process.
    """

    session: BotocoreSession | None = None
    lock = threading.Lock()


def open_client(conn: Connection) -> Connection:
    """``conn`` with its botocore client created (from the shared session, once); returns ``conn``."""
    if conn._client is None:
        with _Clients.lock:
            if conn._client is None:
                if _Clients.session is not None:
                    conn._local.session = _Clients.session  # pynamodb asks this thread's session for the client
                _ = conn.client
    return conn


def connection(region: str | None) -> Connection:
    """A pynamodb connection (for transactions and raw calls) with the same timeouts and retries as the models."""
    return open_client(
        Connection(
            region=region,
            connect_timeout_seconds=TableMeta.connect_timeout_seconds,
            read_timeout_seconds=TableMeta.read_timeout_seconds,
            max_retry_attempts=TableMeta.max_retry_attempts,
        )
    )


def sortable_time(moment: datetime) -> str:
    """A moment as the tables store it in strings (keys, ``received_at``, ``at``): UTC to the microsecond with a
    ``Z``, so that the strings sort in time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_seconds(moment: datetime) -> int:
    """A moment as the tables store it in numbers (the ``expires_at`` TTLs): whole seconds since the epoch."""
    return int(moment.timestamp())


class PharmacyItem(Model):
    """Registry table, ``pk = "pharmacy#<id>"``."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    pharmacy_id = UnicodeAttribute()
    finess = UnicodeAttribute()
    name = UnicodeAttribute()
    status = UnicodeAttribute()
    daily_quota = NumberAttribute(null=True)
    created_at = UTCDateTimeAttribute()


class KeyItem(Model):
    """Registry table, ``pk = "key#<key id>"``: a pharmacy's Ed25519 public key (never a private key)."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    key_id = UnicodeAttribute()
    pharmacy_id = UnicodeAttribute()
    public_key_pem = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    revoked_at = UTCDateTimeAttribute(null=True)


class FinessItem(Model):
    """Registry table, ``pk = "finess#<FINESS>"``: one pharmacy per FINESS number."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    pharmacy_id = UnicodeAttribute()


class StateItem(Model):
    """State table: nonces, quota counters, pharmacy references, rate counters; all with a TTL."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    expires_at = NumberAttribute()
    n = NumberAttribute(null=True)
    result_id = UnicodeAttribute(null=True)


class SealedKeyItem(Model):
    """State table, ``pk = "sealed#<purpose>"``: a secret key sealed by KMS (an envelope ciphertext), kept for good
    (no TTL: the keyed hashes made with it must stay comparable while the items holding them live)."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    sealed = BinaryAttribute(legacy_encoding=False)
    created_at = UTCDateTimeAttribute()


class ReceiptKeyMap(MapAttribute[str, object]):
    """One receipt signing key (``adapters/receipt_keys.py``): its public half in clear, its private half sealed."""

    kid = UnicodeAttribute()
    x = UnicodeAttribute()  # the Ed25519 public key, raw, base64url (the JWK's "x")
    sealed = BinaryAttribute(legacy_encoding=False)  # the private key, sealed by the envelope (purpose receipt-key)
    created_at = UTCDateTimeAttribute()
    active_from = UTCDateTimeAttribute()  # signs from then on (published before: verifiers' caches have it)
    retired_at = UTCDateTimeAttribute(null=True)  # signs no more from then on (still published)


class ReceiptKeysItem(Model):
    """State table, ``pk = "receipt-keys"``: every receipt signing key of the stage, oldest first (no TTL: retired
    keys stay published while receipts they signed may be shown)."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    keys = ListAttribute(of=ReceiptKeyMap)
    revision = NumberAttribute()  # +1 per change: a rotation is a conditional write on the revision it read


#: Counters that every request of one pharmacy would update (daily quota, monthly usage) are split over this many
#: items: DynamoDB cancels a transaction that touches an item another transaction holds (TransactionConflict), so
#: one counter item would serialise a pharmacy's concurrent requests. Each request updates one shard, chosen from its
#: result id; two requests meet on a shard only by chance (1 in 16), and then the loser retries with jitter.
COUNTER_SHARDS = 16


def counter_shards(prefix: str) -> list[str]:
    """Every shard of the counter ``prefix`` (``quota#<pharmacy>#<day>``, ``usage#<pharmacy>#<month>``)."""
    return shard_keys(prefix, shards=COUNTER_SHARDS)


def counter_shard(prefix: str, identifier: str) -> str:
    """The shard of the counter ``prefix`` that the item ``identifier`` counts in (fixed by its opaque id)."""
    return sharded_key(prefix, identifier, shards=COUNTER_SHARDS)


def usage_key(pharmacy_id: str, month: str) -> str:
    """State table: the billable results of one pharmacy in one month (``YYYY-MM``), over ``counter_shards``."""
    return f"usage#{pharmacy_id}#{month}"


def withdrawn_key(pharmacy_id: str, month: str) -> str:
    """State table: results of one pharmacy and month withdrawn (recorded in error) on the day they were received,
    hence taken out of its usage count, over ``counter_shards``."""
    return f"withdrawn#{pharmacy_id}#{month}"


def reported_key(pharmacy_id: str, month: str) -> str:
    """State table: the results of one pharmacy received in one month that the national system acknowledged, each
    counted once (``NationalStatusStore.mark_reported``), over ``counter_shards``."""
    return f"reported#{pharmacy_id}#{month}"


def quota_key(pharmacy_id: str, day: str) -> str:
    """State table: the results of one pharmacy on one UTC day (``YYYY-MM-DD``), over ``counter_shards``."""
    return f"quota#{pharmacy_id}#{day}"


def shard_limit(limit: int, shard: int) -> int:
    """The part of ``limit`` that shard ``shard`` may count: the shards' parts add up to ``limit`` exactly."""
    return limit // COUNTER_SHARDS + (1 if shard < limit % COUNTER_SHARDS else 0)


#: Index partition keys are spread over this many shards. A constant key ("pending", one day's date) would send
#: every index write of the national peak to one index partition (about 1,000 writes/s at most), and DynamoDB
#: throttles a table's writes while one of its global indexes is throttled: intake and audit would fail at bursts.
INDEX_SHARDS = 16


def index_shard(identifier: str, shards: int = INDEX_SHARDS) -> str:
    """The shard (``"00"``…``"15"``) of an item among ``shards``, fixed by its opaque id."""
    return f"{int.from_bytes(hashlib.sha256(identifier.encode()).digest()[:4], 'big') % shards:02d}"


def sharded_key(prefix: str, identifier: str, *, shards: int = INDEX_SHARDS) -> str:
    """``<prefix>#<shard>``: the partition key of the item ``identifier`` among the shards of ``prefix``."""
    return f"{prefix}#{index_shard(identifier, shards)}"


def pending_key(result_id: str) -> str:
    """``pending_national`` of a result waiting for national delivery: ``pending#<shard>``."""
    return sharded_key("pending", result_id)


def day_key(day: str, event_id: str) -> str:
    """``day`` of an audit event: ``YYYY-MM-DD#<shard>``."""
    return sharded_key(day, event_id)


def shard_keys(prefix: str, *, shards: int = INDEX_SHARDS) -> list[str]:
    """Every partition key of ``prefix`` (``"pending"``, a day, a counter), to read them all."""
    return [f"{prefix}#{shard:02d}" for shard in range(shards)]


class PendingNationalIndex(GlobalSecondaryIndex["ResultItem"]):  # type: ignore[no-untyped-call]
    """Sparse index of results still pending national delivery (reconciliation), sharded (``pending_key``)."""

    class Meta:
        index_name = "pending-national"
        projection = KeysOnlyProjection()

    pending_national = UnicodeAttribute(hash_key=True)
    received_at = UnicodeAttribute(range_key=True)


class CorrectionMap(MapAttribute[str, object]):
    """One correction of a result (``domain.records.Correction``): opaque codes only."""

    version = NumberAttribute()
    reason = UnicodeAttribute()
    at = UTCDateTimeAttribute()
    reference = UnicodeAttribute()  # keyed hash of the correction_reference, never the reference


class ResultItem(Model):
    """Results table, ``id`` = the opaque result id. The stream (keys only) feeds the queues."""

    class Meta(TableMeta):
        pass

    id = UnicodeAttribute(hash_key=True)
    pharmacy_id = UnicodeAttribute()
    reference_digest = UnicodeAttribute()  # keyed hash of the pharmacy's reference (adapters/reference_key.py)
    key_id = UnicodeAttribute()
    received_at = UnicodeAttribute()  # ISO UTC, sortable
    expires_at = NumberAttribute()
    payload = BinaryAttribute(legacy_encoding=False, null=True)  # removed on erasure
    reference_sealed = BinaryAttribute(legacy_encoding=False, null=True)  # the pharmacy reference; removed on erasure
    erased_at = UTCDateTimeAttribute(null=True)
    channels = ListAttribute(of=UnicodeAttribute, default=list)
    national_status = UnicodeAttribute(default="pending")
    pending_national = UnicodeAttribute(null=True)  # sparse index key while pending: pending_key(id)
    national_reported_at = UTCDateTimeAttribute(null=True)
    national_attempts = NumberAttribute(default=0)  # POSTs to the national system, every message copy counted
    national_lease_until = UTCDateTimeAttribute(null=True)  # one message copy delivers at a time (NationalStatusStore)
    national_requeued_at = UTCDateTimeAttribute(null=True)  # last time reconciliation queued it again
    national_failure = UnicodeAttribute(null=True)  # e.g. "http-400:invalid" — codes only, never free text
    national_dead_lettered_at = UTCDateTimeAttribute(null=True)  # its dead letter written (after status failed)
    pending_index = PendingNationalIndex()
    patient_status = UnicodeAttribute(default="not_requested")
    patient_sent_at = UTCDateTimeAttribute(null=True)
    link_expires_at = UTCDateTimeAttribute(null=True)
    # Corrections (contract §8): ``payload`` is the current version's ciphertext; the earlier versions' stay in
    # ``earlier_payloads`` (version 1 first) until the item's retention ends or it is erased.
    version = NumberAttribute(default=1)
    withdrawn_at = UTCDateTimeAttribute(null=True)
    corrections = ListAttribute(of=CorrectionMap, null=True)
    earlier_payloads = ListAttribute(of=BinaryAttribute, null=True)
    national_version = NumberAttribute(default=0)  # the latest version the national system acknowledged
    national_first_reported_at = UTCDateTimeAttribute(null=True)  # set once, with the month's reported count


def at_version(version: int) -> Any:
    """The condition that a result is at ``version`` (items stored before corrections existed have no ``version``
    attribute: they are version 1)."""
    same = ResultItem.version == version
    return same | ResultItem.version.does_not_exist() if version == 1 else same


class AuditByDayIndex(GlobalSecondaryIndex["AuditItem"]):  # type: ignore[no-untyped-call]
    """Audit events of one UTC day, by time (``relais audit --since``), sharded (``day_key``)."""

    class Meta:
        index_name = "by-day"
        projection = AllProjection()

    day = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


class AuditItem(Model):
    """Audit table: ``subject`` (the record, or the actor when there is none), ``sk`` = time#event id."""

    class Meta(TableMeta):
        pass

    subject = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    day = UnicodeAttribute()  # day_key(YYYY-MM-DD, event id)
    event_id = UnicodeAttribute()
    at = UnicodeAttribute()
    actor = UnicodeAttribute()
    action = UnicodeAttribute()
    outcome = UnicodeAttribute()
    record = UnicodeAttribute(null=True)
    pharmacy_id = UnicodeAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    request_id = UnicodeAttribute(null=True)
    client_ip = UnicodeAttribute(null=True)
    failures = NumberAttribute(null=True)  # an aggregate of failures: how many
    expires_at = NumberAttribute()
    by_day = AuditByDayIndex()


def bind_tables(settings: Settings, session: BotocoreSession | None = None) -> None:
    """Point every model at the table the settings name (idempotent) and create its client, from ``session``
    when given (see :class:`_Clients`)."""
    session_changed, _Clients.session = session is not _Clients.session, session
    tables: dict[type[Model], str] = {
        PharmacyItem: settings.registry_table,
        KeyItem: settings.registry_table,
        FinessItem: settings.registry_table,
        StateItem: settings.state_table,
        SealedKeyItem: settings.state_table,
        ReceiptKeysItem: settings.state_table,
        ResultItem: settings.results_table,
        AuditItem: settings.audit_table,
    }
    budget = call_budget(settings.function_timeout_seconds)
    timeouts = (budget.connect_timeout, budget.read_timeout, budget.max_attempts - 1)
    changed = timeouts != (
        TableMeta.connect_timeout_seconds,
        TableMeta.read_timeout_seconds,
        TableMeta.max_retry_attempts,
    )
    TableMeta.connect_timeout_seconds, TableMeta.read_timeout_seconds, TableMeta.max_retry_attempts = timeouts
    for model, table in tables.items():
        if session_changed or changed or model.Meta.table_name != table or model.Meta.region != settings.region:
            model.Meta.table_name = table
            model.Meta.region = settings.region
            model._connection = None
        open_client(model._get_connection().connection)
