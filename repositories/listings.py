"""Read-only listings the CLI prints: plain rows (dicts), not domain objects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

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

_TABLES: dict[str, tuple[Any, str]] = {  # listing -> (model, the column it is ordered by)
    "signals": (SignalRow, "received_at"), "orders": (OrderRow, "created_at"), "fills": (FillRow, "ts"),
    "positions": (PositionRow, "symbol"), "rejects": (SignalRejectRow, "id"), "order_events": (OrderEventRow, "id"),
    "row_defects": (RowDefectRow, "id"),
}


class Listings:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account

    def rows(self, table: str, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` rows of a listing, oldest first (positions: every one of the account's)."""
        model, order_by = _TABLES[table]
        t = model.__table__
        order_col = t.c[order_by]
        stmt = select(t)
        if status is not None and "status" in t.c:
            stmt = stmt.where(t.c.status == status)
        if table == "positions":
            stmt = stmt.where(t.c.account == self.account).order_by(order_col)
        else:
            stmt = stmt.order_by(order_col.desc()).limit(limit)
        with reading(self.db) as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        return rows if table == "positions" else rows[::-1]
