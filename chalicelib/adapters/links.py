"""Patient links, send claims and patient-side counters in the STATE table (pynamodb).

Keys hold only hashes and opaque ids:

* ``link#<sha256 of the token>``: one link (result id, generation, expiry, wrong-date counter);
* ``linkcur#<result id>``: the current link *generation* of a result (``n``; absent = 0). A resend bumps
  it, which revokes every link of older generations at once (checked on each view);
* ``notify#<result id>#<generation>``: the send claim of one generation: a lease, and which channels
  were already sent, so that a redelivered queue message never sends a second SMS;
* ``resend#<result id>#<YYYY-MM-DD>``: resends and paper slips per result and day;
* ``ipfail#<sha256 of stage|client address>#<window>``: patient failures per client address and window.

Every item has a TTL (``expires_at``); expiry of a link is also checked in code (``domain/links.py``).
Counters are single atomic ``UpdateItem`` calls with conditions, so they stay right under concurrency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model

from chalicelib.adapters.audit import audit_item
from chalicelib.adapters.dynamodb import dynamodb_errors, retrying_conflicts, update_if
from chalicelib.adapters.results_store import DynamoStore
from chalicelib.adapters.tables import ResultItem, StateItem, TableMeta, epoch_seconds
from chalicelib.adapters.tables import connection as dynamodb_connection
from chalicelib.adapters.transaction import Transaction
from chalicelib.config import Settings
from chalicelib.domain.channels import channel_spec
from chalicelib.domain.links import ClaimBusyError, Link, SendRecord, SupersededError
from chalicelib.domain.records import AuditEvent, AuthGrant, seconds_to_midnight_utc
from chalicelib.errors import DependencyUnavailableError, RateLimitedError, SendNotRecordedError

#: Whatever the TTL of a link, its item is kept this long after expiry (so a late click is "expired",
#: audited with its link id, rather than "unknown"), then DynamoDB deletes it.
LINK_ITEM_GRACE = timedelta(days=7)


class LinkItem(Model):
    """State table, ``pk = "link#<token sha256>"``."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    expires_at = NumberAttribute()  # TTL (epoch seconds)
    link_id = UnicodeAttribute()
    result_id = UnicodeAttribute()
    pharmacy_id = UnicodeAttribute()
    generation = NumberAttribute()
    created_at = UTCDateTimeAttribute()
    link_expires_at = UTCDateTimeAttribute()
    attempts = NumberAttribute(default=0)
    revoked_at = UTCDateTimeAttribute(null=True)


