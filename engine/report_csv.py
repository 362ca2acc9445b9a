"""The report's tables as CSV files, one per table, every row (the HTML thins what it draws): for a spreadsheet or
a notebook. Money and prices are exact decimals, times ISO 8601 in UTC."""

from __future__ import annotations

import csv
from dataclasses import fields, is_dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from engine.report_figures import (
    EquityPoint,
    FillPoint,
    LatencyRow,
    PnlRow,
    PricePoint,
    RejectRow,
    ReportFigures,
    SlippageRow,
)

# file name -> (the ReportFigures attribute, its row type)
TABLES: dict[str, tuple[str, type]] = {
    "equity.csv": ("equity", EquityPoint),
    "pnl_by_symbol.csv": ("by_symbol", PnlRow),
    "pnl_by_strategy.csv": ("by_strategy", PnlRow),
    "price_path.csv": ("prices", PricePoint),
    "fills.csv": ("fills", FillPoint),
    "rejects.csv": ("rejects", RejectRow),
    "latency.csv": ("latency", LatencyRow),
    "slippage.csv": ("slippage", SlippageRow),
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _write(path: Path, columns: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(columns)
        out.writerows(rows)
    return path


def _records(path: Path, items: list[Any], kind: type) -> Path:
    assert is_dataclass(kind)
    columns = [f.name for f in fields(kind)]
    return _write(path, columns, [[_cell(getattr(x, c)) for c in columns] for x in items])


def write_csv(figures: ReportFigures, directory: Path) -> list[Path]:
    """Write every table (and summary.csv, the totals) into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [_write(directory / "summary.csv", ["name", "value"],
                      [[k, _cell(v)] for k, v in figures.totals.items()])]
    for name, (attr, kind) in TABLES.items():
        written.append(_records(directory / name, getattr(figures, attr), kind))
    return written
