"""Simulated market data: a seeded random walk per symbol, or quotes replayed from a CSV.

Each symbol's walk has its own generator seeded from (seed, symbol), so a symbol's prices do not
depend on which other symbols a run trades: the same seed gives the same quotes.
Prices are kept in integer ticks and turned into ``Decimal`` only when quoted.
"""

from __future__ import annotations

import csv
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from engine.domain import Quote


class QuotesFileError(ValueError):
    """A quotes CSV that cannot be read; the message names the line and the column."""


@dataclass(slots=True)
class _Walk:
    rng: random.Random
    tick: Decimal
    mid_ticks: int
    half_spread: int
    vol_ticks: float


class RandomWalkMarket:
    """Quotes on demand: ``step(symbol, ts)`` moves the symbol one step and returns its new quote."""

    def __init__(
        self,
        seed: int,
        tick: Decimal = Decimal("0.01"),
        step_vol_bps: float = 5.0,
        lot: int = 100,
        max_lots: int = 10,
    ) -> None:
        self.seed = seed
        self.tick = tick
        self.step_vol_bps = step_vol_bps
        self.lot = lot
        self.max_lots = max_lots
        self._walks: dict[str, _Walk] = {}
        self._sizes: dict[str, random.Random] = {}

    def _walk(self, symbol: str) -> _Walk:
        walk = self._walks.get(symbol)
        if walk is None:
            rng = random.Random((self.seed << 32) ^ zlib.crc32(symbol.encode()))
            start_price = 20 + rng.random() * 480
            mid_ticks = int(start_price / float(self.tick))
            vol = max(1.0, mid_ticks * self.step_vol_bps / 10_000)
            walk = _Walk(rng, self.tick, mid_ticks, rng.choice((1, 1, 2)), vol)
            self._walks[symbol] = walk
        return walk

    def step(self, symbol: str, ts: datetime) -> Quote:
        w = self._walk(symbol)
        rng = w.rng
        w.mid_ticks = max(w.half_spread + 1, w.mid_ticks + round(rng.gauss(0.0, w.vol_ticks)))
        bid = w.mid_ticks - w.half_spread
        ask = w.mid_ticks + w.half_spread
        last = bid if rng.random() < 0.5 else ask
        tick = w.tick
        return Quote(
            symbol,
            ts,
            bid * tick,
            ask * tick,
            Decimal(self.lot * rng.randint(1, self.max_lots)),
            Decimal(self.lot * rng.randint(1, self.max_lots)),
            last * tick,
        )


REQUIRED_COLUMNS = ("ts", "symbol", "bid", "ask")


def _parse_ts(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def read_quotes_csv(path: Path) -> Iterator[Quote]:
    """Quotes in file order. Columns: ts, symbol, bid, ask, and optionally bid_size, ask_size, last."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise QuotesFileError(f"{path}: missing column(s) {', '.join(missing)}")
        previous: datetime | None = None
        for lineno, row in enumerate(reader, start=2):
            column = "ts"
            try:
                ts = _parse_ts(row["ts"])
                column = "bid"
                bid = Decimal(row["bid"])
                column = "ask"
                ask = Decimal(row["ask"])
                column = "bid_size"
                bid_size = Decimal(row.get("bid_size") or "100")
                column = "ask_size"
                ask_size = Decimal(row.get("ask_size") or "100")
                column = "last"
                last = Decimal(row.get("last") or "0") or (bid + ask) / 2
            except (ValueError, InvalidOperation, TypeError) as exc:
                raise QuotesFileError(f"{path}:{lineno}: bad value in column '{column}': {exc}") from None
            if not (bid.is_finite() and ask.is_finite()) or bid <= 0 or ask < bid:
                raise QuotesFileError(f"{path}:{lineno}: need 0 < bid <= ask, got bid={bid} ask={ask}")
            if previous is not None and ts < previous:
                raise QuotesFileError(f"{path}:{lineno}: timestamps go backwards ({ts} < {previous})")
            previous = ts
            symbol = (row.get("symbol") or "").strip().upper()
            if not symbol:
                raise QuotesFileError(f"{path}:{lineno}: empty symbol")
            yield Quote(symbol, ts, bid, ask, bid_size, ask_size, last)


SIM_START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)  # a fixed start, so seeded runs give identical timestamps

