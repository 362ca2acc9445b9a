"""`tradectl kill --flatten` tells the truth: it exits 1 naming each position in scope still open, and why.

A real `tradectl paper --signals -` (wall clock) runs in a subprocess and buys one symbol; `tradectl kill
--flatten` runs as a second process. Bounded in time; the signal and the market seed are fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal as D

import pytest

from engine.acks import skipped_by_symbol
from engine.domain import KillSwitchChange
from engine.operator import flatten_outcome
from repositories.db import make_engine
from repositories.repos import Repositories
from tests.integration.test_kill_integration import wait_for

pytestmark = pytest.mark.timeout(90)


def _tradectl(env: dict[str, str], *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_")}
    full.update(TRADECTL_LOG_LEVEL="warning", **env)
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full)


def _held(repos: Repositories) -> dict[str, D]:
    try:
        return {p.symbol: p.quantity for p in repos.positions.all() if p.quantity}
    except Exception:  # the schema is not there yet
        return {}


def _flatten_a_held_position(db_url: str, env: dict[str, str], idle_s: float) -> tuple[int, str, dict[str, D]]:
    """Buy AAPL in a paper stdin session, wait ``idle_s`` with nothing working, kill --flatten; the kill's exit
    code and output, and the positions the database holds after the session ends."""
    session = _tradectl(env, "paper", "--db", db_url, "--signals", "-", "--no-progress", "--json",
                        stdin=subprocess.PIPE)
    assert session.stdin is not None
    repos = Repositories(make_engine(db_url), "DU0000001")
    try:
        session.stdin.write(json.dumps({"id": "hold-1", "symbol": "AAPL", "direction": "long", "win_prob": 0.6,
                                        "payoff": 1.5}) + "\n")
        session.stdin.flush()
        wait_for(lambda: session.poll() is None and "AAPL" in _held(repos) and repos.engine_lock.holder() is not None,
                 30, "a running session holding AAPL")
        time.sleep(idle_s)  # nothing works in AAPL now: only the position keeps it quoted
        kill = _tradectl(env, "kill", "--db", db_url, "--reason", "flatten drill", "--flatten", "--flatten-wait", "10")
        out, err = kill.communicate(timeout=40)
    finally:
        session.communicate(timeout=60)  # closes stdin: the session drains and exits
    assert session.returncode == 0
    held = _held(repos)
    repos.db.dispose()
    return kill.returncode, out + err, held


def test_kill_flatten_exits_1_naming_a_position_whose_closing_order_a_check_refused(sqlite_url: str) -> None:
    env = {"TRADECTL_RISK__PER_STRATEGY__FLATTEN__MAX_ORDER_QTY": "1"}  # the closing order is too big
    code, output, held = _flatten_a_held_position(sqlite_url, env, 0.2)
    assert code == 1, output
    assert "NOT CLOSED AAPL" in output and "max_order_qty" in output
    assert held.get("AAPL", D(0)) > 0


def test_kill_flatten_in_a_wall_clock_paper_session_prices_closes_and_exits_0(sqlite_url: str) -> None:
    env = {"TRADECTL_RISK__MAX_QUOTE_AGE_S": "1"}  # an unquoted position's price would be stale by the kill
    code, output, held = _flatten_a_held_position(sqlite_url, env, 1.5)
    assert code == 0, output
    assert "every position in global is closed" in output
    assert held == {}


def test_the_reasons_an_engine_gives_for_not_flattening_are_read_back_per_symbol() -> None:
    detail = "not flattened: AAPL: max_order_qty: quantity 5 > max 1; BRK.B: no quote to price a closing order"
    assert skipped_by_symbol(detail) == {"AAPL": "max_order_qty: quantity 5 > max 1",
                                         "BRK.B": "no quote to price a closing order"}
    assert skipped_by_symbol("not flattened: 2 cancel(s) unconfirmed after 5.0s") == {
        "*": "2 cancel(s) unconfirmed after 5.0s"}


def test_a_flatten_no_engine_acknowledged_names_every_open_position_in_scope(sqlite_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from engine.domain import KillState
    from repositories.db import ensure_schema
    from repositories.models import PositionRow

    ensure_schema(sqlite_url)
    repos = Repositories(make_engine(sqlite_url), "DU0000001")
    now = datetime.now(UTC)
    with repos.db.begin() as conn:
        conn.execute(insert(PositionRow), [
            {"account": "DU0000001", "symbol": s, "quantity": q, "avg_cost": D(100), "realized_pnl": D(0),
             "commissions": D(0), "updated_at": now} for s, q in (("AAPL", D(10)), ("MSFT", D(-5)))])
    change = KillSwitchChange(now, "symbol:MSFT", KillState.ACTIVE, KillState.HALTED, "r", "a", True, 1)
    assert flatten_outcome(repos, change, None, 0.1) == {
        "MSFT": "position -5 still open: no engine acknowledged the flatten: no closing order was sent"}
    repos.db.dispose()
