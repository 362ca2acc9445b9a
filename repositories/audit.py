"""The audit log: who did what, when and why (kill-switch changes are audited with their event)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select

from repositories.errors import reading, writing
from repositories.models import AuditRow


class AuditRepository:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def record(self, *, actor: str, action: str, scope: str | None, detail: dict[str, Any], now: datetime) -> None:
        with writing(self.db) as conn:
            conn.execute(
                insert(AuditRow).values(ts=now, actor=actor, action=action, scope=scope,
                                        detail=json.dumps(detail, default=str))
            )

    def log(self, since: datetime | None = None, limit: int | None = 1000) -> list[dict[str, Any]]:
        """The latest ``limit`` records (every one when None; since ``since``), oldest first, as plain rows."""
        stmt = select(AuditRow.__table__).order_by(AuditRow.id.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        if since is not None:
            stmt = stmt.where(AuditRow.ts >= since)
        with reading(self.db) as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()][::-1]
