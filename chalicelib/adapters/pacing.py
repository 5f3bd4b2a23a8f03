"""Account-wide pacing of patient messages: at most ``rate`` per second and ``monthly_budget`` per month,
whatever the number of notifier instances.

SNS's SMS rate and spend limits are per account, not per process: a limiter in each process would multiply the
rate by the notifier's concurrency. Both counters therefore live in the state table, as plain conditional
``UpdateItem`` calls (never transactions, which would conflict with one another):

* ``pace#<channel>#<epoch second>``: sends in that second; ``ADD 1`` only while below the rate. A refused
  caller sleeps to the start of the next second (with a little jitter) and tries again, up to ``max_wait``;
  then :class:`PacingBusyError` leaves the message in its queue (the queue is the buffer).
* ``budget#<channel>#<YYYY-MM>``: sends this month; ``ADD 1`` only while below the budget. Past it,
  :class:`BudgetExhaustedError`: nothing is sent (an alarm fires well before, at ``alarm_ratio``).

One second's slot item takes at most ``rate`` writes: far below a partition's 1,000 writes per second.

Both are taken in blocks (``block``, 5 by default): one ``ADD k`` reserves up to ``k`` slots of the current second,
or ``k`` sends of the month's budget, and the process hands them out until they are used (slots only within their
second). When a whole block no longer fits (the second or the budget nearly full) a single one is asked for. A
notifier sending a batch of results thus makes two pacing writes per five messages instead of two per message
(moto's and DynamoDB's cost; the account's limits hold exactly as before, since nothing is sent that was not
counted). What it costs: slots left unused when their second ends are lost (an instance that reserved five and had
three messages to send: the account sends fewer than ``rate`` that second, never more), and budget reserved by an
instance that stops is never used (at most ``block - 1`` sends per instance and month: the budget stops sends that
many early).

Per pharmacy, :class:`PharmacyDailyCap` bounds what one key can make Relais send: ``cap#<channel>#<pharmacy
id>#<YYYY-MM-DD>`` counts a pharmacy's messages of the UTC day, ``ADD 1`` only while below the cap. It is taken
*before* the account's slot and budget, so that a pharmacy past its cap spends nothing of the account's.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chalicelib.adapters.dynamodb import dynamodb_errors, update_if
from chalicelib.adapters.tables import StateItem
from chalicelib.deadline import seconds_left
from chalicelib.domain.records import seconds_to_midnight_utc
from chalicelib.errors import DependencyUnavailableError, NoSendSlotError, RateLimitedError


class PacingBusyError(NoSendSlotError):
    """No send slot within ``max_wait``: the message stays queued and is retried."""


class BudgetExhaustedError(NoSendSlotError):
    """The month's budget of messages on this channel is spent."""


@dataclass(frozen=True)
class Slot:
    """A send slot granted: the second it belongs to, and the sends counted this month (this one included)."""

    second: int
    month_count: int


