"""Dedupe is exact whatever an id's age, and asks the database only when the answer could be yes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from engine.dedupe import BloomFilter, SignalIdIndex
from risk.triggers import DayBoundary


class Database:
    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.asked: list[str] = []

    def __call__(self, signal_id: str) -> bool:
        self.asked.append(signal_id)
        return signal_id in self.held


def test_a_new_id_is_not_asked_of_a_database_that_held_no_signals_at_the_start() -> None:
    db = Database(set())
    index = SignalIdIndex(10, db, database_had_signals=False)
    assert all(index.add(f"s{i}") for i in range(5)) and db.asked == []


def test_an_id_that_left_the_memory_window_is_asked_of_the_database_and_found() -> None:
    db = Database(set())
    index = SignalIdIndex(3, db, database_had_signals=False)
    for i in range(10):
        index.add(f"s{i}")
        db.held.add(f"s{i}")  # the recorder committed it
    assert index.add("s0") is False and db.asked == ["s0"]


def test_every_new_id_is_asked_when_the_database_held_signals_at_the_start() -> None:
    db = Database({"old"})
    index = SignalIdIndex(10, db, database_had_signals=True)
    assert index.add("old") is False and index.add("new") is True and db.asked == ["old", "new"]


@given(st.sets(st.text(min_size=1, max_size=20), max_size=200))
def test_a_bloom_filter_never_forgets_a_key(keys: set[str]) -> None:
    bloom = BloomFilter(bits=1 << 12)
    for k in keys:
        bloom.add(k)
    assert all(k in bloom for k in keys)


def test_a_bloom_filter_says_no_for_nearly_every_key_never_added() -> None:
    """A "maybe" costs a database lookup on the signal path: a filter far from full must rarely say it."""
    bloom = BloomFilter(bits=1 << 16)
    for i in range(1000):
        bloom.add(f"in-{i}")
    assert sum(f"out-{i}" in bloom for i in range(1000)) <= 10


@given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
       st.sampled_from(["America/New_York", "Europe/London", "Asia/Tokyo", "UTC"]),
       st.sampled_from([time(0, 0), time(3, 0), time(17, 0), time(23, 30)]))
def test_a_trading_day_begins_and_ends_where_day_of_changes(now: datetime, zone: str, rollover: time) -> None:
    boundary = DayBoundary(ZoneInfo(zone), rollover)
    day = boundary.day_of(now)
    begins, ends = boundary.bounds(day)
    assert begins <= now < ends
    assert boundary.day_of(ends) != day and boundary.day_of(ends - timedelta(microseconds=1)) == day
