"""The audit chain: each audit event's digest linked to the previous one, so removal or alteration shows.

``link_n = SHA-256(link_{n-1} || digest_n)``, ``digest_n = SHA-256(canonical event)``. Every appended batch
ends with a *seal* of its last link made with the KMS-protected envelope (purpose ``audit-seal``): without
KMS, nobody can rewrite the chain and forge a matching seal. Pure functions only.

Retention. Audit events expire (DynamoDB TTL, 366 days after their time); the chain's entries (hashes and opaque
ids) stay. So each seal is also a *checkpoint* of its batch: sealed with the link are the time of the append
(``at``: every event up to there was written before it) and the time of the batch's oldest event (``oldest``).
Verification (:func:`retention_window`) starts from the newest checkpoint past retention — its sealed link proves
everything after it, the entries before it are not needed — and lets an event be missing only when its batch's
oldest event is past retention (it expired, at most the batch's time spread early). Any other missing event, and
any checkpoint whose seal does not match, fails verification.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

GENESIS = "0" * 64

#: The fields of an audit event that the chain protects (opaque ids; the client address of a failure). A field of
#: ``OPTIONAL_FIELDS`` is hashed only when it has a value, so that the events chained before it existed still verify.
#: An aggregate's ``failures`` count grows after it is chained: it is not protected.
EVENT_FIELDS = ("event_id", "at", "actor", "action", "outcome", "record", "pharmacy_id", "reason", "request_id")
OPTIONAL_FIELDS = ("client_ip",)


def canonical(event: Mapping[str, object]) -> bytes:
    """The bytes that are hashed: the protected fields, sorted, compact JSON."""
    fields = {k: event.get(k) for k in EVENT_FIELDS} | {k: event[k] for k in OPTIONAL_FIELDS if event.get(k)}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def digest(event: Mapping[str, object]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def link(previous: str, event_digest: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(event_digest)).hexdigest()


@dataclass(frozen=True)
class ChainEntry:
    seq: int
    event_id: str
    subject: str
    sk: str
    digest: str
    link: str
    seal: bytes | None = None


@dataclass(frozen=True)
class Problem:
    seq: int | None
    kind: str  # "gap", "broken-link", "bad-seal", "altered-event", "missing-event", "unchained-event", "no-seal"
    event_id: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    """What a valid seal proves: the chain's link at ``seq``; that the events up to ``seq`` were all written before
    ``at``; that the events of its batch were written at ``oldest`` or later. Both times are None in the seals made
    before checkpoints had them: such a seal proves the link only."""

    seq: int
    link: str
    at: datetime | None = None
    oldest: datetime | None = None


@dataclass(frozen=True)
class Window:
    """Where verification starts (genesis, or the newest checkpoint past retention) and which batches' events may
    have expired: ``expired_batches`` holds the last seq of each batch whose oldest event is past retention."""

    start_seq: int = 0
    start_link: str = GENESIS
    expired_batches: frozenset[int] = frozenset()
    batch_ends: tuple[int, ...] = ()

    def may_have_expired(self, seq: int) -> bool:
        """Whether the event of entry ``seq`` may be gone by the audit table's TTL."""
        at = bisect.bisect_left(self.batch_ends, seq)
        return at < len(self.batch_ends) and self.batch_ends[at] in self.expired_batches


def retention_window(checkpoints: Sequence[Checkpoint], *, now: datetime, retention: timedelta) -> Window:
    """The window of a chain whose valid checkpoints are ``checkpoints`` (sorted by ``seq``)."""
    past = now - retention
    anchors = [c for c in checkpoints if c.at is not None and c.at <= past]
    anchor = anchors[-1] if anchors else Checkpoint(0, GENESIS)
    expired = frozenset(c.seq for c in checkpoints if c.oldest is not None and c.oldest <= past)
    return Window(anchor.seq, anchor.link, expired, tuple(c.seq for c in checkpoints))


def extend(previous_seq: int, previous_link: str, events: Iterable[Mapping[str, object]]) -> list[ChainEntry]:
    """Chain entries for ``events`` after the entry (``previous_seq``, ``previous_link``)."""
    entries = []
    seq, current = previous_seq, previous_link
    for event in events:
        seq += 1
        d = digest(event)
        current = link(current, d)
        entries.append(ChainEntry(seq, str(event["event_id"]), str(event["subject"]), str(event["sk"]), d, current))
    return entries


def verify_links(entries: Iterable[ChainEntry], window: Window | None = None) -> tuple[list[Problem], str]:
    """Check sequence and links from the window's start (genesis by default); the problems and the last link."""
    problems: list[Problem] = []
    start = window or Window()
    expected_seq, current = start.start_seq + 1, start.start_link
    for entry in entries:
        if entry.seq != expected_seq:
            problems.append(Problem(expected_seq, "gap"))
        if link(current, entry.digest) != entry.link:
            problems.append(Problem(entry.seq, "broken-link", entry.event_id))
        current = entry.link
        expected_seq = entry.seq + 1
    return problems, current
