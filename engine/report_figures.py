"""The numbers of a session report, computed from what the database holds: pure functions, no I/O.

Money follows the engine's own accounting (``Position.apply``: average cost), replayed over the stored fills,
so the report's realized P&L and commissions are the positions table's. Positions held when the period
starts are replayed from the fills before it and marked at their first price seen in the period: the
period's P&L counts only what moved inside it. Marks are the prices the period saw: each signal's reference
price (the quote the engine sized it on) and each fill's price.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from engine.domain import ZERO, Fill, Position, Side

if TYPE_CHECKING:
    from repositories.report_data import OrderRecord, ReportRecords

CARRIED_IN = "(carried in)"  # the strategy row of the positions the period started with
BPS = Decimal(10_000)
CENT = Decimal("0.01")


class RejectSource(StrEnum):
    """Where a rejection was recorded: a valid signal the engine refused, or a line that was no signal."""

    SIGNAL = "signal"
    LINE = "line"


@dataclass(frozen=True, slots=True)
class EquityPoint:
    ts: datetime
    equity: Decimal
    drawdown: Decimal  # equity less its running peak (0 or negative)
    drawdown_pct: Decimal  # the same as a percentage of the peak


@dataclass(frozen=True, slots=True)
class PnlRow:
    """One symbol's or one strategy's P&L over the period."""

    name: str
    fills: int
    bought: Decimal
    sold: Decimal
    realized: Decimal
    unrealized: Decimal  # the change of open positions' value at the last marks
    commissions: Decimal
    net: Decimal  # realized + unrealized - commissions


@dataclass(frozen=True, slots=True)
class PricePoint:
    ts: datetime
    symbol: str
    price: Decimal


@dataclass(frozen=True, slots=True)
class FillPoint:
    ts: datetime
    symbol: str
    strategy: str
    side: Side
    quantity: Decimal
    price: Decimal
    exec_id: str
    client_order_id: str


@dataclass(frozen=True, slots=True)
class RejectRow:
    code: str
    source: RejectSource
    count: int


@dataclass(frozen=True, slots=True)
class LatencyRow:
    """One order from its signal's time: to the order leaving the engine, to the broker's answer, to its first
    fill (milliseconds; None when it never got there)."""

    client_order_id: str
    symbol: str
    strategy: str
    signal_ts: datetime
    to_order_ms: float
    to_broker_ms: float | None
    to_fill_ms: float | None


@dataclass(frozen=True, slots=True)
class SlippageRow:
    """A filled order's average price against the reference price its signal was sized on. Positive is a cost:
    paid above it to buy, received below it to sell."""

    client_order_id: str
    ts: datetime
    symbol: str
    strategy: str
    side: Side
    filled: Decimal
    ref_price: Decimal
    avg_price: Decimal
    per_share: Decimal
    bps: Decimal
    cost: Decimal


@dataclass(slots=True)
class ReportFigures:
    title: str
    totals: dict[str, Decimal | int]
    equity: list[EquityPoint] = field(default_factory=list)
    by_symbol: list[PnlRow] = field(default_factory=list)
    by_strategy: list[PnlRow] = field(default_factory=list)
    prices: list[PricePoint] = field(default_factory=list)
    fills: list[FillPoint] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)
    slippage: list[SlippageRow] = field(default_factory=list)


def opening_positions(fills: Iterable[Fill]) -> dict[str, Position]:
    """The positions (with their P&L so far) these fills leave, booked in order as the engine books them."""
    books: dict[str, Position] = {}
    for f in fills:
        books.setdefault(f.symbol, Position(f.symbol)).apply(f)
    return books


def price_path(records: ReportRecords) -> list[PricePoint]:
    """Every price the period saw, in time order: signals' reference prices and fills' prices."""
    points = [PricePoint(s.ts, s.symbol, s.ref_price) for s in records.signals if s.ref_price is not None]
    points.extend(PricePoint(f.ts, f.symbol, f.price) for f in records.fills)
    points.sort(key=lambda p: p.ts)  # stable: at one instant the signal's quote comes before its fill
    return points


def fill_points(records: ReportRecords) -> list[FillPoint]:
    strategies = _strategies(records.orders)
    return [FillPoint(f.ts, f.symbol, strategies.get(f.client_order_id, CARRIED_IN), f.side, f.quantity, f.price,
                      f.exec_id, f.client_order_id) for f in records.fills]


def _strategies(orders: Iterable[OrderRecord]) -> dict[str, str]:
    return {o.client_order_id: o.strategy for o in orders}


@dataclass(slots=True)
class _Book:
    """A position with its counts and its value at the period's first mark (what its unrealized P&L starts from)."""

    position: Position
    opening_unrealized: Decimal = ZERO
    opening_realized: Decimal = ZERO
    opening_commissions: Decimal = ZERO
    fills: int = 0
    bought: Decimal = ZERO
    sold: Decimal = ZERO

    def book(self, f: Fill) -> None:
        self.position.apply(f)
        self.fills += 1
        if f.side is Side.BUY:
            self.bought += f.quantity
        else:
            self.sold += f.quantity

    def row(self, name: str, mark: Decimal | None) -> PnlRow:
        p = self.position
        unrealized = (p.unrealized(mark) if mark is not None else ZERO) - self.opening_unrealized
        realized = p.realized_pnl - self.opening_realized
        commissions = p.commissions - self.opening_commissions
        return PnlRow(name, self.fills, self.bought, self.sold, realized, unrealized, commissions,
                      realized + unrealized - commissions)


