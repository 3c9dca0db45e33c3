"""IN lists: every value asked for, in few statement texts."""

from __future__ import annotations

from mentorpulse.storage.batch import CHUNK, in_lists


def test_in_lists_keep_every_value_and_only_those() -> None:
    for n in (1, 2, 7, 8, 9, 500, CHUNK, CHUNK + 1, 3 * CHUNK - 5):
        items = list(range(n))
        lists = list(in_lists(items))
        assert sorted({v for chunk in lists for v in chunk}) == items
        assert all(len(chunk) <= CHUNK for chunk in lists)


def test_a_query_over_any_number_of_values_has_at_most_ten_lengths() -> None:
    # Each length is a statement the driver prepares and caches apart.
    lengths = {len(chunk) for n in range(1, 2 * CHUNK) for chunk in in_lists(range(n))}
    assert len(lengths) <= 10
