"""Writing a session report: pick the period (a session, or a trading day), read it, compute its figures, write
the HTML file and, when asked, the CSV files. Used by ``tradectl report``, at the end of a paper session and by
the daemon's daily digest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import structlog

from engine.config import Settings
from engine.report_csv import write_csv
from engine.report_figures import ReportFigures, build_figures
from repositories.report_data import ReportData, ReportRecords

log = structlog.get_logger("tradectl.report")


class NothingToReport(Exception):
    """The period asked for does not exist (no such session, no session at all) or holds nothing (a trading day
    without a session, signal, order or fill); the message says which."""


@dataclass(frozen=True, slots=True)
class WrittenReport:
    html: Path | None
    csv: list[Path]
    figures: ReportFigures
    seconds: float


def read_period(data: ReportData, settings: Settings, session_id: int | None = None,
                day: date | None = None) -> tuple[ReportRecords, str]:
    """The records of a session (the latest when neither is given) or of a trading day, and a line saying what
    they are (mode, account, when)."""
    if day is not None:
        start, end = settings.day.boundary().bounds(day)
        records = data.for_window(f"trading day {day.isoformat()}", start, end)
        if not (records.sessions or records.signals or records.line_rejects or records.orders or records.fills):
            raise NothingToReport(
                f"nothing to report for trading day {day.isoformat()}: no session, signal, order or fill from "
                f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} {settings.day.timezone}, the day as [day] "
                f'defines it (rollover = "{settings.day.rollover}", timezone = "{settings.day.timezone}")')
        modes = sorted({s.mode for s in records.sessions}) or ["no session"]
        what = (f"{', '.join(modes)} on account {settings.account}; {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} "
                f"{settings.day.timezone} ({len(records.sessions)} session(s))")
        return records, what
    info = data.session(session_id)
    if info is None:
        raise NothingToReport("no session is recorded in this database yet" if session_id is None
                              else f"there is no session {session_id} in this database")
    records = data.for_session(info)
    ended = f"{info.ended_at:%Y-%m-%d %H:%M:%S}" if info.ended_at else "not ended (running or crashed)"
    what = (f"{info.mode} session on account {info.account}; started {info.started_at:%Y-%m-%d %H:%M:%S}, "
            f"ended {ended} UTC")
    if records.signals:  # a file replayed on its own clock trades at its signals' times, not the session's
        what += f"; signals stamped {records.signals[0].ts:%Y-%m-%d %H:%M:%S} to {records.signals[-1].ts:%H:%M:%S}"
    return records, what


def default_html(settings: Settings, session_id: int | None, day: date | None) -> Path:
    """``[report] dir``, else ``reports/`` beside a SQLite database's file, else ``var/reports``."""
    from repositories.db import sqlite_file

    name = f"day-{day.isoformat()}.html" if day is not None else f"session-{session_id}.html"
    if settings.report.dir is not None:
        return settings.report.dir / name
    db_file = sqlite_file(settings.database_url)
    return (db_file.parent / "reports" if db_file is not None else Path("var") / "reports") / name


def write_report(data: ReportData, settings: Settings, *, session_id: int | None = None, day: date | None = None,
                 html: Path | None = None, csv_dir: Path | None = None, write_html: bool = True) -> WrittenReport:
    """Write the report of a session (the latest by default) or of a trading day; returns what was written."""
    t0 = time.perf_counter()
    records, subtitle = read_period(data, settings, session_id, day)
    figures = build_figures(records, settings.equity)
    path = None
    if write_html:
        from engine.report_html import render  # plotly: only when a page is drawn

        number = records.sessions[0].id if day is None and records.sessions else session_id
        path = html or default_html(settings, number, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(figures, subtitle), encoding="utf-8")
    written = write_csv(figures, csv_dir) if csv_dir is not None else []
    seconds = time.perf_counter() - t0
    log.info("report.written", period=records.title, html=str(path) if path else None, csv=len(written),
             fills=len(records.fills), seconds=round(seconds, 3))
    return WrittenReport(path, written, figures, seconds)


class DayReports:
    """The daily digest's report: writes the named trading day's (a thread of the daemon calls it, at the digest's
    time) and returns its path."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, day: str) -> str | None:
        """The report's path; None for a day with nothing to report (the digest goes without one)."""
        from repositories.db import make_engine

        db = make_engine(self.settings.database_url, create=False)
        try:
            written = write_report(ReportData(db), self.settings, day=date.fromisoformat(day))
        except NothingToReport as err:
            log.info("report.nothing", day=day, detail=str(err))
            return None
        finally:
            db.dispose()
        return None if written.html is None else str(written.html)
