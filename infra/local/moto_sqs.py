"""moto's SQS at SQS's cost and with SQS's manners: O(1) sends, receives in O(messages returned), no lost message,
and (when :mod:`infra.local.faults` says so) messages delivered twice and out of order, as a standard queue does.

moto keeps a queue as one list of messages and scans all of it on every operation: a receive builds the list of
visible messages, then reads the queue's attributes for each message it returns (which counts every message three
times, for the retention period): 7 s per receive of 10 at 10,000 messages. A delete or a visibility change scans
every message's receipt handles. So, for standard queues (Relais has no FIFO queue; FIFO queues keep moto's code):

- each queue gets an index (:class:`_Index`): the messages ready to be received, in the order they became ready; a
  heap of the hidden ones (in flight or delayed) by the time they may be visible again; and receipt handle → message.
  A receive takes from the ready ones, so it costs O(messages returned + hidden messages whose time came), never
  O(queue length); a delete or a visibility change finds its message by handle;
- a send reads no queue attribute (it used to count the queue for one flag: O(queue length) per message);
- receives, deletes and visibility changes run under the queue's own lock, as sends do: with concurrent consumers a
  message sent during a delete could vanish, a message could be received twice or come back after its deletion;
- faults (off unless configured): a received message is, at ``duplicate_rate``, delivered once more within
  ``redelivery_seconds`` (a second copy: same MessageId, body and attributes, its own receipt handles), which the
  consumer sees twice (concurrently or after its delete) and out of order; a sent message is, at ``reorder_rate``,
  held back for up to ``redelivery_seconds`` so that later messages overtake it.
"""

from __future__ import annotations

import copy
import functools
import heapq
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from infra.local import faults

_INDEX: Final = "_relais_index"  # on a Queue: its _Index
_HOME: Final = "_relais_home"  # on a Message: the token of the index that holds it (0: none; an int, cheap to copy)
_tokens = itertools.count(1)


def _ready_at(message: Any) -> float:
    """When (unix ms) a message may be received: moto's ``visible`` is ``now > visible_at``, ``delayed`` is
    ``now < delayed_until``."""
    return max(float(message.visible_at), float(message.delayed_until))


def _is_ready(message: Any, now: float) -> bool:
    return bool(now > message.visible_at and now >= message.delayed_until)


@dataclass
class _Index:
    """Where a queue's receive, delete and visibility change find their messages without scanning the queue.

    Invariant: every message of the queue is either in ``ready`` or has an entry in ``hidden`` at the time it will be
    ready; every change of a message's visibility adds an entry, so entries that no longer match are dropped when
    met. Only touched under the queue's lock."""

    token: int = field(default_factory=lambda: next(_tokens))
    ready: deque[Any] = field(default_factory=deque)
    hidden: list[tuple[float, int, Any]] = field(default_factory=list)
    by_handle: dict[str, Any] = field(default_factory=dict)
    order: itertools.count[int] = field(default_factory=itertools.count)

    def holds(self, message: Any) -> bool:
        return getattr(message, _HOME, 0) == self.token

    def adopt(self, message: Any, now: float) -> None:
        setattr(message, _HOME, self.token)
        for handle in message.all_receipt_handles:
            if handle is not None:
                self.by_handle[handle] = message
        self.track(message, now)

    def track(self, message: Any, now: float) -> None:
        """File ``message`` after a change of its visibility: ready now, or hidden until it may be."""
        if _is_ready(message, now):
            self.ready.append(message)
        else:
            heapq.heappush(self.hidden, (_ready_at(message), next(self.order), message))

    def release(self, now: float) -> None:
        """Move the hidden messages whose time has come to the ready ones (stale entries are dropped)."""
        while self.hidden and self.hidden[0][0] < now:
            message = heapq.heappop(self.hidden)[2]
            if self.holds(message) and _is_ready(message, now):
                self.ready.append(message)

    def next_release(self) -> float | None:
        """When (unix ms) the next hidden message may be ready, if any is hidden."""
        return self.hidden[0][0] if self.hidden else None

    def forget(self, message: Any) -> None:
        """``message`` leaves the queue (deleted, expired, moved to the dead-letter queue)."""
        setattr(message, _HOME, 0)
        for handle in message.all_receipt_handles:
            if handle is not None and self.by_handle.get(handle) is message:
                del self.by_handle[handle]


def _index(queue: Any) -> _Index:
    """The queue's index, built (once, O(queue length)) from its messages if it has none yet."""
    index: _Index | None = getattr(queue, _INDEX, None)
    if index is None:
        from moto.core.utils import unix_time_millis

        index = _Index()
        now = unix_time_millis()
        for message in queue._messages:
            index.adopt(message, now)
        setattr(queue, _INDEX, index)
    return index


