"""Positions of one account, as domain ``Position``s (the recorder writes them)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from engine.domain import Position
from repositories.errors import reading
from repositories.models import PositionRow
from repositories.rows import position_from_row


class PositionRepository:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account

    def all(self) -> list[Position]:
        stmt = select(PositionRow.__table__).where(PositionRow.account == self.account)
        with reading(self.db) as conn:
            return [position_from_row(r) for r in conn.execute(stmt).mappings()]
