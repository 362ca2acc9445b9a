"""Dedupe by signal id: exact, whatever the id's age, in bounded memory, cheap on the hot path.

The newest ids are held in memory. An id not among them may still be in the database, and only the
database can say so exactly (a point lookup, a few microseconds). Most lookups can be skipped: this
engine is the only writer of its account's database (the engine lock and the account binding), so an
id can be there only if the database held signals when the session started, or if the id has since
left the memory window; the ids that left are kept in a Bloom filter. A "maybe" from either is asked
of the database; a "no" is certain.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable


class DedupeUnavailable(Exception):
    """Whether a signal id was seen before could not be decided (the database did not answer)."""


class RecentIds:
    """A set with a bounded memory: remembers the last ``capacity`` ids (a daemon must not grow).

    A set for membership and a deque for age: about 60 bytes an id besides the id itself, where an
    OrderedDict took about 130 (two windows of ids are most of a long run's memory)."""

    def __init__(self, capacity: int, initial: Iterable[str] = ()) -> None:
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: deque[str] = deque()
        for i in initial:
            self.add(i)

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already known."""
        ids = self._ids
        if key in ids:
            return False
        ids.add(key)
        order = self._order
        order.append(key)
        if len(order) > self.capacity:
            ids.discard(order.popleft())
        return True

    def oldest_out(self, key: str) -> str | None:
        """Remember ``key`` (not known yet); the id that left the window for it, if one did."""
        self._ids.add(key)
        order = self._order
        order.append(key)
        if len(order) > self.capacity:
            gone = order.popleft()
            self._ids.discard(gone)
            return gone
        return None

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class BloomFilter:
    """A fixed-size set that may answer "maybe" for a key never added, never "no" for one that was."""

    def __init__(self, bits: int = 1 << 24, hashes: int = 4) -> None:
        if bits & (bits - 1):
            raise ValueError("bits must be a power of two")
        self._mask = bits - 1
        self._hashes = hashes
        self._bytes = bytearray(bits >> 3)

    # Every new signal id is asked (and, once the window is full, one is added): the positions are computed in
    # place, not by a generator, which cost ~1 us of the ~1.5 each took (a miss stops at the first clear bit).
    def add(self, key: str) -> None:
        h = hash(key)  # randomised per process: the filter lives only in this process's memory
        step = (h >> 29) | 1
        mask = self._mask
        data = self._bytes
        for i in range(self._hashes):
            p = (h + i * step) & mask
            data[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        h = hash(key)
        step = (h >> 29) | 1
        mask = self._mask
        data = self._bytes
        for i in range(self._hashes):
            p = (h + i * step) & mask
            if not data[p >> 3] & (1 << (p & 7)):
                return False
        return True


class SignalIdIndex:
    """Exact dedupe by signal id. ``lookup`` answers whether the database holds an id (None: memory only,
    for tests and benches); ``database_had_signals`` is whether it held any when the session started."""

    def __init__(self, capacity: int, lookup: Callable[[str], bool] | None = None,
                 initial: Iterable[str] = (), *, database_had_signals: bool = True) -> None:
        self.capacity = capacity
        self._recent = RecentIds(capacity)
        self.lookup = lookup
        self.database_had_signals = database_had_signals
        self.left_window = BloomFilter()
        self.lookups = 0
        for signal_id in initial:
            self.remember(signal_id)

    def add(self, signal_id: str) -> bool:
        """Remember ``signal_id``; False when it was already known. Raises DedupeUnavailable."""
        recent = self._recent
        if signal_id in recent:
            return False
        lookup = self.lookup
        if lookup is not None and (self.database_had_signals or signal_id in self.left_window):
            self.lookups += 1
            try:
                known = lookup(signal_id)
            except Exception as exc:
                raise DedupeUnavailable(f"{type(exc).__name__}: {exc}") from exc
            if known:
                self._remember(signal_id)
                return False
        self._remember(signal_id)
        return True

    def remember(self, signal_id: str) -> None:
        """An id known to be taken (reconciliation adopted its order): no lookup needed."""
        if signal_id not in self._recent:
            self._remember(signal_id)

    def _remember(self, signal_id: str) -> None:
        gone = self._recent.oldest_out(signal_id)
        if gone is not None:
            self.left_window.add(gone)

    def __contains__(self, signal_id: object) -> bool:
        return signal_id in self._recent
