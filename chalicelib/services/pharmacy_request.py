"""A signed pharmacy request, from its authentication to its one commit.

Every authenticated pharmacy request ends in exactly one commit that re-checks the key (not revoked) and
the pharmacy (active), consumes the nonce and writes the request's one audit event — alone
(:meth:`PharmacyRequest.commit`) or together with the request's change (:meth:`PharmacyRequest.commit_with`,
whose store transaction carries the same authentication items). A failed authentication, before or at the
commit, is audited as ``auth.failure`` and raised (401).

Floods hit the flooder. A failure before the signature verified proves nothing about who sent it (anyone can send
garbage, or claim a real key id): it is counted in one aggregate audit event per minute, client address, claimed
actor and reason (``failures``), not written as an item of its own. A failure after it (revoked key, suspended pharmacy,
replayed nonce) is one event. Past the signature, a key gets at most ``key_requests_per_second``: beyond, 429 with
``Retry-After``, committed (nonce consumed, one ``rate_limited`` event) like every authenticated answer. Both carry
the client address (security log: ``docs/data-lifecycle.md``).

:class:`PharmacyGate` opens requests; use cases (submit, follow, resend) work on the
:class:`PharmacyRequest` it returns, never on the grant's parts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NoReturn, Protocol, TypeVar

from chalicelib.domain.json_body import load_json
from chalicelib.domain.records import AuditEvent, AuthGrant, ResultRecord, is_plausible_id
from chalicelib.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from chalicelib.services.authn import KeyDirectory, Principal, SignedRequest, authenticate

T = TypeVar("T")


class AuthCommits(Protocol):
    """What the gate needs of the store: the commit of an authenticated request, and lone audit events."""

    def commit_auth(self, grant: AuthGrant, audit: AuditEvent) -> None: ...

    def record_audit(self, event: AuditEvent) -> None: ...

    def count_failure(self, event: AuditEvent) -> None: ...


class KeyLimiter(Protocol):
    """Counts a key's requests: 0 while within its rate, else the seconds to wait (``adapters/rate_limits.py``)."""

    def retry_after(self, key_id: str, now: datetime) -> int: ...


#: Failures found after the signature verified: the key's holder sent the request, each is one audit event.
VERIFIED_FAILURES = frozenset({"revoked_key", "suspended_pharmacy", "replayed_nonce"})
#: Outcomes of authenticated requests whose audit event records the client address (security log).
ADDRESSED_OUTCOMES = frozenset({"rate_limited"})


def failure_aggregate_id(minute: datetime, client_ip: str, actor: str, reason: str) -> str:
    """The event id of the aggregate of one minute's failures from one address, claimed actor and reason."""
    return hashlib.sha256(f"{minute.isoformat()}|{client_ip}|{actor}|{reason}".encode()).hexdigest()[:22]


@dataclass
class PharmacyGate:
    """Authenticates signed pharmacy requests (RFC 9421, ``services/authn.py``) and audits the failures."""

    store: AuthCommits
    keys: KeyDirectory
    clock: Callable[[], datetime]
    signature_window_seconds: int = 300
    allowed_authorities: frozenset[str] = frozenset()  # empty: whatever Host the client signed
    accept_test_key: bool = False  # the published test key (docs/signature-test-vectors.json): the local stack only
    observe: Callable[[Principal], None] | None = None  # told who is calling once authenticated (the request log)
    limiter: KeyLimiter | None = None  # None: no per-key rate

    def open(self, request: SignedRequest, action: str, request_id: str | None) -> PharmacyRequest:
        """Verify the signature; the request, to be ended by one commit. AuthenticationError (audited) otherwise.

        The nonce is not written here: the commit writes it, atomically with the audit event.
        """
        nonces = _DeferredNonce()
        try:
            if self.allowed_authorities and request.authority.lower() not in self.allowed_authorities:
                # A request signed for another host (another stage, a proxy) is not for us.
                raise AuthenticationError("wrong_authority")
            principal = authenticate(
                request,
                keys=self.keys,
                nonces=nonces,
                now=self.clock(),
                window_seconds=self.signature_window_seconds,
                accept_test_key=self.accept_test_key,
            )
        except AuthenticationError as exc:
            self.audit_failure(exc, action, request_id, request.client_ip)
            raise
        if self.observe is not None:
            self.observe(principal)
        assert nonces.nonce is not None
        grant = AuthGrant(principal.key_id, principal.pharmacy_id, nonces.nonce, nonces.expires_at)
        opened = PharmacyRequest(request=request, grant=grant, action=action, request_id=request_id, gate=self)
        wait = self.limiter.retry_after(principal.key_id, self.clock()) if self.limiter is not None else 0
        if wait:
            opened.commit("rate_limited", reason="key_rate")
            raise RateLimitedError("too many requests for this key", retry_after=wait)
        return opened

    def audit_failure(self, exc: AuthenticationError, action: str, request_id: str | None, client_ip: str) -> None:
        """One event for a failure after the signature verified; else one more in the minute's aggregate."""
        claimed = f"key:{exc.key_id}" if exc.key_id and exc.reason != "unknown_key" else "anonymous"
        now = self.clock()
        event = AuditEvent(
            actor=claimed,
            action="auth.failure",
            outcome="denied",
            reason=f"{action}:{exc.reason}",
            at=now,
            request_id=request_id,
            client_ip=client_ip or None,
        )
        if exc.reason in VERIFIED_FAILURES:
            self.store.record_audit(event)
            return
        minute = now.replace(second=0, microsecond=0)
        aggregate_id = failure_aggregate_id(minute, client_ip, claimed, str(event.reason))
        self.store.count_failure(replace(event, at=minute, request_id=None, event_id=aggregate_id))


