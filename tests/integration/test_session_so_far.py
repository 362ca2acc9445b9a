"""A session's numbers before its summary exists (``SessionRepository.so_far``), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D

from sqlalchemy import Engine, insert

from repositories.db import make_engine, upgrade
from repositories.models import FillRow, PositionRow
from repositories.repos import Repositories

ACCOUNT = "DU0000001"
NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def _repos(db_url: str) -> tuple[Repositories, Engine]:
    upgrade(db_url)
    db = make_engine(db_url)
    return Repositories(db, ACCOUNT), db


def _fill(db: Engine, session_id: int, exec_id: str, commission: str, source: str = "broker") -> None:
    with db.begin() as conn:
        conn.execute(insert(FillRow).values(exec_id=exec_id, client_order_id="tc-1", session_id=session_id,
                                            symbol="AAPL", side="BUY", quantity=D(10), price=D("100.5"),
                                            commission=D(commission), ts=NOW, source=source))


def _realized(db: Engine, total: str) -> None:
    with db.begin() as conn:
        conn.execute(insert(PositionRow).values(account=ACCOUNT, symbol="AAPL", quantity=D(0), avg_cost=D(0),
                                                realized_pnl=D(total), commissions=D(0), updated_at=NOW))


def _ended(repos: Repositories, summary: dict[str, object]) -> int:
    sid = repos.sessions.start("paper", None, NOW)
    repos.sessions.end(sid, NOW, summary)
    return sid


def test_a_corrected_execution_counts_once_with_its_replacements_commission(db_url: str) -> None:
    repos, db = _repos(db_url)
    sid = repos.sessions.start("ibkr", None, NOW)
    _fill(db, sid, "0001.01.01", "1.2500", source="corrected")  # kept, marked, beside the correction
    _fill(db, sid, "0001.01.02", "1.3000", source="correction")
    _fill(db, sid, "0002.01.01", "0.7012")
    so_far = repos.sessions.so_far(sid)
    assert so_far["fills"] == 2 and so_far["commissions"] == "2.00"  # 1.3000 + 0.7012, to the cent


def test_the_realized_pnl_so_far_passes_over_failed_starts_to_the_last_recorded_total(db_url: str) -> None:
    repos, db = _repos(db_url)
    _ended(repos, {"outcome": "completed", "account_realized_pnl": "10.00", "fills": 3})
    _ended(repos, {"outcome": "failed", "stage": "start", "error": "IbkrError: gateway down"})  # traded nothing
    running = repos.sessions.start("ibkr", None, NOW)
    _realized(db, "25.40")
    assert repos.sessions.so_far(running)["realized_pnl"] == "15.40"


def test_the_realized_pnl_so_far_is_unknown_after_a_session_that_traded_without_a_summary(db_url: str) -> None:
    repos, db = _repos(db_url)
    _ended(repos, {"outcome": "completed", "account_realized_pnl": "10.00"})
    crashed = repos.sessions.start("ibkr", None, NOW)
    _fill(db, crashed, "0003.01.01", "1.00")
    running = repos.sessions.start("ibkr", None, NOW)
    _realized(db, "25.40")
    assert repos.sessions.so_far(running)["realized_pnl"] is None
    assert repos.sessions.so_far(crashed)["realized_pnl"] is None  # not the latest: the positions are not its


def test_a_first_session_realized_everything_the_positions_hold(db_url: str) -> None:
    repos, db = _repos(db_url)
    first = repos.sessions.start("paper", None, NOW)
    _realized(db, "-3.21")
    assert repos.sessions.so_far(first) == {"signals": 0, "fills": 0, "commissions": "0.00", "realized_pnl": "-3.21"}
    assert json.dumps(repos.sessions.so_far(first))  # plain JSON for --json