@dataclass
class AccountPacer:
    channel: str
    rate: int  # messages per second, whole account
    monthly_budget: int  # messages per calendar month (UTC), whole account; 0: no budget
    max_wait_seconds: float = 20.0  # and never past the invocation's deadline
    on_count: Callable[[str, int, int], None] | None = None  # (channel, month count, budget): the budget metric
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = field(default=random.random)
    block: int = 5  # slots (and budget) reserved per write, see the module
    _slots: tuple[int, int] = field(default=(0, 0), init=False, repr=False)  # (second, its slots still reserved)
    _counts: tuple[str, list[int]] = field(default_factory=lambda: ("", []), init=False, repr=False)  # (month, ...)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def acquire(self) -> Slot:
        """Wait for a send slot, then count the send against the month's budget.

        PacingBusyError when no slot comes within ``max_wait_seconds`` (or the invocation's time),
        BudgetExhaustedError past the month's budget: in both cases nothing may be sent.
        """
        budget = min(self.max_wait_seconds, seconds_left(self.max_wait_seconds))
        waited = 0.0
        while True:
            moment = self.now()
            second = int(moment)
            if self._take_slot(second):
                break
            pause = (second + 1 - moment) + 0.05 * self.jitter()  # the next second, senders spread a little
            if waited + pause > budget:
                raise PacingBusyError(f"{self.channel}-rate")
            self.sleep(pause)
            waited += pause
        count = self._count_in_budget(moment)
        if self.on_count is not None:
            self.on_count(self.channel, count, self.monthly_budget)
        return Slot(second, count)

    def _take_slot(self, second: int) -> bool:
        """One of this process's reserved slots of ``second``, or a new block of them (or a single one)."""
        with self._lock:
            reserved_second, left = self._slots
            if reserved_second == second and left > 0:
                self._slots = (second, left - 1)
                return True
            for size in dict.fromkeys((min(self.block, self.rate), 1)):  # a whole block, else one
                if update_if(
                    StateItem(pk=f"pace#{self.channel}#{second}"),
                    [StateItem.n.add(size), StateItem.expires_at.set(second + 120)],
                    StateItem.n.does_not_exist() | (StateItem.n <= self.rate - size),
                ):
                    self._slots = (second, size - 1)
                    return True
            return False

    def _count_in_budget(self, moment: float) -> int:
        """This send's number in the month: from this process's reserved counts, or a new block of them."""
        month = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m")
        with self._lock:
            reserved_month, counts = self._counts
            if reserved_month == month and counts:
                return counts.pop(0)
            item = StateItem(pk=f"budget#{self.channel}#{month}")
            expires = StateItem.expires_at.set(int(moment) + 40 * 86_400)
            sizes = (self.block, 1) if self.monthly_budget <= 0 else (min(self.block, self.monthly_budget), 1)
            for size in dict.fromkeys(sizes):
                if self.monthly_budget <= 0:  # no budget: count only
                    condition = StateItem.n.does_not_exist() | StateItem.n.exists()
                else:
                    condition = StateItem.n.does_not_exist() | (StateItem.n <= self.monthly_budget - size)
                if update_if(item, [StateItem.n.add(size), expires], condition):
                    last = int(item.n or 0)
                    reserved = list(range(last - size + 1, last + 1))
                    self._counts = (month, reserved[1:])
                    return reserved[0]
            raise BudgetExhaustedError(f"{self.channel}-budget")


@dataclass
class PharmacyDailyCap:
    """At most ``limit`` messages of ``channel`` per pharmacy and UTC day, counted in DynamoDB (all instances)."""

    channel: str
    limit: int
    clock: Callable[[], datetime]

    def _key(self, pharmacy_id: str, moment: datetime) -> str:
        return f"cap#{self.channel}#{pharmacy_id}#{moment.astimezone(UTC).strftime('%Y-%m-%d')}"

    def acquire(self, pharmacy_id: str) -> str:
        """Count one message of this pharmacy today; RateLimitedError (until midnight UTC) past the cap. Returns the
        count's key (its day), which :meth:`release` takes."""
        moment = self.clock()
        key = self._key(pharmacy_id, moment)
        if not update_if(
            StateItem(pk=key),
            [StateItem.n.add(1), StateItem.expires_at.set(int(moment.timestamp()) + 2 * 86_400)],
            StateItem.n.does_not_exist() | (StateItem.n < self.limit),
        ):
            raise self._reached(moment)
        return key

    def release(self, counted: str) -> None:
        """Give back a count (``acquire``'s key: the day it was counted, even once midnight has passed) whose message
        was not sent after all (best effort: a failure here only over-counts)."""
        with contextlib.suppress(DependencyUnavailableError):
            update_if(StateItem(pk=counted), [StateItem.n.add(-1)], StateItem.n > 0)

    def check(self, pharmacy_id: str) -> None:
        """RateLimitedError (until midnight UTC) when this pharmacy's cap is already reached today; counts nothing."""
        moment = self.clock()
        with dynamodb_errors():
            try:
                count = int(StateItem.get(self._key(pharmacy_id, moment), consistent_read=True).n or 0)
            except StateItem.DoesNotExist:
                count = 0
        if count >= self.limit:
            raise self._reached(moment)

    def _reached(self, moment: datetime) -> RateLimitedError:
        return RateLimitedError(
            f"{self.channel} daily cap",
            retry_after=seconds_to_midnight_utc(moment),
            detail=f"this pharmacy's daily {self.channel} limit is reached until midnight UTC",
        )