@dataclass
class PharmacyRequest:
    """An authenticated request of one pharmacy, for one ``action`` (``result.create``…), not yet committed."""

    request: SignedRequest
    grant: AuthGrant
    action: str
    request_id: str | None
    gate: PharmacyGate = field(repr=False)
    _committed: bool = field(default=False, repr=False)

    @property
    def pharmacy_id(self) -> str:
        return self.grant.pharmacy_id

    def event(self, outcome: str, record: str | None = None, reason: str | None = None) -> AuditEvent:
        """This request's audit event, with its outcome."""
        return AuditEvent(
            actor=f"key:{self.grant.key_id}",
            action=self.action,
            outcome=outcome,
            record=record,
            pharmacy_id=self.grant.pharmacy_id,
            reason=reason,
            at=self.gate.clock(),
            request_id=self.request_id,
            client_ip=(self.request.client_ip or None) if outcome in ADDRESSED_OUTCOMES else None,
        )

    def commit(self, outcome: str, record: str | None = None, reason: str | None = None) -> None:
        """End the request with its audit event alone (nothing else changes)."""
        self.commit_with(self.gate.store.commit_auth, outcome, record, reason)

    def commit_with(
        self,
        write: Callable[[AuthGrant, AuditEvent], T],
        outcome: str,
        record: str | None = None,
        reason: str | None = None,
    ) -> T:
        """End the request with ``write(grant, event)``: a store commit that carries the authentication items,
        the audit event and the request's change in one transaction. Its AuthenticationError is audited.

        A request commits once: a second commit is a programming error. A write that fails for another
        reason (a conflict, a quota) leaves the request open, to be ended by a commit of that outcome.
        """
        if self._committed:
            raise RuntimeError(f"{self.action}: the request already committed")
        try:
            answer = write(self.grant, self.event(outcome, record, reason))
        except AuthenticationError as exc:
            self._committed = True
            self.gate.audit_failure(exc, self.action, self.request_id, self.request.client_ip)
            raise
        self._committed = True
        return answer

    def reject(self, exc: Exception, record: str | None = None) -> NoReturn:
        """Commit a ``rejected`` outcome whose reason is the error's type, then raise ``exc``."""
        self.commit("rejected", record, reason=type(exc).__name__)
        raise exc

    def json_body(self) -> Any:
        """The body as a JSON document. A 415 or 400 is committed as ``rejected`` and raised: it is the answer
        to an authenticated request."""
        try:
            return load_json(self.request.body, self.request.headers.get("content-type"))
        except (UnsupportedMediaTypeError, ValidationError) as exc:
            self.reject(exc)

    def own_result(self, get_result: Callable[[str], ResultRecord | None], result_id: str) -> ResultRecord:
        """The caller's result ``result_id``. Unknown or another pharmacy's is the same NotFoundError (404),
        committed as ``not_found`` (the id is audited only when it is plausible)."""
        plausible = is_plausible_id(result_id)
        record = get_result(result_id) if plausible else None
        if record is None or record.pharmacy_id != self.grant.pharmacy_id:
            self.commit("not_found", result_id if plausible else None, reason="unknown_or_foreign")
            raise NotFoundError("no such result")
        return record


class _DeferredNonce:
    """A NonceStore that remembers the nonce instead of writing it: the commit writes it atomically."""

    def __init__(self) -> None:
        self.nonce: str | None = None
        self.expires_at = 0

    def use_once(self, key_id: str, nonce: str, expires_at: int) -> bool:
        self.nonce = nonce
        self.expires_at = expires_at
        return True
