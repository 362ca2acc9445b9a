"""Kill switches of one account: the append-only events (each audited, and on PostgreSQL notified),
the states they add up to, and the engine's acknowledgements."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text

from engine.domain import KillState, KillSwitchChange
from repositories.errors import reading, writing
from repositories.models import AuditRow, KillSwitchAckRow, KillSwitchEventRow
from repositories.rows import KILLSWITCH_CHANNEL, killswitch_audit

__all__ = ["KILLSWITCH_CHANNEL", "KillSwitchRepository"]


class KillSwitchRepository:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account

    def states(self) -> dict[str, KillState]:
        """The latest state of every scope that has ever changed (ACTIVE scopes included)."""
        return {row["scope"]: KillState(row["state"]) for row in self.listing()}

    def events(self, after_id: int = 0, limit: int | None = None) -> list[KillSwitchChange]:
        """Changes with an id above ``after_id``, oldest first."""
        t = KillSwitchEventRow.__table__
        stmt = select(t).where(t.c.account == self.account, t.c.id > after_id).order_by(t.c.id)
        if limit:
            stmt = stmt.limit(limit)
        with reading(self.db) as conn:
            return [
                KillSwitchChange(
                    r.ts, r.scope, KillState(r.from_state), KillState(r.to_state), r.reason, r.actor, r.flatten, r.id
                )
                for r in conn.execute(stmt)
            ]

    def last_event_id(self) -> int:
        with reading(self.db) as conn:
            value = conn.execute(
                select(func.max(KillSwitchEventRow.id)).where(KillSwitchEventRow.account == self.account)
            ).scalar()
            return int(value or 0)

    def record(
        self, scope: str, to_state: KillState, *, reason: str, actor: str, now: datetime, flatten: bool = False
    ) -> KillSwitchChange:
        """Append a state change (the CLI's write, and automatic triggers'). Audited in the same transaction."""
        with writing(self.db) as conn:
            return self._append(conn, scope, self._state(conn, scope), to_state, reason, actor, now, flatten)

    def resume(self, scope: str, *, reason: str, actor: str, now: datetime) -> KillSwitchChange | None:
        """Set ``scope`` back to ACTIVE as ``record`` does, when it is HALTED or REDUCE_ONLY; None, and nothing
        written, when it is ACTIVE already: resuming what is not halted changes nothing. One transaction."""
        with writing(self.db) as conn:
            from_state = self._state(conn, scope)
            if from_state is KillState.ACTIVE:
                return None
            return self._append(conn, scope, from_state, KillState.ACTIVE, reason, actor, now, False)

    def _state(self, conn: Connection, scope: str) -> KillState:
        """The scope's state as its latest event left it (ACTIVE when it never changed)."""
        prev = conn.execute(
            select(KillSwitchEventRow.to_state)
            .where(KillSwitchEventRow.account == self.account, KillSwitchEventRow.scope == scope)
            .order_by(KillSwitchEventRow.id.desc())
            .limit(1)
        ).scalar()
        return KillState(prev) if prev else KillState.ACTIVE

    def _append(self, conn: Connection, scope: str, from_state: KillState, to_state: KillState, reason: str,
                actor: str, now: datetime, flatten: bool) -> KillSwitchChange:
        """The event and its audit record (notified on PostgreSQL), in the caller's transaction."""
        result = conn.execute(
            insert(KillSwitchEventRow).values(
                ts=now,
                account=self.account,
                scope=scope,
                from_state=from_state.value,
                to_state=to_state.value,
                reason=reason,
                actor=actor,
                flatten=flatten,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        action, detail = killswitch_audit(int(key[0]), from_state, to_state, reason, flatten)
        conn.execute(insert(AuditRow).values(ts=now, actor=actor, action=action, scope=scope, detail=detail))
        if conn.dialect.name == "postgresql":  # delivered at commit: the engine wakes at once
            conn.execute(text("SELECT pg_notify(:channel, :account)"),
                         {"channel": KILLSWITCH_CHANNEL, "account": self.account})
        return KillSwitchChange(now, scope, from_state, to_state, reason, actor, flatten, int(key[0]))

    def ack(
        self, event_id: int, *, engine_name: str, cancelled: int, flatten_orders: int, now: datetime,
        detail: str | None = None, scope: str | None = None,
    ) -> None:
        """The engine has applied event ``event_id``: what it cancelled and sent. Audited with it."""
        with writing(self.db) as conn:
            conn.execute(
                insert(KillSwitchAckRow).values(
                    event_id=event_id, ts=now, engine=engine_name, cancelled=cancelled,
                    flatten_orders=flatten_orders, detail=detail,
                )
            )
            conn.execute(
                insert(AuditRow).values(
                    ts=now, actor=engine_name, action="killswitch.ack", scope=scope,
                    detail=json.dumps({"event_id": event_id, "cancelled": cancelled,
                                       "flatten_orders": flatten_orders, "detail": detail}),
                )
            )

    def ack_of(self, event_id: int) -> dict[str, Any] | None:
        """The engine's acknowledgement of event ``event_id``, once written."""
        with reading(self.db) as conn:
            row = conn.execute(
                select(KillSwitchAckRow.__table__).where(KillSwitchAckRow.event_id == event_id)
            ).mappings().first()
            return dict(row) if row else None

    def listing(self) -> list[dict[str, Any]]:
        """Every scope that has ever changed, with its current state and the change that set it."""
        latest = (
            select(func.max(KillSwitchEventRow.id).label("id"))
            .where(KillSwitchEventRow.account == self.account)
            .group_by(KillSwitchEventRow.scope)
            .subquery()
        )
        t = KillSwitchEventRow.__table__
        with reading(self.db) as conn:
            rows = conn.execute(select(t).where(t.c.id.in_(select(latest.c.id))).order_by(t.c.scope)).mappings()
            return [
                {"scope": r["scope"], "state": r["to_state"], "since": r["ts"], "actor": r["actor"],
                 "reason": r["reason"], "event_id": r["id"]}
                for r in rows
            ]
