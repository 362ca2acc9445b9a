"""Session rows: opened when a session starts, closed with its summary (or with why it failed)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from repositories.errors import reading, writing
from repositories.models import CORRECTED, FillRow, PositionRow, SessionRow, SignalRejectRow, SignalRow
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
        lines taken, fills and commissions (a corrected execution once: its replacement), and its realized P&L
        when it is the latest session: the positions now, less the account's total at the last session before
        it that recorded one (sessions between with no fills of their own, e.g. failed starts, are passed over).
        None when that cannot be known."""
        fills = FillRow.__table__
        own = (fills.c.session_id == session_id) & (fills.c.source != CORRECTED)
        with reading(self.db) as conn:
            signals = sum(conn.execute(select(func.count()).select_from(t).where(t.c.session_id == session_id))
                          .scalar_one() for t in (SignalRow.__table__, SignalRejectRow.__table__))
            n_fills = conn.execute(select(func.count()).select_from(fills).where(own)).scalar_one()
            if conn.dialect.name == "postgresql":  # NUMERIC: summed exactly by the server
                commissions = conn.execute(select(func.coalesce(func.sum(fills.c.commission), 0)).where(own)
                                           ).scalar_one()
            else:  # exact decimal text: summed here, not as SQLite's floats
                commissions = sum(conn.execute(select(fills.c.commission).where(own)).scalars(), Decimal(0))
            realized = None if conn.execute(select(func.count()).select_from(SessionRow).where(
                SessionRow.id > session_id)).scalar_one() else self._realized_since(conn, session_id)
        return {"signals": signals, "fills": n_fills, "commissions": str(Decimal(commissions).quantize(_CENT)),
                "realized_pnl": None if realized is None else str(realized)}

    def _realized_since(self, conn: Connection, session_id: int) -> Decimal | None:
        """The account's realized P&L now, less its total at the end of the last session before ``session_id``
        that recorded one; None when a session between them traded without recording it (crashed)."""
        carried = Decimal(0)
        for earlier, summary in conn.execute(select(SessionRow.id, SessionRow.summary).where(
                SessionRow.id < session_id).order_by(SessionRow.id.desc())):
            total = _account_realized(summary)
            if total is not None:
                carried = total
                break
            if conn.execute(select(func.count()).select_from(FillRow).where(FillRow.session_id == earlier)
                            ).scalar_one():
                return None  # it traded, and its total is not known
        now = sum(conn.execute(select(PositionRow.realized_pnl).where(PositionRow.account == self.account))
                  .scalars(), Decimal(0))
        return (now - carried).quantize(_CENT)

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
