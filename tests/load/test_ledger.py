"""Loss accounting: expected receipts per message against the receipts counted."""

from __future__ import annotations

import pytest

from load.ledger import OPEN, Ledger, Loss, account, expected_in_windows, merge_receipts


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


def test_the_ledger_keeps_each_messages_channel_and_publish_time() -> None:
    ledger = Ledger([1, 1])
    ledger.record(1, 500)
    ledger.record(0)
    assert (ledger.channels(0, 2), ledger.stamps(0, 2)) == ([1, 0], [500, 0])


def test_a_message_is_expected_once_per_window_of_its_channel_holding_its_time() -> None:
    windows = [(0, 100, OPEN), (0, 150, 300), (1, 0, OPEN)]
    # times:        99   100  150  299  300  400
    channels = [0, 0, 0, 0, 0, 0, 1]
    stamps = [99, 100, 150, 299, 300, 400, 5]
    assert expected_in_windows(channels, stamps, windows) == [0, 1, 2, 2, 1, 1, 1]


def test_restart_rules_a_client_counts_before_the_cut_and_again_once_back() -> None:
    """A client subscribed at 10, cut at 100 (its first window ends), back at 250: it
    expects what was published in [10, 100) and from 250 on; not the outage between."""
    cut, back = 100, 250
    windows = [(0, 10, cut), (0, back, OPEN)]
    stamps = [5, 10, 99, 100, 200, 249, 250, 900]
    assert expected_in_windows([0] * len(stamps), stamps, windows) == [0, 1, 1, 0, 0, 0, 1, 1]


def test_empty_windows_and_channels_without_windows_expect_nothing() -> None:
    assert expected_in_windows([0, 1], [50, 50], [(0, 60, 60), (0, 70, 40)]) == [0, 0]