def _first_marks(prices: list[PricePoint]) -> dict[str, Decimal]:
    first: dict[str, Decimal] = {}
    for p in prices:
        first.setdefault(p.symbol, p.price)
    return first


def _opening_books(records: ReportRecords, first: dict[str, Decimal]) -> dict[str, _Book]:
    books: dict[str, _Book] = {}
    for symbol, pos in opening_positions(records.opening_fills).items():
        mark = first.get(symbol)
        books[symbol] = _Book(pos, pos.unrealized(mark) if mark is not None else ZERO, pos.realized_pnl,
                              pos.commissions)
    return books


def equity_curve(records: ReportRecords, base_equity: Decimal, prices: list[PricePoint]) -> list[EquityPoint]:
    """Equity after each instant of the period: ``base_equity`` (the configured equity) plus P&L so far of every
    position (those carried in marked from their first price in the period), less commissions.

    One point per instant: at one timestamp a signal's quote is marked before its fill is booked."""
    first = _first_marks(prices)
    books = _opening_books(records, first)
    marks = dict(first)
    realized = sum((b.position.realized_pnl for b in books.values()), ZERO)
    commissions = sum((b.position.commissions for b in books.values()), ZERO)
    unrealized = {s: b.opening_unrealized for s, b in books.items()}
    # The period starts with the carried positions at their first marks: base equity plus what was realized.
    base = base_equity + realized - commissions + sum(unrealized.values(), ZERO)
    events: list[tuple[datetime, int, PricePoint | Fill]] = [
        (s.ts, 0, PricePoint(s.ts, s.symbol, s.ref_price)) for s in records.signals if s.ref_price is not None]
    events.extend((f.ts, 1, f) for f in records.fills)
    events.sort(key=lambda e: (e[0], e[1]))
    points: list[EquityPoint] = []
    peak: Decimal | None = None
    open_unrealized = sum(unrealized.values(), ZERO)
    last_ts: datetime | None = None
    equity = base
    for ts, _, ev in events:
        if last_ts is not None and ts != last_ts:
            peak = _point(points, last_ts, equity, peak)
        last_ts = ts
        symbol = ev.symbol
        book = books.get(symbol)
        if isinstance(ev, Fill):
            if book is None:
                book = books[symbol] = _Book(Position(symbol))
            before_realized, before_comm = book.position.realized_pnl, book.position.commissions
            book.book(ev)
            realized += book.position.realized_pnl - before_realized
            commissions += book.position.commissions - before_comm
        marks[symbol] = ev.price
        if book is not None:
            value = book.position.unrealized(marks[symbol])
            open_unrealized += value - unrealized.get(symbol, ZERO)
            unrealized[symbol] = value
        equity = base_equity + realized - commissions + open_unrealized
    if last_ts is not None:
        _point(points, last_ts, equity, peak)
    return points


def _point(points: list[EquityPoint], ts: datetime, equity: Decimal, peak: Decimal | None) -> Decimal:
    peak = equity if peak is None or equity > peak else peak
    drawdown = equity - peak
    pct = (drawdown / peak * 100) if peak else ZERO
    points.append(EquityPoint(ts, equity.quantize(CENT), drawdown.quantize(CENT), pct.quantize(Decimal("0.0001"))))
    return peak


def pnl_tables(records: ReportRecords, prices: list[PricePoint]) -> tuple[list[PnlRow], list[PnlRow]]:
    """P&L by symbol, and by strategy (each strategy's own positions, replayed from its fills alone; the positions
    the period started with form their own row). Both tables add up to the same net P&L. Not rounded."""
    first = _first_marks(prices)
    last: dict[str, Decimal] = {}
    for p in prices:
        last[p.symbol] = p.price
    by_symbol = _opening_books(records, first)
    carried = {s: _Book(Position(s, b.position.quantity, first.get(s, b.position.avg_cost)))
               for s, b in by_symbol.items() if b.position.quantity}
    strategies = _strategies(records.orders)
    by_strategy: dict[str, dict[str, _Book]] = defaultdict(dict)
    if carried:
        by_strategy[CARRIED_IN] = carried
    for f in records.fills:
        by_symbol.setdefault(f.symbol, _Book(Position(f.symbol))).book(f)
        strategy = strategies.get(f.client_order_id, CARRIED_IN)
        by_strategy[strategy].setdefault(f.symbol, _Book(Position(f.symbol))).book(f)
    symbol_rows = [b.row(s, last.get(s)) for s, b in sorted(by_symbol.items())
                   if b.fills or b.position.quantity]
    strategy_rows = [_sum_rows(name, [b.row(s, last.get(s)) for s, b in books.items()])
                     for name, books in sorted(by_strategy.items())]
    return symbol_rows, strategy_rows


