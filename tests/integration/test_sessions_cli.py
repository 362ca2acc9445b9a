"""Session summaries report the session apart from the account; sessions and filtered listings for people and
scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import app
from repositories.db import upgrade
from tests.conftest import signal_line, write_lines

runner = CliRunner()


def _json(*args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def traded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two paper sessions on one database: the first trades and loses, the second replays the same ids.
    Made once for the module: the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("traded")
    db = f"sqlite:///{tmp_path / 'x.db'}"
    lines = [signal_line(f"a{i}", "AAPL" if i % 2 else "MSFT", "long" if i % 4 < 2 else "flat", seconds=i,
                         strategy="meanrev" if i % 3 else "momentum") for i in range(59)]
    lines.append(signal_line("no-edge", win_prob=0.3, payoff=1.0, seconds=59))  # rejected: no edge
    signals = write_lines(tmp_path / "s.jsonl", lines)
    for _ in range(2):
        assert runner.invoke(app, ["paper", "--signals", str(signals), "--db", db, "--json"]).exit_code == 0
    return db


# -- a session's own numbers -------------------------------------------------------------------------------
def test_a_rerun_that_traded_nothing_reports_no_pnl_of_its_own_beside_the_accounts(traded: str) -> None:
    first, second = (s["summary"] for s in _json("sessions", "--db", traded))
    assert first["fills"] > 0 and first["realized_pnl"] != "0.00"
    assert second["fills"] == 0 and second["realized_pnl"] == "0.00" and second["commissions"] == "0.00"
    assert second["account_realized_pnl"] == first["account_realized_pnl"] == first["realized_pnl"]
    assert second["account_commissions"] == first["commissions"]


def test_a_paper_summary_names_its_venue_and_account(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("a")])
    table = runner.invoke(app, ["paper", "--signals", str(signals), "--db", db, "--no-progress"])
    assert "session 1: simulated, account DU0000001" in table.stdout and "paper session" not in table.stdout
    summary = _json("paper", "--signals", str(signals), "--db", db)
    assert (summary["venue"], summary["account"], summary["outcome"]) == ("simulated", "DU0000001", "completed")


def test_an_order_never_filled_and_a_flat_position_show_no_average_price(tmp_path: Path) -> None:
    """A fill price of 0.00 for a cancelled order reads as a price; there is none (a new-user trial)."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    lines = [signal_line("rest", order_type="LMT", limit_price=1, seconds=1),  # far below AAPL: never fills
             signal_line("in", "MSFT", seconds=2), signal_line("out", "MSFT", "flat", seconds=3)]
    assert runner.invoke(app, ["paper", "--signals", str(write_lines(tmp_path / "s.jsonl", lines)), "--db", db,
                               "--json"]).exit_code == 0
    orders = {o["signal_id"]: o for o in _json("orders", "--db", db)}
    assert orders["rest"]["filled_qty"] == "0" and orders["rest"]["avg_fill_price"] is None
    assert orders["in"]["avg_fill_price"] is not None and orders["in"]["avg_fill_price"] != "0"
    (msft,) = _json("positions", "--db", db)
    assert msft["quantity"] == "0" and msft["avg_cost"] is None
    table = runner.invoke(app, ["orders", "--db", db]).stdout
    rest_cells = [c.strip() for c in next(line for line in table.splitlines() if "tc-rest" in line).split("│")]
    assert rest_cells[-2] == ""  # the last column at 80 columns is avg_fill_price: blank, not 0.00


