"""The IBKR adapter over real TCP: the real ib_async client against the simulated gateway.

Each test drives one behaviour of IB (fills, partials, cancels, rejects, duplicate and corrected
executions, disconnects, restarts, pacing) through the engine and checks the order states and positions
the engine ends with.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from engine.domain import KillState, Order, OrderStatus, Side, Signal
from engine.signals import parse_signal
from paper.wire import EXECUTION_DATA
from risk.killswitch import GLOBAL
from risk.triggers import TriggerLimits, TripWires
from tests.conftest import signal_line
from tests.ibrig import IbRig, run

pytestmark = pytest.mark.timeout(60)
S = OrderStatus


def _signal(sid: str, **kw: Any) -> Signal:
    sig = parse_signal(signal_line(sid, **kw))
    assert isinstance(sig, Signal)
    return sig


async def _order(rig: IbRig, sid: str, **kw: Any) -> Order:
    order = rig.engine.on_signal(_signal(sid, **kw))
    assert order is not None, rig.rejected[-1] if rig.rejected else "no order"
    await rig.settle()
    return order


def test_a_market_order_fills_once_with_its_commission_and_books_the_position() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        order = await _order(rig, "m1")
        await rig.until(lambda: rig.engine.positions.get("AAPL") is not None)
        pos = rig.engine.positions["AAPL"]
        assert pos.quantity == order.intent.quantity and pos.avg_cost == D("100.02")
        assert rig.status_of(order) == [S.SUBMITTED, S.FILLED]
        assert len(rig.fills) == 1 and rig.fills[0].commission > 0
        assert {p.symbol: p.quantity for p in rig.broker.positions()} == {"AAPL": pos.quantity}
        await rig.stop()

    run(scenario)


def test_partial_fills_move_the_order_through_partially_filled_to_filled() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02", size="100")
        order = await _order(rig, "p1", order_type="LMT", limit_price=100.02)
        assert order.intent.quantity > 100
        assert rig.status_of(order)[-1] is S.PARTIALLY_FILLED and order.filled_qty == 100
        while order.remaining:
            await rig.quote("100.00", "100.02", size="100")
        assert rig.status_of(order)[-1] is S.FILLED
        assert rig.engine.positions["AAPL"].quantity == order.intent.quantity
        assert sum(f.quantity for f in rig.fills) == order.intent.quantity
        await rig.stop()

    run(scenario)


def test_a_cancel_ends_cancelled_with_our_reason() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        order = await _order(rig, "c1", order_type="LMT", limit_price=90)
        rig.engine.cancel(order.client_order_id, "operator changed mind")
        await rig.settle()
        assert rig.statuses[-1] == (order.client_order_id, S.CANCELLED, "operator changed mind")
        assert not rig.gw.live
        await rig.stop()

    run(scenario)


def test_a_201_reject_ends_rejected_with_ibs_reason_and_feeds_the_reject_trigger() -> None:
    async def scenario() -> None:
        rig = await IbRig(trips=TripWires(TriggerLimits(reject_burst=1))).start()
        await rig.quote("100.00", "100.02")
        rig.gw.faults.refuse_short.add("AAPL")
        order = await _order(rig, "r1", direction="short")
        assert order.intent.side is Side.SELL
        _, status, reason = rig.statuses[-1]
        assert status is S.REJECTED and reason is not None and "IB 201" in reason and "short sale" in reason
        assert rig.engine.killswitches.get(GLOBAL) is KillState.HALTED  # one broker reject trips the burst of 1
        assert "AAPL" not in rig.engine.positions
        await rig.stop()

    run(scenario)


def test_a_spent_order_id_refused_with_103_is_sent_again_with_a_fresh_id() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        first = await _order(rig, "d1", order_type="LMT", limit_price=90)
        rig.engine.cancel(first.client_order_id, "make room")
        await rig.settle()
        rig.gw.drop_connections()  # after a reconnect the client's id sequence starts again from a spent id
        await rig.until(lambda: not rig.engine.broker_connected)
        await rig.until(lambda: rig.engine.broker_connected)
        rig.broker.ib.client._reqIdSeq = first.broker_order_id or 0
        second = await _order(rig, "d2", order_type="LMT", limit_price=91)
        await rig.until(lambda: second.status is S.SUBMITTED)
        assert S.REJECTED not in rig.status_of(second)
        assert (second.broker_order_id or 0) > (first.broker_order_id or 0)
        assert [o.ref for o in rig.gw.live.values()] == ["tc-d2"]
        await rig.stop()

    run(scenario)


def test_an_unknown_contract_is_rejected_with_200() -> None:
    async def scenario() -> None:
        from ib_async import Stock

        rig = await IbRig().start()
        await rig.quote("100.00", "100.02", symbol="AAPL")
        rig.broker._contracts["AAPL"] = Stock("AAPL", "SMART", "EUR")  # not what the gateway lists
        order = await _order(rig, "u1")
        _, status, reason = rig.statuses[-1]
        assert status is S.REJECTED and reason is not None and "IB 200" in reason
        assert rig.status_of(order) == [S.REJECTED]
        await rig.stop()

    run(scenario)


def test_an_execution_sent_twice_is_booked_once() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        rig.gw.faults.duplicate_next_execution = True
        order = await _order(rig, "x1")
        await rig.settle()
        assert len(rig.fills) == 1
        assert rig.engine.positions["AAPL"].quantity == order.intent.quantity
        await rig.stop()

    run(scenario)


def test_an_execution_correction_replaces_the_fill_it_corrects() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        order = await _order(rig, "k1")
        await rig.until(lambda: len(rig.fills) == 1)
        original = rig.fills[0]
        corrected = rig.gw.correct_execution(original.exec_id, D("100.01"))
        await rig.until(lambda: len(rig.fills) == 2)
        fix = rig.fills[1]
        assert fix.exec_id == corrected.exec_id and fix.corrects == original.exec_id
        assert fix.exec_id.rsplit(".", 1)[0] == original.exec_id.rsplit(".", 1)[0]
        pos = rig.engine.positions["AAPL"]
        assert pos.quantity == order.intent.quantity and pos.avg_cost == D("100.01")
        assert order.avg_fill_price == D("100.01") and order.filled_qty == order.intent.quantity
        await rig.stop()

    run(scenario)


def test_a_fill_while_disconnected_is_booked_after_the_reconnect_and_new_orders_wait() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        await rig.quote("50.00", "50.02", symbol="MSFT")
        order = await _order(rig, "w1", order_type="LMT", limit_price=99)
        rig.gw.drop_connections()
        await rig.until(lambda: not rig.engine.broker_connected)
        assert rig.engine.on_signal(_signal("w2", symbol="MSFT")) is None
        assert rig.rejected[-1].code == "broker_disconnected"
        from engine.domain import Quote

        rig.gw.on_quote(Quote("AAPL", rig.clock(), D("98.90"), D("98.95"), D(10000), D(10000), D("98.95")))
        await rig.until(lambda: rig.engine.broker_connected)
        await rig.until(lambda: order.status is S.FILLED)
        await rig.settle()
        assert len(rig.fills) == 1 and rig.fills[0].price == D("98.95")
        assert rig.engine.positions["AAPL"].quantity == order.intent.quantity
        assert {p.symbol: p.quantity for p in rig.broker.positions()} == {"AAPL": order.intent.quantity}
        await rig.stop()

    run(scenario)


def test_an_order_cancelled_by_ib_while_disconnected_ends_cancelled_after_the_reconnect() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        order = await _order(rig, "g1", order_type="LMT", limit_price=90)
        rig.gw.drop_connections()
        await rig.until(lambda: not rig.engine.broker_connected)
        rig.gw._cancel(next(iter(rig.gw.live)), next(iter(rig.gw.live.values())), "day order expired")
        await rig.until(lambda: order.status is S.CANCELLED)
        assert rig.gw.live == {}
        await rig.stop()

    run(scenario)


def test_a_gateway_restart_keeps_the_working_order_and_it_fills_after_the_reconnect() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        order = await _order(rig, "rs1", order_type="LMT", limit_price=99)
        await rig.gw.restart(down_s=0.3)
        await rig.until(lambda: not rig.engine.broker_connected)
        await rig.until(lambda: rig.engine.broker_connected)
        assert order.status is S.SUBMITTED
        await rig.quote("98.90", "98.95")
        await rig.until(lambda: order.status is S.FILLED)
        assert rig.engine.positions["AAPL"].quantity == order.intent.quantity
        await rig.stop()

    run(scenario)


def test_a_cancel_that_races_a_fill_is_never_booked_as_cancelled() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        order = await _order(rig, "race1", order_type="LMT", limit_price=99)
        rig.gw.faults.reply_delay_s = 0.2  # the fill is on its way when our cancel leaves
        from engine.domain import Quote

        rig.gw.on_quote(Quote("AAPL", rig.clock(), D("98.90"), D("98.95"), D(10000), D(10000), D("98.95")))
        rig.engine.cancel(order.client_order_id, "too slow")
        await rig.until(lambda: order.status is S.FILLED)
        await rig.settle()
        assert S.CANCELLED not in rig.status_of(order)
        assert rig.engine.positions["AAPL"].quantity == order.intent.quantity
        await rig.stop()

    run(scenario)


def test_ib_connectivity_loss_1100_stops_new_orders_until_1102() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        rig.gw.lose_connectivity()
        await rig.settle()
        assert not rig.engine.broker_connected
        rig.gw.restore_connectivity()
        await rig.settle()
        assert rig.engine.broker_connected
        await rig.stop()

    run(scenario)


def test_pacing_queues_orders_beyond_the_rate_and_sends_them_in_order() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        for sym in ("AAPL", "MSFT", "NVDA", "AMZN"):
            await rig.quote("100.00", "100.02", symbol=sym)
        # Paced from here: ib_async's own throttle (set from the same figure at construction) would have sent
        # the start-up requests and subscriptions at 2 a second too (~10 s); the adapter's queue is under test.
        rig.broker.pacing_per_s = 2
        orders = [rig.engine.on_signal(_signal(f"pc{i}", symbol=sym))
                  for i, sym in enumerate(("AAPL", "MSFT", "NVDA", "AMZN"))]
        assert all(o is not None for o in orders)
        assert rig.broker.paced == 2
        await rig.until(lambda: all(o is not None and o.status is S.FILLED for o in orders), timeout=5)
        assert len(rig.fills) == 4
        await rig.stop()

    run(scenario)


def test_a_dropped_execution_report_is_recovered_from_the_replay_after_a_reconnect() -> None:
    async def scenario() -> None:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        rig.gw.faults.drop_replies[EXECUTION_DATA] = 1
        order = await _order(rig, "lost1")
        assert rig.fills == []
        rig.gw.drop_connections()
        await rig.until(lambda: not rig.engine.broker_connected)
        await rig.until(lambda: rig.engine.broker_connected)
        await rig.until(lambda: len(rig.fills) == 1)
        assert rig.engine.positions["AAPL"].quantity == order.intent.quantity
        await rig.stop()

    run(scenario)
