"""What a `tradectl paper` process does to start and to end (scripts/bench_startup.py measures the time; this
holds the behaviour): the collector held through its start-up and on while it trades, frozen at the exit, and
only the modules a paper session uses: no IB client, HTTP server, metrics, alerts, report or plotting library,
no Alembic (a fresh database gets the snapshot, an existing one is checked with one query) and no progress bar
under --no-progress.

Each case runs the console script's main() in a fresh interpreter, which reports what it saw."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.session import Session, SessionSummary
from tests.conftest import signal_line, write_lines

# Wraps a function of a module to record the collector's state when it runs, then runs main(). The wrapper is put
# in once the module has loaded (scripts/wrap_on_import.py), so the command imports everything itself, as it would.
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
PROBE = """
import gc, json, sys
seen = {}
target = sys.argv[1].split(":") if sys.argv[1] else None

def wrap(module):
    _, owner_name, attr = target
    owner = getattr(module, owner_name) if owner_name else module
    inner = getattr(owner, attr)
    def wrapped(*args, **kwargs):
        seen.setdefault("enabled", gc.isenabled())
        seen.setdefault("frozen", gc.get_freeze_count())
        seen.setdefault("collections", sum(g["collections"] for g in gc.get_stats()))
        return inner(*args, **kwargs)
    setattr(owner, attr, wrapped)

if target is not None:
    sys.path.append(sys.argv[3])  # scripts/, for its import hook
    from wrap_on_import import install
    install({target[0]}, wrap)
from engine.cli import main
sys.argv = ["tradectl", *json.loads(sys.argv[2])]
code = 0
try:
    main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "seen": seen, "loaded": sorted(sys.modules),
                  "frozen_at_exit": gc.get_freeze_count()}))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_") and k != "DATABASE_URL"}


def probe(target: str, *args: str, cwd: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE, target, json.dumps(args), str(SCRIPTS)], capture_output=True,
                          text=True,
                          timeout=120, env=_env(), cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None), proc.stderr[-2000:]
    return report


def paper_args(tmp_path: Path, name: str = "s.jsonl") -> list[str]:
    signals = write_lines(tmp_path / name, [signal_line(f"{name}-{i}", seconds=i) for i in range(3)])
    return ["paper", "--signals", str(signals), "--db", f"sqlite:///{tmp_path / 'x.db'}", "--no-progress",
            "--no-report", "--json"]


def test_a_paper_session_trades_with_the_collector_on_and_its_start_up_frozen(tmp_path: Path) -> None:
    report = probe("engine.session:Session:run_source", *paper_args(tmp_path), cwd=tmp_path)
    seen = report["seen"]
    assert isinstance(seen, dict)
    assert seen["enabled"] is True  # a long session must not run without the collector
    assert seen["frozen"] > 10_000  # the modules, classes and tables made at start-up
    assert seen["collections"] < 100  # ~50 after the modules are in; ~240 with the collector on as they load
    assert isinstance(report["frozen_at_exit"], int) and report["frozen_at_exit"] >= seen["frozen"]


def test_every_other_command_runs_with_the_collector_on(tmp_path: Path) -> None:
    report = probe("repositories.db::upgrade", "db", "upgrade", "--db", f"sqlite:///{tmp_path / 'y.db'}", cwd=tmp_path)
    seen = report["seen"]
    assert isinstance(seen, dict) and seen["enabled"] is True


def test_in_process_callers_keep_their_collector_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    inner = Session.run_source

    async def run_source(self: Session, *args: Any, **kwargs: Any) -> SessionSummary:
        seen.append(gc.isenabled())
        return await inner(self, *args, **kwargs)

    monkeypatch.setattr(Session, "run_source", run_source)
    result = CliRunner().invoke(app, paper_args(tmp_path))
    assert result.exit_code == 0, result.output
    assert seen == [True] and gc.isenabled()  # only the console script's main holds it


# What a paper session on SQLite with --no-progress --no-report --json has no use for (each costs start-up time).
NOT_FOR_PAPER = ("alembic", "ib_async", "ibapi", "eventkit", "plotly", "apprise", "prometheus_client", "uvicorn",
                 "starlette", "httptools", "psycopg", "rich.progress", "broker.ibkr", "engine.live", "engine.report",
                 "engine.session_report", "engine.report_html", "engine.metrics", "engine.http", "engine.alerts")


def test_a_paper_session_loads_only_what_it_uses_on_a_fresh_and_an_existing_database(tmp_path: Path) -> None:
    for name in ("fresh.jsonl", "existing.jsonl"):
        report = probe("", *paper_args(tmp_path, name), cwd=tmp_path)
        loaded = report["loaded"]
        assert isinstance(loaded, list)
        unwanted = sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_FOR_PAPER))
        assert unwanted == [], name
