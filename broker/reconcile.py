"""Reconciliation: our records against the broker's, as a pure comparison that says what to change.

Orders match by client order id (IB ``orderRef``), fills by execution id. What the broker has and we
lack is adopted: an order sent just before a crash, a fill that arrived while we were down (recorded
as ``inferred``). Orders we think open that the broker no longer works take the final state the broker
reports, or ``Rejected`` when it never saw them. Positions are compared after the adopted fills; a
difference those fills cannot explain is a break, which halts the symbol (the reconciliation trigger).
Nothing here does I/O: the session reads the database and the broker, and applies the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from broker.base import BrokerOrder, BrokerSnapshot
from engine.domain import ZERO, Fill, Instrument, Order, OrderIntent, OrderStatus, TimeInForce
from engine.ids import entry_of_exit, is_ours, signal_id_of


@dataclass(frozen=True, slots=True)
class OpenOrderRecord:
    """An order our database holds as not final."""

    client_order_id: str
    symbol: str
    filled: Decimal
    status: str


@dataclass(slots=True)
class ReconcileReport:
    adopt_orders: list[BrokerOrder] = field(default_factory=list)  # at the broker, missing from our records
    keep_open: list[BrokerOrder] = field(default_factory=list)  # ours, still working at the broker
    close_orders: list[tuple[str, OrderStatus, str]] = field(default_factory=list)  # (coid, final state, why)
    adopt_fills: list[Fill] = field(default_factory=list)  # executions we never recorded
    foreign_orders: int = 0  # working at the broker but not placed by this engine (not touched)
    position_breaks: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # symbol -> (ours, theirs)
    theirs: dict[str, BrokerOrder] = field(default_factory=dict)  # our orders as the broker reports them, by coid
    acknowledged: list[BrokerOrder] = field(default_factory=list)  # our Unknown orders the broker has working

    @property
    def clean(self) -> bool:
        return not (self.adopt_orders or self.close_orders or self.adopt_fills or self.position_breaks)

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "adopt_orders": [{"client_order_id": o.client_order_id, "symbol": o.symbol, "side": o.side.value,
                              "quantity": str(o.quantity), "filled": str(o.filled), "status": o.status.value}
                             for o in self.adopt_orders],
            "keep_open": [o.client_order_id for o in self.keep_open],
            "close_orders": [{"client_order_id": c, "status": s.value, "reason": r} for c, s, r in self.close_orders],
            "adopt_fills": [{"exec_id": f.exec_id, "client_order_id": f.client_order_id, "symbol": f.symbol,
                             "side": f.side.value, "quantity": str(f.quantity), "price": str(f.price)}
                            for f in self.adopt_fills],
            "foreign_orders": self.foreign_orders,
            "position_breaks": [{"symbol": s, "ours": str(a), "theirs": str(b), "difference": str(b - a)}
                                for s, (a, b) in sorted(self.position_breaks.items())],
        }


def reconcile(
    our_open: Iterable[OpenOrderRecord],
    known_order_ids: set[str],
    known_exec_ids: set[str],
    our_positions: Mapping[str, Decimal],
    snapshot: BrokerSnapshot,
) -> ReconcileReport:
    """Compare; ``known_order_ids`` are the broker's order refs that our database holds (any state)."""
    report = ReconcileReport()
    theirs = report.theirs = _ours_at_the_broker(snapshot)
    report.foreign_orders = sum(1 for o in snapshot.orders
                                if not is_ours(o.client_order_id) and not o.status.is_terminal)
    open_ids: set[str] = set()
    for rec in our_open:
        open_ids.add(rec.client_order_id)
        broker = theirs.get(rec.client_order_id)
        if broker is None:  # never arrived, or the broker that had it is gone (the in-process simulator)
            final = OrderStatus.CANCELLED if rec.filled > 0 else OrderStatus.REJECTED
            report.close_orders.append((rec.client_order_id, final,
                                        "reconciliation: the broker has no such order working"))
        elif broker.status.is_terminal:
            why = broker.reason or f"reconciliation: {broker.status.value} at the broker"
            report.close_orders.append((rec.client_order_id, broker.status, why))
        else:
            report.keep_open.append(broker)
    for coid, broker in sorted(theirs.items()):
        if coid not in open_ids and coid not in known_order_ids:
            report.adopt_orders.append(broker)
    _fills_and_positions(report, known_exec_ids, our_positions, snapshot)
    return report


