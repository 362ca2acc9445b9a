"""Session rows: opened when a session starts, closed with its summary (or with why it failed)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from repositories.errors import reading, writing
from repositories.models import FillRow, PositionRow, SessionRow, SignalRejectRow, SignalRow
from repositories.rows import session_row

_CENT = Decimal("0.01")


class SessionRepository:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account

    def start(self, mode: str, seed: int | None, now: datetime) -> int:
        """Open a session row; returns its id."""
        with writing(self.db) as conn:
            result = conn.execute(
                insert(SessionRow).values(started_at=now, mode=mode, account=self.account, seed=seed)
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def end(self, session_id: int, now: datetime, summary: dict[str, Any]) -> None:
        with writing(self.db) as conn:
            conn.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(ended_at=now, summary=json.dumps(summary, default=str))
            )

    def fail(self, session_id: int, now: datetime, error: str, stage: str) -> None:
        """Close a session that raised (``stage``: start or run): its row says failed and why, so nobody
        reads it as still running."""
        self.end(session_id, now, {"session_id": session_id, "outcome": "failed", "stage": stage, "error": error})

    def last(self) -> dict[str, Any] | None:
        """The latest session row (its summary decoded), for printing."""
        with reading(self.db) as conn:
            row = conn.execute(select(SessionRow).order_by(SessionRow.id.desc()).limit(1)).mappings().first()
        return session_row(row) if row else None

    def so_far(self, session_id: int) -> dict[str, Any]:
        """A session's own numbers from its rows, for one with no summary yet (running, or ended without one):
        lines taken, fills and commissions; its realized P&L too when it is the latest session and the one
        before it ended with the account's total (the positions now, less that), else None."""
        with reading(self.db) as conn:
            signals = sum(conn.execute(select(func.count()).select_from(t).where(t.c.session_id == session_id))
                          .scalar_one() for t in (SignalRow.__table__, SignalRejectRow.__table__))
            commissions = [c for (c,) in conn.execute(select(FillRow.commission).where(
                FillRow.session_id == session_id))]
            later = conn.execute(select(func.count()).select_from(SessionRow).where(
                SessionRow.id > session_id)).scalar_one()
            before = conn.execute(select(SessionRow.summary).where(SessionRow.id < session_id)
                                  .order_by(SessionRow.id.desc()).limit(1)).first()
            realized_now = [r for (r,) in conn.execute(select(PositionRow.realized_pnl).where(
                PositionRow.account == self.account))]
        realized: Decimal | None = None
        if not later:
            carried = Decimal(0) if before is None else _account_realized(before[0])
            if carried is not None:
                realized = (sum(realized_now, Decimal(0)) - carried).quantize(_CENT)
        return {"signals": signals, "fills": len(commissions),
                "commissions": str(sum(commissions, Decimal(0)).quantize(_CENT)),
                "realized_pnl": None if realized is None else str(realized)}

    def listing(self, limit: int | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """Sessions oldest first (the latest ``limit``, started at or after ``since``), summaries decoded."""
        stmt = select(SessionRow.__table__).order_by(SessionRow.id.desc())
        if since is not None:
            stmt = stmt.where(SessionRow.started_at >= since)
        if limit is not None:
            stmt = stmt.limit(limit)
        with reading(self.db) as conn:
            rows = [session_row(r) for r in conn.execute(stmt).mappings()]
        return rows[::-1]


def _account_realized(summary: str | None) -> Decimal | None:
    """The account's realized P&L a session's summary recorded at its end (None: no summary, or none in it)."""
    try:
        value = json.loads(summary).get("account_realized_pnl") if summary else None
        return None if value is None else Decimal(str(value))
    except (ValueError, AttributeError, InvalidOperation):
        return None
