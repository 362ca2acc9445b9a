"""Signals: the signal behind an order found only at the broker, and the database's totals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select

from repositories.errors import reading, writing
from repositories.models import FillRow, OrderRow, RowDefectRow, SignalRejectRow, SignalRow
from repositories.rows import database_totals


class SignalRepository:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def adopt(self, *, signal_id: str, client_order_id: str, symbol: str, strategy: str, session_id: int,
              now: datetime) -> None:
        """The signal behind an order found only at the broker: recorded, so a replay of it is a duplicate."""
        with writing(self.db) as conn:
            if conn.execute(select(SignalRow.signal_id).where(SignalRow.signal_id == signal_id)).first():
                return
            conn.execute(insert(SignalRow).values(
                signal_id=signal_id, session_id=session_id, ts=now, received_at=now, strategy=strategy,
                symbol=symbol, direction="unknown", status="accepted", reason_code="adopted",
                reason="order found at the broker by orderRef during reconciliation", client_order_id=client_order_id,
                payload=None))

    def counts(self) -> dict[str, Any]:
        """Totals of the whole database: signals by outcome, orders by status, fills, defects, reject reasons."""
        with reading(self.db) as conn:
            sig = dict(
                conn.execute(select(SignalRow.status, func.count()).group_by(SignalRow.status)).all()
            )
            rejects = conn.execute(select(func.count()).select_from(SignalRejectRow)).scalar() or 0
            orders = dict(conn.execute(select(OrderRow.status, func.count()).group_by(OrderRow.status)).all())
            fills = conn.execute(select(func.count()).select_from(FillRow)).scalar() or 0
            reasons = conn.execute(
                select(SignalRow.reason_code, func.count())
                .where(SignalRow.status == "rejected")
                .group_by(SignalRow.reason_code)
            ).all()
            reject_reasons = conn.execute(
                select(SignalRejectRow.reason_code, func.count()).group_by(SignalRejectRow.reason_code)
            ).all()
            defects = conn.execute(select(func.count()).select_from(RowDefectRow)).scalar() or 0
        return database_totals(sig, int(rejects), orders, int(fills), int(defects), [*reasons, *reject_reasons])
