"""The simulator's messages decode in both client libraries at every server version it serves.

Each message is fed to ``ib_async``'s decoder and to IB's official ``ibapi`` decoder, which call their
wrappers with the decoded values: a field out of place shows up as a wrong value or a failed decode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from ib_async.decoder import Decoder as AsyncDecoder
from ibapi.decoder import Decoder as IbapiDecoder
from ibapi.wrapper import EWrapper

from paper import wire
from paper.wire import SimContract, WireExecution, WireOrder

VERSIONS = (157, 176, 178)
CONTRACT = SimContract(265598, "AAPL")
ORDER = WireOrder(7, 3, 1000042, "BUY", D(300), "LMT", D("187.25"), None, "DAY", "DU0000001", "tc-sig-1",
                  "Submitted", D(100))
TS = datetime(2026, 1, 5, 14, 30, 1, tzinfo=UTC)
EXEC = WireExecution("0000a001.00000001.01.01", TS, ORDER, D(100), D("187.24"), D(100), D("187.24"), D("1.0"),
                     None)


class _AsyncWrapper:
    """Records what ib_async's decoder hands its wrapper."""

    defaultTimezone = UTC

    class ib:
        TimezoneTWS = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def via_ib_async(version: int, fields: list[object]) -> list[tuple[str, tuple[Any, ...]]]:
    w: Any = _AsyncWrapper()
    decoder: Any = AsyncDecoder(w, version)
    decoder.interpret([wire._text(f) for f in fields])
    return list(w.calls)


def via_ibapi(version: int, fields: list[object]) -> list[tuple[str, tuple[Any, ...]]]:
    calls: list[tuple[str, tuple[Any, ...]]] = []
    w: Any = EWrapper()
    for name in ("openOrder", "completedOrder", "execDetails", "orderStatus", "contractDetails", "error"):
        setattr(w, name, lambda *args, _name=name: calls.append((_name, args)))
    IbapiDecoder(w, version).interpret(tuple(wire._text(f).encode() for f in fields[1:]), int(str(fields[0])))
    return calls


@pytest.mark.parametrize(("version", "count"), [(157, 120), (176, 128), (178, 127)])
def test_open_order_has_the_field_count_of_a_real_gateway(version: int, count: int) -> None:
    assert len(wire.open_order(version, CONTRACT, ORDER)) == count


@pytest.mark.parametrize(("version", "count"), [(157, 92), (176, 97), (178, 96)])
def test_completed_order_has_the_field_count_of_a_real_gateway(version: int, count: int) -> None:
    assert len(wire.completed_order(version, CONTRACT, ORDER, TS, "Filled")) == count


@pytest.mark.parametrize("version", VERSIONS)
def test_open_order_decodes_in_ib_async_with_every_value_in_place(version: int) -> None:
    [(name, (order_id, contract, order, state))] = via_ib_async(version, wire.open_order(version, CONTRACT, ORDER))
    assert name == "openOrder" and order_id == 7
    assert (contract.conId, contract.symbol, contract.secType) == (265598, "AAPL", "STK")
    assert (order.action, order.totalQuantity, order.orderType, order.lmtPrice) == ("BUY", 300, "LMT", 187.25)
    assert (order.orderRef, order.permId, order.clientId, order.account) == ("tc-sig-1", 1000042, 3, "DU0000001")
    assert state.status == "Submitted"


@pytest.mark.parametrize("version", VERSIONS)
def test_open_order_decodes_in_ibapi_with_every_value_in_place(version: int) -> None:
    [(name, (order_id, contract, order, state))] = via_ibapi(version, wire.open_order(version, CONTRACT, ORDER))
    assert name == "openOrder" and order_id == 7
    assert (contract.conId, contract.symbol) == (265598, "AAPL")
    assert (order.action, order.totalQuantity, order.lmtPrice, order.orderRef, order.permId) == (
        "BUY", D(300), 187.25, "tc-sig-1", 1000042)
    assert state.status == "Submitted"


