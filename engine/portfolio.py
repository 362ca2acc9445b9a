"""The portfolio: positions, P&L, commissions, equity and exposure, as the sum of the fills booked.

Fills are booked once each (by execution id); an execution correction replaces the fill it names, in the
position and in P&L, as if the broker had reported it in the first place, for as long as that fill is in
the recent-fills memory. Exposure (position plus what
is working, at the last price seen) is marked one symbol at a time, so gross and net cost nothing per
signal. No I/O, no bus: the engine publishes what the portfolio changes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from decimal import Decimal

from engine.dedupe import RecentIds
from engine.domain import ZERO, Fill, Order, Position, Quote
from risk.checks import ExposureBook

RECENT_FILLS = 10_000  # fills kept in memory so an execution correction can find the one it replaces

PositionState = tuple[Decimal, Decimal, Decimal, Decimal, Decimal | None, Decimal | None]  # Position.state


class Portfolio:
    def __init__(self, equity: Decimal, positions: Iterable[Position] = (), exec_capacity: int = 50_000,
                 recent_fills: int = RECENT_FILLS) -> None:
        self.initial_equity = equity  # the configured equity the books start from
        self.positions: dict[str, Position] = {p.symbol: p for p in positions}
        self.realized_pnl = sum((p.realized_pnl for p in self.positions.values()), ZERO)
        self.commissions = sum((p.commissions for p in self.positions.values()), ZERO)
        self.exposure = ExposureBook()
        self.exec_ids = RecentIds(exec_capacity)  # this session's; earlier ones: reconciliation reads the DB
        # Fills by execution id with the position as it was before each, so a correction can replace one.
        self.recent_fills: OrderedDict[str, tuple[Fill, Order | None, PositionState]] = OrderedDict()
        self._recent_cap = recent_fills
        # Unrealized P&L kept up to date one symbol at a time (at each quote and each fill), so equity costs
        # nothing per call: re-marking every position on every signal and fill was ~4 us each.
        self._marks: dict[str, Decimal] = {}
        self._unrealized: dict[str, Decimal] = {}
        self.unrealized = ZERO

    def quantity(self, symbol: str) -> Decimal:
        pos = self.positions.get(symbol)
        return pos.quantity if pos is not None else ZERO

    def is_new_execution(self, exec_id: str) -> bool:
        """Remember an execution id; False when it was booked already (a repeat report)."""
        return self.exec_ids.add(exec_id)

    def book(self, fill: Fill, order: Order | None) -> Position:
        """Book a fill (not a correction) in its position, P&L and commissions; returns the position."""
        symbol = fill.symbol
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        if self._recent_cap:
            recent = self.recent_fills
            recent[fill.exec_id] = (fill, order, pos.state)
            if len(recent) > self._recent_cap:
                recent.popitem(last=False)
        self.realized_pnl += pos.apply(fill)
        self.commissions += fill.commission
        self._remark(pos)
        return pos

    def correct(self, fill: Fill) -> tuple[Fill, Order | None, Position] | None:
        """Book a correction in place of the fill it names: (that fill, its order, the position), or None when
        that fill is no longer in memory (nothing is booked then).

        The position goes back to what it was before the corrected fill and takes the correction and every
        later fill of its symbol again, so quantity, average cost, realized P&L and commissions are what they
        would have been had the broker reported the corrected execution in the first place.
        """
        assert fill.corrects is not None
        recent = self.recent_fills
        known = recent.get(fill.corrects)
        if known is None:
            return None
        old, order, before = known
        symbol = fill.symbol
        pos = self.positions[symbol]
        realized, commissions = pos.realized_pnl, pos.commissions
        pos.restore(before)
        rebuilt: OrderedDict[str, tuple[Fill, Order | None, PositionState]] = OrderedDict()
        replay = False
        for exec_id, (f, o, state) in recent.items():  # corrections are rare: one pass over the memory
            if exec_id == fill.corrects:
                rebuilt[fill.exec_id] = (fill, order, before)
                pos.apply(fill)
                replay = True
            elif replay and f.symbol == symbol:
                rebuilt[exec_id] = (f, o, pos.state)
                pos.apply(f)
            else:
                rebuilt[exec_id] = (f, o, state)
        self.recent_fills = rebuilt
        self.realized_pnl += pos.realized_pnl - realized
        self.commissions += pos.commissions - commissions
        self._remark(pos)
        return old, order, pos

    def mark(self, symbol: str, working: Decimal, price: Decimal | None = None) -> Decimal:
        """Set ``symbol``'s exposure to its position plus ``working`` at ``price`` (default: its last price)."""
        pos = self.positions.get(symbol)
        return self.exposure.mark(symbol, (pos.quantity if pos is not None else ZERO) + working, price)

    def on_price(self, symbol: str, price: Decimal) -> None:
        """A new reference price for ``symbol`` (every quote the broker sees): its unrealized P&L follows."""
        self._marks[symbol] = price
        pos = self.positions.get(symbol)
        if pos is not None:
            self._remark(pos)

    def _remark(self, pos: Position) -> None:
        mark = self._marks.get(pos.symbol)
        value = pos.unrealized(mark) if mark is not None else ZERO
        self.unrealized += value - self._unrealized.get(pos.symbol, ZERO)
        self._unrealized[pos.symbol] = value

    def book_equity(self) -> Decimal:
        """The configured equity plus realized P&L, less commissions, plus open positions at their last price."""
        return self.initial_equity + self.realized_pnl - self.commissions + self.unrealized

    def marked_equity(self, quote: Callable[[str], Quote | None]) -> Decimal:
        """The same, every position marked afresh at ``quote`` (what ``book_equity`` must always equal)."""
        unrealized = ZERO
        for pos in self.positions.values():
            if pos.quantity:
                q = quote(pos.symbol)
                if q is not None:
                    unrealized += pos.unrealized(q.reference)
        return self.initial_equity + self.realized_pnl - self.commissions + unrealized