def reconcile_live(
    live: Iterable[OpenOrderRecord],
    known_exec_ids: set[str],
    our_positions: Mapping[str, Decimal],
    snapshot: BrokerSnapshot,
) -> ReconcileReport:
    """The comparison while trading: executions we never booked (a report lost in flight) and live orders
    the broker has finished without our hearing of it (a lost cancel confirmation, a stuck PendingCancel).

    An order the broker does not list is left alone (it may still be on its way), unless it is Unknown (no
    acknowledgement within the ack timeout, and the broker asked again): then it never arrived and is
    closed as Rejected, never re-sent. One the broker reports Filled is finished by its fills, booked here
    if they were lost, never by its status alone.
    """
    report = ReconcileReport()
    theirs = report.theirs = _ours_at_the_broker(snapshot)
    for rec in live:
        broker = theirs.get(rec.client_order_id)
        if rec.status == OrderStatus.UNKNOWN.value and (broker is None or not broker.status.is_terminal):
            if broker is None:  # asked again and still not there: the placement was lost on the way
                report.close_orders.append((rec.client_order_id, OrderStatus.REJECTED,
                                            "no acknowledgement, and the broker does not have it: the placement "
                                            "was lost (not sent again)"))
            else:
                report.acknowledged.append(broker)
            continue
        if broker is None or not broker.status.is_terminal:
            continue
        if broker.status is OrderStatus.FILLED:
            continue
        why = broker.reason or f"reconciliation: {broker.status.value} at the broker"
        report.close_orders.append((rec.client_order_id, broker.status, why))
    _fills_and_positions(report, known_exec_ids, our_positions, snapshot)
    return report


def order_from_broker(b: BrokerOrder, instrument: Instrument, now: datetime) -> Order:
    """An order only the broker knew of: ours by its orderRef, so its signal id is derived back."""
    coid = b.client_order_id
    entry = entry_of_exit(coid, b.symbol)  # a bracket's exit: never working quantity, protection once alone
    signal_id = signal_id_of(coid) if entry is None else signal_id_of(entry)
    intent = OrderIntent(coid, signal_id, "adopted", instrument, b.side, b.quantity, b.order_type,
                         b.limit_price, b.stop_price, TimeInForce.DAY if entry is None else TimeInForce.GTC, now,
                         parent_id=entry, oca_group=entry)
    status = b.status if b.status.is_terminal else OrderStatus.SUBMITTED
    return Order(intent, now, status, ZERO, ZERO, ZERO, b.broker_order_id, b.perm_id,
                 b.reason or "adopted from the broker at reconciliation")


def _ours_at_the_broker(snapshot: BrokerSnapshot) -> dict[str, BrokerOrder]:
    theirs: dict[str, BrokerOrder] = {}
    for o in snapshot.orders:  # one order can be listed open and completed (it finished between the two replies)
        if is_ours(o.client_order_id):
            prior = theirs.get(o.client_order_id)
            if prior is None or (o.status.is_terminal and not prior.status.is_terminal):
                theirs[o.client_order_id] = o
    return theirs


def _fills_and_positions(report: ReconcileReport, known_exec_ids: set[str], our_positions: Mapping[str, Decimal],
                         snapshot: BrokerSnapshot) -> None:
    """Executions we lack become inferred fills (each keeps its order's client order id); positions after them."""
    seen: set[str] = set()
    for fill in snapshot.executions:
        if fill.exec_id in known_exec_ids or fill.exec_id in seen:
            continue
        seen.add(fill.exec_id)
        report.adopt_fills.append(Fill(fill.exec_id, fill.client_order_id, fill.symbol, fill.side, fill.quantity,
                                       fill.price, fill.commission, fill.ts, source="inferred",
                                       corrects=fill.corrects))
    after = dict(our_positions)
    for fill in report.adopt_fills:
        if fill.corrects is None:
            after[fill.symbol] = after.get(fill.symbol, ZERO) + fill.signed_quantity
    broker_positions = {p.symbol: p.quantity for p in snapshot.positions}
    for symbol in sorted(set(after) | set(broker_positions)):
        ours, them = after.get(symbol, ZERO), broker_positions.get(symbol, ZERO)
        if ours != them:
            report.position_breaks[symbol] = (ours, them)
