"""Read-only listings the CLI prints: plain rows (dicts), not domain objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from repositories.errors import reading
from repositories.models import (
    FillRow,
    OrderEventRow,
    OrderRow,
    PositionRow,
    RowDefectRow,
    SignalRejectRow,
    SignalRow,
)
from repositories.rows import plain

__all__ = ["Listings", "plain"]

_TABLES: dict[str, tuple[Any, str, str]] = {  # listing -> (model, the column it is ordered by, its time column)
    "signals": (SignalRow, "received_at", "received_at"), "orders": (OrderRow, "created_at", "created_at"),
    "fills": (FillRow, "ts", "ts"), "positions": (PositionRow, "symbol", "updated_at"),
    "rejects": (SignalRejectRow, "id", "received_at"), "order_events": (OrderEventRow, "id", "ts"),
    "row_defects": (RowDefectRow, "id", "ts"),
}


# An average price exists only once something was filled or held: (its column, the quantity it averages).
_NO_AVERAGE_WHEN_ZERO: dict[str, tuple[str, str]] = {"orders": ("avg_fill_price", "filled_qty"),
                                                     "positions": ("avg_cost", "quantity")}


@dataclass(frozen=True, slots=True)
class RowFilter:
    """What a listing keeps; None keeps every row. ``since`` is on the listing's own time column."""

    session_id: int | None = None
    symbol: str | None = None
    strategy: str | None = None
    status: str | None = None
    since: datetime | None = None


class Listings:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account

    def rows(self, table: str, limit: int | None = 50, status: str | None = None,
             where: RowFilter | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` rows of a listing (every one when None), oldest first, kept by ``where``
        (positions: every one of the account's). A filter on a column the listing lacks raises KeyError."""
        model, order_by, time_col = _TABLES[table]
        t = model.__table__
        order_col = t.c[order_by]
        stmt = select(t)
        f = where if where is not None else RowFilter(status=status)
        if f.status is not None:
            stmt = stmt.where(func.lower(t.c["status"]) == f.status.lower())
        if f.session_id is not None:
            stmt = stmt.where(t.c["session_id"] == f.session_id)
        if f.symbol is not None:
            stmt = stmt.where(t.c["symbol"] == f.symbol.upper())
        if f.strategy is not None:
            if "strategy" in t.c:
                stmt = stmt.where(t.c.strategy == f.strategy)
            else:  # a fill's strategy is its order's
                orders = OrderRow.__table__
                stmt = stmt.where(t.c["client_order_id"].in_(
                    select(orders.c.client_order_id).where(orders.c.strategy == f.strategy)))
        if f.since is not None:
            stmt = stmt.where(t.c[time_col] >= f.since)
        if table == "positions":
            stmt = stmt.where(t.c.account == self.account).order_by(order_col)
        else:
            stmt = stmt.order_by(order_col.desc())
            if limit is not None:
                stmt = stmt.limit(limit)
        with reading(self.db) as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        average = _NO_AVERAGE_WHEN_ZERO.get(table)
        if average is not None:  # the column stores 0 until there is one; a price of 0 would be read as a price
            column, quantity = average
            for r in rows:
                if not r[quantity]:
                    r[column] = None
        return rows if table == "positions" else rows[::-1]
