"""The simulated gateway as a client sees it: unmodified ib_async (and IB's own ibapi) over TCP."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal as D
from typing import Any

import pytest
from ib_async import IB, Contract, LimitOrder, MarketOrder, Stock, Trade

from engine.domain import Quote
from paper.gateway import GatewaySim
from tests.conftest import T0
from tests.ibrig import run

pytestmark = pytest.mark.timeout(60)


async def _connected(**kw: Any) -> tuple[GatewaySim, IB, Contract]:
    gw = GatewaySim(port=0, step_s=None, pacing_limit=kw.pop("pacing_limit", None), **kw)
    await gw.start()
    ib = IB()
    await ib.connectAsync("127.0.0.1", gw.port, clientId=2, timeout=5)
    [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    assert isinstance(contract, Contract)
    gw.on_quote(Quote("AAPL", T0, D("100.00"), D("100.02"), D(500), D(500), D("100.01")))
    return gw, ib, contract


async def _wait(ib: IB) -> None:
    await ib.reqCurrentTimeAsync()


def test_a_modified_limit_that_now_crosses_fills_at_the_touch() -> None:
    async def scenario() -> tuple[str, float, list[str]]:
        gw, ib, c = await _connected()
        trade = ib.placeOrder(c, LimitOrder("BUY", 100, 99.0, orderRef="tc-mod", account="DU0000001"))
        await _wait(ib)
        assert trade.orderStatus.status == "Submitted"
        trade.order.lmtPrice = 100.05
        ib.placeOrder(c, trade.order)  # same order id: a modify
        await _wait(ib)
        result = trade.orderStatus.status, trade.orderStatus.avgFillPrice, [f.execution.orderRef for f in trade.fills]
        ib.disconnect()
        await gw.stop()
        return result

    assert run(scenario) == ("Filled", 100.02, ["tc-mod"])


def test_a_cancel_of_an_unknown_order_gets_10147_and_of_a_filled_one_10148() -> None:
    async def scenario() -> list[int]:
        gw, ib, c = await _connected()
        codes: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        filled = ib.placeOrder(c, MarketOrder("BUY", 100, account="DU0000001"))
        await _wait(ib)
        client: Any = ib.client  # raw requests, below what IB.cancelOrder allows
        client.cancelOrder(filled.order.orderId)
        client.cancelOrder(987654)
        await _wait(ib)
        ib.disconnect()
        await gw.stop()
        return codes

    assert run(scenario) == [10148, 10147]


def test_global_cancel_cancels_every_working_order() -> None:
    async def scenario() -> list[str]:
        gw, ib, c = await _connected()
        trades = [ib.placeOrder(c, LimitOrder("BUY", 100, 90.0 + i, account="DU0000001")) for i in range(3)]
        await _wait(ib)
        cancel_all: Any = ib.reqGlobalCancel
        cancel_all()
        await _wait(ib)
        statuses = [t.orderStatus.status for t in trades]
        assert gw.live == {}
        ib.disconnect()
        await gw.stop()
        return statuses

    assert run(scenario) == ["Cancelled"] * 3


def test_stop_orders_wait_presubmitted_until_the_last_price_reaches_the_stop() -> None:
    async def scenario() -> list[str]:
        gw, ib, c = await _connected()
        order = MarketOrder("SELL", 100, account="DU0000001")
        order.orderType, order.auxPrice = "STP", 99.50
        trade = ib.placeOrder(c, order)
        await _wait(ib)
        seen = [trade.orderStatus.status]
        gw.on_quote(Quote("AAPL", T0, D("99.40"), D("99.45"), D(500), D(500), D("99.45")))
        await _wait(ib)
        seen.append(trade.orderStatus.status)
        ib.disconnect()
        await gw.stop()
        return seen

    assert run(scenario) == ["PreSubmitted", "Filled"]


def test_executions_and_completed_orders_are_replayed_to_a_client_that_reconnects() -> None:
    async def scenario() -> tuple[int, float, list[tuple[str, str]]]:
        gw, ib, c = await _connected()
        ib.placeOrder(c, MarketOrder("BUY", 100, orderRef="tc-a", account="DU0000001"))
        ib.placeOrder(c, LimitOrder("BUY", 100, 90.0, orderRef="tc-b", account="DU0000001"))
        await _wait(ib)
        ib.disconnect()
        await asyncio.sleep(0.05)
        again = IB()
        await again.connectAsync("127.0.0.1", gw.port, clientId=2, timeout=5)
        fills = again.fills()
        trades = sorted((t.order.orderRef, t.orderStatus.status) for t in again.trades())
        again.disconnect()
        await gw.stop()
        return len(fills), fills[0].commissionReport.commission, trades

    n, commission, trades = run(scenario)
    assert n == 1 and commission == 1.0
    assert trades == [("tc-a", "Filled"), ("tc-b", "Submitted")]


def test_market_data_streams_bid_ask_last_and_an_unknown_symbol_gets_200() -> None:
    async def scenario() -> tuple[tuple[float, float, float, float], list[int], Any]:
        gw, ib, c = await _connected()
        codes: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        ticker = ib.reqMktData(c)
        await _wait(ib)
        gw.step("AAPL")
        await _wait(ib)
        q = gw.matching.quotes["AAPL"]
        seen = (ticker.bid, ticker.ask, ticker.last, ticker.bidSize)
        assert seen == (float(q.bid), float(q.ask), float(q.last), float(q.bid_size))
        unknown = await ib.qualifyContractsAsync(Stock("NOPE", "SMART", "USD"))
        ib.disconnect()
        await gw.stop()
        return seen, codes, unknown

    _, codes, unknown = run(scenario)
    assert codes == [200] and unknown == [None]


def test_a_client_above_fifty_messages_a_second_is_disconnected_with_error_100() -> None:
    async def scenario() -> tuple[list[int], bool]:
        gw, ib, _ = await _connected(pacing_limit=50)
        codes: list[int] = []
        ib.errorEvent += lambda req_id, code, msg, contract: codes.append(code)
        ib.client.MaxRequests = 0  # switch off the client's own throttle: send as fast as it can
        client: Any = ib.client
        for _ in range(60):
            client.reqCurrentTime()
        deadline = asyncio.get_running_loop().time() + 10  # a loaded machine answers late, not differently
        while (ib.isConnected() or 100 not in codes) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        connected = ib.isConnected()
        ib.disconnect()
        await gw.stop()
        return codes, connected

    codes, connected = run(scenario)
    assert 100 in codes and not connected


def test_a_client_whose_versions_the_gateway_cannot_serve_is_dropped() -> None:
    async def scenario() -> bytes:
        gw = GatewaySim(port=0, step_s=None)
        await gw.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"API\0" + len(b"v100..150").to_bytes(4, "big") + b"v100..150")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(100), 5)
        writer.close()
        await gw.stop()
        return data

    assert run(scenario) == b""


def test_the_control_port_applies_faults_to_a_running_gateway() -> None:
    async def scenario() -> list[dict[str, Any]]:
        gw = GatewaySim(port=0, step_s=None, control_port=0)
        await gw.start()
        assert gw.control_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.control_port)
        replies = []
        for req in ({"cmd": "delay", "seconds": "0.25"}, {"cmd": "refuse-short", "symbol": "tsla"},
                    {"cmd": "status"}, {"cmd": "nonsense"}):
            writer.write(json.dumps(req).encode() + b"\n")
            await writer.drain()
            replies.append(json.loads(await reader.readline()))
        writer.close()
        await gw.stop()
        return replies

    delay, short, status, bad = run(scenario)
    assert delay["ok"] and short["ok"]
    assert status["faults"]["reply_delay_s"] == 0.25 and status["faults"]["refuse_short"] == ["TSLA"]
    assert bad == {"ok": False, "error": "unknown command 'nonsense'"}


def test_ibs_official_ibapi_client_connects_and_sees_an_orders_status() -> None:
    from ibapi.client import EClient
    from ibapi.contract import Contract as IbapiContract
    from ibapi.order import Order as IbapiOrder
    from ibapi.wrapper import EWrapper

    seen: dict[str, Any] = {"status": []}
    ready = threading.Event()
    done = threading.Event()

    class App(EWrapper, EClient):  # type: ignore[misc]  # ibapi ships no type hints: its classes are Any
        def __init__(self) -> None:
            EWrapper.__init__(self)
            EClient.__init__(self, self)

        def nextValidId(self, orderId: int) -> None:
            seen["next_id"] = orderId
            ready.set()

        def managedAccounts(self, accountsList: str) -> None:
            seen["accounts"] = accountsList

        def orderStatus(self, orderId: int, status: str, filled: Any, *rest: Any) -> None:
            seen["status"].append((orderId, status, float(filled)))
            if status == "Filled":
                done.set()

    loop = asyncio.new_event_loop()
    gw = GatewaySim(port=0, step_s=None)
    listening = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(gw.start())
        gw.on_quote(Quote("AAPL", T0, D("100.00"), D("100.02"), D(500), D(500), D("100.01")))
        listening.set()
        loop.run_forever()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    assert listening.wait(5)
    app = App()
    app.connect("127.0.0.1", gw.port, clientId=9)
    reader = threading.Thread(target=app.run, daemon=True)
    reader.start()
    try:
        assert ready.wait(5), "no nextValidId"
        contract = IbapiContract()
        contract.symbol, contract.secType, contract.exchange, contract.currency = "AAPL", "STK", "SMART", "USD"
        order = IbapiOrder()
        order.action, order.orderType, order.totalQuantity, order.orderRef = "BUY", "MKT", D(100), "tc-ibapi"
        app.placeOrder(seen["next_id"], contract, order)
        assert done.wait(5), f"no Filled status: {seen}"
    finally:
        app.disconnect()
        reader.join(5)
        asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        server.join(5)
    assert seen["accounts"] == "DU0000001"
    assert seen["status"][0][1] == "Submitted" and seen["status"][-1] == (seen["next_id"], "Filled", 100.0)


def _ioc_buy(ib: IB, contract: Contract, quantity: int) -> Trade:
    order = LimitOrder("BUY", quantity, 100.02, account="DU0000001")  # at the ask of _connected's quote
    order.tif = "IOC"
    return ib.placeOrder(contract, order)


def test_an_ioc_order_fills_what_the_quote_shows_and_cancels_the_rest() -> None:
    async def scenario() -> tuple[str, float]:
        gw, ib, c = await _connected()
        trade = _ioc_buy(ib, c, 800)
        await _wait(ib)
        result = trade.orderStatus.status, trade.filled()
        assert gw.live == {}
        ib.disconnect()
        await gw.stop()
        return result

    assert run(scenario) == ("Cancelled", 500.0)  # the quote shows 500 at the ask


def test_an_order_accepted_during_an_outage_reaches_the_exchange_when_connectivity_returns() -> None:
    async def scenario() -> tuple[str, float]:
        gw, ib, c = await _connected()
        gw.lose_connectivity()
        trade = _ioc_buy(ib, c, 800)
        await _wait(ib)
        assert trade.orderStatus.status == "Submitted"
        gw.restore_connectivity()
        await _wait(ib)
        result = trade.orderStatus.status, trade.filled()
        assert gw.live == {}
        ib.disconnect()
        await gw.stop()
        return result

    assert run(scenario) == ("Cancelled", 500.0)  # IOC: what the quote shows then, the rest cancelled