class ClaimItem(Model):
    """State table, ``pk = "notify#<result id>#<generation>"``: the send claim of one generation."""

    class Meta(TableMeta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    expires_at = NumberAttribute()
    lease_until = NumberAttribute(default=0)
    sms_sent_at = UTCDateTimeAttribute(null=True)
    email_sent_at = UTCDateTimeAttribute(null=True)
    link_expires_at = UTCDateTimeAttribute(null=True)
    done_at = UTCDateTimeAttribute(null=True)


#: The claim's "sent at" attribute of each channel (a test checks it covers ``domain.channels.CHANNELS``).
SENT_AT: dict[str, UTCDateTimeAttribute] = {"sms": ClaimItem.sms_sent_at, "email": ClaimItem.email_sent_at}


def _sent_actions(send: SendRecord) -> list[Action]:
    """The claim's update for one channel sent: its own attribute (the send's time), and the link's expiry (or none)."""
    attribute = SENT_AT[channel_spec(send.channel).name]  # an unknown channel raises: never recorded as another
    expiry = ClaimItem.link_expires_at
    return [attribute.set(send.audit.at), expiry.set(send.link_expires_at) if send.link_expires_at else expiry.remove()]


def bind_link_tables(settings: Settings) -> None:
    """Point the link models at the state table of ``settings`` (idempotent)."""
    for model in (LinkItem, ClaimItem):
        if model.Meta.table_name != settings.state_table or model.Meta.region != settings.region:
            model.Meta.table_name = settings.state_table
            model.Meta.region = settings.region
            model._connection = None


def next_generation(tx: Transaction, result_id: str, previous: int, keep_until: int) -> None:
    """Add to ``tx`` the move of the result's link generation from ``previous`` to the next one (item
    ``generation``): every link of an older generation is revoked once ``tx`` commits."""
    tx.update(
        "generation",
        StateItem(pk=f"linkcur#{result_id}"),
        actions=[StateItem.n.set(previous + 1), StateItem.expires_at.set(keep_until)],
        condition=StateItem.n.does_not_exist() if previous == 0 else (StateItem.n == previous),
    )


def claim_key(result_id: str, generation: int) -> str:
    """The key of a generation's send claim."""
    return f"notify#{result_id}#{generation}"


#: How many generations, the current one included, are asked whether a message may be on its way: a notifier's
#: lease (2 minutes) can outlive a few moves of the generation (resends, slips, corrections: a few a day), not more.
RECENT_GENERATIONS = 5


def recent_generations(generation: int) -> range:
    """``generation`` and the ones before it whose message may still be on its way (:data:`RECENT_GENERATIONS`)."""
    return range(max(0, generation - RECENT_GENERATIONS + 1), generation + 1)


def require_no_message_out(tx: Transaction, result_id: str, generation: int, now: int) -> list[str]:
    """Add to ``tx`` the check that no message of ``generation`` or of the generations just before it is out or on
    its way: each send claim never taken, or its lease run out with no channel sent and the generation not done.
    (A notifier checks the generation only once it holds the lease: once ``tx`` moves the generation on, no message
    of an earlier one can go out.) The names of the checks, for :meth:`Transaction.failed`."""
    nothing_sent = ClaimItem.done_at.does_not_exist()
    for attribute in SENT_AT.values():
        nothing_sent = nothing_sent & attribute.does_not_exist()
    names = []
    for earlier in recent_generations(generation):
        names.append(f"claim{earlier}")
        tx.check(
            names[-1],
            ClaimItem,
            claim_key(result_id, earlier),
            condition=ClaimItem.pk.does_not_exist() | ((ClaimItem.lease_until < now) & nothing_sent),
        )
    return names


def link_key(token_sha256: str) -> str:
    return f"link#{token_sha256}"


@dataclass(frozen=True)
class Claim:
    """What a send claim says: channels already sent, and whether the generation is done."""

    sent: frozenset[str]
    done: bool
    link_expires_at: datetime | None


class LinkStore:
    """Links, send claims, resend and failure counters (see the module docstring for the keys)."""

    def __init__(self, *, region: str, audit_retention_days: int, clock: Callable[[], datetime]) -> None:
        self._connection = dynamodb_connection(region)
        self._audit_retention_days = audit_retention_days
        self._clock = clock

    # -- links --------------------------------------------------------------------------------------
    def put_link(self, link: Link) -> None:
        """Store a new link (its hash only); a hash collision is impossible in practice and refused."""
        item = _link_item(link, generation=link.generation)
        with dynamodb_errors():
            item.save(condition=LinkItem.pk.does_not_exist())

    def find_link(self, token_sha256: str) -> tuple[Link | None, int]:
        """The link of this hash and its result's current generation (``None, 0`` when unknown).

        Always two consistent reads, known token or not, so that both cases take similar time.
        """
        with dynamodb_errors():
            try:
                item: LinkItem | None = LinkItem.get(link_key(token_sha256), consistent_read=True)
            except LinkItem.DoesNotExist:
                item = None
            generation = self._generation(item.result_id if item else f"none-{token_sha256[:16]}")
        if item is None:
            return None, 0
        link = Link(
            link_id=item.link_id,
            token_hash=token_sha256,
            result_id=item.result_id,
            pharmacy_id=item.pharmacy_id,
            generation=int(item.generation),
            created_at=item.created_at,
            expires_at=item.link_expires_at,
            attempts=int(item.attempts or 0),
            revoked=item.revoked_at is not None,
        )
        return link, generation

    def reserve_attempt(self, token_sha256: str, lock_attempts: int) -> int | None:
        """Reserve one birth-date comparison of this link: the attempts counted with it, ``None`` when none is left.

        One conditional ``ADD`` made *before* comparing: at most ``lock_attempts`` reservations ever succeed,
        whatever the concurrency, so at most that many wrong dates are ever compared. A right date gives its
        reservation back (:meth:`release_attempt`); a wrong one keeps it (the link locks at ``lock_attempts``).
        """
        item = LinkItem(pk=link_key(token_sha256))
        if not update_if(item, [LinkItem.attempts.add(1)], LinkItem.pk.exists() & (LinkItem.attempts < lock_attempts)):
            return None
        return int(item.attempts)

    def release_attempt(self, token_sha256: str) -> None:
        """Give back the reservation of a comparison that found the right date (never below zero)."""
        update_if(LinkItem(pk=link_key(token_sha256)), [LinkItem.attempts.add(-1)], LinkItem.attempts > 0)

    def _generation(self, result_id: str) -> int:
        try:
            item = StateItem.get(f"linkcur#{result_id}", consistent_read=True)
        except StateItem.DoesNotExist:
            return 0
        return int(item.n or 0)

    def current_generation(self, result_id: str) -> int:
        """The result's current link generation (0 until the first resend)."""
        with dynamodb_errors():
            return self._generation(result_id)

    # -- per-client failures ------------------------------------------------------------------------
    def reserve_client_attempt(self, client_key: str, window: int, window_seconds: int, limit: int) -> bool:
        """Count one attempt against this client's window *before* answering it; False at ``limit`` (nothing
        written). Every attempt counts as a failure until :meth:`release_client_attempt` takes it back, so at most
        ``limit`` failures per window are ever answered, whatever the concurrency."""
        item = StateItem(pk=f"ipfail#{client_key}#{window}")
        expires = (window + 2) * window_seconds
        return update_if(
            item,
            [StateItem.n.add(1), StateItem.expires_at.set(expires)],
            StateItem.n.does_not_exist() | (StateItem.n < limit),
        )

    def release_client_attempt(self, client_key: str, window: int) -> None:
        """Take back the attempt of a request that succeeded (never below zero)."""
        update_if(StateItem(pk=f"ipfail#{client_key}#{window}"), [StateItem.n.add(-1)], StateItem.n > 0)

    # -- send claims --------------------------------------------------------------------------------
    def acquire_claim(self, result_id: str, generation: int, *, lease_seconds: int, keep_until: int) -> Claim:
        """Take the lease of a generation's send claim; ClaimBusyError while someone else holds it.

        A claim already done is returned as such (nothing is leased: the caller has nothing to do).
        """
        now = epoch_seconds(self._clock())
        item = ClaimItem(pk=claim_key(result_id, generation))
        if update_if(
            item,
            [ClaimItem.lease_until.set(now + lease_seconds), ClaimItem.expires_at.set(keep_until)],
            (ClaimItem.pk.does_not_exist() | (ClaimItem.lease_until < now)) & ClaimItem.done_at.does_not_exist(),
        ):
            return self._claim(item)
        with dynamodb_errors():
            current = ClaimItem.get(item.pk, consistent_read=True)
        if current.done_at is None:
            raise ClaimBusyError(int(current.lease_until or 0) - now)
        return self._claim(current)

    def may_have_sent(self, result_id: str, generation: int) -> bool:
        """Whether a message of ``generation``, or of the generations just before it (:func:`recent_generations`),
        may have reached the patient: a channel sent, a generation done, or a lease held now (a notifier between its
        send and its record of it, or still to send)."""
        now = epoch_seconds(self._clock())
        keys = [claim_key(result_id, earlier) for earlier in recent_generations(generation)]
        with dynamodb_errors():
            items = list(ClaimItem.batch_get(keys, consistent_read=True))
        for item in items:
            claim = self._claim(item)
            if claim.done or claim.sent or int(item.lease_until or 0) >= now:
                return True
        return False

    @staticmethod
    def _claim(item: ClaimItem) -> Claim:
        sent = {name for name, attribute in SENT_AT.items() if getattr(item, attribute.attr_name) is not None}
        return Claim(sent=frozenset(sent), done=item.done_at is not None, link_expires_at=item.link_expires_at)

    def record_send(self, result_id: str, generation: int, send: SendRecord) -> None:
        """Mark one channel sent for this generation, write its audit event and the result's ``patient_sent_at``
        (the patient was given a message: a later correction's says "corrected", a withdrawal's is due, even when
        the attempt then fails on another channel or a resend supersedes it), atomically. SendNotRecordedError when
        it cannot be written."""
        claim = ClaimItem(pk=claim_key(result_id, generation))
        tx = Transaction(self._connection)
        tx.update("claim", claim, actions=_sent_actions(send))
        tx.put("audit", audit_item(send.audit, self._audit_retention_days))
        result = ResultItem(id=result_id)
        tx.update(
            "result", result, actions=[ResultItem.patient_sent_at.set(send.audit.at)], condition=ResultItem.id.exists()
        )
        try:
            committed = tx.commit()
        except Exception as exc:
            raise SendNotRecordedError("dynamodb") from exc
        if not committed:  # the result is gone (erased): nothing to record it on
            raise SendNotRecordedError("dynamodb")

    def release_claim(self, result_id: str, generation: int) -> None:
        """Give the lease back after a failure, so that the retry need not wait for it to run out."""
        claim = ClaimItem(pk=claim_key(result_id, generation))
        with dynamodb_errors():
            retrying_conflicts(
                lambda: claim.update(actions=[ClaimItem.lease_until.set(0)], condition=ClaimItem.pk.exists())
            )

    def finish(
        self,
        result_id: str,
        generation: int,
        *,
        sent_at: datetime,
        link_expires_at: datetime | None,
        last_send: SendRecord | None = None,
    ) -> None:
        """Close the claim and set the result's patient status to ``sent``, if the generation is still current
        (``link_expires_at`` None: the message had no link), recording ``last_send`` (the attempt's last channel sent,
        which :meth:`record_send` has not written) in the same transaction: one write after a send, not two.

        Raises SupersededError when a resend moved the generation on meanwhile. Whatever happens to the status, the
        last send is recorded, as :meth:`record_send` would have (its audit event included): on its own after a
        failed or refused transaction, before the error is raised.
        """
        expiry = ResultItem.link_expires_at
        try:
            self._set_status(
                result_id,
                generation,
                [
                    ResultItem.patient_status.set("sent"),
                    ResultItem.patient_sent_at.set(sent_at),
                    expiry.set(link_expires_at) if link_expires_at else expiry.remove(),
                ],
                close_claim_at=sent_at,
                last_send=last_send,
            )
        except (SupersededError, DependencyUnavailableError):
            if last_send is not None:
                self.record_send(result_id, generation, last_send)
            raise

    def mark_failed(self, result_id: str, generation: int) -> None:
        """Set the result's patient status to ``failed`` (last attempt), if the generation is still current and its
        claim not closed: a copy of the message that sent it meanwhile (and set ``sent``) is never overwritten."""
        self._set_status(
            result_id, generation, [ResultItem.patient_status.set("failed")], close_claim_at=None, claim_open=True
        )

    def reopen(self, result_id: str, generation: int) -> bool:
        """Set a ``failed`` patient status back to ``pending`` for a dead-lettered notification of the current
        generation sent back to work (``relais dlq redrive --queue notify``): the notifier acknowledges a result
        that is not ``pending`` without sending. False, changing nothing, when there is nothing to reopen: the status
        is not ``failed`` (sent or pending meanwhile), a newer generation (a resend, a slip, a correction) superseded
        the letter, or the result is gone."""
        try:
            return self._set_status(
                result_id,
                generation,
                [ResultItem.patient_status.set("pending")],
                close_claim_at=None,
                result_condition=ResultItem.patient_status == "failed",
            )
        except SupersededError:
            return False

    def _set_status(
        self,
        result_id: str,
        generation: int,
        actions: list[Action],
        close_claim_at: datetime | None,
        last_send: SendRecord | None = None,
        result_condition: Condition | None = None,
        claim_open: bool = False,
    ) -> bool:
        """One transaction: the generation still current, the result's ``actions`` (if it exists and meets
        ``result_condition``), the claim closed at ``close_claim_at`` with ``last_send`` recorded, or (``claim_open``)
        checked not closed. True once written; False when ``result_condition`` or ``claim_open`` (given) was not met;
        SupersededError when the generation moved."""
        if generation == 0:
            condition = StateItem.n.does_not_exist() | (StateItem.n == 0)
        else:
            condition = StateItem.n == generation
        required = ResultItem.id.exists() if result_condition is None else ResultItem.id.exists() & result_condition
        tx = Transaction(self._connection)
        tx.check("generation", StateItem, f"linkcur#{result_id}", condition=condition)
        tx.update("result", ResultItem(id=result_id), actions=actions, condition=required)
        if claim_open:
            pk = claim_key(result_id, generation)
            tx.check("claim_open", ClaimItem, pk, condition=ClaimItem.done_at.does_not_exist())
        if close_claim_at is not None:
            claim_actions: list[Action] = [ClaimItem.done_at.set(close_claim_at)]
            if last_send is not None:
                claim_actions += _sent_actions(last_send)
            tx.update("claim", ClaimItem(pk=claim_key(result_id, generation)), actions=claim_actions)
            if last_send is not None:
                tx.put("audit", audit_item(last_send.audit, self._audit_retention_days))
        if tx.commit():
            return True
        if tx.failed("generation"):
            raise SupersededError("generation superseded")
        if (result_condition is not None and tx.failed("result")) or (claim_open and tx.failed("claim_open")):
            return False
        raise DependencyUnavailableError("dynamodb")

    # -- resend and slip ---------------------------------------------------------------------------------
    def commit_resend(
        self,
        store: DynamoStore,
        grant: AuthGrant,
        audit: AuditEvent,
        *,
        result_id: str,
        day: str,
        limit: int,
        keep_until: int,
    ) -> int:
        """Authenticate (nonce, key, pharmacy), count the resend, move to a new generation, set the patient
        status back to ``pending`` and audit — one transaction. Returns the new generation.

        RateLimitedError past ``limit`` resends for ``day`` (nothing written); AuthenticationError when
        the key, pharmacy or nonce no longer hold; DependencyUnavailableError on a concurrent resend.
        """
        return self._commit_new_link(
            store,
            grant,
            audit,
            result_id=result_id,
            day=day,
            limit=limit,
            keep_until=keep_until,
            result_actions=[ResultItem.patient_status.set("pending")],
        )

    def commit_slip(
        self,
        store: DynamoStore,
        grant: AuthGrant,
        audit: AuditEvent,
        *,
        link: Link,
        channels: list[str],
        day: str,
        limit: int,
        keep_until: int,
    ) -> int:
        """A paper slip's link (contract v2 §7): as :meth:`commit_resend` (authenticated, counted against the same
        daily limit, a new generation that revokes every earlier link, audited), and in the same transaction the
        link itself (its hash, at the new generation) and the result's patient view: ``sent`` now, until the link's
        expiry, on ``channels``. Nothing is written unless all is. Returns the new generation."""
        return self._commit_new_link(
            store,
            grant,
            audit,
            result_id=link.result_id,
            day=day,
            limit=limit,
            keep_until=keep_until,
            result_actions=[
                ResultItem.patient_status.set("sent"),
                ResultItem.patient_sent_at.set(link.created_at),
                ResultItem.link_expires_at.set(link.expires_at),
                ResultItem.channels.set(channels),  # type: ignore[arg-type] # pynamodb stores the str list
            ],
            link=link,
        )

    def _commit_new_link(
        self,
        store: DynamoStore,
        grant: AuthGrant,
        audit: AuditEvent,
        *,
        result_id: str,
        day: str,
        limit: int,
        keep_until: int,
        result_actions: list[Action],
        link: Link | None = None,
    ) -> int:
        previous = self.current_generation(result_id)
        now = self._clock()

        tx = store.authenticated(grant)
        tx.put("audit", audit_item(audit, self._audit_retention_days))
        tx.update(
            "resends",
            StateItem(pk=f"resend#{result_id}#{day}"),
            actions=[StateItem.n.add(1), StateItem.expires_at.set(epoch_seconds(now + timedelta(days=2)))],
            condition=StateItem.n.does_not_exist() | (StateItem.n < limit),
        )
        next_generation(tx, result_id, previous, keep_until)
        tx.update("result", ResultItem(id=result_id), actions=result_actions, condition=ResultItem.id.exists())
        if link is not None:
            tx.put("link", _link_item(link, generation=previous + 1), condition=LinkItem.pk.does_not_exist())
        if tx.commit():
            return previous + 1
        if tx.failed("resends"):
            raise RateLimitedError("resend limit reached", retry_after=seconds_to_midnight_utc(now))
        raise DependencyUnavailableError("dynamodb", retry_after=1)


def _link_item(link: Link, *, generation: int) -> LinkItem:
    """The stored form of ``link`` (its hash only), at ``generation``."""
    return LinkItem(
        pk=link_key(link.token_hash),
        expires_at=epoch_seconds(link.expires_at + LINK_ITEM_GRACE),
        link_id=link.link_id,
        result_id=link.result_id,
        pharmacy_id=link.pharmacy_id,
        generation=generation,
        created_at=link.created_at,
        link_expires_at=link.expires_at,
        attempts=link.attempts,
    )