def _receive_standard(queue: Any, count: int, visibility_timeout: int, attribute_names: list[str]) -> list[Any]:
    """moto's receive for a standard queue (dead-letter redrive, retention, attribute filter), from the index."""
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import _filter_message_attributes

    now = unix_time_millis()
    index = _index(queue)
    index.release(now)
    settings = faults.current()
    retention_ms = int(queue.message_retention_period) * 1000
    redrive = queue.redrive_policy if queue.dead_letter_queue is not None else None
    result: list[Any] = []
    taken: dict[int, Any] = {}
    while index.ready and len(result) < count:
        message = index.ready.popleft()
        if not index.holds(message) or id(message) in taken or not _is_ready(message, now):
            continue  # gone, already in this answer (filed again below), or hidden again (another entry files it)
        taken[id(message)] = message
        if message.sent_timestamp + retention_ms <= now:  # past its retention period: SQS deletes it
            _remove(queue, index, message)
            continue
        if redrive and message.approximate_receive_count >= redrive["maxReceiveCount"]:
            _remove(queue, index, message)
            queue.dead_letter_queue.add_message(message)
            continue
        queue.pending_messages.add(message)
        message.mark_received(visibility_timeout=visibility_timeout)
        index.by_handle[message.receipt_handle] = message
        answer = copy.deepcopy(message)  # moto's: the filter must not change the stored message
        _filter_message_attributes(answer, attribute_names)
        result.append(answer)
        if faults.happens(f"duplicate:{queue.name}", settings.duplicate_rate):
            later = now + 1000 * faults.uniform(f"duplicate-delay:{queue.name}", settings.redelivery_seconds)
            _deliver_again(queue, index, message, at=later, now=now)
    for message in taken.values():
        if index.holds(message):  # received: hidden until its visibility timeout ends (ready again if it is 0)
            index.track(message, now)
    return result


def _remove(queue: Any, index: _Index, message: Any) -> None:
    queue._messages.remove(message)  # identity comparisons at C speed: ~20 µs at 10,000 messages
    queue.pending_messages.discard(message)
    index.forget(message)


def _deliver_again(queue: Any, index: _Index, message: Any, *, at: float, now: float) -> None:
    """A second copy of ``message`` in the queue, hidden until ``at`` (unix ms): what a standard queue's at-least-once
    delivery looks like to a consumer (same MessageId and body; its own receipt handles)."""
    twin = copy.copy(message)
    twin.receipt_handle = None
    twin._old_receipt_handles = []
    twin.visible_at = at
    queue._messages.append(twin)
    index.adopt(twin, now)


def patch_sqs() -> None:
    """Install the index, the locks, the O(1) send and the delivery faults (see the module)."""
    from moto.sqs.models import Queue, SQSBackend

    _send_without_counting_the_queue(Queue, SQSBackend)
    _patch_send(Queue)
    _patch_delete(Queue)
    _patch_visibility(SQSBackend)
    _patch_receive(SQSBackend)
    _patch_purge_and_retention(SQSBackend)


def _patch_send(queue_class: Any) -> None:
    from moto.core.utils import unix_time_millis

    add = queue_class.add_message

    @functools.wraps(add)
    def add_message(self: Any, message: Any) -> None:
        if self.fifo_queue:
            add(self, message)
            return
        settings = faults.current()
        if faults.happens(f"reorder:{self.name}", settings.reorder_rate):
            held = unix_time_millis() + 1000 * faults.uniform(f"reorder-delay:{self.name}", settings.redelivery_seconds)
            message.delayed_until = max(float(message.delayed_until), held)
        with self._messages_lock:  # re-entrant: moto's add takes it too (moto's own Lambda pollers are not indexed)
            index = _index(self)  # before the message is in the queue: the index is built without it
            add(self, message)
            index.adopt(message, unix_time_millis())

    queue_class.add_message = add_message


def _patch_delete(queue_class: Any) -> None:
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    delete = queue_class.delete_message

    @functools.wraps(delete)
    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            if self.fifo_queue:
                delete(self, receipt_handle)
                return
            if receipt_handle in self.deleted_messages:
                return  # deleting again succeeds, as in moto and SQS
            index = _index(self)
            message = index.by_handle.get(receipt_handle)
            if message is None or not index.holds(message):
                raise ReceiptHandleIsInvalid()
            self.deleted_messages.update(message.all_receipt_handles)
            _remove(self, index, message)

    queue_class.delete_message = delete_message


