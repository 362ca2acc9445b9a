"""The listings at a narrow terminal, as the commands print them from a database (SQLite and PostgreSQL): each
number they show is whole on one line, and every line fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.formatting import ColumnKind, cell, kind_of
from tests.conftest import signal_line, write_lines

runner = CliRunner()

LISTINGS = [["orders"], ["signals"], ["fills"], ["positions"], ["killswitch", "list"], ["sessions"]]
WITH_NUMBERS_AT_40 = [["orders"], ["fills"], ["positions"], ["sessions"]]  # signals have none; kill switches leave
# out their one, event_id, before their scope, state and reason


@pytest.fixture
def traded(db_url: str, tmp_path: Path) -> str:
    lines = [signal_line(f"narrow-listing-signal-{i:03}", ["AAPL", "MSFT", "NVDA"][i % 3],
                         ["long", "short"][i % 2], seconds=i) for i in range(12)]
    signals = write_lines(tmp_path / "s.jsonl", lines)
    result = runner.invoke(app, ["paper", "--db", db_url, "--signals", str(signals), "--no-progress", "--no-report"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["kill", "--db", db_url, "--scope", "symbol:AAPL", "--reason", "a halt with a reason "
                                 "long enough to wrap in a narrow terminal"])
    assert result.exit_code == 0, result.output
    return db_url


def _cells(text: str) -> set[str]:
    return {part.strip() for line in text.splitlines() if line.startswith("│") for part in line.split("│")[1:-1]}


def _headers(text: str) -> list[str]:
    """The columns a table shows, each header's folded pieces joined."""
    lines = [line.split("┃")[1:-1] for line in text.splitlines() if line.startswith("┃")]
    return ["".join(line[i].strip() for line in lines) for i in range(len(lines[0]))]


def _numbers(command: list[str], rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Each number of the listing's rows with its column, as a table prints it."""
    if command == ["sessions"]:  # a session's own counts and money come from its summary
        rows = [{**r, **(r.get("summary") or {})} for r in rows]
        rows = [{**r, "realized": r.get("realized_pnl")} for r in rows]
    return {(column, cell(column, value)) for r in rows for column, value in r.items()
            if kind_of(column) is ColumnKind.NUMBER and value is not None}


@pytest.mark.parametrize("width", [40, 60])
def test_every_listing_at_a_narrow_terminal_shows_each_number_whole_on_one_line(traded: str, width: int) -> None:
    for command in LISTINGS:
        rows = json.loads(runner.invoke(app, [*command, "--db", traded, "--json"]).stdout)
        table = runner.invoke(app, [*command, "--db", traded], env={"COLUMNS": str(width)})
        assert table.exit_code == 0, table.output
        assert max(len(line) for line in table.stdout.splitlines()) <= width, table.stdout
        shown = {(column, number) for column, number in _numbers(command, rows) if column in _headers(table.stdout)}
        if command in WITH_NUMBERS_AT_40:
            assert shown, f"{command} shows no number at {width} columns:\n{table.stdout}"
        cells = _cells(table.stdout)
        for column, number in shown:
            assert number in cells, f"{command}: {column} {number} is not whole on one line:\n{table.stdout}"
