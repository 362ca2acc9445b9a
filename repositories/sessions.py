"""Session rows: opened when a session starts, closed with its summary (or with why it failed)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from repositories.errors import reading, writing
from repositories.models import SessionRow
from repositories.rows import session_row


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
