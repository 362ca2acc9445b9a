"""Session reports against the database they read: figures that agree with the stored fills (SQLite and
PostgreSQL), trading days, CSV exports, and the `tradectl report` command."""

from __future__ import annotations

import csv
import re
from datetime import date
from decimal import Decimal as D
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine.cli import app
from engine.config import Settings, load_settings
from engine.report_figures import ReportFigures
from engine.session import PaperSession, SessionSummary
from engine.session_report import NothingToReport, write_report
from engine.sources import DEMO_SIGNALS
from repositories.db import make_engine
from repositories.models import FillRow, OrderRow, PositionRow, SignalRejectRow, SignalRow
from repositories.report_data import ReportData
from tests.conftest import signal_line, write_lines

runner = CliRunner()
CENT = D("0.01")


def demo_lines(n: int, start: int = 0) -> list[str]:
    with DEMO_SIGNALS.open(encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in islice(fh, start, start + n)]


def settings_for(url: str, tmp_path: Path, **cfg: Any) -> Settings:
    return load_settings(database_url=url, report={"dir": str(tmp_path / "reports")}, **cfg)


def paper(settings: Settings, lines: list[str], seed: int = 7) -> SessionSummary:
    return PaperSession(settings, seed=seed).run_file(lines)


def figures_of(settings: Settings, **which: Any) -> ReportFigures:
    db = make_engine(settings.database_url, create=False)
    try:
        return write_report(ReportData(db), settings, write_html=False, **which).figures
    finally:
        db.dispose()


def count(db_url: str, stmt: Any) -> int:
    db = make_engine(db_url, create=False)
    with db.connect() as conn:
        n = int(conn.execute(stmt).scalar_one())
    db.dispose()
    return n


