"""Reconciliation: the pure comparison, and a restart after a crash against the simulated gateway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.base import BrokerOrder, BrokerPosition, BrokerSnapshot
from broker.reconcile import OpenOrderRecord, reconcile
from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import Fill, Order, OrderStatus, Side, Signal
from engine.live import IbkrSession
from paper.gateway import GatewaySim
from paper.market import SIM_START
from repositories.db import make_engine
from repositories.models import FillRow, OrderRow, SignalRow
from repositories.repos import Repositories
from tests.conftest import signal_line
from tests.ibrig import lockstep_session, run

S = OrderStatus
TS = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def _bo(coid: str, status: OrderStatus, filled: str = "0", symbol: str = "AAPL") -> BrokerOrder:
    return BrokerOrder(coid, symbol, Side.BUY, D(100), D(filled), status)


def _fill(exec_id: str, coid: str, qty: str = "100", symbol: str = "AAPL") -> Fill:
    return Fill(exec_id, coid, symbol, Side.BUY, D(qty), D("10"), D("1"), TS)


def test_an_order_only_the_broker_has_is_adopted_and_its_fill_inferred() -> None:
    snap = BrokerSnapshot([_bo("tc-a", S.FILLED, "100")], [_fill("e1", "tc-a")],
                          [BrokerPosition("AAPL", D(100), D(10))])
    report = reconcile([], set(), set(), {}, snap)
    assert [o.client_order_id for o in report.adopt_orders] == ["tc-a"]
    assert [(f.exec_id, f.source) for f in report.adopt_fills] == [("e1", "inferred")]
    assert report.position_breaks == {}


def test_open_orders_the_broker_finished_or_never_saw_are_closed_and_working_ones_kept() -> None:
    ours = [OpenOrderRecord("tc-done", "AAPL", D(0), "Submitted"), OpenOrderRecord("tc-lost", "AAPL", D(0),
                                                                                   "PendingNew"),
            OpenOrderRecord("tc-part", "AAPL", D(50), "PartiallyFilled"), OpenOrderRecord("tc-live", "AAPL", D(0),
                                                                                          "Submitted")]
    snap = BrokerSnapshot([_bo("tc-done", S.CANCELLED), _bo("tc-live", S.SUBMITTED), _bo("tc-part", S.CANCELLED,
                                                                                         "50")], [], [])
    report = reconcile(ours, {"tc-done", "tc-live", "tc-part"}, set(), {}, snap)
    closed = {c: s for c, s, _ in report.close_orders}
    assert closed == {"tc-done": S.CANCELLED, "tc-lost": S.REJECTED, "tc-part": S.CANCELLED}
    assert [o.client_order_id for o in report.keep_open] == ["tc-live"]
    assert report.adopt_orders == []


def test_known_fills_and_foreign_orders_are_left_alone() -> None:
    snap = BrokerSnapshot([_bo("manual-1", S.SUBMITTED)], [_fill("e1", "tc-a")], [BrokerPosition("AAPL", D(100),
                                                                                                  D(10))])
    report = reconcile([], set(), {"e1"}, {"AAPL": D(100)}, snap)
    assert report.clean and report.foreign_orders == 1


def test_a_position_the_fills_cannot_explain_is_a_break_naming_both_sides() -> None:
    snap = BrokerSnapshot([], [_fill("e2", "tc-b", "30")], [BrokerPosition("AAPL", D(200), D(10))])
    report = reconcile([], set(), set(), {"AAPL": D(100)}, snap)
    assert report.position_breaks == {"AAPL": (D(130), D(200))}
    assert report.to_json()["position_breaks"] == [{"symbol": "AAPL", "ours": "130", "theirs": "200",
                                                    "difference": "70"}]


@pytest.mark.timeout(60)
def test_after_a_crash_that_lost_unflushed_writes_the_restart_adopts_and_a_replay_sends_nothing_twice(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    lines = [signal_line("m1", symbol="AAPL", seconds=1),
             signal_line("l1", symbol="MSFT", seconds=2, order_type="LMT", limit_price=1.0)]

    async def scenario() -> tuple[dict[str, int], int, dict[str, D], dict[str, D], int, int]:
        clock = SimClock(SIM_START)
        gw = GatewaySim(port=0, seed=11, step_s=None, clock=clock, pacing_limit=None)
        await gw.start()

        async def step(signal: Signal) -> None:
            gw.step(signal.symbol, clock())

        def session() -> IbkrSession:
            return IbkrSession(load_settings(database_url=url, ibkr={"drain_s": 0.1, "commit_every": 10**6}),
                               host="127.0.0.1", port=gw.port, client_id=8, clock=clock, lockstep=True,
                               before_signal=step)

        first = session()
        await first.connect()
        first.engine.before_submit = None  # fully batched writes: the crash loses everything since the start
        first.recorder.defer = None  # (and no commit at the end of each loop turn)
        for line in lines:
            await first.process_line(line)
        # The crash: nothing since the start was flushed; the socket and the lock go with the process.
        await first.broker.close()
        first.repos.engine_lock.release(first.holder)
        while gw._clients:
            await step_once()

        second = session()
        await second.connect()  # reconciles before the first signal
        report = second.report
        for line in lines:  # the signal source replays what it had sent
            await second.process_line(line)
        summary = await second.run([])
        assert any(n.startswith("reconciliation at start: 2 order(s) adopted, 1 fill(s) inferred")
                   for n in summary.notes), summary.notes
        refs: dict[str, int] = {}
        for order in list(gw.live.values()) + list(gw.done.values()):
            refs[order.ref] = refs.get(order.ref, 0) + 1
        ours = {p["symbol"]: p["quantity"] for p in summary.positions}
        theirs = {s: p.quantity for s, p in gw.matching.positions.items() if p.quantity}
        await gw.stop()
        return refs, len(report.adopt_fills), ours, theirs, summary.duplicates, len(gw.executions)

    refs, inferred, ours, theirs, duplicates, executions = run(scenario)
    assert refs == {"tc-m1": 1, "tc-l1": 1}  # one order per signal at the broker
    assert inferred == 1 and duplicates == 2
    assert ours == theirs == {"AAPL": ours["AAPL"]}
    repos = Repositories(make_engine(url), "DU0000001")
    with repos.db.connect() as conn:
        fills = conn.execute(select(FillRow.source, func.count()).group_by(FillRow.source)).all()
        orders = dict(conn.execute(select(OrderRow.client_order_id, OrderRow.status)).all())
        signals = dict(conn.execute(select(SignalRow.signal_id, SignalRow.reason_code)).all())
    assert ("inferred", 1) in fills  # the fill made before the crash, adopted from the broker
    assert sum(n for _, n in fills) == executions  # every execution once
    assert orders["tc-l1"] == "Cancelled" and orders["tc-m1"] in ("Filled", "Cancelled")  # all final
    assert signals == {"m1": "adopted", "l1": "adopted"}


async def step_once() -> None:
    await asyncio.sleep(0.01)


@pytest.mark.timeout(90)
def test_tradectl_reconcile_reports_without_changing_anything_and_apply_makes_it_clean(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from engine.cli import app
    from tests.ibrig import gateway_in_thread

    db = f"sqlite:///{tmp_path / 'rec.db'}"
    with gateway_in_thread(step_s=0.02) as gw:
        async def crashed_session() -> None:
            session = IbkrSession(load_settings(database_url=db, ibkr={"commit_every": 1_000_000}),
                                  host="127.0.0.1", port=gw.port, client_id=3)
            await session.connect()
            session.engine.before_submit = None  # fully batched writes, so the crash loses them
            session.recorder.defer = None  # (and no commit at the end of each loop turn)
            now = datetime.now(UTC).isoformat()  # a session on the wall clock believes only recent signals
            await session.process_line(signal_line("r1", symbol="AAPL", ts=now))
            await session.process_line(signal_line("r2", symbol="MSFT", order_type="LMT", limit_price=1.0, ts=now))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while (session.engine.stats.fills == 0 or len(gw.live) + len(gw.done) < 2) and loop.time() < deadline:
                await asyncio.sleep(0.01)  # both orders at the gateway: a close right after placing r2 can beat it
            await session.broker.close()  # the crash: nothing flushed since the start
            session.repos.engine_lock.release(session.holder)

        run(crashed_session)
        from tests.integration.test_kill_integration import wait_for

        wait_for(lambda: not gw._clients, 10, "the gateway to drop the client")
        cli = CliRunner()
        args = ["reconcile", "--port", str(gw.port), "--client-id", "3", "--db", db, "--json"]  # IB shows a client
        # its own open orders: reconcile as the engine's client id
        first = cli.invoke(app, args)
        assert first.exit_code == 1, first.output
        report = json.loads(first.stdout)
        assert not report["applied"]
        assert {o["client_order_id"] for o in report["adopt_orders"]} == {"tc-r1", "tc-r2"}
        assert len(report["adopt_fills"]) >= 1
        wait_for(lambda: not gw._clients, 10, "the gateway to drop the client")
        assert cli.invoke(app, args).exit_code == 1  # read-only: still the same differences
        wait_for(lambda: not gw._clients, 10, "the gateway to drop the client")
        applied = cli.invoke(app, [*args, "--apply"])
        assert json.loads(applied.stdout)["applied"] is True
        assert applied.exit_code == 0, applied.stdout  # so `reconcile --apply && tradectl run` runs
        assert json.loads(applied.stdout)["positions_still_differ"] == {}
        wait_for(lambda: not gw._clients, 10, "the gateway to drop the client")
        again = cli.invoke(app, args)
        assert again.exit_code == 0, again.stdout
        assert json.loads(again.stdout)["clean"] is True


@pytest.mark.timeout(60)
def test_a_live_session_has_the_order_and_its_signal_on_disk_before_the_order_reaches_the_broker(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    seen_at_submit: list[tuple[int, int]] = []

    async def scenario() -> None:
        gw, session, _ = await lockstep_session(load_settings(database_url=url), client_id=2, seed=2)
        submit = session.broker.submit
        repos = Repositories(make_engine(url), "DU0000001")

        def spy(order: Order) -> None:
            with repos.db.connect() as conn:
                seen_at_submit.append((
                    conn.execute(select(func.count()).select_from(OrderRow)
                                 .where(OrderRow.client_order_id == order.client_order_id)).scalar() or 0,
                    conn.execute(select(func.count()).select_from(SignalRow)
                                 .where(SignalRow.signal_id == order.intent.signal_id)).scalar() or 0))
            submit(order)

        broker: Any = session.broker  # submit is wrapped by a spy that looks at the database first
        broker.submit = spy
        await session.process_line(signal_line("d1", symbol="AAPL", seconds=1))
        await session.broker.close()
        session.repos.engine_lock.release(session.holder)
        await gw.stop()

    run(scenario)
    assert seen_at_submit == [(1, 1)]


def test_a_paper_session_after_a_crash_closes_the_open_orders_the_dead_process_held(tmp_path: Path) -> None:
    from engine.session import PaperSession

    url = f"sqlite:///{tmp_path / 'paper.db'}"
    first = PaperSession(load_settings(database_url=url), seed=4)
    clock = SimClock(SIM_START)
    first.prepare(clock, datetime.now(UTC))
    first.process_line(signal_line("rest", symbol="AAPL", order_type="LMT", limit_price=1.0), clock)
    first.recorder.flush()
    first.repos.engine_lock.release(first.holder)  # the process died: its simulated exchange went with it
    second = PaperSession(load_settings(database_url=url), seed=4)
    second.prepare(SimClock(SIM_START), datetime.now(UTC))
    assert [c for c, _, _ in second.report.close_orders] == ["tc-rest"]
    with second.db.connect() as conn:
        status, reason = conn.execute(select(OrderRow.status, OrderRow.reason)).one()
    second.control.close()
    assert status == "Rejected" and reason is not None and "no such order working" in reason
