"""Ports: what the use cases need from the outside world, in domain terms.

Adapters in ``chalicelib/adapters`` implement them over AWS; tests implement them with fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from chalicelib.domain.records import AuditEvent, AuthGrant, Pharmacy, ResultRecord


class Envelope(Protocol):
    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes: ...

    def decrypt(self, ciphertext: bytes, context: Mapping[str, str]) -> bytes: ...


class ResultStore(Protocol):
    def commit_auth(self, grant: AuthGrant, audit: AuditEvent) -> None: ...

    def commit_new_result(
        self, grant: AuthGrant, audit: AuditEvent, record: ResultRecord, *, quota_day: str, quota_limit: int
    ) -> None: ...

    def find_reference(self, pharmacy_id: str, reference_digest: str) -> str | None: ...

    def get_result(self, result_id: str) -> ResultRecord | None: ...

    def record_audit(self, event: AuditEvent) -> None: ...


class PharmacyDirectory(Protocol):
    def get_pharmacy(self, pharmacy_id: str) -> Pharmacy: ...
