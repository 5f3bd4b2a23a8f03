"""``POST /v1/results/{id}/resend``: a new link for the patient, older ones revoked.

The resend is counted, the link generation bumped (revoking every older link) and the audit event written in
the same transaction that ends the request (its nonce, key and pharmacy checks). The new link is then sent at
once, in the request; when that fails, the job goes to the notify queue (``enqueue``) and is retried like any
notification.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from chalicelib.domain.channels import message_channels
from chalicelib.domain.corrections import ResultWithdrawnError
from chalicelib.domain.records import AuditEvent, AuthGrant
from chalicelib.errors import ConflictError, FieldError, RateLimitedError, ValidationError
from chalicelib.services.authn import SignedRequest
from chalicelib.services.notify import NotifyService, QueueNotify, send_in_request
from chalicelib.services.pharmacy_request import PharmacyGate
from chalicelib.services.ports import ResultStore


class NoChannelError(ConflictError):
    """The patient asked for no message (none, or only a paper slip): there is nothing to resend (HTTP 409)."""

    detail: ClassVar[str] = (
        "the patient asked for no message: there is nothing to resend (a paper slip is made with /slip)"
    )


class ResendStore(Protocol):
    def commit_resend(
        self, store: Any, grant: AuthGrant, audit: AuditEvent, *, result_id: str, day: str, limit: int, keep_until: int
    ) -> int: ...


@dataclass
class ResendService:
    gate: PharmacyGate
    results: ResultStore
    link_store: ResendStore
    notifier: NotifyService
    enqueue: QueueNotify
    clock: Callable[[], datetime]
    resend_per_day: int = 3
    request_seconds: int = 10  # the API function's time limit (send_in_request's backstop arrives after it)

    def resend(self, request: SignedRequest, result_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        """Authenticate, check the body, ownership and the daily limit, revoke, issue and send; the 202 body.

        The body is ``{}`` (an empty body is accepted too); anything else is 400, a non-JSON type 415.
        """
        req = self.gate.open(request, "result.resend", request_id)
        if request.body and req.json_body() != {}:
            req.reject(ValidationError([FieldError("body", "must be an empty JSON object")]))
        record = req.own_result(self.results.get_result, result_id)
        if record.withdrawn:  # contract v2 §8: a withdrawn result has nothing left to show
            req.reject(ResultWithdrawnError("the result was withdrawn"), result_id)
        if not message_channels(record.channels):  # paper only: the pharmacy makes a new slip instead
            req.commit("rejected", result_id, reason="no_channel")
            raise NoChannelError("no channel to resend on")
        for channel in record.channels:  # refused before counting a resend that could not be sent
            cap = self.notifier.caps.get(channel)
            try:
                if cap is not None:
                    cap.check(req.pharmacy_id)
            except RateLimitedError:
                req.commit("rate_limited", result_id, reason=f"{channel}_per_pharmacy_day")
                raise
        try:
            generation = req.commit_with(
                lambda grant, event: self.link_store.commit_resend(
                    self.results,
                    grant,
                    event,
                    result_id=result_id,
                    day=self.clock().strftime("%Y-%m-%d"),
                    limit=self.resend_per_day,
                    keep_until=record.expires_at,
                ),
                "success",
                result_id,
            )
        except RateLimitedError:
            req.commit("rate_limited", result_id, reason="resend_per_day")
            raise
        send_in_request(self.notifier.notify, self.enqueue, result_id, generation, request_seconds=self.request_seconds)
        updated = self.results.get_result(result_id) or record
        return {"id": result_id, "patient": updated.patient_view()}
