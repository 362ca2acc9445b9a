"""Session rows: opened when a session starts, closed with its summary."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from repositories.errors import reading, writing
from repositories.models import SessionRow


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

    def last(self) -> dict[str, Any] | None:
        """The latest session row, for printing."""
        with reading(self.db) as conn:
            row = conn.execute(select(SessionRow).order_by(SessionRow.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None
