"""The order book: this session's live orders and what they leave working per symbol.

Live orders only: an order that reaches a final state is retired and forgotten (its rows are written
already). Beside the orders the book keeps, per symbol, the signed quantity still working (what sizing
and the kill switches add to the position), the live orders by symbol (the opposing-order cancel and the
self-cross check look at one symbol only), the ttl expiries as a heap, and the order being recorded and
not yet handed to the broker. No I/O, no bus: the engine publishes what the book changes.

A bracket's exits (stop loss, take profit) are live orders like any other, but never working quantity:
they only close what their entry opened, so sizing, the kill switches and the position limits count the
entry alone. Once the entry is no longer live, its exits are the symbol's ``protection``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

import structlog

from engine.domain import ZERO, Fill, Order, OrderStatus, OrderType, Side
from risk.checks import INFINITY

log = structlog.get_logger("tradectl.engine")


class OrderBook:
    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}  # live orders only; terminal ones are retired
        self.working_qty: dict[str, Decimal] = {}  # signed quantity still working, per symbol
        self.live_by_symbol: dict[str, dict[str, Order]] = {}
        self.unsent: Order | None = None  # the order being recorded, not yet handed to the broker
        self._expiries: list[tuple[datetime, str]] = []
        self.exits_by_symbol: dict[str, int] = {}  # live bracket exits per symbol (a cheap "any?" on each fill)

    def working(self, symbol: str) -> Decimal:
        return self.working_qty.get(symbol, ZERO)

    def add(self, order: Order) -> Decimal:
        """Track a new order about to be sent; returns its symbol's working quantity with it."""
        intent = order.intent
        coid = intent.client_order_id
        self.orders[coid] = order
        symbol = intent.instrument.symbol
        live = self.live_by_symbol.get(symbol)
        if live is None:
            live = self.live_by_symbol[symbol] = {}
        live[coid] = order
        if intent.parent_id is not None:
            self.exits_by_symbol[symbol] = self.exits_by_symbol.get(symbol, 0) + 1
            return self.working_qty.get(symbol, ZERO)
        working = self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) + intent.signed_quantity
        if intent.expires_at is not None:
            heapq.heappush(self._expiries, (intent.expires_at, coid))
        return working

    def adopt(self, order: Order) -> Decimal:
        """Track an order already working at the broker (found by reconciliation): only what remains works."""
        coid = order.client_order_id
        self.orders[coid] = order
        symbol = order.symbol
        self.live_by_symbol.setdefault(symbol, {})[coid] = order
        if order.intent.parent_id is not None:
            self.exits_by_symbol[symbol] = self.exits_by_symbol.get(symbol, 0) + 1
            return self.working_qty.get(symbol, ZERO)
        working = self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) + order.signed_remaining
        return working

    def retire(self, order: Order) -> Decimal | None:
        """Forget a final order; returns its symbol's new working quantity when what it left unfilled stopped."""
        coid = order.client_order_id
        was_live = self.orders.pop(coid, None) is not None
        symbol = order.symbol
        live = self.live_by_symbol.get(symbol)
        if live is not None:
            live.pop(coid, None)
        working = None
        if order.intent.parent_id is not None:
            if was_live:
                self.exits_by_symbol[symbol] -= 1
        elif order.remaining:
            working = self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) - order.signed_remaining
        order.history.clear()  # persisted already; a retired order must not pin memory
        return working

    def fill(self, order: Order, fill: Fill) -> None:
        """A fill of a live order: it works that much less (all it had left, when the broker overfilled it)."""
        if order.intent.parent_id is not None:  # an exit never counted as working
            apply_fill(order, fill)
            return
        if fill.quantity > order.remaining:
            self.working_qty[fill.symbol] -= order.signed_remaining
            apply_fill(order, fill)
            return
        self.working_qty[fill.symbol] -= fill.signed_quantity
        order.apply_fill(fill.quantity, fill.price, fill.commission)

    def correct(self, order: Order, old: Fill, new: Fill) -> None:
        """An execution correction: the order's fill totals (and, while it is live, its working quantity) take
        ``new`` in place of ``old``."""
        filled = order.filled_qty - old.quantity + new.quantity
        value = order.avg_fill_price * order.filled_qty - old.price * old.quantity + new.price * new.quantity
        order.avg_fill_price = value / filled if filled else ZERO
        if order.client_order_id in self.orders and order.intent.parent_id is None:
            self.working_qty[order.symbol] -= new.signed_quantity - old.signed_quantity
        order.filled_qty = filled
        order.commission += new.commission - old.commission

    def opposing(self, symbol: str, side: Side) -> list[str]:
        """Live orders of ``symbol`` trading against ``side`` that a new target supersedes (not flattens, not
        those being cancelled already)."""
        live = self.live_by_symbol.get(symbol)
        if not live:
            return []
        return [o.client_order_id for o in live.values()
                if o.intent.side is not side and not o.intent.flatten and o.intent.parent_id is None
                and o.status is not OrderStatus.PENDING_CANCEL]

    def reduce_oca_siblings(self, order: Order, quantity: Decimal) -> None:
        """An exit executed ``quantity``: the broker reduced the other exits of its OCA group by as much
        (ocaType 2); so do we, or they would look larger than the position they protect."""
        group = order.intent.oca_group
        live = self.live_by_symbol.get(order.symbol) or {}
        for sibling in live.values():
            i = sibling.intent
            if sibling is not order and i.oca_group == group:
                i.quantity = max(sibling.filled_qty, i.quantity - quantity)

    def protection(self, symbol: str) -> list[Order]:
        """The symbol's live exits whose entry is no longer live: what protects its position at the broker."""
        if not self.exits_by_symbol.get(symbol):
            return []
        live = self.live_by_symbol.get(symbol) or {}
        orders = self.orders
        return [o for o in live.values() if o.intent.parent_id is not None and o.intent.parent_id not in orders]

    def cancelling(self, symbol: str) -> Decimal:
        """The signed quantity of ``symbol``'s orders waiting for their cancel to be confirmed (exits never
        counted as working, so their cancels take nothing off)."""
        live = self.live_by_symbol.get(symbol)
        if not live:
            return ZERO
        return sum((o.signed_remaining for o in live.values()
                    if o.status is OrderStatus.PENDING_CANCEL and o.intent.parent_id is None), ZERO)

    def own_best(self, symbol: str) -> tuple[Decimal | None, Decimal | None]:
        """Our most aggressive resting buy and sell prices in ``symbol`` (for the self-cross check)."""
        live = self.live_by_symbol.get(symbol)
        if not live:
            return None, None
        return own_best(live.values())

    def expired(self, now: datetime) -> list[str]:
        """Live orders whose ttl has passed by ``now`` (each is reported once)."""
        heap = self._expiries
        due: list[str] = []
        while heap and heap[0][0] <= now:
            _, coid = heapq.heappop(heap)
            if coid in self.orders:
                due.append(coid)
        return due

    def symbol_of(self, client_order_id: str | None) -> str | None:
        order = self.orders.get(client_order_id) if client_order_id is not None else None
        return order.symbol if order is not None else None


