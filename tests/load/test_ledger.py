"""Loss accounting: expected receipts per message against the receipts counted."""

from __future__ import annotations

import pytest

from load.ledger import Ledger, Loss, account, merge_receipts


def test_a_message_is_expected_once_per_subscriber_of_its_channel() -> None:
    ledger = Ledger([3, 1, 0])
    for channel in (0, 1, 2, 0):
        ledger.record(channel)
    assert ledger.published == 4
    assert ledger.expected(0, 4) == [3, 1, 0, 3]
    assert ledger.expected(1, 3) == [1, 0]


def test_record_returns_consecutive_sequence_numbers() -> None:
    ledger = Ledger([1])
    assert [ledger.record(0) for _ in range(3)] == [0, 1, 2]


def test_recording_an_unknown_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="channel 2"):
        Ledger([1, 1]).record(2)


def test_everything_received_once_is_no_loss() -> None:
    assert account([2, 2], [2, 2]) == Loss(4, 4, 0, 0)


def test_missing_receipts_are_lost_and_extra_ones_duplicated() -> None:
    loss = account([3, 3, 3], [3, 1, 4])
    assert (loss.lost, loss.duplicated, loss.received, loss.expected) == (2, 1, 8, 9)


def test_a_duplicate_does_not_hide_a_loss_of_another_message() -> None:
    assert account([1, 1], [2, 0]).lost == 1


def test_receipts_beyond_the_range_are_unexpected_not_received() -> None:
    loss = account([1], [1, 5], unexpected=2)
    assert (loss.received, loss.unexpected) == (1, 7)


def test_ledger_accounts_a_range_of_sequence_numbers() -> None:
    ledger = Ledger([2, 1])
    for channel in (0, 1, 0, 1):
        ledger.record(channel)
    assert ledger.account(2, 4, [2, 0]) == Loss(3, 2, 1, 0)


def test_merge_adds_workers_counts_at_their_bases() -> None:
    merged, outside = merge_receipts([(0, [1, 1, 1]), (1, [2, 2]), (0, [])], 0, 3)
    assert merged == [1, 3, 3]
    assert outside == 0


def test_merge_counts_receipts_outside_the_range() -> None:
    merged, outside = merge_receipts([(0, [1, 1, 1, 1]), (5, [1])], 1, 3)
    assert merged == [1, 1]
    assert outside == 3
