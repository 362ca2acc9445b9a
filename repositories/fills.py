"""Fills: which executions the database holds, and the quantities they add up to."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import Engine, select

from repositories.errors import reading
from repositories.models import FillRow
from repositories.orders import existing


class FillRepository:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def existing_exec_ids(self, exec_ids: Sequence[str]) -> set[str]:
        """Which of these execution ids the database holds."""
        return existing(self.db, FillRow.exec_id, exec_ids)

    def totals(self) -> dict[str, Decimal]:
        """Signed quantity per symbol summed over every fill a correction did not replace: what positions must equal."""
        totals: dict[str, Decimal] = {}
        stmt = select(FillRow.symbol, FillRow.side, FillRow.quantity).where(FillRow.source != "corrected")
        with reading(self.db) as conn:
            for symbol, side, qty in conn.execute(stmt):
                totals[symbol] = totals.get(symbol, Decimal(0)) + (qty if side == "BUY" else -qty)
        return totals
