"""Numbers and times as a person reads them in a table: money to the cent, prices to the tick, quantities
without exponents, times to the second. ``--json`` keeps full precision; only tables go through here.

Pure functions, no I/O: the table code (engine/report.py) picks one per column by the column's name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

CENT = Decimal("0.01")
TICK = Decimal("0.01")  # US equities above $1; the table has no instrument to ask for its own
AVERAGE_PLACES = Decimal("0.0001")  # an average of fills sits between ticks: two more places say where

# Which columns hold what (a column's name decides how its cells are printed).
MONEY_COLUMNS = frozenset({"commission", "commissions", "realized_pnl", "unrealized_pnl", "account_realized_pnl",
                           "account_commissions", "net_pnl", "realized", "pnl", "equity"})
PRICE_COLUMNS = frozenset({"limit_price", "stop_price", "price", "mark", "reference_price"})
AVERAGE_COLUMNS = frozenset({"avg_fill_price", "avg_cost"})
QUANTITY_COLUMNS = frozenset({"quantity", "filled_qty", "filled", "ours", "theirs", "difference"})
COUNT_COLUMNS = frozenset({"id", "signals", "fills", "event_id", "session_id", "line_no"})
TIME_COLUMNS = frozenset({"ts", "received_at", "created_at", "updated_at", "started_at", "ended_at", "since"})
# Long identifiers: what a narrow table folds onto further lines (numbers never are)
ID_COLUMNS = frozenset({"client_order_id", "signal_id", "exec_id", "parent_order_id", "oca_group", "row_key"})


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _no_negative_zero(d: Decimal) -> Decimal:
    return d.copy_abs() if d.is_zero() else d


def money(value: Any) -> str:
    """To the cent with thousands separators: ``-2,155.79``; never ``-0.00``."""
    d = _decimal(value)
    if d is None:
        return "" if value is None else str(value)
    return f"{_no_negative_zero(d.quantize(CENT, ROUND_HALF_EVEN)):,.2f}"


def price(value: Any, tick: Decimal = TICK) -> str:
    """To the tick: ``404.56``; a finer tick keeps its places (``1.08745`` at 0.00005)."""
    d = _decimal(value)
    if d is None:
        return "" if value is None else str(value)
    exponent = tick.normalize().as_tuple().exponent  # an int for a finite tick ('n', 'N', 'F' otherwise)
    places = max(-exponent, 2) if isinstance(exponent, int) else 2
    on_tick = (d / tick).quantize(Decimal(1), ROUND_HALF_EVEN) * tick
    return f"{_no_negative_zero(on_tick):.{places}f}"


def average(value: Any) -> str:
    """An average price (of fills, of a position's cost): four places, trailing zeros after the cents dropped."""
    d = _decimal(value)
    if d is None:
        return "" if value is None else str(value)
    text = f"{_no_negative_zero(d.quantize(AVERAGE_PLACES, ROUND_HALF_EVEN)):.4f}"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def quantity(value: Any) -> str:
    """A quantity as written, never in exponent form: ``160``, not ``1.6E+2``; ``10.5``, not ``10.500``."""
    d = _decimal(value)
    if d is None:
        return "" if value is None else str(value)
    text = f"{_no_negative_zero(d):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def timestamp(value: Any) -> str:
    """To the second, in UTC, without the ``T`` and offset: ``2026-01-05 14:37:26``."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    return str(value)


def cell(column: str, value: Any) -> str:
    """One table cell, printed by what its column holds."""
    if value is None:
        return ""
    if column in MONEY_COLUMNS:
        return money(value)
    if column in PRICE_COLUMNS:
        return price(value)
    if column in AVERAGE_COLUMNS:
        return average(value)
    if column in QUANTITY_COLUMNS:
        return quantity(value)
    if column in TIME_COLUMNS:
        return timestamp(value)
    return str(value)


_NUMERIC = MONEY_COLUMNS | PRICE_COLUMNS | AVERAGE_COLUMNS | QUANTITY_COLUMNS | COUNT_COLUMNS


def is_numeric(column: str) -> bool:
    """Right-aligned in a table."""
    return column in _NUMERIC


class ColumnKind(StrEnum):
    """What a column holds, as far as fitting a table to a narrow terminal goes."""

    NUMBER = "number"  # never cut or wrapped: its column is at least as wide as its widest cell
    TIME = "time"  # wraps at the space between date and time, never inside either
    ID = "id"  # a long identifier: folded onto further lines first, whole (never cut with an ellipsis)
    TEXT = "text"  # words: wraps between them


def kind_of(column: str) -> ColumnKind:
    if column in _NUMERIC:
        return ColumnKind.NUMBER
    if column in TIME_COLUMNS:
        return ColumnKind.TIME
    if column in ID_COLUMNS:
        return ColumnKind.ID
    return ColumnKind.TEXT