@pytest.mark.parametrize("version", VERSIONS)
def test_completed_order_decodes_in_both_clients(version: int) -> None:
    fields = wire.completed_order(version, CONTRACT, ORDER, TS, "Filled")
    [(name, (contract, order, state))] = via_ib_async(version, fields)
    assert name == "completedOrder"
    assert (contract.symbol, order.orderRef, order.permId, order.filledQuantity) == ("AAPL", "tc-sig-1", 1000042, 100)
    assert (state.status, state.completedStatus) == ("Submitted", "Filled")
    [(name, (contract, order, state))] = via_ibapi(version, fields)
    assert (name, order.orderRef, order.permId, state.completedStatus) == ("completedOrder", "tc-sig-1", 1000042,
                                                                          "Filled")


@pytest.mark.parametrize("version", VERSIONS)
def test_execution_decodes_in_both_clients(version: int) -> None:
    fields = wire.exec_details(version, -1, CONTRACT, EXEC, "DU0000001")
    [(name, (req_id, contract, ex))] = via_ib_async(version, fields)
    assert (name, req_id, contract.symbol) == ("execDetails", -1, "AAPL")
    assert (ex.execId, ex.side, ex.shares, ex.price, ex.permId, ex.orderRef) == (
        "0000a001.00000001.01.01", "BOT", 100, 187.24, 1000042, "tc-sig-1")
    assert ex.time == TS
    [(name, (req_id, contract, ex))] = via_ibapi(version, fields)
    assert (name, ex.execId, ex.shares, ex.price, ex.orderRef) == ("execDetails", "0000a001.00000001.01.01", D(100),
                                                                   187.24, "tc-sig-1")


def test_commission_report_decodes_with_the_strict_eight_fields() -> None:
    [(name, (report,))] = via_ib_async(178, wire.commission_report(EXEC))
    assert (name, report.execId, report.commission) == ("commissionReport", EXEC.exec_id, 1.0)


def test_order_status_position_and_portfolio_decode_in_ib_async() -> None:
    [(name, args)] = via_ib_async(178, wire.order_status(ORDER, D("187.24"), D("187.24")))
    assert name == "orderStatus" and args[:6] == (7, "Submitted", 100.0, 200.0, 187.24, 1000042)
    [(name, args)] = via_ib_async(178, wire.position("DU0000001", CONTRACT, D(-200), D("12.5")))
    assert (name, args[0], args[1].symbol, args[2], args[3]) == ("position", "DU0000001", "AAPL", -200.0, 12.5)
    [(name, args)] = via_ib_async(178, wire.portfolio("DU0000001", CONTRACT, D(100), D(11), D(10), D(0)))
    assert (name, args[0].symbol, args[1], args[2], args[3], args[5]) == ("updatePortfolio", "AAPL", 100.0, 11.0,
                                                                          1100.0, 100.0)


@pytest.mark.parametrize("version", VERSIONS)
def test_contract_details_decode_in_both_clients(version: int) -> None:
    fields = wire.contract_details(version, 9, CONTRACT)
    [(name, (req_id, cd))] = via_ib_async(version, fields)
    assert (name, req_id, cd.contract.conId, cd.minTick, cd.contract.primaryExchange) == (
        "contractDetails", 9, 265598, 0.01, "NASDAQ")
    [(name, (req_id, cd))] = via_ibapi(version, fields)
    assert (name, req_id, cd.contract.conId, cd.minTick) == ("contractDetails", 9, 265598, 0.01)


def test_error_carries_the_advanced_reject_field_only_from_version_166() -> None:
    assert wire.error(178, 5, 201, "Order rejected") == [4, 2, 5, 201, "Order rejected", ""]
    assert wire.error(157, 5, 201, "Order rejected") == [4, 2, 5, 201, "Order rejected"]


def test_numbers_are_printed_as_a_gateway_prints_them() -> None:
    assert wire._text(D("300.0")) == "300"
    assert wire._text(D("187.250")) == "187.250"
    assert wire._text(True) == "1" and wire._text(None) == ""
