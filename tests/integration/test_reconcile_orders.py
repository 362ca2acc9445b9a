"""Reconciliation makes each order right, not only the position.

An order the broker finished while the engine was away, or whose execution report was lost in flight,
ends with its filled quantity, average price and commission equal to the sum of its fills, and that sum
equal to the broker's. Against the simulated gateway over TCP, on simulated time; seeded and bounded.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from typer.testing import CliRunner

from engine.cli import app
from engine.config import load_settings
from engine.live import IbkrSession
from paper.wire import ERR_MSG, ORDER_STATUS
from repositories.models import FillRow, OrderRow
from tests.conftest import signal_line, write_lines
from tests.ibrig import gateway_in_thread, lockstep_session, run, until

pytestmark = pytest.mark.timeout(60)


def _order_and_fills(url: str, coid: str) -> tuple[tuple[str, D, D, D], list[tuple[str, D, D, D, str]]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        order = conn.execute(select(OrderRow.status, OrderRow.filled_qty, OrderRow.avg_fill_price,
                                    OrderRow.commission).where(OrderRow.client_order_id == coid)).one()
        fills = conn.execute(select(FillRow.exec_id, FillRow.quantity, FillRow.price, FillRow.commission,
                                    FillRow.source).where(FillRow.client_order_id == coid)).all()
    engine.dispose()
    return (order[0], order[1], order[2], order[3]), [(f[0], f[1], f[2], f[3], f[4]) for f in fills]


def test_an_order_the_broker_filled_while_the_engine_was_down_gets_the_brokers_fills_on_its_row(
        db_url: str) -> None:
    settings = load_settings(database_url=db_url, ibkr={"drain_s": 0.1})

    async def scenario() -> tuple[D, D, D]:
        gw, first, clock = await lockstep_session(settings, client_id=5, seed=9)
        await first.process_line(signal_line("down", symbol="AAPL", seconds=1, order_type="LMT", limit_price=1.0))
        (order,) = [o for o in gw.live.values() if o.ref == "tc-down"]  # resting, far below the market
        await first.broker.close()  # the engine goes away with its order working
        first.repos.engine_lock.release(first.holder)
        first.db.dispose()
        await until(lambda: not gw._clients, "the gateway drops the client")
        gw.matching.modify(order.order_id, order.quantity, D(100_000), None)  # moved into the market (TWS)
        gw.step("AAPL", clock())
        assert order.status == "Filled"
        session = IbkrSession(settings, host="127.0.0.1", port=gw.port, client_id=5, clock=clock, lockstep=True)
        await session.connect()  # the restart reconciles before its first signal
        await session.run([])
        commission = sum((e.commission for e in gw.executions if e.order.order_ref == "tc-down"), D(0))
        await gw.stop()
        return order.filled, order.avg_price, commission

    broker_filled, broker_avg, broker_commission = run(scenario)
    (status, filled, avg, commission), fills = _order_and_fills(db_url, "tc-down")
    assert broker_filled > 0
    assert status == "Filled"
    assert fills and all(f[4] == "inferred" for f in fills)
    assert filled == sum(f[1] for f in fills) == broker_filled
    assert avg == sum(f[1] * f[2] for f in fills) / filled == broker_avg
    assert commission == sum(f[3] for f in fills) == broker_commission


def test_an_execution_report_lost_in_flight_is_booked_as_inferred_during_the_session_without_a_halt(
        tmp_path: Path) -> None:
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("lost", symbol="AAPL")])
    db = f"sqlite:///{tmp_path / 'lost.db'}"
    with gateway_in_thread(step_s=0.05, seed=21) as gw:
        gw.faults.drop_exec.add("tc-lost")  # filled at the gateway, its execDetails never sent
        result = CliRunner().invoke(app, ["run", "--broker", "ibkr", "--port", str(gw.port), "--client-id", "7",
                                          "--signals", str(signals), "--db", db, "--json"],
                                    env={"TRADECTL_IBKR__DRAIN_S": "6",
                                         "TRADECTL_KILLSWITCH__RECONCILE_INTERVAL_S": "0.3"})
        dropped = not gw.faults.drop_exec
        at_gateway = [o for o in gw.done.values() if o.ref == "tc-lost"]
        theirs = {s: p.quantity for s, p in gw.matching.positions.items() if p.quantity}
    assert dropped, "the fault fired"
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("\n{\n") + 1:] if "\n{\n" in result.stdout
                         else result.stdout)
    assert summary["killswitches"] == {}  # nothing halted: the inferred fill explains the difference
    assert {p["symbol"]: D(p["quantity"]) for p in summary["positions"]} == theirs
    (status, filled, _, _), fills = _order_and_fills(db, "tc-lost")
    assert status == "Filled" and [f[4] for f in fills] == ["inferred"]
    assert filled == sum(f[1] for f in fills) == at_gateway[0].quantity


def test_an_order_stuck_in_pending_cancel_takes_the_brokers_final_state_during_the_session(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stuck.db'}"
    settings = load_settings(database_url=url, ibkr={"drain_s": 3},
                             killswitch={"reconcile_interval_s": 0.3})

    async def scenario() -> tuple[str, str]:
        gw, session, _ = await lockstep_session(settings, client_id=8, seed=4)
        await session.process_line(signal_line("rest", symbol="AAPL", seconds=1, order_type="LMT",
                                               limit_price=1.0))
        gw.faults.drop_replies.update({ORDER_STATUS: 1, ERR_MSG: 1})  # the cancel's confirmation is lost
        session.engine.cancel("tc-rest", "operator cancel")
        await session.broker.sync()
        order = next(o for o in gw.done.values() if o.ref == "tc-rest")
        assert session.engine.orders["tc-rest"].status.value == "PendingCancel"
        await session.run([])
        await gw.stop()
        return order.status, session.engine.killswitches.get("symbol:AAPL").value

    at_gateway, switch = run(scenario)
    (status, filled, _, _), _ = _order_and_fills(url, "tc-rest")
    assert at_gateway == "Cancelled" and status == "Cancelled" and filled == 0
    assert switch == "ACTIVE"
