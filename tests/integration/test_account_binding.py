"""One database belongs to one account at one broker kind; with IB, the account's own equity sizes orders.

The first session that uses a database records its account and broker ("simulated" for paper, "ibkr");
a session for another account or broker on it exits 2 naming the owner, and writes nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

from ib_async import AccountValue
from sqlalchemy import func, select
from typer.testing import CliRunner

from broker.ibkr import IbkrBroker
from engine.bus import EventBus
from engine.cli import app
from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import Order
from engine.engine import Engine
from engine.session import PaperSession
from paper.market import SIM_START
from repositories.db import ensure_schema, make_engine
from repositories.models import Base
from repositories.repos import Repositories
from tests.conftest import signal_line, write_lines
from tests.ibrig import gateway_in_thread, lockstep_session

runner = CliRunner()


def _rows(url: str) -> dict[str, int]:
    """Every table's row count: what a refused session must leave as it found it."""
    engine = make_engine(url)
    with engine.connect() as conn:
        counts = {name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
                  for name, table in Base.metadata.tables.items()}
    engine.dispose()
    return counts


def _ib_session(url: str, lines: list[str], equity: str | None = None) -> tuple[list[Order], IbkrBroker, D]:
    """A session against the simulated gateway; the orders it sent, its broker, and the gateway's NLV."""

    async def go() -> tuple[list[Order], IbkrBroker, D]:
        settings = load_settings(database_url=url, equity=equity) if equity else load_settings(database_url=url)
        gw, session, _ = await lockstep_session(settings, client_id=1)
        orders: list[Order] = []
        session.bus.order_recorded += lambda o, s, r, n: orders.append(o)
        for line in lines:
            await session.process_line(line)
        await session.broker.sync()
        nlv = gw.net_liquidation().quantize(D("0.01"))
        session.recorder.flush()
        session._finish(datetime.now(UTC), 0.0, 0)
        await session.broker.close()
        await gw.stop()
        return orders, session.broker, nlv

    return asyncio.run(go())


def _paper(url: str, tmp_path: Path, *ids: str) -> None:
    signals = write_lines(tmp_path / "paper.jsonl", [signal_line(i, seconds=n + 1) for n, i in enumerate(ids)])
    result = runner.invoke(app, ["paper", "--signals", str(signals), "--db", url, "--no-progress", "--json"])
    assert result.exit_code == 0, result.output


# -- one database, one account and broker ----------------------------------------------------------------
def test_tradectl_paper_on_a_database_an_ib_account_used_exits_2_naming_it_and_writes_nothing(
        db_url: str, tmp_path: Path) -> None:
    _ib_session(db_url, [signal_line("ib1")])
    before = _rows(db_url)
    assert before["account_binding"] == 1 and before["positions"] == 1

    signals = write_lines(tmp_path / "s.jsonl", [signal_line("p1", seconds=1)])
    result = runner.invoke(app, ["paper", "--signals", str(signals), "--db", db_url, "--no-progress"])
    assert result.exit_code == 2
    assert "belongs to account DU0000001 at broker ibkr" in result.output
    assert "not to account DU0000001 at broker simulated" in result.output and "use another --db" in result.output
    assert _rows(db_url) == before


def test_tradectl_run_on_a_database_a_paper_session_used_exits_2_naming_it_and_writes_nothing(
        db_url: str, tmp_path: Path) -> None:
    _paper(db_url, tmp_path, "p1")
    before = _rows(db_url)
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("r1")])
    with gateway_in_thread(step_s=0.05) as gw:
        result = runner.invoke(app, ["run", "--broker", "ibkr", "--port", str(gw.port), "--signals", str(signals),
                                     "--db", db_url])
        assert not gw.live and not gw.done and not gw.executions  # nothing reached the gateway
    assert result.exit_code == 2
    assert "belongs to account DU0000001 at broker simulated" in result.output
    assert "not to account DU0000001 at broker ibkr" in result.output
    assert _rows(db_url) == before


def test_a_session_for_another_account_on_a_bound_database_exits_2(sqlite_url: str, tmp_path: Path) -> None:
    _paper(sqlite_url, tmp_path, "p1")
    before = _rows(sqlite_url)
    result = runner.invoke(app, ["paper", "--db", sqlite_url, "--no-progress"], env={"TRADECTL_ACCOUNT": "DU7654321"})
    assert result.exit_code == 2
    assert "belongs to account DU0000001 at broker simulated" in result.output and "DU7654321" in result.output
    assert _rows(sqlite_url) == before


