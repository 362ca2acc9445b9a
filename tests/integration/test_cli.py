"""The tradectl command line: exit codes, messages, JSON for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from repositories.db import SCHEMA_HEAD, upgrade
from tests.conftest import signal_line, write_lines

runner = CliRunner()


def test_paper_session_prints_a_json_summary_and_records_everything(tmp_path: Path) -> None:
    sig = write_lines(tmp_path / "s.jsonl", [signal_line("a", seconds=1), "garbage", signal_line("b", "MSFT",
                                                                                                  seconds=2)])
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = runner.invoke(app, ["paper", "--signals", str(sig), "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["signals"] == 3 and summary["accepted"] == 2 and summary["invalid"] == 1
    listed = runner.invoke(app, ["signals", "--db", db, "--json"])
    assert {row["signal_id"] for row in json.loads(listed.stdout)} == {"a", "b"}
    for command in ("orders", "fills", "positions", "status"):
        out = runner.invoke(app, [command, "--db", db, "--json"])
        assert out.exit_code == 0, out.output
        json.loads(out.stdout)


def test_a_paper_session_off_a_terminal_writes_only_json_lines_to_stderr_no_progress_bar(tmp_path: Path) -> None:
    sig = write_lines(tmp_path / "s.jsonl", [signal_line("a", seconds=1), signal_line("b", "MSFT", seconds=2)])
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "paper", "--signals", str(sig), "--db",
                           f"sqlite:///{tmp_path / 'x.db'}", "--no-report"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "TRADECTL_LOG_FORMAT": "auto"})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "the session logs its start"
    for line in lines:  # `tradectl paper 2>log; jq . log` must work: a progress bar here broke it
        assert isinstance(json.loads(line), dict), line


def test_read_commands_print_tables_for_people(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    runner.invoke(app, ["paper", "--signals", str(write_lines(tmp_path / "s.jsonl", [signal_line("a")])),
                        "--db", db, "--no-progress"])
    out = runner.invoke(app, ["orders", "--db", db])
    assert out.exit_code == 0 and "tc-a" in out.stdout
    status = runner.invoke(app, ["status", "--db", db])
    assert "all ACTIVE" in status.stdout


def test_missing_signal_file_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["paper", "--signals", str(tmp_path / "nope.jsonl"), "--db", "sqlite://"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_bad_config_value_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[kelly]\nfraction = 3\n")
    result = runner.invoke(app, ["paper", "--config", str(cfg), "--db", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 2 and "kelly.fraction" in result.output


def test_unknown_environment_variable_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADECTL_RISK__MAX_ORDR_QTY", "5")
    result = runner.invoke(app, ["signals"])
    assert result.exit_code == 2 and "TRADECTL_RISK__MAX_ORDR_QTY" in result.output


@pytest.mark.parametrize("command", [["kill", "--reason", "r"], ["status"], ["killswitch", "list"]])
def test_the_operators_commands_refuse_a_bad_key_they_read_word_for_word(command: list[str],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADECTL_KILLSWITCH__ACK_TIMEOUT", "5")
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert "unknown variable 'TRADECTL_KILLSWITCH__ACK_TIMEOUT'" in result.output


def test_kill_does_not_refuse_over_a_section_it_does_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(db)
    monkeypatch.setenv("TRADECTL_RISK__MAX_ORDR_QTY", "5")  # a trading session refuses it; a halt must not
    result = runner.invoke(app, ["kill", "--reason", "r", "--db", db])
    assert result.exit_code == 0 and "global is HALTED" in result.output


def test_read_command_on_a_missing_database_says_what_to_do_and_creates_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["orders", "--db", f"sqlite:///{tmp_path / 'typo' / 'x.db'}"])
    assert result.exit_code == 2 and "tradectl db upgrade" in result.output
    assert not (tmp_path / "typo").exists()


def test_read_command_on_a_database_without_schema_says_what_to_do(tmp_path: Path) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    result = runner.invoke(app, ["orders", "--db", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert result.exit_code == 2 and "no schema" in result.output


def test_kill_on_a_database_that_does_not_exist_refuses_instead_of_making_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["kill", "--reason", "typo", "--db", f"sqlite:///{tmp_path / 'typo.db'}"])
    assert result.exit_code == 2 and "no database" in result.output
    assert not (tmp_path / "typo.db").exists()


def test_a_db_that_is_not_a_database_url_is_one_line_naming_the_key_and_exit_2(tmp_path: Path) -> None:
    for bad in (str(tmp_path / "plain.db"), "mysql://x/y"):
        result = runner.invoke(app, ["status", "--db", bad])
        assert result.exit_code == 2 and "database_url" in result.output and "Traceback" not in result.output


def test_an_unreachable_postgresql_is_one_line_and_exit_2_not_a_traceback() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "engine.cli", "db", "upgrade", "--db",
                           "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "cannot reach the database" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_db_upgrade_then_current_reports_head(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'u.db'}"
    assert runner.invoke(app, ["db", "upgrade", "--db", db]).exit_code == 0
    out = runner.invoke(app, ["db", "current", "--db", db]).stdout
    assert f"current: {SCHEMA_HEAD}" in out and f"head: {SCHEMA_HEAD}" in out


def test_bad_quotes_file_names_line_and_column(tmp_path: Path) -> None:
    quotes = tmp_path / "q.csv"
    quotes.write_text("ts,symbol,bid,ask\n2026-01-05T14:30:00Z,AAPL,abc,1\n")
    result = runner.invoke(app, ["paper", "--quotes", str(quotes), "--db", f"sqlite:///{tmp_path}/q.db",
                                 "--signals", str(write_lines(tmp_path / "s.jsonl", [signal_line("a")]))])
    assert result.exit_code == 2 and "q.csv:2" in result.output and "'bid'" in result.output


@pytest.mark.slow
def test_installed_console_script_runs_a_stdin_session(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "tradectl"
    db = f"sqlite:///{tmp_path / 'stdin.db'}"
    env = {**os.environ, "TRADECTL_PAPER__STEP_MS": "10"}
    lines = "\n".join([signal_line("a"), signal_line("b", "MSFT", "short")]) + "\n"
    # Signals on stdin carry wall-clock time: drop the fixed ts so they are fresh.
    lines = "\n".join(json.dumps({k: v for k, v in json.loads(x).items() if k != "ts"})
                      for x in lines.splitlines()) + "\n"
    proc = subprocess.run([str(exe), "paper", "--signals", "-", "--db", db, "--json"], input=lines,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["accepted"] == 2 and summary["fills"] >= 2


def test_help_lists_the_commands() -> None:
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("paper", "db", "signals", "orders", "fills", "positions", "status"):
        assert command in out.stdout


# -- operator controls (no engine running: recorded, and said so) --------------------------------------
def test_kill_requires_a_reason() -> None:
    result = runner.invoke(app, ["kill"])
    assert result.exit_code == 2 and "--reason" in result.output


def test_blank_reason_is_refused(db_url: str) -> None:
    result = runner.invoke(app, ["kill", "--db", db_url, "--reason", "  "])
    assert result.exit_code == 2 and "must say why" in result.output


def test_bad_scope_is_refused_with_the_accepted_forms(tmp_path: Path) -> None:
    result = runner.invoke(app, ["kill", "--db", f"sqlite:///{tmp_path / 'k.db'}", "--reason", "x",
                                 "--scope", "desk:eq"])
    assert result.exit_code == 2 and "strategy:NAME" in result.output


def test_kill_reduce_only_resume_are_listed_and_audited(db_url: str) -> None:
    upgrade(db_url)  # an operator's change needs an existing database (a typo must not make one)
    for args in (["kill", "--scope", "symbol:aapl", "--reason", "bad prints"],
                 ["reduce-only", "--scope", "strategy:mr", "--reason", "model review"],
                 ["resume", "--scope", "symbol:AAPL", "--reason", "prints fixed"]):
        result = runner.invoke(app, [*args, "--db", db_url, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["acknowledged"] is False and "no engine is running" in out["note"]
    listed = json.loads(runner.invoke(app, ["killswitch", "list", "--db", db_url, "--json"]).stdout)
    assert {(r["scope"], r["state"]) for r in listed} == {("symbol:AAPL", "ACTIVE"), ("strategy:mr", "REDUCE_ONLY")}
    audit = json.loads(runner.invoke(app, ["audit", "--db", db_url, "--json", "--since", "1h"]).stdout)
    assert [a["action"] for a in audit] == ["killswitch.halted", "killswitch.reduce_only", "killswitch.active"]
    assert audit[2]["detail"]["from"] == "HALTED" and audit[2]["detail"]["reason"] == "prints fixed"
    assert "@" in audit[0]["actor"]


@pytest.mark.parametrize(("verb", "to_state", "says_cancelled"), [
    ("kill", "HALTED", True), ("reduce-only", "REDUCE_ONLY", False), ("resume", "ACTIVE", False)])
def test_an_acknowledged_change_counts_cancels_only_for_a_halt(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                verb: str, to_state: str, says_cancelled: bool) -> None:
    """A resume never cancels anything: "0 open order(s) cancelled" after it misled (a new-user trial)."""
    import engine.operator
    from engine.domain import KillState, KillSwitchChange

    upgrade(db_url)
    from_state = KillState.ACTIVE if to_state == "HALTED" else KillState.HALTED
    change = KillSwitchChange(datetime.now(UTC), "global", from_state, KillState(to_state), "drill", "ops@desk",
                              id=7)
    ack = {"engine": "vm:1", "cancelled": 0, "flatten_orders": 0, "detail": None}
    monkeypatch.setattr(engine.operator, "change_killswitch",
                        lambda *a, **k: engine.operator.ChangeOutcome(change, "vm:1", ack, 0.012))
    result = runner.invoke(app, [verb, "--reason", "drill", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "acknowledged by vm:1 in 12 ms" in result.stdout
    assert ("open order(s) cancelled" in result.stdout) is says_cancelled


def test_resume_of_a_scope_that_is_not_halted_records_nothing_and_exits_0(db_url: str) -> None:
    upgrade(db_url)
    runner.invoke(app, ["kill", "--scope", "symbol:AAPL", "--reason", "bad prints", "--db", db_url])
    before = runner.invoke(app, ["audit", "--db", db_url, "--json"]).stdout
    for scope in ("global", "symbol:MSFT"):  # never changed
        assert runner.invoke(app, ["resume", "--scope", scope, "--reason", "x", "--db", db_url]).exit_code == 0
    assert runner.invoke(app, ["audit", "--db", db_url, "--json"]).stdout == before
    listed = json.loads(runner.invoke(app, ["killswitch", "list", "--db", db_url, "--json"]).stdout)
    assert [(r["scope"], r["state"]) for r in listed] == [("symbol:AAPL", "HALTED")]


def test_resume_of_a_scope_that_is_not_halted_says_so_and_names_the_scopes_that_are(db_url: str) -> None:
    upgrade(db_url)
    runner.invoke(app, ["kill", "--scope", "symbol:AAPL", "--reason", "bad prints", "--db", db_url])
    runner.invoke(app, ["reduce-only", "--scope", "strategy:mr", "--reason", "review", "--db", db_url])
    result = runner.invoke(app, ["resume", "--scope", "symbol:APPL", "--reason", "prints fixed", "--db", db_url])
    assert result.output.splitlines() == [
        "symbol:APPL was not halted (it is ACTIVE): nothing was recorded; halted or reduce-only now: "
        "strategy:mr REDUCE_ONLY, symbol:AAPL HALTED"]


def test_resume_of_a_scope_that_is_not_halted_says_recorded_false_in_json(db_url: str) -> None:
    upgrade(db_url)
    result = runner.invoke(app, ["resume", "--reason", "nothing halted", "--db", db_url, "--json"])
    out = json.loads(result.stdout)
    assert (out["recorded"], out["event_id"], out["scope"], out["state"], out["restricted"]) == (
        False, None, "global", "ACTIVE", {})


def test_resume_of_a_halted_scope_is_recorded_and_says_from_what(db_url: str) -> None:
    upgrade(db_url)
    runner.invoke(app, ["kill", "--reason", "desk stop", "--db", db_url])
    result = runner.invoke(app, ["resume", "--reason", "desk go", "--db", db_url, "--json"])
    out = json.loads(result.stdout)
    assert result.exit_code == 0 and (out["recorded"], out["from_state"], out["to_state"]) == (True, "HALTED", "ACTIVE")


def test_audit_since_in_the_future_is_empty_and_bad_since_is_usage(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(db)
    runner.invoke(app, ["kill", "--db", db, "--reason", "x"])
    assert json.loads(runner.invoke(app, ["audit", "--db", db, "--json", "--since", "2999-01-01"]).stdout) == []
    assert runner.invoke(app, ["audit", "--db", db, "--since", "soon"]).exit_code == 2
    table = runner.invoke(app, ["audit", "--db", db])
    assert table.exit_code == 0 and "killswitch.halted" in table.stdout


def test_flatten_with_a_strategy_scope_is_refused() -> None:
    result = runner.invoke(app, ["kill", "--scope", "strategy:mr", "--reason", "x", "--flatten"])
    assert result.exit_code == 2 and "symbol or global" in result.output


def test_killswitch_list_on_a_fresh_database_says_everything_is_active(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    runner.invoke(app, ["db", "upgrade", "--db", db])
    assert "every scope is ACTIVE" in runner.invoke(app, ["killswitch", "list", "--db", db]).stdout


def test_a_kill_on_a_symbol_never_traded_is_recorded_and_warns_with_the_closest_known_symbol(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'typo.db'}"
    signals = tmp_path / "s.jsonl"
    signals.write_text(signal_line("t1", symbol="AAPL") + "\n")
    assert runner.invoke(app, ["paper", "--signals", str(signals), "--db", db]).exit_code == 0
    typo = runner.invoke(app, ["kill", "--scope", "symbol:APPL", "--reason", "bad prints", "--db", db, "--json"])
    assert typo.exit_code == 0, typo.output
    assert "did you mean symbol:AAPL" in typo.stderr
    assert json.loads(typo.stdout)["warning"].startswith("symbol APPL has never been traded")
    right = runner.invoke(app, ["kill", "--scope", "symbol:AAPL", "--reason", "bad prints", "--db", db])
    assert right.exit_code == 0 and "warning" not in right.stderr
    states = json.loads(runner.invoke(app, ["killswitch", "list", "--db", db, "--json"]).stdout)
    assert {"symbol:APPL", "symbol:AAPL"} <= {s["scope"] for s in states}


def test_a_scope_naming_a_strategy_with_no_orders_warns_with_the_closest_known_strategy(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'typo.db'}"
    signals = tmp_path / "s.jsonl"
    signals.write_text(signal_line("t1", strategy="momentum") + "\n")
    assert runner.invoke(app, ["paper", "--signals", str(signals), "--db", db, "--no-report"]).exit_code == 0
    typo = runner.invoke(app, ["reduce-only", "--scope", "strategy:momentm", "--reason", "x", "--db", db])
    assert typo.exit_code == 0 and "did you mean strategy:momentum" in typo.stderr
