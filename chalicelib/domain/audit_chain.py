"""The audit chain: each audit event's digest linked to the previous one, so removal or alteration shows.

``link_n = SHA-256(link_{n-1} || digest_n)``, ``digest_n = SHA-256(canonical event)``. Every appended batch
ends with a *seal* of its last link made with the KMS-protected envelope (purpose ``audit-seal``): without
KMS, nobody can rewrite the chain and forge a matching seal. Pure functions only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GENESIS = "0" * 64

#: The fields of an audit event that the chain protects (all of them; opaque ids only).
EVENT_FIELDS = ("event_id", "at", "actor", "action", "outcome", "record", "pharmacy_id", "reason", "request_id")


def canonical(event: Mapping[str, object]) -> bytes:
    """The bytes that are hashed: the protected fields, sorted, compact JSON."""
    return json.dumps({k: event.get(k) for k in EVENT_FIELDS}, sort_keys=True, separators=(",", ":")).encode()


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


def verify_links(entries: Iterable[ChainEntry]) -> tuple[list[Problem], str]:
    """Check sequence and links from genesis; returns the problems and the last link."""
    problems: list[Problem] = []
    expected_seq, current = 1, GENESIS
    for entry in entries:
        if entry.seq != expected_seq:
            problems.append(Problem(expected_seq, "gap"))
        if link(current, entry.digest) != entry.link:
            problems.append(Problem(entry.seq, "broken-link", entry.event_id))
        current = entry.link
        expected_seq = entry.seq + 1
    return problems, current
