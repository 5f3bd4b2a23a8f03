"""A signed pharmacy request ends in exactly one commit (services/pharmacy_request.py), with fakes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.records import AuditEvent, AuthGrant, ResultRecord
from chalicelib.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    UnsupportedMediaTypeError,
    ValidationError,
)
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
    aggregates: list[AuditEvent] = field(default_factory=list)  # one per failure counted (same event_id: same item)
    refuse: str | None = None  # an AuthenticationError reason the commit raises

    def commit_auth(self, grant: AuthGrant, audit: AuditEvent) -> None:
        if self.refuse:
            raise AuthenticationError(self.refuse, grant.key_id)
        self.commits.append((grant, audit))

    def record_audit(self, event: AuditEvent) -> None:
        self.audits.append(event)

    def count_failure(self, event: AuditEvent) -> None:
        self.aggregates.append(event)


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
    assert store.commits == [] and store.audits == []
    (event,) = store.aggregates  # an unknown key proves nothing: counted, not one event of its own
    assert (event.actor, event.action, event.reason) == ("anonymous", "auth.failure", "result.create:unknown_key")


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


# -- floods hit the flooder (issue 11, item 5) ----------------------------------------------------------------------
def _unsigned(client_ip: str):
    request = signed()
    headers = {k: v for k, v in request.headers.items() if k not in ("signature", "signature-input")}
    return replace(request, headers=headers, client_ip=client_ip)


def test_failures_before_the_signature_verified_are_counted_per_minute_address_and_reason():
    store, clock = FakeStore(), [NOW]
    flooded = PharmacyGate(store=store, keys=FakeKeys(), clock=lambda: clock[0])
    for client_ip, seconds in (("203.0.113.7", 1), ("203.0.113.7", 59), ("198.51.100.2", 2), ("203.0.113.7", 61)):
        clock[0] = NOW + timedelta(seconds=seconds)
        with pytest.raises(AuthenticationError):
            flooded.open(_unsigned(client_ip), "result.create", f"req-{seconds}")
    assert store.audits == [] and store.commits == []
    ids = [e.event_id for e in store.aggregates]
    assert ids[0] == ids[1] and len(set(ids)) == 3  # one aggregate per minute and address
    first = store.aggregates[0]
    assert (first.actor, first.reason, first.client_ip, first.at) == (
        "anonymous",
        "result.create:missing_signature",
        "203.0.113.7",
        NOW,  # the minute
    )
    assert first.request_id is None


def test_a_claimed_key_with_a_bad_signature_is_aggregated_under_that_key():
    store = FakeStore()
    request = replace(signed(), body=b'{"changed": true}', client_ip="203.0.113.7")
    with pytest.raises(AuthenticationError):
        gate(store).open(request, "result.create", "req-3")
    (event,) = store.aggregates
    assert (event.actor, event.reason) == ("key:pk_1", "result.create:digest_mismatch")


def test_a_failure_after_the_signature_verified_is_one_event_with_the_address():
    store = FakeStore(refuse="revoked_key")
    req = gate(store).open(replace(signed(), client_ip="203.0.113.7"), "result.read", "req-4")
    with pytest.raises(AuthenticationError):
        req.commit("success", RID)
    (event,) = store.audits
    assert (event.actor, event.reason, event.client_ip, event.request_id) == (
        "key:pk_1",
        "result.read:revoked_key",
        "203.0.113.7",
        "req-4",
    )
    assert store.aggregates == []


class FakeLimiter:
    def __init__(self, *waits: int) -> None:
        self.waits = list(waits)
        self.keys: list[str] = []

    def retry_after(self, key_id: str, now: datetime) -> int:
        self.keys.append(key_id)
        return self.waits.pop(0)


def test_a_key_past_its_rate_gets_429_with_retry_after_and_the_answer_is_committed():
    store, limiter = FakeStore(), FakeLimiter(0, 1)
    limited = PharmacyGate(store=store, keys=FakeKeys(), clock=lambda: NOW, limiter=limiter)
    limited.open(replace(signed(), client_ip="203.0.113.7"), "result.read", "req-5").commit("success", RID)
    with pytest.raises(RateLimitedError) as error:
        limited.open(replace(signed(), client_ip="203.0.113.7"), "result.read", "req-6")
    assert error.value.retry_after == 1
    assert limiter.keys == ["pk_1", "pk_1"]
    (_, served), (grant, refused) = store.commits  # the nonce is consumed, the 429 audited
    assert (refused.actor, refused.outcome, refused.reason, refused.request_id, refused.client_ip) == (
        "key:pk_1",
        "rate_limited",
        "key_rate",
        "req-6",
        "203.0.113.7",  # a refusal's address is in the security log; a served request's is not
    )
    assert (served.outcome, served.client_ip, grant.key_id) == ("success", None, "pk_1")


def test_a_failed_signature_is_not_counted_against_the_key():
    limiter = FakeLimiter()
    limited = PharmacyGate(store=FakeStore(), keys=FakeKeys(), clock=lambda: NOW, limiter=limiter)
    with pytest.raises(AuthenticationError):
        limited.open(replace(signed(), body=b"{}x"), "result.create", "req-7")
    assert limiter.keys == []  # the limit is the verified key's, so nobody can spend another's