def _sum_rows(name: str, rows: list[PnlRow]) -> PnlRow:
    return PnlRow(name, sum(r.fills for r in rows), sum((r.bought for r in rows), ZERO),
                  sum((r.sold for r in rows), ZERO), sum((r.realized for r in rows), ZERO),
                  sum((r.unrealized for r in rows), ZERO), sum((r.commissions for r in rows), ZERO),
                  sum((r.net for r in rows), ZERO))


def _cents(r: PnlRow) -> PnlRow:
    return PnlRow(r.name, r.fills, r.bought, r.sold, r.realized.quantize(CENT), r.unrealized.quantize(CENT),
                  r.commissions.quantize(CENT), r.net.quantize(CENT))


def reject_table(records: ReportRecords) -> list[RejectRow]:
    """Rejections by reason code, most frequent first."""
    signals = Counter(s.reason_code for s in records.signals if s.client_order_id is None and s.reason_code)
    lines = Counter(r.reason_code for r in records.line_rejects)
    rows = [RejectRow(code, RejectSource.SIGNAL, n) for code, n in signals.items()]
    rows.extend(RejectRow(code, RejectSource.LINE, n) for code, n in lines.items())
    rows.sort(key=lambda r: (-r.count, r.code, r.source))
    return rows


def _ms(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds() * 1000, 3)


def latency_table(records: ReportRecords) -> list[LatencyRow]:
    """Each order that came from a signal of the period: signal to order, to the broker's answer, to first fill."""
    signals = {s.signal_id: s for s in records.signals}
    first_fill: dict[str, datetime] = {}
    for f in records.fills:
        if f.client_order_id not in first_fill or f.ts < first_fill[f.client_order_id]:
            first_fill[f.client_order_id] = f.ts
    rows = []
    for o in records.orders:
        s = signals.get(o.signal_id) if o.signal_id is not None and o.entry is None else None
        if s is None:  # engine-made, or a bracket's exit (it trades when the market says, not the signal)
            continue
        filled = first_fill.get(o.client_order_id)
        rows.append(LatencyRow(
            o.client_order_id, o.symbol, o.strategy, s.ts, _ms(o.created_at, s.ts),
            None if o.acked_at is None else _ms(o.acked_at, s.ts), None if filled is None else _ms(filled, s.ts)))
    rows.sort(key=lambda r: (r.signal_ts, r.client_order_id))
    return rows


def slippage_table(records: ReportRecords) -> list[SlippageRow]:
    """Each filled order whose signal has a reference price: its average fill price against that price."""
    refs = {s.signal_id: s.ref_price for s in records.signals if s.ref_price is not None}
    qty: dict[str, Decimal] = defaultdict(lambda: ZERO)
    notional: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for f in records.fills:
        qty[f.client_order_id] += f.quantity
        notional[f.client_order_id] += f.quantity * f.price
    rows = []
    for o in records.orders:
        ref = refs.get(o.signal_id) if o.signal_id is not None and o.entry is None else None
        filled = qty.get(o.client_order_id, ZERO)
        if ref is None or not filled:
            continue
        avg = notional[o.client_order_id] / filled
        per_share = avg - ref if o.side is Side.BUY else ref - avg
        rows.append(SlippageRow(o.client_order_id, o.created_at, o.symbol, o.strategy, o.side, filled, ref,
                                avg.quantize(Decimal("0.0001")), per_share.quantize(Decimal("0.0001")),
                                (per_share / ref * BPS).quantize(Decimal("0.01")),
                                (per_share * filled).quantize(Decimal("0.01"))))
    rows.sort(key=lambda r: (r.ts, r.client_order_id))
    return rows


def build_figures(records: ReportRecords, base_equity: Decimal) -> ReportFigures:
    """Every table of the report."""
    prices = price_path(records)
    by_symbol, by_strategy = pnl_tables(records, prices)
    slippage = slippage_table(records)
    accepted = sum(1 for s in records.signals if s.client_order_id is not None)
    totals: dict[str, Decimal | int] = {
        "signals": len(records.signals) + len(records.line_rejects),
        "accepted": accepted,
        "rejected": len(records.signals) - accepted + len(records.line_rejects),
        "orders": len(records.orders),
        "fills": len(records.fills),
        "realized_pnl": sum((r.realized for r in by_symbol), ZERO).quantize(CENT),
        "unrealized_pnl": sum((r.unrealized for r in by_symbol), ZERO).quantize(CENT),
        "commissions": sum((r.commissions for r in by_symbol), ZERO).quantize(CENT),
        "net_pnl": sum((r.net for r in by_symbol), ZERO).quantize(CENT),
        "slippage_cost": sum((r.cost for r in slippage), ZERO),
    }
    return ReportFigures(
        records.title, totals, equity_curve(records, base_equity, prices), [_cents(r) for r in by_symbol],
        [_cents(r) for r in by_strategy], prices,
        fill_points(records), reject_table(records), latency_table(records), slippage)
