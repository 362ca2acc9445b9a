"""The ``Broker`` protocol: what the engine needs from any broker, simulated or IBKR.

A broker takes orders and cancels and reports back through a ``BrokerListener`` (the engine):
status updates and fills, in domain types. Adapters translate their own world (IB ``Trade``,
``Fill``, error codes) into these at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from engine.domain import Fill, Order, OrderStatus, OrderType, Quote, Side


@dataclass(slots=True)
class OrderUpdate:
    """A status change reported by the broker for one of our orders (keyed by our client order id)."""

    client_order_id: str
    status: OrderStatus
    ts: datetime
    reason: str | None = None
    broker_order_id: int | None = None
    perm_id: int | None = None


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    symbol: str
    quantity: Decimal
    avg_cost: Decimal


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """An order as the broker reports it (open, or completed today), keyed by our client order id."""

    client_order_id: str  # IB orderRef
    symbol: str
    side: Side
    quantity: Decimal
    filled: Decimal
    status: OrderStatus  # SUBMITTED while working, else its final state
    order_type: OrderType = OrderType.MKT
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    broker_order_id: int | None = None
    perm_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """What the broker says it has: what reconciliation compares our records against."""

    orders: list[BrokerOrder]
    executions: list[Fill]  # today's, with commissions where known
    positions: list[BrokerPosition]


class BrokerListener(Protocol):
    def on_order_update(self, update: OrderUpdate) -> None: ...

    def on_fill(self, fill: Fill) -> None: ...

    def on_quote(self, quote: Quote) -> None:
        """Every new quote, before any fill it causes: marks follow the market without a scan per signal."""
        ...

    def on_connection(self, connected: bool, ts: datetime, reason: str | None = None) -> None:
        """The link to the broker dropped or returned (feeds the disconnect trigger)."""
        ...


class Broker(Protocol):
    name: str
    # True when the broker may correct an execution after reporting it (IB does): the engine then keeps its
    # recent fills in memory to book a correction in place of the fill it names. A broker that never does
    # spares the engine that memory, and the collector the walk over it.
    corrects_executions: bool

    def set_listener(self, listener: BrokerListener) -> None: ...

    def submit(self, order: Order) -> None:
        """Hand an order over. Must not block; the outcome arrives through the listener."""
        ...

    def cancel(self, client_order_id: str, reason: str) -> None: ...

    def resize(self, client_order_id: str, quantity: Decimal) -> None:
        """Change a working order's total quantity (IB: placeOrder again under its order id). A bracket's exit
        is cut to the position it protects this way, rather than cancelled and left without one."""
        ...

    def quote(self, symbol: str) -> Quote | None:
        """The latest quote the broker has for ``symbol`` (the reference price for checks and sizing)."""
        ...

    def quote_delayed(self, symbol: str) -> bool:
        """True when ``symbol``'s quotes are delayed data (no live subscription at IB)."""
        ...

    def positions(self) -> list[BrokerPosition]: ...

    def snapshot(self) -> BrokerSnapshot:
        """Open and completed orders, today's executions and positions, as the broker has them now."""
        ...

    def refresh(self) -> None:
        """Ask the broker again for its executions and orders (a report may have been lost in flight); must not
        block: the answer is in a later ``snapshot()`` once ``refreshing`` is False."""
        ...

    @property
    def refreshing(self) -> bool:
        """True while an answer to ``refresh`` is still coming."""
        ...

    def available_funds(self) -> Decimal | None:
        """What the account may still commit (IB's AvailableFunds), or None when the broker says nothing."""
        ...

    def account_equity(self) -> Decimal | None:
        """The account's net liquidation value as the broker last reported it, or None when it reports none.

        The engine sizes and checks buying power on it when known; else on its own books (config equity
        plus P&L). The simulated broker keeps no account: None.
        """
        ...
