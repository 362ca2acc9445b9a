"""Brackets at the simulated gateway over TCP: the engine through ib_async, and IB's own ibapi client watching.

The entry goes with transmit off, the stop loss too, the take profit transmits all three; the exits are
children of the entry (parentId) in one OCA group (ocaType 2: an execution reduces the other), held until
the entry fills.
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal as D
from typing import Any

import pytest
from ib_async import IB, Contract, LimitOrder, Stock

from engine.domain import Order, OrderStatus, Position
from paper.gateway import GatewaySim
from tests.conftest import signal_line
from tests.ibrig import IbRig, run

pytestmark = pytest.mark.timeout(60)
BRACKET = {"stop_loss": {"distance": 2}, "take_profit": {"distance": 3}}


def _status(order: Order) -> OrderStatus:
    return order.status


async def _bracket(rig: IbRig, sid: str = "b1", **extra: Any) -> list[Order]:
    await rig.quote("100.00", "100.02")
    sent: list[Order] = []
    rig.bus.order_recorded += lambda o, s, r, n: sent.append(o)
    rig.engine.on_signal_line(signal_line(sid, "AAPL", "long", 0, **{**BRACKET, **extra}))
    await rig.until(lambda: len(rig.gw.orders_view()) == 3)
    await rig.settle()
    return sent


def test_the_gateway_holds_a_brackets_three_orders_with_parent_ids_and_one_oca_group() -> None:
    async def scenario() -> list[dict[str, Any]]:
        rig = await IbRig().start()
        try:
            await _bracket(rig, order_type="LMT", limit_price=99)
            return rig.gw.orders_view()
        finally:
            await rig.stop()

    entry, stop, target = run(scenario)
    assert (entry["order_ref"], entry["parent_id"], entry["status"]) == ("tc-b1", 0, "Submitted")
    assert stop["parent_id"] == target["parent_id"] == entry["order_id"]
    assert stop["oca_group"] == target["oca_group"] == "tc-b1"
    assert (stop["order_type"], stop["stop"], stop["action"], stop["tif"]) == ("STP", "97", "SELL", "GTC")
    assert (target["order_type"], target["limit"]) == ("LMT", "102")  # distances from the entry limit 99
    assert stop["status"] == target["status"] == "PreSubmitted"  # held until the entry fills


def test_the_stop_loss_fills_at_the_gateway_and_ib_cancels_the_take_profit() -> None:
    async def scenario() -> tuple[list[str], OrderStatus, OrderStatus, D]:
        rig = await IbRig().start()
        try:
            _, stop, target = await _bracket(rig)
            await rig.quote("97.90", "97.92")
            await rig.until(lambda: rig.engine.portfolio.quantity("AAPL") == 0 and not rig.engine.book.orders)
            statuses = [row["status"] for row in rig.gw.orders_view()]
            return statuses, _status(stop), _status(target), rig.gw.matching.positions["AAPL"].quantity
        finally:
            await rig.stop()

    statuses, stop, target, at_gateway = run(scenario)
    assert statuses == ["Filled", "Filled", "Cancelled"]
    assert stop is OrderStatus.FILLED and target is OrderStatus.CANCELLED
    assert at_gateway == 0


def test_ibs_official_ibapi_client_sees_a_brackets_three_orders_with_parent_ids_and_oca_group() -> None:
    from ibapi.client import EClient
    from ibapi.common import UNSET_INTEGER
    from ibapi.wrapper import EWrapper

    seen: dict[int, Any] = {}
    ready, done = threading.Event(), threading.Event()

    class App(EWrapper, EClient):  # type: ignore[misc]  # ibapi ships no type hints: its classes are Any
        def __init__(self) -> None:
            EWrapper.__init__(self)
            EClient.__init__(self, self)

        def nextValidId(self, orderId: int) -> None:
            ready.set()

        def openOrder(self, orderId: int, contract: Any, order: Any, state: Any) -> None:
            seen[orderId] = (order.orderRef, order.parentId, order.ocaGroup, order.ocaType, order.orderType)

        def openOrderEnd(self) -> None:
            done.set()

    async def place_bracket() -> tuple[IbRig, list[Order]]:
        rig = await IbRig().start()
        sent = await _bracket(rig, order_type="LMT", limit_price=99)
        return rig, sent

    loop = asyncio.new_event_loop()
    rig, sent = loop.run_until_complete(place_bracket())
    serving = threading.Thread(target=loop.run_forever, daemon=True)
    serving.start()
    app = App()
    app.connect("127.0.0.1", rig.gw.port, clientId=0)
    reader = threading.Thread(target=app.run, daemon=True)
    reader.start()
    try:
        assert ready.wait(5), "no nextValidId"
        app.reqAllOpenOrders()
        assert done.wait(5), "no openOrderEnd"
    finally:
        app.disconnect()
        reader.join(5)
        asyncio.run_coroutine_threadsafe(rig.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        serving.join(5)
    entry_id = next(oid for oid, v in seen.items() if v[0] == "tc-b1")
    stop_ref, target_ref = sent[1].client_order_id, sent[2].client_order_id
    assert sorted(seen.values()) == sorted([
        ("tc-b1", 0, "", UNSET_INTEGER, "LMT"),  # the entry is in no OCA group
        (stop_ref, entry_id, "tc-b1", 2, "STP"),
        (target_ref, entry_id, "tc-b1", 2, "LMT"),
    ])


def test_a_bracket_whose_entry_id_ib_refuses_is_withdrawn_whole_not_sent_naked() -> None:
    async def scenario() -> tuple[list[OrderStatus], D, D]:
        rig = await IbRig().start()
        try:
            await rig.quote("100.00", "100.02")
            rig.gw.faults.duplicate_id_ref = "tc-b1"  # 103 on the entry, as its bracket is transmitted
            sent: list[Order] = []
            rig.bus.order_recorded += lambda o, s, r, n: sent.append(o)
            rig.engine.on_signal_line(signal_line("b1", "AAPL", "long", 0, **BRACKET))
            await rig.until(lambda: len(sent) == 3 and all(o.status.is_terminal for o in sent))
            await rig.quote("97.90", "97.92")
            return ([_status(o) for o in sent], rig.engine.portfolio.quantity("AAPL"),
                    rig.gw.matching.positions.get("AAPL", Position("AAPL")).quantity)
        finally:
            await rig.stop()

    statuses, ours, theirs = run(scenario)
    assert statuses == [OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.CANCELLED]
    assert ours == theirs == 0


def test_an_exit_whose_id_ib_refuses_is_placed_again_still_a_child_in_its_oca_group() -> None:
    async def scenario() -> dict[str, dict[str, Any]]:
        rig = await IbRig().start()
        try:
            rig.gw.faults.duplicate_id_ref = "te-sl-b1-AAPL"
            await _bracket(rig, order_type="LMT", limit_price=99)
            await rig.until(lambda: len(rig.gw.orders_view()) == 3)
            return {row["order_ref"]: row for row in rig.gw.orders_view()}
        finally:
            await rig.stop()

    rows = run(scenario)
    stop, entry = rows["te-sl-b1-AAPL"], rows["tc-b1"]
    assert stop["parent_id"] == entry["order_id"] and stop["oca_group"] == "tc-b1"
    assert stop["order_id"] > rows["te-tp-b1-AAPL"]["order_id"]  # a fresh id, after the refused one
    assert stop["status"] == "PreSubmitted"


def test_the_gateway_holds_an_untransmitted_order_per_connection_and_drops_it_with_the_connection() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        gw = GatewaySim(port=0, step_s=None, pacing_limit=None)
        await gw.start()
        ib = IB()
        await ib.connectAsync("127.0.0.1", gw.port, clientId=2, timeout=5)
        [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        assert isinstance(contract, Contract)
        ib.placeOrder(contract, LimitOrder("BUY", 100, 99.0, orderRef="held", account="DU0000001", transmit=False))
        await ib.reqCurrentTimeAsync()
        held = [f[26] for c in gw._clients.values() for f in c.untransmitted]
        working = [row["order_ref"] for row in gw.orders_view()]
        ib.disconnect()
        await asyncio.sleep(0.2)
        again = IB()
        await again.connectAsync("127.0.0.1", gw.port, clientId=2, timeout=5)
        await again.reqCurrentTimeAsync()
        after = [f[26] for c in gw._clients.values() for f in c.untransmitted] + [
            row["order_ref"] for row in gw.orders_view()]
        again.disconnect()
        await gw.stop()
        return held, working, after

    assert run(scenario) == (["held"], [], [])


def test_a_gateway_started_again_does_not_repeat_execution_ids() -> None:
    first = GatewaySim(port=0, step_s=None).matching.exec_prefix
    time.sleep(0.002)
    assert GatewaySim(port=0, step_s=None).matching.exec_prefix != first


def test_a_reducing_signal_cuts_the_exits_at_the_gateway_and_the_stop_closes_only_what_is_left() -> None:
    async def scenario() -> tuple[D, D, D]:
        rig = await IbRig().start()
        try:
            entry, stop, _ = await _bracket(rig)
            half = entry.intent.quantity // 2
            rig.engine.on_signal_line(signal_line("less", "AAPL", "long", 1, win_prob=0.55, payoff=1.5,
                                                  max_qty=int(half)))
            await rig.until(lambda: rig.engine.portfolio.quantity("AAPL") == half)
            await rig.settle()
            at_gateway = {row["order_ref"]: row for row in rig.gw.orders_view()}[stop.client_order_id]
            await rig.quote("97.90", "97.92")
            await rig.until(lambda: rig.engine.portfolio.quantity("AAPL") == 0)
            await rig.settle()
            return half, D(at_gateway["quantity"]), rig.gw.matching.positions["AAPL"].quantity
        finally:
            await rig.stop()

    half, stop_quantity, final = run(scenario)
    assert stop_quantity == half and final == 0  # closed, never flipped short