def test_a_running_session_is_listed_with_its_numbers_so_far(tmp_path: Path) -> None:
    """No summary is written until a session ends: its fills and P&L so far come from its rows (a new-user trial
    saw blanks for a daemon that had traded)."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from tests.integration.test_control import open_session

    db = f"sqlite:///{tmp_path / 'x.db'}"
    first = [signal_line("f1", seconds=1), signal_line("f2", direction="flat", seconds=2)]
    assert runner.invoke(app, ["paper", "--signals", str(write_lines(tmp_path / "a.jsonl", first)), "--db", db,
                               "--json"]).exit_code == 0
    session, clock = open_session(db)
    for line in (signal_line("r1", "MSFT"), signal_line("r2", "MSFT", "flat"), signal_line("r3", "MSFT", "long"),
                 "not json"):
        session.process_line(line, clock)
    session.recorder.flush()
    try:
        done, running = _json("sessions", "--db", db)
        assert done["so_far"] is None and done["summary"]["fills"] > 0
        assert running["state"] == "running" and running["summary"] is None
        fills = _json("fills", "--db", db, "--session", str(running["id"]))
        so_far = running["so_far"]
        assert so_far["signals"] == 4 and so_far["fills"] == len(fills) >= 3
        commissions = sum((Decimal(f["commission"]) for f in fills), Decimal(0))
        assert Decimal(so_far["commissions"]) == commissions.quantize(Decimal("0.01"))
        round_trip = [f for f in fills if f["client_order_id"] in ("tc-r1", "tc-r2")]  # bought, then sold it all
        assert {f["side"] for f in round_trip} == {"BUY", "SELL"}  # that round trip is all it realized so far
        cash = sum((Decimal(f["quantity"]) * Decimal(f["price"]) * (1 if f["side"] == "SELL" else -1)
                    for f in round_trip), Decimal(0))
        assert Decimal(so_far["realized_pnl"]) == cash.quantize(Decimal("0.01"))
        table = runner.invoke(app, ["sessions", "--db", db]).stdout
        assert so_far["realized_pnl"].lstrip("-") in table.replace(",", "")
    finally:
        session._finish(datetime.now(UTC), 0.0, 0)


# -- tradectl sessions -------------------------------------------------------------------------------------
def test_sessions_lists_each_with_its_state_venue_and_own_fills(traded: str) -> None:
    rows = _json("sessions", "--db", traded)
    assert [(r["id"], r["state"], r["venue"], r["account"]) for r in rows] == [
        (1, "completed", "simulated", "DU0000001"), (2, "completed", "simulated", "DU0000001")]
    table = runner.invoke(app, ["sessions", "--db", traded])
    assert table.exit_code == 0 and "completed" in table.stdout and "simulated" in table.stdout


def test_sessions_limit_keeps_the_latest(traded: str) -> None:
    assert [r["id"] for r in _json("sessions", "--db", traded, "--limit", "1")] == [2]


# -- filters -----------------------------------------------------------------------------------------------
def test_fills_filter_by_session(traded: str) -> None:
    assert _json("fills", "--db", traded, "--session", "2") == []
    assert {f["session_id"] for f in _json("fills", "--db", traded, "--session", "1")} == {1}


def test_orders_filter_by_symbol_whatever_its_case(traded: str) -> None:
    rows = _json("orders", "--db", traded, "--symbol", "msft")
    assert rows and {r["symbol"] for r in rows} == {"MSFT"}


def test_fills_filter_by_their_orders_strategy(traded: str) -> None:
    momentum = {o["client_order_id"] for o in _json("orders", "--db", traded, "--strategy", "momentum")}
    fills = _json("fills", "--db", traded, "--strategy", "momentum")
    assert fills and {f["client_order_id"] for f in fills} <= momentum
    assert len(fills) < len(_json("fills", "--db", traded))


def test_signals_and_orders_filter_by_status(traded: str) -> None:
    assert {s["status"] for s in _json("signals", "--db", traded, "--status", "rejected")} == {"rejected"}
    assert {o["status"] for o in _json("orders", "--db", traded, "--status", "filled")} == {"Filled"}


def test_an_unknown_status_exits_2_naming_the_accepted_ones(traded: str) -> None:
    result = runner.invoke(app, ["orders", "--db", traded, "--status", "done"])
    assert result.exit_code == 2 and "Filled" in result.output


def test_an_unknown_signal_status_names_all_three_including_pending(traded: str) -> None:
    result = runner.invoke(app, ["signals", "--db", traded, "--status", "bogus"])
    assert result.exit_code == 2 and "accepted, rejected, pending" in result.output


def test_fills_have_no_status_to_filter_on(traded: str) -> None:
    result = runner.invoke(app, ["fills", "--db", traded, "--status", "Filled"])
    assert result.exit_code == 2 and "tradectl orders --status" in result.output


def test_since_keeps_only_later_rows(traded: str) -> None:
    assert _json("signals", "--db", traded, "--since", "2099-01-01") == []
    later = _json("signals", "--db", traded, "--since", "2026-01-05T14:30:30+00:00")  # the file's own clock
    assert later and len(later) < 60 and min(s["received_at"] for s in later) >= "2026-01-05T14:30:30"


# -- JSON for scripts --------------------------------------------------------------------------------------
def test_json_lists_every_row_unless_a_limit_is_given(traded: str) -> None:
    assert len(_json("signals", "--db", traded)) == 60
    assert len(_json("signals", "--db", traded, "--limit", "7")) == 7


def test_a_table_shows_the_latest_50_by_default(traded: str) -> None:
    table = runner.invoke(app, ["signals", "--db", traded])
    assert "signals (50)" in table.stdout


def test_nested_json_is_json_not_a_string_of_it(traded: str) -> None:
    (signal,) = _json("signals", "--db", traded, "--limit", "1")
    assert signal["payload"]["id"] == signal["signal_id"]
    last = _json("status", "--db", traded)["last_session"]
    assert last["summary"]["session_id"] == 2 and isinstance(last["summary"]["notes"], list)


def test_signals_status_pending_lists_what_waits_in_the_inbox(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(db)
    assert runner.invoke(app, ["submit", "--db", db, signal_line("wait-1")]).exit_code == 0
    result = runner.invoke(app, ["signals", "--status", "pending", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert (row["signal_id"], row["status"], row["source"]) == ("wait-1", "pending", "cli")


def test_a_paper_summary_in_json_holds_the_databases_signal_totals_as_an_object(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("a"), "not json"])
    result = runner.invoke(app, ["paper", "--db", db, "--signals", str(signals), "--json", "--no-report"])
    summary = json.loads(result.stdout)
    assert summary["database_signals"] == {"accepted": 1, "rejected": 0, "invalid_or_duplicate": 1}
    assert not any(note.startswith("database totals") for note in summary["notes"])
