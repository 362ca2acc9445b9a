"""The simulated broker: the ``Broker`` protocol on top of the matching engine, in process.

It reports through the listener exactly as a real broker would: an acknowledgement, then fills and
a final status. Fills drive the engine's filled/partially-filled status, so the broker sends only
Submitted, Cancelled and Rejected updates of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import count

from broker.base import BrokerListener, BrokerOrder, BrokerPosition, BrokerSnapshot, OrderUpdate
from broker.ib_codes import IbStatus
from engine.domain import Order, OrderStatus, Position, Quote, TimeInForce
from paper.matching import CommissionSchedule, Execution, MatchingEngine, SimOrder


class PaperBroker:
    name = "paper"
    corrects_executions = False  # the simulated exchange reports each execution once, final

    def __init__(
        self,
        clock: Callable[[], datetime],
        commission: CommissionSchedule | None = None,
        slippage_ticks: int = 0,
        latency: timedelta = timedelta(0),
        exec_prefix: str = "0000a001",
        initial_positions: dict[str, tuple[Decimal, Decimal]] | None = None,
    ) -> None:
        self._clock = clock
        self.matching = MatchingEngine(commission, slippage_ticks, latency, exec_prefix)
        self._listener: BrokerListener | None = None
        self._ids = count(1)
        self._by_ref: dict[str, SimOrder] = {}
        self._entries: dict[str, SimOrder] = {}  # a bracket's entry, while its exits are being placed
        self._held: dict[str, tuple[SimOrder, str | None]] = {}  # transmit=False orders: (order, its parent)
        self.connected = True
        self.refuse_reason: str | None = None  # fault control: reject every new order with this reason
        for symbol, (qty, avg) in (initial_positions or {}).items():
            self.matching.positions[symbol] = Position(symbol, qty, avg)

    def set_listener(self, listener: BrokerListener) -> None:
        self._listener = listener

    # -- Broker protocol ---------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        listener = self._require_listener()
        now = self._clock()
        intent = order.intent
        if not self.connected:  # what an adapter does with a dead socket: refuse, never queue blindly
            listener.on_order_update(OrderUpdate(intent.client_order_id, OrderStatus.REJECTED, now, "not connected"))
            return
        if self.refuse_reason is not None:
            listener.on_order_update(OrderUpdate(intent.client_order_id, OrderStatus.REJECTED, now, self.refuse_reason))
            return
        oid = next(self._ids)
        sim = SimOrder(
            oid,
            oid,
            intent.client_order_id,
            intent.instrument.symbol,
            intent.side,
            intent.quantity,
            intent.order_type,
            intent.limit_price,
            intent.stop_price,
            intent.tif,
            oca_group=intent.oca_group or "",
        )
        if not intent.transmit:  # held, as IB holds it, until the bracket's transmitting order comes
            self._held[sim.ref] = (sim, intent.parent_id)
            return
        if self._held:  # a bracket's transmitting order: its held orders go first, in the order they came
            bracket = intent.parent_id or sim.ref
            for ref, (held, parent) in list(self._held.items()):
                if ref == bracket or parent == bracket:
                    del self._held[ref]
                    self._place(held, parent, now, entry=parent is None)
            self._place(sim, intent.parent_id, now)
            self._entries.pop(bracket, None)  # its last order is in: no more exits will name the entry
            return
        self._place(sim, intent.parent_id, now)

    def _place(self, sim: SimOrder, parent_ref: str | None, now: datetime, entry: bool = False) -> None:
        listener = self._require_listener()
        if parent_ref is not None:
            parent = self._entries.get(parent_ref)
            sim.parent, sim.parent_id = parent, parent.order_id if parent is not None else 0  # 0: none: refused
        elif entry:  # a bracket's entry, released: its exits name it next
            self._entries[sim.ref] = sim
        self._by_ref[sim.ref] = sim
        listener.on_order_update(OrderUpdate(sim.ref, OrderStatus.SUBMITTED, now, None, sim.order_id, sim.perm_id))
        self._report(self.matching.add(sim, now), now)
        if sim.status == IbStatus.CANCELLED and sim.tif is TimeInForce.IOC:  # IOC remainder
            self._by_ref.pop(sim.ref, None)
            listener.on_order_update(OrderUpdate(sim.ref, OrderStatus.CANCELLED, now, "IOC remainder cancelled"))

    def cancel(self, client_order_id: str, reason: str) -> None:
        listener = self._require_listener()
        held = self._held.pop(client_order_id, None)
        if held is not None:  # never transmitted: it goes quietly, as an untransmitted order does at IB
            listener.on_order_update(OrderUpdate(client_order_id, OrderStatus.CANCELLED, self._clock(), reason))
            return
        sim = self._by_ref.pop(client_order_id, None)
        if sim is None or self.matching.cancel(sim.order_id) is None:
            return
        listener.on_order_update(OrderUpdate(client_order_id, OrderStatus.CANCELLED, self._clock(), reason))
        self._report([], self._clock())  # a cancelled entry takes its waiting exits with it

    def resize(self, client_order_id: str, quantity: Decimal) -> None:
        sim = self._by_ref.get(client_order_id)
        if sim is not None and not sim.is_done:
            self.matching.modify(sim.order_id, quantity, sim.limit_price, sim.stop_price)
            return
        held = self._held.get(client_order_id)
        if held is not None:
            held[0].quantity = quantity

    def quote(self, symbol: str) -> Quote | None:
        return self.matching.quotes.get(symbol)

    def quote_delayed(self, symbol: str) -> bool:
        return False  # the simulated market is the market

    def positions(self) -> list[BrokerPosition]:
        return [
            BrokerPosition(p.symbol, p.quantity, p.avg_cost)
            for p in self.matching.positions.values()
            if p.quantity != 0
        ]

    def snapshot(self) -> BrokerSnapshot:
        """The in-process broker's state lives as long as the session: working orders and positions."""
        orders = [
            BrokerOrder(o.ref, o.symbol, o.side, o.quantity, o.filled, OrderStatus.SUBMITTED, o.order_type,
                        o.limit_price, o.stop_price, o.order_id, o.perm_id)
            for o in self.matching.working()
        ]
        return BrokerSnapshot(orders, [], self.positions())

    def refresh(self) -> None:
        """In process nothing is lost in flight: the snapshot is always current."""

    @property
    def refreshing(self) -> bool:
        return False

    def available_funds(self) -> Decimal | None:
        """No account here: buying power is the configured equity times the leverage limit."""
        return None

    def account_equity(self) -> Decimal | None:
        """No account here: the engine's equity is the configured one plus its own P&L."""
        return None

    # -- fault controls (tests and rehearsals) -----------------------------------------------------
    def disconnect(self, reason: str = "connection dropped") -> None:
        """Drop the link: working orders stay at the (simulated) exchange, new orders are refused."""
        if self.connected:
            self.connected = False
            self._require_listener().on_connection(False, self._clock(), reason)

    def reconnect(self) -> None:
        if not self.connected:
            self.connected = True
            self._require_listener().on_connection(True, self._clock(), "reconnected")

    # -- market data in ----------------------------------------------------------------------------
    def on_quote(self, quote: Quote) -> None:
        if self._listener is not None:
            self._listener.on_quote(quote)
        self._report(self.matching.on_quote(quote), quote.ts)

    def working_symbols(self) -> set[str]:
        return {o.symbol for o in self.matching.working()}

    def _report(self, executions: list[Execution], now: datetime) -> None:
        listener = self._require_listener()
        # Exits the exchange cancelled (an OCA sibling filled, an entry was cancelled) are reported before the
        # fills that caused them, so the engine never sees protection outlive the position it protected.
        if self.matching.rule_cancels:
            for sim, why in self.matching.drain_cancelled():
                if self._by_ref.pop(sim.ref, None) is not None:
                    listener.on_order_update(OrderUpdate(sim.ref, OrderStatus.CANCELLED, now, why))
        if not executions:
            return
        for ex in executions:
            listener.on_fill(ex.fill)
            if ex.order.status == IbStatus.FILLED:
                self._by_ref.pop(ex.order.ref, None)
        for ex in executions:
            sim = ex.order
            if sim.status == IbStatus.CANCELLED and sim.ref in self._by_ref:  # IOC remainder after a partial
                self._by_ref.pop(sim.ref, None)
                listener.on_order_update(OrderUpdate(sim.ref, OrderStatus.CANCELLED, now, "IOC remainder cancelled"))

    def _require_listener(self) -> BrokerListener:
        if self._listener is None:
            raise RuntimeError("PaperBroker has no listener: call set_listener first")
        return self._listener
