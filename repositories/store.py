"""Repositories: reads and the small transactional writes (sessions, kill switches, audit).

High-rate writes go through ``repositories.recorder``; everything here is one statement or one
short transaction, safe to call from the CLI while a session runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from engine.domain import KillState, KillSwitchChange, Position
from repositories.models import (
    AccountBindingRow,
    AuditRow,
    EngineLockRow,
    FillRow,
    KillSwitchAckRow,
    KillSwitchEventRow,
    OrderEventRow,
    OrderRow,
    PositionRow,
    RowDefectRow,
    SessionRow,
    SignalRejectRow,
    SignalRow,
    TradingDayRow,
)

OPEN_STATUSES = ("PendingNew", "Submitted", "PartiallyFilled", "PendingCancel")
KILLSWITCH_CHANNEL = "tradectl_killswitch"  # PostgreSQL NOTIFY channel; the payload is the account


class EngineLocked(Exception):
    """Another engine trades this account; the message names it."""

    def __init__(self, account: str, lock: dict[str, Any] | None, now: datetime) -> None:
        if lock is None:
            who = "another engine (it holds the database lock)"
        else:
            age = (now - lock["heartbeat_at"]).total_seconds()
            who = (f"{lock['holder']} ({lock['mode']}, session {lock['session_id']}, started "
                   f"{lock['started_at']:%Y-%m-%d %H:%M:%S}, last heartbeat {age:.1f}s ago)")
        super().__init__(f"account {account} is already traded by {who}; only one engine may trade an account")
        self.lock = lock


BROKER_OF_MODE = {"paper": "simulated", "ibkr": "ibkr"}  # a session's mode -> the broker kind it trades at


class AccountBound(Exception):
    """The database belongs to another account or broker kind; the message names the owner."""

    def __init__(self, binding: dict[str, Any], account: str, broker: str) -> None:
        super().__init__(
            f"this database belongs to account {binding['account']} at broker {binding['broker']} (since "
            f"{binding['bound_at']:%Y-%m-%d %H:%M:%S} UTC), not to account {account} at broker {broker}: "
            f"one database holds one account's positions; use another --db")
        self.binding = binding


def _lock_key(account: str) -> int:
    """A stable 63-bit advisory-lock key per account."""
    return int.from_bytes(hashlib.blake2b(f"tradectl:{account}".encode(), digest_size=8).digest()) >> 1


def _holder_gone(lock: dict[str, Any], now: datetime, stale_after_s: float) -> bool:
    """True when the engine named in a lock row can no longer be trading."""
    host, _, pid = str(lock["holder"]).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True  # crashed on this machine: take over at once
        except PermissionError:
            return False
        return False  # alive here, even if hung: never trade beside it
    age: float = (now - lock["heartbeat_at"]).total_seconds()
    return age > stale_after_s


class Store:
    def __init__(self, engine: Engine, account: str) -> None:
        self.engine = engine
        self.account = account
        self._lock_conn: Connection | None = None  # PostgreSQL: the connection holding the advisory lock

    # -- sessions --------------------------------------------------------------------------------------
    def start_session(self, mode: str, seed: int | None, now: datetime) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(SessionRow).values(started_at=now, mode=mode, account=self.account, seed=seed)
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def end_session(self, session_id: int, now: datetime, summary: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(ended_at=now, summary=json.dumps(summary, default=str))
            )

    def last_session(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(SessionRow).order_by(SessionRow.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    # -- state a session starts from ------------------------------------------------------------------
    def positions(self) -> list[Position]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(PositionRow.__table__).where(PositionRow.account == self.account))
            return [
                Position(r.symbol, r.quantity, r.avg_cost, r.realized_pnl, r.commissions) for r in rows
            ]

    def fill_totals(self) -> dict[str, Decimal]:
        """Signed quantity per symbol summed over every fill a correction did not replace: what positions must equal."""
        totals: dict[str, Decimal] = {}
        stmt = select(FillRow.symbol, FillRow.side, FillRow.quantity).where(FillRow.source != "corrected")
        with self.engine.connect() as conn:
            for symbol, side, qty in conn.execute(stmt):
                totals[symbol] = totals.get(symbol, Decimal(0)) + (qty if side == "BUY" else -qty)
        return {s: q for s, q in totals.items()}

    def open_orders(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(OrderRow.__table__).where(OrderRow.status.in_(OPEN_STATUSES)).order_by(OrderRow.created_at)
            ).mappings()
            return [dict(r) for r in rows]

    # -- reconciliation --------------------------------------------------------------------------------
    def existing_order_ids(self, client_order_ids: Sequence[str]) -> set[str]:
        return self._existing(OrderRow.client_order_id, client_order_ids)

    def existing_exec_ids(self, exec_ids: Sequence[str]) -> set[str]:
        return self._existing(FillRow.exec_id, exec_ids)

    def _existing(self, column: Any, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                found.update(conn.execute(select(column).where(column.in_(keys[i:i + 500]))).scalars())
        return found

    def order_rows(self, client_order_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The rows of these orders, whatever their state (reconciliation books fills against them)."""
        found: list[dict[str, Any]] = []
        keys = list(client_order_ids)
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                rows = conn.execute(select(OrderRow.__table__).where(OrderRow.client_order_id.in_(keys[i:i + 500])))
                found.extend(dict(r) for r in rows.mappings())
        return found

    def close_order(self, client_order_id: str, status: str, reason: str, now: datetime) -> None:
        """Give an order the final state reconciliation found for it, with its event."""
        with self.engine.begin() as conn:
            prev = conn.execute(select(OrderRow.status).where(OrderRow.client_order_id == client_order_id)).scalar()
            conn.execute(update(OrderRow).where(OrderRow.client_order_id == client_order_id)
                         .values(status=status, reason=reason, updated_at=now))
            conn.execute(insert(OrderEventRow).values(client_order_id=client_order_id, ts=now, from_status=prev,
                                                      to_status=status, reason=reason))

    def adopt_signal(self, signal_id: str, client_order_id: str, symbol: str, strategy: str, session_id: int,
                     now: datetime) -> None:
        """The signal behind an order found only at the broker: recorded, so a replay of it is a duplicate."""
        with self.engine.begin() as conn:
            if conn.execute(select(SignalRow.signal_id).where(SignalRow.signal_id == signal_id)).first():
                return
            conn.execute(insert(SignalRow).values(
                signal_id=signal_id, session_id=session_id, ts=now, received_at=now, strategy=strategy,
                symbol=symbol, direction="unknown", status="accepted", reason_code="adopted",
                reason="order found at the broker by orderRef during reconciliation", client_order_id=client_order_id,
                payload=None))

    # -- kill switches ---------------------------------------------------------------------------------
    def killswitch_states(self) -> dict[str, KillState]:
        """The latest state of every scope that has ever changed (ACTIVE scopes included)."""
        return {row["scope"]: KillState(row["state"]) for row in self.killswitch_list()}

    def killswitch_events(self, after_id: int = 0, limit: int | None = None) -> list[KillSwitchChange]:
        t = KillSwitchEventRow.__table__
        stmt = select(t).where(t.c.account == self.account, t.c.id > after_id).order_by(t.c.id)
        if limit:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [
                KillSwitchChange(
                    r.ts, r.scope, KillState(r.from_state), KillState(r.to_state), r.reason, r.actor, r.flatten, r.id
                )
                for r in conn.execute(stmt)
            ]

    def last_killswitch_event_id(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(KillSwitchEventRow.id)).where(KillSwitchEventRow.account == self.account)
            ).scalar()
            return int(value or 0)

    def record_killswitch(
        self, scope: str, to_state: KillState, reason: str, actor: str, now: datetime, flatten: bool = False
    ) -> KillSwitchChange:
        """Append a state change (the CLI's write, and automatic triggers'). Audited in the same transaction."""
        with self.engine.begin() as conn:
            prev = conn.execute(
                select(KillSwitchEventRow.to_state)
                .where(KillSwitchEventRow.account == self.account, KillSwitchEventRow.scope == scope)
                .order_by(KillSwitchEventRow.id.desc())
                .limit(1)
            ).scalar()
            from_state = KillState(prev) if prev else KillState.ACTIVE
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
            conn.execute(
                insert(AuditRow).values(
                    ts=now,
                    actor=actor,
                    action=f"killswitch.{to_state.value.lower()}",
                    scope=scope,
                    detail=json.dumps({"event_id": int(key[0]), "from": from_state.value, "to": to_state.value,
                                       "reason": reason, "flatten": flatten}),
                )
            )
            if conn.dialect.name == "postgresql":  # delivered at commit: the engine wakes at once
                conn.execute(text("SELECT pg_notify(:channel, :account)"),
                             {"channel": KILLSWITCH_CHANNEL, "account": self.account})
        return KillSwitchChange(now, scope, from_state, to_state, reason, actor, flatten, int(key[0]))

    def ack_killswitch(
        self, event_id: int, engine_name: str, cancelled: int, flatten_orders: int, now: datetime,
        detail: str | None = None, scope: str | None = None,
    ) -> None:
        """The engine has applied event ``event_id``: what it cancelled and sent. Audited with it."""
        with self.engine.begin() as conn:
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

    def killswitch_list(self) -> list[dict[str, Any]]:
        """Every scope that has ever changed, with its current state and the change that set it."""
        latest = (
            select(func.max(KillSwitchEventRow.id).label("id"))
            .where(KillSwitchEventRow.account == self.account)
            .group_by(KillSwitchEventRow.scope)
            .subquery()
        )
        t = KillSwitchEventRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.id.in_(select(latest.c.id))).order_by(t.c.scope)).mappings()
            return [
                {"scope": r["scope"], "state": r["to_state"], "since": r["ts"], "actor": r["actor"],
                 "reason": r["reason"], "event_id": r["id"]}
                for r in rows
            ]

    # -- the running engine ---------------------------------------------------------------------------
    def claim_engine(self, holder: str, mode: str, now: datetime, stale_after_s: float = 5.0) -> None:
        """Take the account for ``holder``, or raise EngineLocked naming the engine that has it.

        PostgreSQL: a session-level advisory lock on a connection held until ``release_engine`` (it dies
        with the process, so a crashed engine never blocks the next). SQLite: the ``engine_locks`` row,
        whose primary key admits one holder; a row is taken over only when its holder is provably gone
        (a dead pid on this host) or its heartbeat is older than ``stale_after_s`` on another host.
        """
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _lock_key(self.account)}).scalar()
            conn.commit()
            if not got:
                conn.close()
                raise EngineLocked(self.account, self.engine_lock(), now)
            self._lock_conn = conn
        with self.engine.begin() as tx:
            row = tx.execute(
                select(EngineLockRow.__table__).where(EngineLockRow.account == self.account)
            ).mappings().first()
            if row is not None:
                if self._lock_conn is None and not _holder_gone(dict(row), now, stale_after_s):
                    raise EngineLocked(self.account, dict(row), now)
                tx.execute(delete(EngineLockRow).where(EngineLockRow.account == self.account))
            try:
                tx.execute(insert(EngineLockRow).values(account=self.account, holder=holder, mode=mode,
                                                        session_id=None, started_at=now, heartbeat_at=now))
            except IntegrityError:  # another engine inserted between our read and our write
                raise EngineLocked(self.account, self.engine_lock(), now) from None

    def lock_session(self, holder: str, session_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(EngineLockRow).where(EngineLockRow.account == self.account,
                                                     EngineLockRow.holder == holder).values(session_id=session_id))

    def heartbeat(self, holder: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(EngineLockRow)
                .where(EngineLockRow.account == self.account, EngineLockRow.holder == holder)
                .values(heartbeat_at=now)
            )

    def release_engine(self, holder: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(EngineLockRow).where(EngineLockRow.account == self.account,
                                                EngineLockRow.holder == holder)
                )
        finally:
            held, self._lock_conn = self._lock_conn, None
            if held is not None:  # a pooled connection outlives close(): drop the real one, and the lock with it
                held.invalidate()
                held.close()

    def engine_lock(self) -> dict[str, Any] | None:
        """The engine row for this account, alive or not (the caller judges the heartbeat's age)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(EngineLockRow.__table__).where(EngineLockRow.account == self.account)
            ).mappings().first()
            return dict(row) if row else None

    def killswitch_ack(self, event_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(KillSwitchAckRow.__table__).where(KillSwitchAckRow.event_id == event_id)
            ).mappings().first()
            return dict(row) if row else None

    # -- the account a database belongs to -----------------------------------------------------------
    def account_binding(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(AccountBindingRow.__table__).where(AccountBindingRow.id == 1)).mappings().first()
            return dict(row) if row else None

    def claim_account(self, account: str, broker: str, now: datetime) -> dict[str, Any]:
        """Bind the database to ``account`` at ``broker`` on first use, or raise AccountBound naming its owner.

        A database used before bindings existed belongs to the account and broker of its first session.
        Checked before anything else is written, so a refused session leaves the database as it was.
        """
        binding = self.account_binding()
        if binding is None:
            with self.engine.connect() as conn:
                first = conn.execute(select(SessionRow.account, SessionRow.mode, SessionRow.started_at)
                                     .order_by(SessionRow.id).limit(1)).first()
            owner = (first.account, BROKER_OF_MODE.get(first.mode, first.mode), first.started_at) if first else (
                account, broker, now)
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(AccountBindingRow).values(id=1, account=owner[0], broker=owner[1],
                                                                  bound_at=owner[2]))
            except IntegrityError:  # another session bound it between our read and our write: theirs stands
                pass
            binding = self.account_binding()
            assert binding is not None
        if (binding["account"], binding["broker"]) != (account, broker):
            raise AccountBound(binding, account, broker)
        return binding

    # -- trading days ----------------------------------------------------------------------------------
    def trading_days(self, limit: int = 31) -> dict[str, tuple[Decimal, Decimal]]:
        """The latest ``limit`` trading days of the account: ISO day -> (start equity, peak equity)."""
        t = TradingDayRow.__table__
        stmt = select(t.c.day, t.c.start_equity, t.c.peak_equity).where(t.c.account == self.account)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(t.c.day.desc()).limit(limit)).all()
        return {day: (start, peak) for day, start, peak in rows}

    def save_trading_day(self, day: str, start_equity: Decimal, peak_equity: Decimal, now: datetime) -> None:
        """Record a trading day: its first start equity stands; the peak only rises."""
        t = TradingDayRow.__table__
        key = (t.c.account == self.account) & (t.c.day == day)
        with self.engine.begin() as conn:
            peak = conn.execute(select(t.c.peak_equity).where(key)).scalar()
            if peak is None:
                conn.execute(insert(TradingDayRow).values(account=self.account, day=day, start_equity=start_equity,
                                                          peak_equity=peak_equity, updated_at=now))
            elif peak_equity > peak:
                conn.execute(update(TradingDayRow).where(key).values(peak_equity=peak_equity, updated_at=now))

    # -- audit -----------------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, scope: str | None, detail: dict[str, Any], now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(AuditRow).values(ts=now, actor=actor, action=action, scope=scope,
                                        detail=json.dumps(detail, default=str))
            )

    def audit_log(self, since: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        stmt = select(AuditRow.__table__).order_by(AuditRow.id.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(AuditRow.ts >= since)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()][::-1]

    # -- listings for the CLI --------------------------------------------------------------------------
    def list_rows(self, table: str, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        model: Any = {"signals": SignalRow, "orders": OrderRow, "fills": FillRow, "positions": PositionRow,
                      "rejects": SignalRejectRow, "order_events": OrderEventRow, "row_defects": RowDefectRow}[table]
        t = model.__table__
        order_col = t.c[{"signals": "received_at", "orders": "created_at", "fills": "ts", "positions": "symbol",
                         "rejects": "id", "order_events": "id", "row_defects": "id"}[table]]
        stmt = select(t)
        if status is not None and "status" in t.c:
            stmt = stmt.where(t.c.status == status)
        if table == "positions":
            stmt = stmt.where(t.c.account == self.account).order_by(order_col)
        else:
            stmt = stmt.order_by(order_col.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(stmt).mappings()]
        return rows if table == "positions" else rows[::-1]

    def counts(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
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
        top: dict[str, int] = {}
        for code, n in [*reasons, *reject_reasons]:
            key = code or "unknown"
            top[key] = top.get(key, 0) + n
        return {
            "signals": {"accepted": sig.get("accepted", 0), "rejected": sig.get("rejected", 0),
                        "invalid_or_duplicate": rejects},
            "orders": orders,
            "fills": int(fills),
            "row_defects": int(defects),
            "reject_reasons": dict(sorted(top.items(), key=lambda kv: -kv[1])),
        }


def plain(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: Decimals as strings (exact), datetimes as ISO 8601."""
    out = []
    for row in rows:
        out.append({k: (str(v) if isinstance(v, Decimal) else v.isoformat() if isinstance(v, datetime) else v)
                    for k, v in row.items()})
    return out
