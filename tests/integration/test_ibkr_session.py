"""Whole sessions against the simulated gateway: parity with the in-process paper broker, persistence
across disconnects, and the guard that keeps a paper rehearsal off a live account."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine.cli import app
from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import Fill, Order
from engine.live import AccountRefused, check_account
from engine.session import PaperSession
from paper.market import SIM_START
from repositories.models import FillRow, PositionRow
from tests.conftest import signal_line, write_lines
from tests.ibrig import gateway_in_thread, lockstep_session, run, until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

SYMBOLS = ("AAPL", "MSFT", "NVDA")


def _signals(n: int) -> list[str]:
    """A mixed, deterministic stream: market and resting limit orders, both directions, three symbols."""
    lines = []
    for i in range(n):
        symbol = SYMBOLS[i % 3]
        direction = ("long", "short", "long", "flat")[(i // 3) % 4]
        extra: dict[str, Any] = {}
        if i % 5 == 0:
            extra = {"order_type": "LMT", "limit_price": 10.0 if direction == "long" else 10_000.0}  # rests
        lines.append(signal_line(f"s{i:03d}", symbol=symbol, direction=direction, seconds=i * 2.0, **extra))
    return lines


def _fill_key(f: Fill) -> tuple[str, str, str, D, D, D]:
    return (f.client_order_id, f.symbol, f.side.value, f.quantity, f.price, f.commission)


def test_a_session_against_gateway_sim_gives_the_same_fills_and_positions_as_the_paper_broker(
        tmp_path: Path) -> None:
    lines = _signals(60)
    cfg: dict[str, Any] = {"risk": {"max_orders_per_s": None, "max_symbol_orders_per_s": None}}

    paper = PaperSession(load_settings(database_url=f"sqlite:///{tmp_path / 'p.db'}", **cfg), seed=7)
    clock = SimClock(SIM_START)
    paper.prepare(clock, datetime.now(UTC))
    paper_fills: list[Fill] = []
    paper.bus.fill_booked += lambda f, o, p: paper_fills.append(f)
    for line in lines:
        paper.process_line(line, clock)
    paper_positions = {s: p.quantity for s, p in paper.engine.positions.items() if p.quantity}
    paper.recorder.flush()

    async def over_tcp() -> tuple[list[Fill], dict[str, D], dict[str, D]]:
        gw, session, _ = await lockstep_session(load_settings(database_url=f"sqlite:///{tmp_path / 'i.db'}", **cfg),
                                                client_id=1, seed=7)
        fills: list[Fill] = []
        session.bus.fill_booked += lambda f, o, p: fills.append(f)
        for line in lines:
            await session.process_line(line)
        positions = {s: p.quantity for s, p in session.engine.positions.items() if p.quantity}
        theirs = {p.symbol: p.quantity for p in session.broker.positions()}
        session.recorder.flush()
        await session.broker.close()
        await gw.stop()
        return fills, positions, theirs

    ib_fills, ib_positions, broker_positions = run(over_tcp)
    assert len(paper_fills) > 20
    assert [_fill_key(f) for f in ib_fills] == [_fill_key(f) for f in paper_fills]
    assert ib_positions == paper_positions == broker_positions


def _db_fills(url: str) -> tuple[int, int, dict[str, D]]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(FillRow)).scalar() or 0
        distinct = conn.execute(select(func.count(func.distinct(FillRow.exec_id)))).scalar() or 0
        positions = {r.symbol: r.quantity for r in conn.execute(select(PositionRow.symbol, PositionRow.quantity))
                     if r.quantity}
    engine.dispose()
    return total, distinct, positions


def test_a_disconnect_with_working_orders_and_a_doubled_execution_persists_every_fill_once(db_url: str) -> None:
    url = db_url  # SQLite and PostgreSQL

    async def scenario() -> dict[str, D]:
        gw, session, sim_clock = await lockstep_session(load_settings(database_url=url, ibkr={"drain_s": 0.2}),
                                                        client_id=4, seed=3)
        session.broker.backoff_s = (0.05, 0.2)
        orders: list[Order] = []
        session.bus.order_recorded += lambda o, s, r, n: orders.append(o)
        await session.process_line(signal_line("a", symbol="AAPL", seconds=1, order_type="LMT", limit_price=1.0))
        gw.faults.duplicate_next_execution = True
        await session.process_line(signal_line("b", symbol="MSFT", seconds=2))
        resting = orders[0]
        gw.drop_connections()
        await until(lambda: not session.engine.broker_connected, "the engine sees the drop")
        gw.matching.modify(gw.live[(4, resting.broker_order_id or 0)].order_id, resting.intent.quantity,
                           D(100_000), None)  # moved into the market while we are away (as if by TWS)
        gw.step("AAPL", sim_clock())
        await until(lambda: session.engine.broker_connected, "reconnected")
        await until(lambda: resting.status.value == "Filled", "the fill made while away is booked")
        summary = await session.run([])
        assert summary.fills == 2
        theirs = {s: p.quantity for s, p in gw.matching.positions.items() if p.quantity}
        await gw.stop()
        return theirs

    theirs = run(scenario)
    total, distinct, positions = _db_fills(url)
    assert total == distinct == 2
    assert positions == theirs


def test_an_execution_correction_is_stored_beside_the_fill_it_replaces(db_url: str) -> None:
    url = db_url  # SQLite and PostgreSQL

    async def scenario() -> tuple[str, str]:
        gw, session, _ = await lockstep_session(load_settings(database_url=url, ibkr={"drain_s": 0.1}),
                                                client_id=6, seed=5)
        await session.process_line(signal_line("c1", symbol="AAPL", seconds=1))
        original = gw.executions[-1]
        fixed = gw.correct_execution(original.exec_id, original.price - D("0.05"))
        await until(lambda: session.engine.stats.fills == 1 and len(session.engine.portfolio.recent_fills) == 1
                     and fixed.exec_id in session.engine.portfolio.recent_fills, "the correction is booked")
        await session.run([])
        await gw.stop()
        return original.exec_id, fixed.exec_id

    old_id, new_id = run(scenario)
    from sqlalchemy import create_engine

    from repositories.repos import Repositories

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = {r.exec_id: (r.source, r.price) for r in conn.execute(select(FillRow.exec_id, FillRow.source,
                                                                            FillRow.price))}
        [(qty, avg)] = conn.execute(select(PositionRow.quantity, PositionRow.avg_cost)).all()
    totals = Repositories(engine, "DU0000001").fills.totals()
    engine.dispose()
    assert rows[old_id][0] == "corrected" and rows[new_id][0] == "broker"
    assert avg == rows[new_id][1]  # the position carries the corrected price
    assert totals == {"AAPL": qty}  # positions are the sum of the fills no correction replaced


def test_the_account_guard_refuses_live_without_flag_and_live_on_paper() -> None:
    assert check_account(["DU1"], "DU1", False, "DU1") == "DU1"
    assert check_account(["U7"], "U7", True, "U7") == "U7"
    for managed, requested, live, configured, words in (
        (["U7"], "U7", False, "U7", "LIVE account"),
        (["DU1"], "DU1", True, "DU1", "paper account"),
        (["U7", "U8"], "U8", True, "U7", "does not match the configured account"),
        (["DU1"], "DU2", False, "DU2", "not managed"),
    ):
        with pytest.raises(AccountRefused, match=words):
            check_account(managed, requested, live, configured)


def test_tradectl_run_refuses_a_live_account_without_live_and_exits_2(tmp_path: Path) -> None:
    with gateway_in_thread(account="U1234567", step_s=0.05) as gw:
        result = CliRunner().invoke(app, ["run", "--broker", "ibkr", "--port", str(gw.port), "--account", "U1234567",
                                          "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2
    assert "LIVE account" in result.output
    assert not (tmp_path / "x.db").exists()  # refused before anything was opened


def test_tradectl_run_trades_a_signal_file_through_the_simulated_gateway(tmp_path: Path) -> None:
    signals = write_lines(tmp_path / "s.jsonl", [
        signal_line("r1", symbol="AAPL"), signal_line("r2", symbol="MSFT", direction="short"),
        "not json",
    ])
    db = f"sqlite:///{tmp_path / 'run.db'}"
    with gateway_in_thread(step_s=0.05) as gw:
        result = CliRunner().invoke(app, ["run", "--broker", "ibkr", "--port", str(gw.port), "--client-id", "3",
                                          "--signals", str(signals), "--db", db, "--json"],
                                    env={"TRADECTL_IBKR__DRAIN_S": "0.5"})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("\n{\n") + 1:] if "\n{\n" in result.stdout
                         else result.stdout)
    assert summary["signals"] == 3 and summary["invalid"] == 1 and summary["fills"] >= 2
    assert {p["symbol"] for p in summary["positions"]} == {"AAPL", "MSFT"}


def test_a_symbol_ib_has_no_contract_for_is_refused_as_unknown_and_not_watched(sqlite_url: str) -> None:
    """A mistyped ticker (a TradingView alert's) was refused as no_market_data and stayed on the watched list:
    /readyz failed and the quote-age alert fired for good (a service trial)."""
    from engine.domain import RejectCode
    from engine.health import readiness

    async def scenario() -> tuple[dict[str, int], set[str], dict[str, Any]]:
        gw, session, _ = await lockstep_session(load_settings(database_url=sqlite_url, ibkr={"drain_s": 0.2}),
                                                client_id=6)
        await session.process_line(signal_line("typo", symbol="XYZQ", seconds=1))
        await session.process_line(signal_line("again", symbol="XYZQ", seconds=2))  # asks IB again: still none
        await session.process_line(signal_line("real", symbol="AAPL", seconds=3))
        reasons = dict(session.engine.stats.reject_reasons)
        subscribed = set(session.subscribed)
        _, conditions = readiness(session)
        await session.run([])
        await gw.stop()
        return reasons, subscribed, conditions

    reasons, subscribed, conditions = run(scenario)
    assert reasons.get(RejectCode.UNKNOWN_SYMBOL) == 2 and RejectCode.NO_MARKET_DATA not in reasons
    assert subscribed == {"AAPL"}
    assert conditions["market_data"]["ok"] is True, conditions["market_data"]


def test_a_signal_for_a_new_symbol_while_ib_is_away_is_refused_and_the_session_goes_on(sqlite_url: str) -> None:
    """Qualifying a contract with the socket down raises ConnectionError: it left the signal loop and ended the
    session (a review). Now the signal is refused, and the next one for the symbol asks IB again."""

    async def scenario() -> tuple[dict[str, int], bool, list[str]]:
        gw, session, _ = await lockstep_session(load_settings(database_url=sqlite_url, ibkr={"drain_s": 0.2}),
                                                client_id=7)
        session.broker.backoff_s = (0.05, 0.2)
        orders: list[Order] = []
        session.bus.order_recorded += lambda o, s, r, n: orders.append(o)
        gw.drop_connections()
        await until(lambda: not session.engine.broker_connected, "the engine sees the drop")
        await session.process_line(signal_line("away", symbol="MSFT", seconds=1))
        watched_while_away = "MSFT" in session.subscribed
        await until(lambda: session.engine.broker_connected, "reconnected")
        await session.process_line(signal_line("back", symbol="MSFT", seconds=2))
        reasons = dict(session.engine.stats.reject_reasons)
        await session.run([])
        await gw.stop()
        return reasons, watched_while_away, [o.client_order_id for o in orders]

    reasons, watched_while_away, sent = run(scenario)
    assert sum(reasons.values()) == 1 and not watched_while_away
    assert sent == ["tc-back"]


def test_a_reconnect_whose_resync_fails_drops_the_link_and_tries_again(sqlite_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A resync that raised ended the reconnect task with the socket up and the engine told nothing: the engine
    stayed 'disconnected' (no orders, no reconciliation) for good (a review)."""

    async def scenario() -> tuple[int, bool]:
        gw, session, _ = await lockstep_session(load_settings(database_url=sqlite_url, ibkr={"drain_s": 0.2}),
                                                client_id=8)
        broker = session.broker
        broker.backoff_s = (0.05, 0.2)
        real, calls = broker._resync, [0]

        async def flaky() -> None:
            calls[0] += 1
            if calls[0] == 1:
                raise ConnectionError("socket closed during the resync")
            await real()

        monkeypatch.setattr(broker, "_resync", flaky)
        gw.drop_connections()
        await until(lambda: not session.engine.broker_connected, "the engine sees the drop")
        await until(lambda: session.engine.broker_connected, "reconnected after a failed resync", timeout=15)
        connected = session.engine.broker_connected
        await session.run([])
        await gw.stop()
        return calls[0], connected

    calls, connected = run(scenario)
    assert calls == 2 and connected
