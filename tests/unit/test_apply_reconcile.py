"""The engine applies a reconciliation report itself: the caller hands it the records it read and does the
writing around it. No database here: the records are domain orders, as a session translates its rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal as D

import pytest

from broker.base import BrokerOrder
from broker.reconcile import ReconcileReport
from engine.domain import Fill, Instrument, Order, OrderIntent, OrderStatus, OrderType, Side
from engine.ids import client_order_id_for
from paper.broker import PaperBroker
from tests.conftest import T0, signal_line
from tests.rig import Rig


class CancelSpy(PaperBroker):
    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self.cancels: list[str] = []

    def cancel(self, client_order_id: str, reason: str) -> None:
        self.cancels.append(client_order_id)
        super().cancel(client_order_id, reason)


def record(signal_id: str, qty: str = "10", status: OrderStatus = OrderStatus.SUBMITTED, side: Side = Side.BUY,
           filled: str = "0") -> Order:
    """An order as the database holds it (what ``order_from_row`` gives)."""
    coid = client_order_id_for(signal_id)
    intent = OrderIntent(coid, signal_id, "s", Instrument("AAPL"), side, D(qty), OrderType.LMT, D("99.00"), ts=T0)
    return Order(intent, T0, status, D(filled))


def at_broker(o: Order, status: OrderStatus, filled: str = "0") -> BrokerOrder:
    return BrokerOrder(o.client_order_id, o.symbol, o.intent.side, o.intent.quantity, D(filled), status,
                       o.intent.order_type, o.intent.limit_price, None, 7, 70)


def inferred(exec_id: str, coid: str, qty: str, price: str = "99.00") -> Fill:
    return Fill(exec_id, coid, "AAPL", Side.BUY, D(qty), D(price), D("0.5"), T0, source="inferred")


def no_loads(ids: list[str]) -> list[Order]:
    raise AssertionError(f"no record should be needed, asked for {ids}")


def test_an_open_record_the_broker_finished_takes_its_final_state_and_its_signal_id_stays_taken() -> None:
    rig = Rig()
    rig.quote()
    rec = record("s1")
    report = ReconcileReport(close_orders=[(rec.client_order_id, OrderStatus.CANCELLED, "gone at the broker")])
    done = rig.engine.apply_reconcile(report, {rec.client_order_id: rec}, no_loads)
    assert done.closed == [rec] and (rec.status, rec.reason) == (OrderStatus.CANCELLED, "gone at the broker")
    assert rig.engine.orders == {}
    assert rig.engine.on_signal_line(signal_line("s1")) is None and rig.rejected[-1].code == "duplicate"


def test_an_open_record_still_working_is_tracked_again_with_its_remainder_working() -> None:
    rig = Rig()
    rec = record("s1", filled="0")
    report = ReconcileReport(keep_open=[at_broker(rec, OrderStatus.SUBMITTED, filled="4")])
    done = rig.engine.apply_reconcile(report, {rec.client_order_id: rec}, no_loads)
    assert done.kept_open == [rec] and rig.engine.orders[rec.client_order_id] is rec
    assert rec.filled_qty == D(4) and rig.engine.book.working("AAPL") == D(6)
    assert "s1" in rig.engine.signal_ids


def test_a_working_order_whose_acknowledgement_was_lost_in_a_crash_takes_it_with_the_brokers_ids() -> None:
    rig = Rig()
    rec = record("s1", status=OrderStatus.PENDING_NEW)
    rig.engine.apply_reconcile(ReconcileReport(keep_open=[at_broker(rec, OrderStatus.SUBMITTED)]),
                               {rec.client_order_id: rec}, no_loads)
    assert rec.status is OrderStatus.SUBMITTED and (rec.broker_order_id, rec.perm_id) == (7, 70)
    assert rig.statuses == [(rec.client_order_id, OrderStatus.SUBMITTED)]


def test_a_cancel_that_may_have_died_with_the_process_is_sent_again() -> None:
    rig = Rig(broker_cls=CancelSpy)
    rec = record("s1", status=OrderStatus.PENDING_CANCEL)
    done = rig.engine.apply_reconcile(ReconcileReport(keep_open=[at_broker(rec, OrderStatus.SUBMITTED)]),
                                      {rec.client_order_id: rec}, no_loads)
    assert isinstance(rig.broker, CancelSpy) and rig.broker.cancels == [rec.client_order_id]
    assert done.cancels_resent == [rec.client_order_id]


def test_an_order_only_the_broker_had_is_recorded_tracked_and_its_signal_id_taken() -> None:
    rig = Rig()
    theirs = at_broker(record("s9", qty="5"), OrderStatus.SUBMITTED, filled="2")
    done = rig.engine.apply_reconcile(ReconcileReport(adopt_orders=[theirs]), {}, no_loads)
    (adopted,) = done.adopted
    assert rig.submitted == [adopted] and rig.engine.orders[theirs.client_order_id] is adopted
    assert adopted.intent.signal_id == "s9" and adopted.filled_qty == D(2)
    assert rig.engine.book.working("AAPL") == D(3) and "s9" in rig.engine.signal_ids


def test_a_finished_order_only_the_broker_had_is_recorded_but_not_tracked() -> None:
    rig = Rig()
    theirs = at_broker(record("s9", qty="5"), OrderStatus.CANCELLED)
    done = rig.engine.apply_reconcile(ReconcileReport(adopt_orders=[theirs]), {}, no_loads)
    assert rig.submitted == done.adopted and rig.engine.orders == {} and "s9" in rig.engine.signal_ids


def test_an_execution_only_the_broker_had_is_booked_against_the_record_of_its_finished_order() -> None:
    rig = Rig()
    rig.quote()
    rec = record("s1")
    fill = inferred("e1", rec.client_order_id, "10")
    report = ReconcileReport(close_orders=[(rec.client_order_id, OrderStatus.FILLED, "filled at the broker")],
                             adopt_fills=[fill])
    done = rig.engine.apply_reconcile(report, {rec.client_order_id: rec}, no_loads)
    assert done.inferred_fills == [fill] and rec.filled_qty == D(10) and rec.commission == D("0.5")
    assert rig.engine.positions["AAPL"].quantity == D(10) and rig.engine.commissions == D("0.5")
    assert rig.engine.killswitches.snapshot() == {}  # an inferred fill is not an unknown one


def test_the_records_of_other_orders_are_asked_for_once_and_only_for_fills_that_need_one() -> None:
    rig = Rig()
    rig.quote()
    old = record("old")
    asked: list[list[str]] = []

    def load(ids: list[str]) -> list[Order]:
        asked.append(ids)
        return [old]

    rig.engine.apply_reconcile(ReconcileReport(adopt_fills=[inferred("e1", old.client_order_id, "3"),
                                                            inferred("e2", old.client_order_id, "2")]), {}, load)
    assert asked == [[old.client_order_id]] and old.filled_qty == D(5)
    rig.engine.apply_reconcile(ReconcileReport(), {}, no_loads)


def test_nothing_changes_when_the_records_a_fill_needs_cannot_be_read() -> None:
    rig = Rig()
    rig.quote()
    rec = record("s1")
    report = ReconcileReport(close_orders=[(rec.client_order_id, OrderStatus.CANCELLED, "gone")],
                             adopt_fills=[inferred("e1", client_order_id_for("other"), "3")])

    def down(ids: list[str]) -> list[Order]:
        raise ConnectionError("database down")

    with pytest.raises(ConnectionError):
        rig.engine.apply_reconcile(report, {rec.client_order_id: rec}, down)
    assert rig.engine.positions == {} and "s1" not in rig.engine.signal_ids
    assert rig.engine.booked_executions(["e1"], lambda ids: []) == set()


def test_a_live_order_the_broker_finished_takes_its_state_after_the_fills_it_lost() -> None:
    rig = Rig()
    rig.quote()
    live = rig.engine.on_signal_line(signal_line("s1", order_type="LMT", limit_price=99.0))
    assert live is not None and live.status is OrderStatus.SUBMITTED
    coid = live.client_order_id
    report = ReconcileReport(close_orders=[(coid, OrderStatus.CANCELLED, "cancel confirmation lost")],
                             adopt_fills=[inferred("e1", coid, "1")])
    done = rig.engine.apply_reconcile(report, {}, no_loads)
    status_after: OrderStatus = live.status  # mutated by the call; a fresh name stops mypy's narrowing
    assert done.settled == [live] and status_after is OrderStatus.CANCELLED and live.filled_qty == D(1)
    assert rig.engine.orders == {} and rig.engine.book.working("AAPL") == 0
    assert rig.engine.positions["AAPL"].quantity == D(1)


def test_booked_executions_asks_about_ids_not_in_memory_once_and_remembers_the_answer() -> None:
    rig = Rig()
    rig.quote()
    rig.engine.on_fill(Fill("mine", "tc-x", "AAPL", Side.BUY, D(1), D(100), D(0), T0))
    asked: list[list[str]] = []

    def db(ids: list[str]) -> set[str]:
        asked.append(ids)
        return {"earlier"}

    assert rig.engine.booked_executions(["mine", "earlier", "new"], db) == {"mine", "earlier"}
    assert rig.engine.booked_executions(["mine", "earlier"], db) == {"mine", "earlier"}
    assert asked == [["earlier", "new"]]
