"""The simulated exchange: resting orders, matching against quotes, executions and commissions.

Shared by the in-process ``PaperBroker`` and the simulated IB Gateway, so both give the same fills
for the same quotes. Market orders take the touch (plus slippage) up to the displayed size; what is
left waits for the next quotes. Limit orders rest until the market crosses them. Stops trigger on
the last price and then behave as market (STP) or limit (STP LMT) orders. Each quote's displayed
size is consumed by the orders that trade against it, so two orders cannot both take it.

Brackets work as at IB: a child order (``parent_id``) waits, PreSubmitted, until its parent has filled
completely, and is cancelled with it; an execution in an OCA group cancels the other orders (ocaType 1)
or reduces them by as much (2, 3: a partly filled take profit leaves the stop for what is left).
Orders the exchange cancels by these rules are kept for ``drain_cancelled``, so the broker adapters
can report them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from broker.ib_codes import IbStatus
from engine.domain import ZERO, Fill, OrderType, Position, Quote, Side, TimeInForce


@dataclass(frozen=True, slots=True)
class CommissionSchedule:
    """Per-share pricing with a per-order minimum and a cap as a share of trade value (IB fixed, US stocks)."""

    per_share: Decimal = Decimal("0.005")
    min_per_order: Decimal = Decimal("1.00")
    max_pct_of_value: Decimal = Decimal("0.01")

    def order_total(self, quantity: Decimal, value: Decimal) -> Decimal:
        total = max(quantity * self.per_share, self.min_per_order)
        total = min(total, value * self.max_pct_of_value)
        return total.quantize(Decimal("0.0001"), ROUND_HALF_EVEN)


@dataclass(slots=True)
class SimOrder:
    order_id: int
    perm_id: int
    ref: str  # the client order id (IB orderRef)
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MKT
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    account: str = ""
    client_id: int = 0
    active_at: datetime | None = None
    filled: Decimal = ZERO
    avg_price: Decimal = ZERO
    commission: Decimal = ZERO
    status: IbStatus = IbStatus.SUBMITTED
    triggered: bool = False
    parent_id: int | None = None  # the order this one waits for (a bracket's exit waits for its entry)
    parent: SimOrder | None = None  # that order itself, when the caller has it (it may be done already)
    oca_group: str = ""
    oca_type: int = 2  # IB's ocaType: 1 cancels the others on an execution, 2 and 3 reduce them by it
    extra: dict[str, object] = field(default_factory=dict)  # adapter-owned (e.g. the gateway's raw fields)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_done(self) -> bool:
        return self.status.is_final


@dataclass(frozen=True, slots=True)
class Execution:
    """One execution: the fill it reports (made once: the account's position takes it first, then the broker's
    listener), with the order's running totals and what it realized."""

    fill: Fill
    order: SimOrder
    cum_qty: Decimal
    avg_price: Decimal
    realized: Decimal = ZERO  # P&L this execution realized on the account's position (IB's commission report)

    @property
    def exec_id(self) -> str:
        return self.fill.exec_id

    @property
    def quantity(self) -> Decimal:
        return self.fill.quantity

    @property
    def price(self) -> Decimal:
        return self.fill.price

    @property
    def commission(self) -> Decimal:
        return self.fill.commission

    @property
    def ts(self) -> datetime:
        return self.fill.ts


