"""The lock that lets one engine trade an account at a time.

PostgreSQL: a session-level advisory lock on a connection held until ``release`` (it dies with the
process, so a crashed engine never blocks the next), beside the ``engine_locks`` row that names the
holder. SQLite: the ``engine_locks`` row alone, whose primary key admits one holder.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from repositories.errors import reading, translated, writing
from repositories.models import EngineLockRow
from repositories.rows import ADVISORY_LOCK_HELD, lock_key, lock_key_halves, process_alive


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


def _holder_gone(lock: dict[str, Any], now: datetime, stale_after_s: float) -> bool:
    """True when the engine named in a lock row can no longer be trading."""
    alive = process_alive(str(lock["holder"]))
    if alive is not None:
        return not alive  # crashed on this machine: take over at once; alive here, even if hung: never beside it
    age: float = (now - lock["heartbeat_at"]).total_seconds()
    return age > stale_after_s


class EngineLockRepository:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account
        self._lock_conn: Connection | None = None  # PostgreSQL: the connection holding the advisory lock

    def claim(self, holder: str, mode: str, now: datetime, stale_after_s: float = 5.0) -> None:
        """Take the account for ``holder``, or raise EngineLocked naming the engine that has it.

        A SQLite row is taken over only when its holder is provably gone (a dead pid on this host) or its
        heartbeat is older than ``stale_after_s`` on another host.
        """
        with translated():
            if self.db.dialect.name == "postgresql":
                conn = self.db.connect()
                got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.account)}).scalar()
                conn.commit()
                if not got:
                    conn.close()
                    raise EngineLocked(self.account, self.holder(), now)
                self._lock_conn = conn
            with self.db.begin() as tx:
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
                    raise EngineLocked(self.account, self.holder(), now) from None

    def attach_session(self, holder: str, session_id: int) -> None:
        """Name the session the holder runs (the CLI shows it)."""
        with writing(self.db) as conn:
            conn.execute(update(EngineLockRow).where(EngineLockRow.account == self.account,
                                                     EngineLockRow.holder == holder).values(session_id=session_id))

    def heartbeat(self, holder: str, now: datetime, broker_state: str | None = None) -> None:
        """The engine is alive; ``broker_state`` (JSON text), when given, is what it knows of its broker link."""
        values: dict[str, Any] = {"heartbeat_at": now}
        if broker_state is not None:
            values["broker_state"] = broker_state
        with writing(self.db) as conn:
            conn.execute(
                update(EngineLockRow)
                .where(EngineLockRow.account == self.account, EngineLockRow.holder == holder)
                .values(**values)
            )

    def release(self, holder: str) -> None:
        try:
            with writing(self.db) as conn:
                conn.execute(
                    delete(EngineLockRow).where(EngineLockRow.account == self.account,
                                                EngineLockRow.holder == holder)
                )
        finally:
            held, self._lock_conn = self._lock_conn, None
            if held is not None:  # a pooled connection outlives close(): drop the real one, and the lock with it
                with translated():
                    held.invalidate()
                    held.close()

    def held_by_a_connection(self) -> bool | None:
        """PostgreSQL: whether some connection holds the account's advisory lock (an engine's process is alive
        wherever it runs, even with a stale heartbeat). None on SQLite, which has no such lock."""
        if self.db.dialect.name != "postgresql":
            return None
        hi, lo = lock_key_halves(self.account)
        with reading(self.db) as conn:
            held = conn.execute(text(ADVISORY_LOCK_HELD.format(hi=":hi", lo=":lo")), {"hi": hi, "lo": lo}).scalar()
        return bool(held)

    def refuse_if_held(self, now: datetime, stale_after_s: float = 5.0) -> None:
        """Raise EngineLocked when another engine trades the account now, as ``claim`` would, taking nothing:
        a live engine checks this before it connects to IB, so a second one never touches the gateway (nor,
        with the same client id, waits for it forever). ``claim`` stays the decision: this only looks first."""
        held = self.held_by_a_connection()
        row = self.holder()
        if held:
            raise EngineLocked(self.account, row, now)
        if held is None and row is not None and not _holder_gone(row, now, stale_after_s):
            raise EngineLocked(self.account, row, now)

    def holder(self) -> dict[str, Any] | None:
        """The engine row for this account, alive or not (the caller judges the heartbeat's age)."""
        with reading(self.db) as conn:
            row = conn.execute(
                select(EngineLockRow.__table__).where(EngineLockRow.account == self.account)
            ).mappings().first()
            return dict(row) if row else None