def _patch_visibility(backend_class: Any) -> None:
    from moto.core.utils import unix_time_millis
    from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid

    change = backend_class.change_message_visibility

    @functools.wraps(change)
    def change_message_visibility(self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            if queue.fifo_queue:
                change(self, queue_name, receipt_handle, visibility_timeout)
                return
            index = _index(queue)
            message = index.by_handle.get(receipt_handle)
            if message is None or not index.holds(message):
                raise ReceiptHandleIsInvalid()
            now = unix_time_millis()
            if now + int(visibility_timeout) * 1000 - message.sent_timestamp > 43200 * 1000:
                raise InvalidParameterValue(
                    f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: Total "
                    "VisibilityTimeout for the message is beyond the limit [43200 seconds]"
                )
            message.change_visibility(visibility_timeout)
            if message.visible:
                queue.pending_messages.discard(message)
            index.track(message, now)

    backend_class.change_message_visibility = change_message_visibility


def _patch_receive(backend_class: Any) -> None:
    from moto.core.utils import unix_time, unix_time_millis

    receive = backend_class.receive_message

    @functools.wraps(receive)
    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        queue = self.get_queue(queue_name)
        polling_end = unix_time() + (wait_seconds_timeout or 0)
        while True:
            with queue._messages_lock:
                if queue.fifo_queue:
                    messages = receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
                else:
                    messages = _receive_standard(queue, count, visibility_timeout, message_attribute_names or [])
                remaining = polling_end - unix_time()
                if messages or remaining <= 0:
                    return list(messages)
                # A long poll: woken by a send, or when the next hidden message may be visible (at most 1 s).
                wait = min(1.0, remaining)
                upcoming = None if queue.fifo_queue else _index(queue).next_release()
                if upcoming is not None:
                    wait = max(0.001, min(wait, (upcoming - unix_time_millis()) / 1000 + 0.001))
                queue._messages_lock.wait(wait)

    backend_class.receive_message = receive_message


def _patch_purge_and_retention(backend_class: Any) -> None:
    from moto.core.utils import unix_time

    purge = backend_class.purge_queue

    @functools.wraps(purge)
    def purge_queue(self: Any, queue_name: str) -> None:
        queue = self.get_queue(queue_name)
        with queue._messages_lock:
            purge(self, queue_name)
            if hasattr(queue, _INDEX):
                delattr(queue, _INDEX)  # the purged messages keep the old token: nothing finds them any more

    backend_class.purge_queue = purge_queue

    @functools.wraps(backend_class.is_message_valid_based_on_retention_period)
    def within_retention(self: Any, queue_name: str, message: Any) -> bool:  # FIFO receives: without counting
        period = int(self.get_queue(queue_name).message_retention_period)
        return bool(period + message.sent_timestamp / 1000 > unix_time())

    backend_class.is_message_valid_based_on_retention_period = within_retention


_sending = threading.local()


def _send_without_counting_the_queue(queue_class: Any, backend_class: Any) -> None:
    """moto's SendMessage reads ``queue.attributes`` for one flag, which counts every message in the queue three
    times (visible, delayed, in flight): each send costs O(queue length), a backlog O(n²). The counts are discarded
    there, so during a send they read as 0.

    Elsewhere (``GetQueueAttributes``, which a drain check polls) they are counted with one clock read per count
    where moto reads the clock (a ``datetime``) once or twice per message: at 1,000 queued messages a
    ``GetQueueAttributes`` took ~10 ms of moto's CPU, as much as a whole intake; the counts are the same."""
    from moto.core.utils import unix_time_millis

    def visible_now(queue: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in queue._messages if now > m.visible_at and now >= m.delayed_until)

    def delayed(queue: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in queue._messages if now < m.delayed_until)

    def not_visible(queue: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in queue._messages if now <= m.visible_at)

    for name, counted in (
        ("approximate_number_of_messages", visible_now),
        ("approximate_number_of_messages_delayed", delayed),
        ("approximate_number_of_messages_not_visible", not_visible),
    ):
        doc = getattr(queue_class, name).__doc__

        def count(self: Any, __counted: Any = counted) -> int:
            return 0 if getattr(_sending, "active", False) else int(__counted(self))

        setattr(queue_class, name, property(count, doc=doc))

    original = backend_class.send_message

    @functools.wraps(original)
    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        _sending.active = True
        try:
            return original(self, *args, **kwargs)
        finally:
            _sending.active = False

    backend_class.send_message = send_message