class MatchingEngine:
    def __init__(
        self,
        commission: CommissionSchedule | None = None,
        slippage_ticks: int = 0,
        latency: timedelta = timedelta(0),
        exec_prefix: str = "0000a001",
        tick: Decimal = Decimal("0.01"),
    ) -> None:
        self.commission = commission or CommissionSchedule()
        self.slippage_ticks = slippage_ticks
        self.latency = latency
        self.exec_prefix = exec_prefix
        self.tick = tick
        self.quotes: dict[str, Quote] = {}
        self._avail: dict[str, list[Decimal]] = {}  # symbol -> [bid size left, ask size left] of the quote
        self._working: dict[str, dict[int, SimOrder]] = {}
        self.orders: dict[int, SimOrder] = {}  # live orders only (working or held): memory stays flat
        self.positions: dict[str, Position] = {}
        self._exec_seq = 0
        self._held: dict[int, list[SimOrder]] = {}  # parent order id -> children waiting for it to fill
        self._oca: dict[str, dict[int, SimOrder]] = {}  # OCA group -> its working members
        self.rule_cancels: list[tuple[SimOrder, str]] = []  # cancelled by the exchange's rules, not yet reported

    # -- order entry -------------------------------------------------------------------------------
    def add(self, order: SimOrder, now: datetime) -> list[Execution]:
        """Accept an order; return what it executes immediately."""
        if self.latency:
            order.active_at = now + self.latency
        if order.parent_id is not None:
            parent = order.parent or self.orders.get(order.parent_id)
            order.parent = None  # not kept: a live child must not pin its done parent
            if parent is None or (parent.is_done and parent.status != IbStatus.FILLED):
                order.status = IbStatus.CANCELLED
                self.rule_cancels.append((order, f"parent order {order.parent_id} is not working"))
                return []
            self.orders[order.order_id] = order
            if parent.status != IbStatus.FILLED:
                order.status = IbStatus.PRE_SUBMITTED  # held until the parent fills
                self._held.setdefault(parent.order_id, []).append(order)
                return []
        self.orders[order.order_id] = order
        self._activate(order)
        if order.active_at is not None and order.active_at > now:
            return []
        executions = self._match_order(order, now)
        if order.tif is TimeInForce.IOC and not order.is_done:
            self._finish(order, IbStatus.CANCELLED)
        return executions

    def modify(self, order_id: int, quantity: Decimal, limit: Decimal | None, stop: Decimal | None) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None or order.is_done:
            raise ValueError(f"order {order_id} is not working")
        if quantity < order.filled:
            raise ValueError(f"order {order_id}: new quantity {quantity} below filled {order.filled}")
        order.quantity, order.limit_price, order.stop_price = quantity, limit, stop
        if order.remaining == 0:
            self._finish(order, IbStatus.FILLED)
        return order

    def rematch(self, order_id: int, now: datetime) -> list[Execution]:
        """Match a working order against the current quote again (after a modify moved its price)."""
        order = self.orders.get(order_id)
        if order is None or order.is_done or (order.active_at is not None and order.active_at > now):
            return []
        return self._match_order(order, now)

    def cancel(self, order_id: int) -> SimOrder | None:
        """Cancel a working order; None when it is unknown or already done (IB 10147 / 10148)."""
        order = self.orders.get(order_id)
        if order is None or order.is_done:
            return None
        self._finish(order, IbStatus.CANCELLED)
        return order

    def drain_cancelled(self) -> list[tuple[SimOrder, str]]:
        """Orders the exchange cancelled by its own rules (OCA, a cancelled parent) since the last call."""
        cancelled, self.rule_cancels = self.rule_cancels, []
        return cancelled

    def working(self, symbol: str | None = None) -> list[SimOrder]:
        if symbol is not None:
            return list(self._working.get(symbol, {}).values())
        return [o for book in self._working.values() for o in book.values()]

    # -- market data -------------------------------------------------------------------------------
    def on_quote(self, quote: Quote) -> list[Execution]:
        self.quotes[quote.symbol] = quote
        self._avail[quote.symbol] = [quote.bid_size, quote.ask_size]
        book = self._working.get(quote.symbol)
        if not book:
            return []
        executions: list[Execution] = []
        avail = self._avail[quote.symbol]
        for order in list(book.values()):
            bid_left, ask_left = avail
            if bid_left <= 0 and ask_left <= 0:
                break  # this quote's displayed size is gone: nothing else can trade on it
            if (ask_left if order.side is Side.BUY else bid_left) <= 0 and order.tif is not TimeInForce.IOC:
                continue
            if order.active_at is not None and order.active_at > quote.ts:
                continue
            executions.extend(self._match_order(order, quote.ts))
            if order.tif is TimeInForce.IOC and not order.is_done:
                self._finish(order, IbStatus.CANCELLED)
        return executions

    # -- internals ---------------------------------------------------------------------------------
    def _activate(self, order: SimOrder) -> None:
        self._working.setdefault(order.symbol, {})[order.order_id] = order
        if order.oca_group:
            self._oca.setdefault(order.oca_group, {})[order.order_id] = order

    def _finish(self, order: SimOrder, status: IbStatus) -> None:
        order.status = status
        self.orders.pop(order.order_id, None)  # done: its executions and the adapters keep what they need
        if order.parent_id is not None:  # a held child cancelled before its parent filled: never revived
            waiting = self._held.get(order.parent_id)
            if waiting is not None:
                waiting[:] = [c for c in waiting if c is not order]
        book = self._working.get(order.symbol)
        if book is not None:
            book.pop(order.order_id, None)
        if order.oca_group:
            group = self._oca.get(order.oca_group)
            if group is not None:
                group.pop(order.order_id, None)
                if not group:
                    del self._oca[order.oca_group]
        children = self._held.pop(order.order_id, None)
        if children is None:
            return
        for child in children:
            if child.is_done:
                continue
            if status == IbStatus.FILLED:  # the entry is in: its exits start working (a stop waits, PreSubmitted)
                stop = child.order_type in (OrderType.STP, OrderType.STP_LMT)
                child.status = IbStatus.PRE_SUBMITTED if stop else IbStatus.SUBMITTED
                self._activate(child)
            else:
                child.status = IbStatus.CANCELLED
                self.rule_cancels.append((child, f"parent order {order.order_id} {status}"))

    def _oca_execution(self, order: SimOrder, quantity: Decimal) -> None:
        group = self._oca.get(order.oca_group)
        if not group:
            return
        for sibling in [o for o in group.values() if o is not order]:
            if order.oca_type != 1:  # reduced in proportion (a bracket's exits are the same size: by as much)
                sibling.quantity = max(sibling.filled, sibling.quantity - quantity * sibling.quantity / order.quantity)
                if sibling.remaining > 0:
                    continue
            self._finish(sibling, IbStatus.CANCELLED)
            self.rule_cancels.append((sibling, f"OCA group {order.oca_group}: order {order.order_id} executed"))

    def _match_order(self, order: SimOrder, now: datetime) -> list[Execution]:
        quote = self.quotes.get(order.symbol)
        if quote is None or order.is_done:
            return []
        avail = self._avail[order.symbol]
        buy = order.side is Side.BUY
        if order.order_type in (OrderType.STP, OrderType.STP_LMT) and not order.triggered:
            stop = order.stop_price
            if stop is None or (quote.last < stop if buy else quote.last > stop):
                return []
            order.triggered = True
        limit = order.limit_price if order.order_type in (OrderType.LMT, OrderType.STP_LMT) else None
        touch = quote.ask if buy else quote.bid
        if limit is None:
            slip = self.tick * self.slippage_ticks
            price = touch + slip if buy else touch - slip
        else:
            if (touch > limit) if buy else (touch < limit):
                return []
            price = touch
        side_idx = 1 if buy else 0
        qty = min(order.remaining, avail[side_idx])
        if qty <= 0:
            return []
        avail[side_idx] -= qty
        return [self._execute(order, qty, price, now)]

    def _execute(self, order: SimOrder, qty: Decimal, price: Decimal, now: datetime) -> Execution:
        before = order.commission
        cum = order.filled + qty
        order.avg_price = (order.avg_price * order.filled + price * qty) / cum
        order.filled = cum
        order.commission = self.commission.order_total(cum, cum * order.avg_price)
        if order.oca_group:
            self._oca_execution(order, qty)
        if order.remaining == 0:
            self._finish(order, IbStatus.FILLED)
        self._exec_seq += 1
        fill = Fill(f"{self.exec_prefix}.{self._exec_seq:08x}.01.01", order.ref, order.symbol, order.side, qty, price,
                    order.commission - before, now)
        pos = self.positions.get(order.symbol)
        if pos is None:
            pos = self.positions[order.symbol] = Position(order.symbol)
        # The account's position takes the fill first, so the Execution is made once, with what it realized
        # (``dataclasses.replace`` afterwards cost ~3% of a signal here).
        return Execution(fill, order, cum, order.avg_price, pos.apply(fill))
