"""The repositories' boundary: an unreachable database is one error (DatabaseUnavailable), never
SQLAlchemy's; orders come back as domain objects and take their final state as an OrderStatus."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from engine.domain import OPEN_STATUSES, TERMINAL_STATUSES, KillState, OrderStatus
from repositories.db import ensure_schema, make_engine
from repositories.errors import DatabaseUnavailable
from repositories.models import OrderEventRow, OrderRow
from repositories.repos import Repositories

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def test_open_and_final_statuses_split_every_order_status() -> None:
    assert set(OrderStatus) == OPEN_STATUSES | TERMINAL_STATUSES
    assert not OPEN_STATUSES & TERMINAL_STATUSES
    assert all(not s.is_terminal for s in OPEN_STATUSES)


def _unreachable(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}"  # a directory: SQLite cannot open it


CALLS: dict[str, Callable[[Repositories], Any]] = {
    "positions": lambda r: r.positions.all(),
    "open orders": lambda r: r.orders.open(),
    "orders by id": lambda r: r.orders.find(["x"]),
    "close an order": lambda r: r.orders.close("x", OrderStatus.CANCELLED, "gone", NOW),
    "exec ids": lambda r: r.fills.existing_exec_ids(["e"]),
    "fill totals": lambda r: r.fills.totals(),
    "kill-switch states": lambda r: r.killswitches.states(),
    "record a kill switch": lambda r: r.killswitches.record("global", KillState.HALTED, reason="t", actor="a",
                                                            now=NOW),
    "heartbeat": lambda r: r.engine_lock.heartbeat("h", NOW),
    "claim the engine": lambda r: r.engine_lock.claim("h", "paper", NOW),
    "claim the account": lambda r: r.accounts.claim("DU0000001", "simulated", NOW),
    "audit": lambda r: r.audit.record(actor="a", action="x", scope=None, detail={}, now=NOW),
    "counts": lambda r: r.signals.counts(),
    "start a session": lambda r: r.sessions.start("paper", None, NOW),
    "listing": lambda r: r.listings.rows("orders"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_unreachable_database_is_database_unavailable(tmp_path: Path, call: str) -> None:
    repos = Repositories(make_engine(_unreachable(tmp_path)), "DU0000001")
    with pytest.raises(DatabaseUnavailable, match="unable to open database file"):
        CALLS[call](repos)


def test_an_unreachable_postgresql_is_database_unavailable() -> None:
    repos = Repositories(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none",
                                     connect_args={"connect_timeout": 2}), "DU0000001")
    with pytest.raises(DatabaseUnavailable):
        repos.killswitches.events()
    with pytest.raises(DatabaseUnavailable):
        ensure_schema("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_the_cli_says_it_cannot_read_the_database(tmp_path: Path) -> None:
    from engine.cli import app

    result = CliRunner().invoke(app, ["status", "--db", _unreachable(tmp_path)])
    assert result.exit_code == 2
    assert "no database at" in result.stderr


def test_an_order_comes_back_as_a_domain_order_and_closes_with_its_event(db_url: str) -> None:
    ensure_schema(db_url)
    db = make_engine(db_url)
    repos = Repositories(db, "DU0000001")
    session_id = repos.sessions.start("paper", None, NOW)
    with db.begin() as conn:
        conn.execute(insert(OrderRow).values(
            client_order_id="tc-1", signal_id="s1", session_id=session_id, strategy="m", symbol="AAPL",
            sec_type="STK", currency="USD", exchange="SMART", side="BUY", quantity=D(10), order_type="LMT",
            limit_price=D("101.25"), stop_price=None, tif="DAY", status="Submitted", filled_qty=D(4),
            avg_fill_price=D("101.2"), commission=D(1), broker_order_id=7, perm_id=70, reason=None,
            created_at=NOW, updated_at=NOW))
    (order,) = repos.orders.open()
    assert (order.client_order_id, order.symbol, order.status, order.filled_qty, order.intent.limit_price) == (
        "tc-1", "AAPL", OrderStatus.SUBMITTED, D(4), D("101.25"))
    assert repos.orders.existing_ids(["tc-1", "tc-2"]) == {"tc-1"}
    assert repos.orders.status_counts(session_id) == {"Submitted": 1}

    repos.orders.close("tc-1", OrderStatus.CANCELLED, "gone at the broker", NOW)
    assert repos.orders.open() == []
    (closed,) = repos.orders.find(["tc-1"])
    assert closed.status is OrderStatus.CANCELLED and closed.reason == "gone at the broker"
    with db.connect() as conn:
        (event,) = conn.execute(select(OrderEventRow.from_status, OrderEventRow.to_status)).mappings()
    assert (event["from_status"], event["to_status"]) == ("Submitted", "Cancelled")
    db.dispose()
