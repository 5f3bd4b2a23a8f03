"""``POST /v1/results/{id}/slip``: a paper slip with a new link, for a patient without a phone or e-mail.

Contract v2 §7. The slip is a link like a message's (``domain/links.py``: only its hash is stored, it expires, it
asks for the birth date and locks after wrong ones) and, like a resend's, it revokes every earlier link of the result
and counts toward the same daily limit (``resend#<result>#<day>``: resends and slips together, 3 a day, then 429).
Nothing is sent: the pharmacy prints the PDF and hands it over.

The PDF is made first, then one transaction ends the request: its authentication, its one audit event (``result.slip``,
with the link's id), the counted resend, the new generation, the link's hash and the result's patient view
(``sent``, the link's expiry, ``paper`` among the channels). A request refused or failed before or at that commit
writes none of it (but its own audit event, as every answered pharmacy request), and a made slip was always stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain.channels import PAPER
from chalicelib.domain.corrections import ResultWithdrawnError
from chalicelib.domain.links import Link, link_expiry, new_token, token_hash
from chalicelib.domain.messages import SlipText, link_url, slip_text
from chalicelib.domain.records import AuditEvent, AuthGrant, Pharmacy, new_id
from chalicelib.errors import FieldError, RateLimitedError, ValidationError
from chalicelib.services.authn import SignedRequest
from chalicelib.services.pharmacy_request import PharmacyGate
from chalicelib.services.ports import ResultStore

ACTION = "result.slip"


class SlipStore(Protocol):
    def commit_slip(
        self,
        store: Any,
        grant: AuthGrant,
        audit: AuditEvent,
        *,
        link: Link,
        channels: list[str],
        day: str,
        limit: int,
        keep_until: int,
    ) -> int: ...


@dataclass
class SlipService:
    gate: PharmacyGate
    results: ResultStore
    link_store: SlipStore
    get_pharmacy: Callable[[str], Pharmacy]
    render: Callable[[SlipText], bytes]  # the PDF (adapters/slip_pdf.py)
    clock: Callable[[], datetime]
    public_base_url: str
    link_ttl_hours: int = 72
    resend_per_day: int = 3  # resends and slips together, per result and UTC day

    def slip(self, request: SignedRequest, result_id: str, *, request_id: str | None = None) -> bytes:
        """Authenticate, check the body (``{}``, or empty), ownership and the daily limit; the slip's PDF.

        Another pharmacy's result is a 404 like a missing one; a withdrawn one is a 409 (nothing to show); past the
        daily limit RateLimitedError (429), nothing written.
        """
        req = self.gate.open(request, ACTION, request_id)
        if request.body and req.json_body() != {}:
            req.reject(ValidationError([FieldError("body", "must be an empty JSON object")]))
        record = req.own_result(self.results.get_result, result_id)
        if record.withdrawn:  # contract v2 §8: a withdrawn result has nothing left to show
            req.reject(ResultWithdrawnError("the result was withdrawn"), result_id)
        now = self.clock()
        token = new_token()
        link = Link(
            link_id=new_id(16),
            token_hash=token_hash(token),
            result_id=record.id,
            pharmacy_id=record.pharmacy_id,
            generation=0,  # the commit stores it at the result's next generation
            created_at=now,
            expires_at=link_expiry(now, self.link_ttl_hours),
        )
        pdf = self.render(
            slip_text(
                pharmacy_name=self.get_pharmacy(record.pharmacy_id).name,
                url=link_url(self.public_base_url, token),
                expires_at=link.expires_at,
                ttl_hours=self.link_ttl_hours,
            )
        )
        channels = list(record.channels) if PAPER in record.channels else [*record.channels, PAPER]
        try:
            req.commit_with(
                lambda grant, event: self.link_store.commit_slip(
                    self.results,
                    grant,
                    event,
                    link=link,
                    channels=channels,
                    day=now.strftime("%Y-%m-%d"),
                    limit=self.resend_per_day,
                    keep_until=record.expires_at,
                ),
                "success",
                result_id,
                reason=f"{PAPER}:link:{link.link_id}",
            )
        except RateLimitedError:
            req.commit("rate_limited", result_id, reason="resend_per_day")
            raise
        return pdf
