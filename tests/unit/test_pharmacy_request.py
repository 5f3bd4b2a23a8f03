"""A signed pharmacy request ends in exactly one commit (services/pharmacy_request.py), with fakes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from chalicelib.domain.records import AuditEvent, AuthGrant, ResultRecord
from chalicelib.errors import AuthenticationError, NotFoundError, UnsupportedMediaTypeError, ValidationError
from chalicelib.services.authn import KeyRecord
from chalicelib.services.pharmacy_request import PharmacyGate
from tests.signing import new_keypair, sign, to_signed_request

NOW = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)
URL = "https://relais.example.fr/v1/results"
PRIVATE_KEY, PUBLIC_PEM = new_keypair()
KEY = KeyRecord(key_id="pk_1", pharmacy_id="ph_1", public_key_pem=PUBLIC_PEM, revoked_at=None, pharmacy_active=True)
RID = "r" * 24


@dataclass
class FakeStore:
    commits: list[tuple[AuthGrant, AuditEvent]] = field(default_factory=list)
    audits: list[AuditEvent] = field(default_factory=list)
    refuse: str | None = None  # an AuthenticationError reason the commit raises

    def commit_auth(self, grant: AuthGrant, audit: AuditEvent) -> None:
        if self.refuse:
            raise AuthenticationError(self.refuse, grant.key_id)
        self.commits.append((grant, audit))

    def record_audit(self, event: AuditEvent) -> None:
        self.audits.append(event)


class FakeKeys:
    def get_key(self, key_id: str) -> KeyRecord | None:
        return KEY if key_id == KEY.key_id else None


def gate(store: FakeStore) -> PharmacyGate:
    return PharmacyGate(store=store, keys=FakeKeys(), clock=lambda: NOW)


def signed(body: bytes | None = b"{}", *, content_type: str = "application/json", key_id: str = "pk_1"):
    headers = sign(
        "POST",
        URL,
        key_id=key_id,
        private_key=PRIVATE_KEY,
        body=body,
        created=int(NOW.timestamp()),
        content_type=content_type,
    )
    return to_signed_request("POST", URL, headers, body)


def record(pharmacy_id: str = "ph_1") -> ResultRecord:
    return ResultRecord(RID, pharmacy_id, "REF-1", "pk_1", NOW, 2_000_000_000, b"x")


def test_a_verified_request_commits_once_with_its_nonce_and_audit_event():
    store = FakeStore()
    req = gate(store).open(signed(), "result.read", "req-1")
    req.commit("success", RID)
    ((grant, event),) = store.commits
    assert (grant.key_id, grant.pharmacy_id, len(grant.nonce) >= 16) == ("pk_1", "ph_1", True)
    assert (event.actor, event.action, event.outcome, event.record, event.request_id) == (
        "key:pk_1",
        "result.read",
        "success",
        RID,
        "req-1",
    )
    with pytest.raises(RuntimeError, match="already committed"):
        req.commit("success", RID)
    assert len(store.commits) == 1


def test_a_failed_signature_is_audited_and_nothing_is_committed():
    store = FakeStore()
    with pytest.raises(AuthenticationError):
        gate(store).open(signed(key_id="pk_unknown"), "result.create", "req-2")
    assert store.commits == []
    (event,) = store.audits
    assert (event.actor, event.action, event.reason) == ("key:pk_unknown", "auth.failure", "result.create:unknown_key")


def test_a_commit_refused_for_authentication_is_audited_as_a_failure():
    store = FakeStore()
    req = gate(store).open(signed(), "result.read", None)
    store.refuse = "revoked_key"
    with pytest.raises(AuthenticationError):
        req.commit("success", RID)
    (event,) = store.audits
    assert event.reason == "result.read:revoked_key"


def test_a_write_refused_for_another_reason_leaves_the_request_open_for_its_answer():
    store = FakeStore()
    req = gate(store).open(signed(), "result.resend", None)

    def quota_full(grant: AuthGrant, event: AuditEvent) -> int:
        raise LookupError("quota")

    with pytest.raises(LookupError):
        req.commit_with(quota_full, "success", RID)
    req.commit("rate_limited", RID)
    assert [e.outcome for _, e in store.commits] == ["rate_limited"]


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"{}", "text/plain", UnsupportedMediaTypeError),
        (b"{not json", "application/json", ValidationError),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", ValidationError),  # past the parser's depth
    ],
)
def test_a_body_that_is_not_json_is_committed_as_rejected_then_raised(body, content_type, error):
    store = FakeStore()
    req = gate(store).open(signed(body, content_type=content_type), "result.create", None)
    with pytest.raises(error):
        req.json_body()
    ((_, event),) = store.commits
    assert (event.outcome, event.reason) == ("rejected", error.__name__)


def test_a_json_body_is_read_with_parameters_of_the_media_type_ignored():
    store = FakeStore()
    body = json.dumps({"a": [1, 2]}).encode()
    req = gate(store).open(signed(body, content_type="application/json; charset=utf-8"), "result.create", None)
    assert req.json_body() == {"a": [1, 2]}
    assert store.commits == []


@pytest.mark.parametrize("stored", [None, record(pharmacy_id="ph_other")])
def test_another_pharmacy_s_result_is_not_found_like_a_missing_one(stored):
    store = FakeStore()
    req = gate(store).open(signed(), "result.read", None)
    with pytest.raises(NotFoundError):
        req.own_result(lambda rid: stored, RID)
    ((_, event),) = store.commits
    assert (event.outcome, event.record, event.reason) == ("not_found", RID, "unknown_or_foreign")


def test_an_implausible_id_is_looked_up_nowhere_and_audited_without_it():
    store = FakeStore()
    req = gate(store).open(signed(), "result.read", None)
    looked_up: list[str] = []
    with pytest.raises(NotFoundError):
        req.own_result(looked_up.append, "../etc/passwd")  # type: ignore[arg-type]
    assert looked_up == []
    ((_, event),) = store.commits
    assert event.record is None


def test_the_caller_s_own_result_is_returned_without_committing():
    store = FakeStore()
    req = gate(store).open(signed(), "result.read", None)
    assert req.own_result(lambda rid: record(), RID).id == RID
    assert store.commits == []