def test_a_sessions_report_agrees_with_its_stored_fills_and_positions(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    summary = paper(settings, demo_lines(400))
    figures = figures_of(settings)
    db = make_engine(db_url, create=False)
    with db.connect() as conn:
        realized, commissions = conn.execute(
            select(func.sum(PositionRow.realized_pnl), func.sum(PositionRow.commissions))).one()
        per_symbol = dict(conn.execute(select(FillRow.symbol, func.count()).group_by(FillRow.symbol)).all())
    db.dispose()
    t = figures.totals
    assert t["realized_pnl"] == D(realized).quantize(CENT) == summary.realized_pnl
    assert t["commissions"] == D(commissions).quantize(CENT) == summary.commissions
    assert t["fills"] == count(db_url, select(func.count()).select_from(FillRow)) == summary.fills
    assert t["orders"] == count(db_url, select(func.count()).select_from(OrderRow))
    assert t["signals"] == count(db_url, select(func.count()).select_from(SignalRow)) + count(
        db_url, select(func.count()).select_from(SignalRejectRow)) == summary.signals
    assert {r.name: r.fills for r in figures.by_symbol} == per_symbol
    assert t["fills"] > 100 and len(figures.slippage) == len({f.client_order_id for f in figures.fills})


def test_a_later_sessions_report_counts_only_its_own_pnl(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    first = paper(settings, demo_lines(200))
    second = paper(settings, demo_lines(200, start=200))
    figures = figures_of(settings)  # the latest: session 2
    assert figures.title == "session 2"
    assert figures.totals["fills"] == second.fills
    assert figures.totals["realized_pnl"] == second.realized_pnl  # a summary reports its session's own too
    assert figures.totals["commissions"] == second.commissions
    assert second.account_realized_pnl == first.realized_pnl + second.realized_pnl
    assert figures_of(settings, session_id=1).totals["realized_pnl"] == first.realized_pnl


def test_a_trading_days_report_holds_that_days_rows_only(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'd.db'}", tmp_path)
    summary = paper(settings, demo_lines(150))  # the demo's signals are stamped 2026-01-05, 14:30 UTC on
    day = figures_of(settings, day=date(2026, 1, 5))
    assert day.title == "trading day 2026-01-05"
    assert (day.totals["fills"], day.totals["realized_pnl"]) == (summary.fills, summary.realized_pnl)


def test_a_trading_day_without_a_session_signal_order_or_fill_has_nothing_to_report(db_url: str,
                                                                                      tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path)
    paper(settings, demo_lines(20))  # stamped 2026-01-05 from 14:30 UTC: before 17:00 New York, that day's
    with pytest.raises(NothingToReport, match="trading day 2026-01-06: no session, signal, order or fill from "
                                              "2026-01-05 17:00 to 2026-01-06 17:00 America/New_York"):
        figures_of(settings, day=date(2026, 1, 6))


def test_the_report_command_for_a_day_with_nothing_writes_nothing_and_names_the_day_as_configured(
        db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "tradectl.toml"
    config.write_text(f'[day]\ntimezone = "Europe/London"\nrollover = "06:00"\n[report]\ndir = "{tmp_path / "r"}"\n')
    sig = write_lines(tmp_path / "s.jsonl", [signal_line("a", seconds=1), signal_line("b", "MSFT", seconds=2)])
    assert runner.invoke(app, ["paper", "--signals", str(sig), "--db", db_url, "--config", str(config),
                               "--no-progress", "--no-report"]).exit_code == 0
    result = runner.invoke(app, ["report", "--db", db_url, "--config", str(config), "--day", "2026-01-06",
                                 "--csv", str(tmp_path / "csv")])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.strip() == (
        "tradectl: nothing to report for trading day 2026-01-06: no session, signal, order or fill from "
        '2026-01-06 06:00 to 2026-01-07 06:00 Europe/London, the day as [day] defines it (rollover = "06:00", '
        'timezone = "Europe/London")')
    assert not (tmp_path / "r").exists() and not (tmp_path / "csv").exists()


def test_csv_files_hold_every_row_of_the_reports_tables(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'c.db'}", tmp_path)
    paper(settings, demo_lines(300))
    out = tmp_path / "csv"
    db = make_engine(settings.database_url, create=False)
    written = write_report(ReportData(db), settings, html=tmp_path / "r.html", csv_dir=out)
    db.dispose()
    f = written.figures

    def rows(name: str) -> list[dict[str, str]]:
        with (out / name).open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    assert sorted(p.name for p in written.csv) == sorted(
        ["summary.csv", "equity.csv", "pnl_by_symbol.csv", "pnl_by_strategy.csv", "price_path.csv", "fills.csv",
         "rejects.csv", "latency.csv", "slippage.csv"])
    assert {r["name"]: r["value"] for r in rows("summary.csv")}["realized_pnl"] == str(f.totals["realized_pnl"])
    assert [r["exec_id"] for r in rows("fills.csv")] == [x.exec_id for x in f.fills]
    assert [(r["name"], D(r["net"])) for r in rows("pnl_by_symbol.csv")] == [(r.name, r.net) for r in f.by_symbol]
    assert sum(D(r["net"]) for r in rows("pnl_by_strategy.csv")) == sum(r.net for r in f.by_strategy)
    assert [D(r["equity"]) for r in rows("equity.csv")] == [p.equity for p in f.equity]
    assert {(r["code"], r["source"], int(r["count"])) for r in rows("rejects.csv")} == {
        (r.code, r.source.value, r.count) for r in f.rejects}
    assert len(rows("latency.csv")) == len(f.latency) and len(rows("slippage.csv")) == len(f.slippage)
    assert len(rows("price_path.csv")) == len(f.prices)


def test_the_report_command_writes_the_html_and_prints_its_path(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    sig = write_lines(tmp_path / "s.jsonl", [signal_line("a", seconds=1), signal_line("b", "MSFT", seconds=2)])
    assert runner.invoke(app, ["paper", "--signals", str(sig), "--db", db, "--no-progress", "--no-report"]
                         ).exit_code == 0
    result = runner.invoke(app, ["report", "--db", db, "--csv", str(tmp_path / "csv")])
    assert result.exit_code == 0, result.output
    html = tmp_path / "reports" / "session-1.html"
    assert f"report: {html}" in result.stdout and (tmp_path / "csv" / "fills.csv").is_file()
    page = html.read_text(encoding="utf-8")
    assert "tradectl report: session 1" in page and 'id="chart-equity"' in page
    assert re.findall(r"<script[^>]*\bsrc=", page) == [] and "plotly.js v" in page  # plotly.js inside: offline


def test_the_report_command_refuses_a_session_that_does_not_exist(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    runner.invoke(app, ["paper", "--signals", str(write_lines(tmp_path / "s.jsonl", [signal_line("a")])),
                        "--db", db, "--no-progress", "--no-report"])
    result = runner.invoke(app, ["report", "--db", db, "--session", "9"])
    assert result.exit_code == 2 and "no session 9" in result.output


def test_the_report_command_takes_a_session_or_a_day_not_both(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--session", "1",
                                 "--day", "2026-01-05"])
    assert result.exit_code == 2 and "not both" in result.output


def test_the_report_command_names_a_day_that_is_not_a_date(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--day", "05/01/2026"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output


def test_the_report_command_on_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--db", f"sqlite:///{tmp_path / 'typo' / 'x.db'}"])
    assert result.exit_code == 2 and "no database" in result.output
    assert not (tmp_path / "typo").exists()