def test_a_database_an_ib_account_used_before_bindings_existed_belongs_to_that_account(sqlite_url: str) -> None:
    """The issue's case: a database an IB session wrote before 0003 is bound to it, not to the next comer."""
    ensure_schema(sqlite_url)
    repos = Repositories(make_engine(sqlite_url), "DU0000001")
    repos.sessions.start("ibkr", None, datetime(2026, 1, 2, 15, 0, tzinfo=UTC))
    result = runner.invoke(app, ["paper", "--db", sqlite_url, "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "belongs to account DU0000001 at broker ibkr (since 2026-01-02 15:00:00 UTC)" in result.output
    binding = repos.accounts.binding()
    assert binding is not None and (binding["account"], binding["broker"]) == ("DU0000001", "ibkr")


def test_the_first_session_binds_the_database_and_sessions_like_it_keep_using_it(sqlite_url: str,
                                                                                  tmp_path: Path) -> None:
    _paper(sqlite_url, tmp_path, "p1")
    _paper(sqlite_url, tmp_path, "p2")
    binding = Repositories(make_engine(sqlite_url), "DU0000001").accounts.binding()
    assert binding is not None and (binding["account"], binding["broker"]) == ("DU0000001", "simulated")


def test_read_only_commands_read_a_database_bound_to_another_account(sqlite_url: str, tmp_path: Path) -> None:
    _paper(sqlite_url, tmp_path, "p1")
    for command in ("status", "positions", "orders", "signals", "fills"):
        result = runner.invoke(app, [command, "--db", sqlite_url, "--json"], env={"TRADECTL_ACCOUNT": "DU7654321"})
        assert result.exit_code == 0, (command, result.output)


# -- the equity IB reports --------------------------------------------------------------------------------
def test_the_ib_sessions_sizing_uses_net_liquidation_from_the_gateway(sqlite_url: str) -> None:
    """Config equity 100,000; the gateway's account is worth 1,000,000: the order is sized on the account."""
    orders, broker, nlv = _ib_session(sqlite_url, [signal_line("n1")], equity="100000")
    (order,) = orders
    on_account, on_config = (D("0.10") * D(equity) / order.avg_fill_price for equity in (1_000_000, 100_000))
    assert abs(order.intent.quantity - on_account) <= 2 and order.intent.quantity > 5 * on_config
    assert broker.account_equity() == nlv != D(1_000_000)  # refreshed by the fill's account update


def test_the_paper_session_sizes_on_the_configured_equity(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'p.db'}", equity="100000")
    session = PaperSession(settings, seed=1)
    clock = SimClock(SIM_START)
    session.prepare(clock, datetime.now(UTC))
    assert session.broker.account_equity() is None
    orders: list[Order] = []
    session.bus.order_recorded += lambda o, s, r, n: orders.append(o)
    session.process_line(signal_line("c1"), clock)
    (order,) = orders
    assert order.intent.quantity < 110  # about 10% of 100,000 at ~100
    session.control.close()


def test_without_net_liquidation_from_ib_the_engine_falls_back_to_the_configured_equity() -> None:
    broker = IbkrBroker("127.0.0.1", 1, 1, "DU0000001", lambda: SIM_START)
    engine = Engine(broker, EventBus(), clock=lambda: SIM_START, equity=D(250_000))
    assert broker.account_equity() is None and engine.equity() == D(250_000)
    broker.ib.accountValueEvent.emit(AccountValue("DU9999999", "NetLiquidation", "5000000", "USD", ""))
    broker.ib.accountValueEvent.emit(AccountValue("DU0000001", "NetLiquidation", "777.00", "USD", "MODEL1"))
    assert engine.equity() == D(250_000)  # another account's, a model portfolio's: not ours
    broker.ib.accountValueEvent.emit(AccountValue("DU0000001", "NetLiquidation", "1234567.89", "USD", ""))
    broker.ib.accountSummaryEvent.emit(AccountValue("DU0000001", "AvailableFunds", "900000.50", "USD", ""))
    assert engine.equity() == D("1234567.89") and broker.available_funds() == D("900000.50")


def test_run_for_an_account_other_than_the_configured_one_writes_everything_under_that_account(
        sqlite_url: str, tmp_path: Path) -> None:
    from repositories.models import EngineLockRow, PositionRow, SessionRow

    signals = write_lines(tmp_path / "s.jsonl", [signal_line("x1", "AAPL")])
    with gateway_in_thread(step_s=0.02, account="DU0000009") as gw:
        result = runner.invoke(app, ["run", "--broker", "ibkr", "--port", str(gw.port), "--account", "DU0000009",
                                     "--signals", str(signals), "--db", sqlite_url, "--json"])
    assert result.exit_code == 0, result.output
    db = make_engine(sqlite_url)
    with db.connect() as conn:
        accounts = {r for (r,) in conn.execute(select(PositionRow.account))}
        sessions = {r for (r,) in conn.execute(select(SessionRow.account))}
        locks = conn.execute(select(func.count()).select_from(EngineLockRow)).scalar()
    db.dispose()
    assert accounts == {"DU0000009"} and sessions == {"DU0000009"} and locks == 0
    assert Repositories(make_engine(sqlite_url), "DU0000009").accounts.binding() is not None
