"""Commands tell the truth about the engine: running, hung or gone, and a session that failed says so."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import app
from repositories.db import make_engine, upgrade
from repositories.repos import Repositories
from tests.conftest import signal_line, write_lines

runner = CliRunner()
ACCOUNT = "DU0000001"


def _lock(url: str, holder: str, heartbeat_age_s: float, mode: str = "ibkr", account: str = ACCOUNT) -> Repositories:
    """An engine's lock row as a session writes it, with a heartbeat ``heartbeat_age_s`` old."""
    upgrade(url)
    repos = Repositories(make_engine(url), account)
    then = datetime.now(UTC) - timedelta(seconds=heartbeat_age_s)
    repos.engine_lock.claim(holder, mode, then)
    session_id = repos.sessions.start(mode, None, then)
    repos.engine_lock.attach_session(holder, session_id)
    return repos


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_process() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


def _status(url: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["status", "--db", url, "--json"])
    return result.exit_code, json.loads(result.stdout)


# -- hung ------------------------------------------------------------------------------------------------
def test_kill_with_a_hung_engine_on_this_host_says_hung_and_exits_1(db_url: str) -> None:
    repos = _lock(db_url, _this_process(), heartbeat_age_s=60)
    result = runner.invoke(app, ["kill", "--reason", "drill", "--db", db_url, "--timeout", "0.2"])
    assert result.exit_code == 1, result.output
    assert "HUNG" in result.output and "no engine is running" not in result.output
    assert repos.killswitches.states()["global"].value == "HALTED"  # recorded all the same
    repos.engine_lock.release(_this_process())


def test_status_with_a_hung_engine_reports_it_and_exits_1(db_url: str) -> None:
    repos = _lock(db_url, _this_process(), heartbeat_age_s=60)
    code, payload = _status(db_url)
    engine = payload["engine"]
    assert code == 1 and isinstance(engine, dict)
    assert engine["state"] == "hung" and engine["pid"] == os.getpid() and engine["heartbeat_age_s"] >= 59
    repos.engine_lock.release(_this_process())


def test_an_engine_on_another_host_still_holding_the_postgresql_lock_is_hung(pg_url: str) -> None:
    repos = _lock(pg_url, "another-host.example:4242", heartbeat_age_s=60)  # holds the advisory lock
    code, payload = _status(pg_url)
    assert code == 1 and payload["engine"]["state"] == "hung"
    repos.engine_lock.release("another-host.example:4242")


def test_a_silent_engine_on_another_host_without_a_lock_is_not_running(sqlite_url: str) -> None:
    _lock(sqlite_url, "another-host.example:4242", heartbeat_age_s=60)
    code, payload = _status(sqlite_url)
    assert code == 0 and payload["engine"]["state"] == "not running"
    assert "last heard from 60s ago" in payload["engine"]["detail"]


# -- running and gone ------------------------------------------------------------------------------------
def test_status_names_the_running_engine_pid_host_heartbeat_venue_and_account(db_url: str) -> None:
    repos = _lock(db_url, _this_process(), heartbeat_age_s=0)
    code, payload = _status(db_url)
    engine = payload["engine"]
    assert code == 0 and isinstance(engine, dict)
    assert (engine["state"], engine["pid"], engine["host"], engine["venue"], engine["account"]) == (
        "running", os.getpid(), socket.gethostname(), "IB paper account", ACCOUNT)
    assert engine["heartbeat_age_s"] < 5
    assert payload["last_session"]["state"] == "running"
    repos.engine_lock.release(_this_process())


def test_status_names_a_live_account_ib_live(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADECTL_ACCOUNT", "U7654321")
    repos = _lock(sqlite_url, _this_process(), heartbeat_age_s=0, account="U7654321")
    table = runner.invoke(app, ["status", "--db", sqlite_url])
    assert table.exit_code == 0 and "IB live" in table.stdout and f"pid {os.getpid()}" in table.stdout
    repos.engine_lock.release(_this_process())


def test_an_engine_whose_process_is_gone_is_not_running_and_its_session_ended_without_a_summary(
        sqlite_url: str) -> None:
    _lock(sqlite_url, _dead_process(), heartbeat_age_s=0)
    code, payload = _status(sqlite_url)
    assert code == 0 and payload["engine"]["state"] == "not running"
    assert "crashed or killed" in payload["engine"]["detail"]
    assert payload["last_session"]["state"] == "ended without a summary"


# -- a failed start ----------------------------------------------------------------------------------------
def test_a_session_that_fails_at_start_is_recorded_as_failed_with_why_and_frees_the_account(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    quotes = tmp_path / "q.csv"
    quotes.write_text("ts,symbol,bid,ask\n2026-01-05T14:30:00+00:00,AAPL,not-a-price,100.01\n")
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("a")])
    failed = runner.invoke(app, ["paper", "--signals", str(signals), "--quotes", str(quotes), "--db", db,
                                 "--no-progress"])
    assert failed.exit_code == 2 and "column 'bid'" in failed.output
    code, payload = _status(db)
    last = payload["last_session"]
    assert code == 0 and isinstance(last, dict)
    assert last["state"] == "failed" and "column 'bid'" in last["error"] and last["ended_at"] is not None
    assert payload["engine"]["state"] == "not running"
    again = runner.invoke(app, ["paper", "--signals", str(signals), "--db", db, "--no-progress", "--json"])
    assert again.exit_code == 0, again.output


def test_a_session_that_fails_while_running_is_recorded_as_failed_in_its_run(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    quotes = tmp_path / "q.csv"
    quotes.write_text("ts,symbol,bid,ask\n2026-01-05T14:30:00+00:00,AAPL,100.00,100.02\n"
                      "2026-01-05T14:30:05+00:00,AAPL,100.00,99.00\n")  # the second quote is crossed
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("a", seconds=1), signal_line("b", seconds=10)])
    failed = runner.invoke(app, ["paper", "--signals", str(signals), "--quotes", str(quotes), "--db", db,
                                 "--no-progress"])
    assert failed.exit_code == 2 and "bid <= ask" in failed.output
    (session,) = json.loads(runner.invoke(app, ["sessions", "--db", db, "--json"]).stdout)
    assert session["state"] == "failed" and session["summary"]["stage"] == "run" and "bid <= ask" in session["error"]


def test_db_current_on_a_mistyped_path_creates_nothing_and_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "current", "--db", f"sqlite:///{tmp_path / 'nodir' / 'x.db'}"])
    assert result.exit_code == 2 and "no database" in result.stderr
    assert not (tmp_path / "nodir").exists()


def test_submit_to_a_mistyped_database_queues_nothing_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "tradectl.dbb"
    result = runner.invoke(app, ["submit", "--db", f"sqlite:///{typo}", signal_line("s1")])
    assert result.exit_code == 2 and not typo.exists()


def test_report_logs_to_stderr_so_stdout_is_only_the_paths(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("a"), signal_line("b", seconds=1, direction="short")])
    assert runner.invoke(app, ["paper", "--db", db, "--signals", str(signals), "--no-report", "--json"]).exit_code == 0
    result = runner.invoke(app, ["report", "--db", db, "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [f"report: {tmp_path / 'r.html'}"]


def test_submit_names_a_bad_lines_number_counting_blank_lines(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(db)
    signals = tmp_path / "s.jsonl"
    signals.write_text(signal_line("f-1") + "\n\n" + '{"id": "f-2", "symbol": "AAPL"}\n')
    result = runner.invoke(app, ["submit", "--db", db, "--file", str(signals)])
    assert result.exit_code == 2 and "line 3 (f-2)" in result.stderr
