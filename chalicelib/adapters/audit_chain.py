"""The append-only audit chain in DynamoDB, fed from the audit table's stream; and its verification.

Each batch's seal is a checkpoint (``domain/audit_chain.py``): the sealed ``{"seq", "link", "at"}`` of its last
entry, ``at`` being the appender's clock. :meth:`AuditChain.verify` proves the chain from the newest checkpoint past
the audit retention, so that the events the audit table's TTL removed are counted as expired, not as missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pynamodb.attributes import BinaryAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.adapters.dynamodb import READ_BATCH, Progress
from chalicelib.adapters.tables import AuditItem, sortable_time
from chalicelib.adapters.tables import connection as dynamodb_connection
from chalicelib.domain.audit_chain import (
    EVENT_FIELDS,
    GENESIS,
    OPTIONAL_FIELDS,
    ChainEntry,
    Checkpoint,
    Problem,
    digest,
    extend,
    retention_window,
    verify_links,
)
from chalicelib.errors import DecryptionError, DependencyUnavailableError
from chalicelib.services.ports import Envelope

CHAIN = "chain"
HEAD = "head"
SEAL_CONTEXT = {"purpose": "audit-seal"}
BATCH = 98  # TransactWriteItems holds 100 items: the entries, the head, one spare


class ChainItem(Model):
    class Meta:
        table_name = "unbound"
        region: str | None = None

    pk = UnicodeAttribute(hash_key=True)
    seq = NumberAttribute(range_key=True)
    event_id = UnicodeAttribute(null=True)
    subject = UnicodeAttribute(null=True)
    sk = UnicodeAttribute(null=True)
    digest = UnicodeAttribute(null=True)
    link = UnicodeAttribute(null=True)
    seal = BinaryAttribute(null=True, legacy_encoding=False)
    last_seq = NumberAttribute(null=True)  # head only


def bind_chain_table(table: str, region: str) -> None:
    if ChainItem.Meta.table_name != table:
        ChainItem.Meta.table_name = table
        ChainItem.Meta.region = region
        ChainItem._connection = None


def _entry(item: ChainItem) -> ChainEntry:
    return ChainEntry(
        int(item.seq),
        item.event_id or "",
        item.subject or "",
        item.sk or "",
        item.digest or "",
        item.link or "",
        bytes(item.seal) if item.seal else None,
    )


class AuditChain:
    def __init__(
        self, *, envelope: Envelope, region: str, clock: Callable[[], datetime], retention_days: int = 366
    ) -> None:
        self._envelope = envelope
        self._connection = dynamodb_connection(region)
        self._clock = clock
        self._retention = timedelta(days=retention_days)

    def _head(self) -> tuple[int, str]:
        try:
            head = ChainItem.get(HEAD, 0, consistent_read=True)
        except ChainItem.DoesNotExist:
            return 0, GENESIS
        return int(head.last_seq or 0), head.link or GENESIS

    def _seal(self, entry: ChainEntry, events: Sequence[Mapping[str, Any]]) -> bytes:
        """The checkpoint of a batch ending with ``entry``: its seq and link, now, and its oldest event's time."""
        oldest = min(str(e["at"]) for e in events)
        sealed = {"seq": entry.seq, "link": entry.link, "at": sortable_time(self._clock()), "oldest": oldest}
        return self._envelope.encrypt(json.dumps(sealed).encode(), SEAL_CONTEXT)

    def append(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Chain ``events`` (audit items as dicts, in stream order); safe against concurrent appenders."""
        for start in range(0, len(events), BATCH):
            self._append_batch(events[start : start + BATCH])
        return len(events)

    def _append_batch(self, events: Sequence[Mapping[str, Any]]) -> None:
        for _attempt in range(8):
            last_seq, last_link = self._head()
            entries = extend(last_seq, last_link, events)
            tail = entries[-1]
            seal = self._seal(tail, events)
            try:
                with TransactWrite(connection=self._connection) as tx:
                    for e in entries:
                        tx.save(
                            ChainItem(
                                pk=CHAIN,
                                seq=e.seq,
                                event_id=e.event_id,
                                subject=e.subject,
                                sk=e.sk,
                                digest=e.digest,
                                link=e.link,
                                seal=seal if e is tail else None,
                            ),
                            condition=ChainItem.pk.does_not_exist(),
                        )
                    head_condition = ChainItem.pk.does_not_exist() if last_seq == 0 else ChainItem.last_seq == last_seq
                    tx.save(
                        ChainItem(pk=HEAD, seq=0, last_seq=tail.seq, link=tail.link, seal=seal),
                        condition=head_condition,
                    )
                return
            except TransactWriteError:
                continue  # another appender moved the head: re-read and re-chain
        raise DependencyUnavailableError("dynamodb")

    def entries(self) -> Iterator[ChainEntry]:
        for item in ChainItem.query(CHAIN, scan_index_forward=True):
            yield _entry(item)

    def verify(self, *, now: datetime, settle_seconds: int = 300, progress: Progress | None = None) -> dict[str, Any]:
        """Check links, seals, the head, every chained event against the audit table, and the reverse.

        Verification starts from the newest checkpoint past the audit retention (genesis when there is none): the
        entries before it are not checked; a missing event whose batch is past retention is counted as ``expired``.
        Chained events are read back in batches of ``READ_BATCH`` (BatchGetItem); ``progress(done, total)`` follows.
        """
        all_entries = list(self.entries())
        problems: list[Problem] = []
        checkpoints: list[Checkpoint] = []
        for entry in all_entries:
            if entry.seal is not None:
                checkpoint = self._checkpoint(entry, entry.seal)
                if checkpoint is None:
                    problems.append(Problem(entry.seq, "bad-seal", entry.event_id))
                else:
                    checkpoints.append(checkpoint)
        window = retention_window(checkpoints, now=now, retention=self._retention)
        problems = [p for p in problems if p.seq is not None and p.seq > window.start_seq]  # past retention: moot
        entries = [e for e in all_entries if e.seq > window.start_seq]
        link_problems, last = verify_links(entries, window)
        problems = link_problems + problems
        head_seq, head_link = self._head()
        if entries:
            if entries[-1].seal is None:
                problems.append(Problem(entries[-1].seq, "no-seal"))
            if head_seq != entries[-1].seq or head_link != last:
                problems.append(Problem(head_seq, "head-mismatch"))
        expired = 0
        for start in range(0, len(entries), READ_BATCH):
            batch = entries[start : start + READ_BATCH]
            keys = list(dict.fromkeys((entry.subject, entry.sk) for entry in batch))  # a batch holds a key once
            found = {(item.subject, item.sk): item for item in AuditItem.batch_get(keys, consistent_read=True)}
            for entry in batch:
                item = found.get((entry.subject, entry.sk))
                if item is None:
                    if window.may_have_expired(entry.seq):
                        expired += 1
                    else:
                        problems.append(Problem(entry.seq, "missing-event", entry.event_id))
                elif digest({k: getattr(item, k) for k in (*EVENT_FIELDS, *OPTIONAL_FIELDS)}) != entry.digest:
                    problems.append(Problem(entry.seq, "altered-event", entry.event_id))
            if progress is not None:
                progress(len(batch), len(entries))
        chained = {entry.event_id for entry in all_entries}
        settled = sortable_time(now - timedelta(seconds=settle_seconds))
        for item in AuditItem.scan():
            if item.event_id not in chained and item.at < settled:
                problems.append(Problem(None, "unchained-event", item.event_id))
        return {
            "ok": not problems,
            "events": len(entries),
            "expired": expired,
            "from_seq": window.start_seq,
            "problems": [{"seq": p.seq, "kind": p.kind, "event_id": p.event_id} for p in problems],
        }

    def _checkpoint(self, entry: ChainEntry, seal: bytes) -> Checkpoint | None:
        """What ``entry``'s seal proves (its times are None in seals made before checkpoints); None: nothing."""
        try:
            sealed = json.loads(self._envelope.decrypt(seal, SEAL_CONTEXT))
        except DecryptionError:
            return None
        if not isinstance(sealed, dict) or (sealed.get("seq"), sealed.get("link")) != (entry.seq, entry.link):
            return None
        at, oldest = (sealed.get(k) for k in ("at", "oldest"))
        return Checkpoint(
            entry.seq,
            entry.link,
            datetime.fromisoformat(at) if isinstance(at, str) else None,
            datetime.fromisoformat(oldest) if isinstance(oldest, str) else None,
        )


def from_stream_image(image: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB stream NewImage (typed JSON) as a plain dict."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in image.items()}
