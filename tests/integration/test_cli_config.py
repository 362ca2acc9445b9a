"""`tradectl config show` says where each setting came from; `--log-level` sets the level for any command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import app
from tests.conftest import signal_line, write_lines

runner = CliRunner()


def _shown(*args: str) -> dict[str, dict[str, Any]]:
    result = runner.invoke(app, [*args, "config", "show", "--json"] if args[:1] == ("--log-level",)
                           else ["config", "show", "--json", *args])
    assert result.exit_code == 0, result.output
    return {row["key"]: row for row in json.loads(result.stdout)["settings"]}


def test_each_setting_names_its_origin_flag_over_environment_over_file_over_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('account = "DU1111111"\n[kelly]\nfraction = 0.25\n[risk]\nmax_order_qty = 5\n')
    monkeypatch.setenv("TRADECTL_RISK__MAX_ORDER_QTY", "7")
    shown = _shown("--config", str(cfg), "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert (shown["kelly.fraction"]["value"], shown["kelly.fraction"]["origin"]) == ("0.25", "config file")
    assert shown["kelly.fraction"]["where"] == str(cfg)
    assert (shown["risk.max_order_qty"]["value"], shown["risk.max_order_qty"]["origin"]) == (
        "7", "environment")
    assert shown["risk.max_order_qty"]["where"] == "TRADECTL_RISK__MAX_ORDER_QTY"
    assert shown["database_url"]["origin"] == "flag" and shown["database_url"]["where"] == "--db"
    assert shown["account"]["value"] == "DU1111111" and shown["kelly.max_fraction_of_equity"]["origin"] == "default"


def test_database_url_from_the_plain_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://trader:hunter2@db.example/prod")
    shown = _shown()
    assert shown["database_url"]["where"] == "DATABASE_URL"
    assert "hunter2" not in shown["database_url"]["value"] and "trader:***@" in shown["database_url"]["value"]


def test_secrets_and_alert_urls_are_never_printed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[http]\nsecret = "0123456789abcdef-very-secret"\n[alerts]\nurls = ["tgram://bot123:tok/42"]\n')
    result = runner.invoke(app, ["config", "show", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "very-secret" not in result.stdout and "bot123" not in result.stdout and "<redacted>" in result.stdout


def test_config_show_with_a_bad_value_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[kelly]\nfraction = 3\n")
    result = runner.invoke(app, ["config", "show", "--config", str(cfg)])
    assert result.exit_code == 2 and "kelly.fraction" in result.output


def test_the_log_level_flag_is_a_flag_in_config_show() -> None:
    shown = _shown("--log-level", "warning")
    assert (shown["log_level"]["value"], shown["log_level"]["where"]) == ("warning", "--log-level")


def test_log_level_warning_quiets_info_events_of_a_session(tmp_path: Path) -> None:
    signals = write_lines(tmp_path / "s.jsonl", [signal_line("a")])
    args = ["paper", "--signals", str(signals), "--no-progress", "--json"]
    chatty = runner.invoke(app, [*args, "--db", f"sqlite:///{tmp_path / 'a.db'}"])
    quiet = runner.invoke(app, ["--log-level", "warning", *args, "--db", f"sqlite:///{tmp_path / 'b.db'}"])
    assert chatty.exit_code == quiet.exit_code == 0
    assert "reconcile.done" in chatty.stderr and "reconcile.done" not in quiet.stderr


def test_an_unknown_log_level_exits_2() -> None:
    result = runner.invoke(app, ["--log-level", "loud", "status"])
    assert result.exit_code == 2 and "debug, info, warning, error" in result.output