def apply_fill(order: Order, fill: Fill) -> None:
    """Book a fill on its order's totals; a fill beyond what the order had left grows the order (the broker
    is right about what it executed)."""
    if fill.quantity > order.remaining:
        log.error("fill.overfill", exec_id=fill.exec_id, client_order_id=order.client_order_id,
                  quantity=str(fill.quantity), remaining=str(order.remaining))
        order.intent.quantity = order.filled_qty + fill.quantity
    order.apply_fill(fill.quantity, fill.price, fill.commission)


def own_best(orders: Iterable[Order]) -> tuple[Decimal | None, Decimal | None]:
    """Our most aggressive resting buy and sell prices (a market order counts as crossing everything)."""
    bid: Decimal | None = None
    ask: Decimal | None = None
    for o in orders:
        i = o.intent
        if i.order_type in (OrderType.STP, OrderType.STP_LMT) or i.parent_id is not None:
            continue  # not resting in the book until triggered; an exit only closes what its entry opened
        if o.status is OrderStatus.PENDING_CANCEL:
            continue  # being cancelled: a new order on the other side is what replaces it
        limit = i.limit_price
        if i.side is Side.BUY:
            p = limit if limit is not None else INFINITY
            if bid is None or p > bid:
                bid = p
        else:
            p = limit if limit is not None else ZERO
            if ask is None or p < ask:
                ask = p
    return bid, ask
