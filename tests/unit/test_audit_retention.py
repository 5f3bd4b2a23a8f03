"""Where the audit chain's verification starts and which events may have expired (issue 11, item 11): pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chalicelib.domain.audit_chain import GENESIS, Checkpoint, retention_window

NOW = datetime(2027, 6, 1, tzinfo=UTC)
YEAR = timedelta(days=366)


def _checkpoint(seq: int, at: datetime, oldest: datetime | None = None) -> Checkpoint:
    return Checkpoint(seq, f"{seq:064x}", at, oldest or at - timedelta(seconds=5))


def test_without_a_checkpoint_past_retention_verification_starts_at_genesis():
    window = retention_window([_checkpoint(3, NOW - timedelta(days=2))], now=NOW, retention=YEAR)
    assert (window.start_seq, window.start_link) == (0, GENESIS)
    assert not any(window.may_have_expired(seq) for seq in (1, 2, 3))


def test_verification_starts_at_the_newest_checkpoint_past_retention():
    checkpoints = [
        _checkpoint(3, NOW - YEAR - timedelta(days=9)),
        _checkpoint(5, NOW - YEAR - timedelta(hours=1)),
        _checkpoint(9, NOW - timedelta(hours=1)),
    ]
    window = retention_window(checkpoints, now=NOW, retention=YEAR)
    assert (window.start_seq, window.start_link) == (5, f"{5:064x}")
    assert [window.may_have_expired(seq) for seq in (4, 5, 6, 9, 10)] == [True, True, False, False, False]


def test_a_batch_whose_oldest_event_is_past_retention_may_have_lost_its_events_before_its_seal_is():
    checkpoints = [_checkpoint(2, NOW - YEAR - timedelta(days=1)), _checkpoint(6, NOW, oldest=NOW - YEAR)]
    window = retention_window(checkpoints, now=NOW, retention=YEAR)
    assert window.start_seq == 2
    assert [window.may_have_expired(seq) for seq in (3, 6, 7)] == [True, True, False]


def test_seals_without_times_prove_links_but_neither_start_nor_expiry():
    checkpoints = [Checkpoint(4, "a" * 64), _checkpoint(8, NOW - timedelta(minutes=1))]
    window = retention_window(checkpoints, now=NOW + YEAR, retention=YEAR)
    assert window.start_seq == 8
    assert not window.may_have_expired(3)
    assert window.may_have_expired(5)
