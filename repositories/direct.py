"""The operator's commands on the plain database driver (sqlite3, psycopg), without SQLAlchemy.

`tradectl kill` has 250 ms from typed to acknowledged and `status` 200 ms; SQLAlchemy and the models take
~200 ms to import on an idle machine. ``DirectRepositories`` answers the part of ``Repositories`` those
commands use, under the same names and with the same results, by the same SQL. The kill-switch change is
the same two rows (the event and its audit record) in one transaction, notified on PostgreSQL as the
repository does, so a running engine picks it up and acknowledges it as any other.
tests/integration/test_direct.py holds both paths to the same rows and answers on SQLite and PostgreSQL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.domain import OPEN_STATUSES, KillState, KillSwitchChange, Order, Position
from repositories.rows import (
    ADVISORY_LOCK_HELD,
    KILLSWITCH_CHANNEL,
    database_totals,
    killswitch_audit,
    lock_key_halves,
    order_from_row,
    position_from_row,
    session_row,
)
from repositories.unavailable import DatabaseUnavailable

if TYPE_CHECKING:
    import sqlite3

    import psycopg

# How the models' column types read back, by column name (repositories/types.py: UTCDateTime, Money).
_DATETIMES = frozenset({"ts", "started_at", "ended_at", "heartbeat_at", "created_at", "updated_at", "received_at",
                        "consumed_at", "bound_at"})
_MONEY = frozenset({"quantity", "limit_price", "stop_price", "filled_qty", "avg_fill_price", "commission", "price",
                    "avg_cost", "realized_pnl", "commissions", "start_equity", "peak_equity"})
_BOOLEANS = frozenset({"flatten"})
_OPEN = sorted(s.value for s in OPEN_STATUSES)
CHUNK = 500  # keys per IN (...) list, as repositories/orders.py


class NoDatabase(Exception):
    """A SQLite URL whose file does not exist (nothing is created)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no database at {path}")
        self.path = path


class DirectUnsupported(Exception):
    """A URL this path does not read (a SQLite URL with a query, another driver): the caller uses SQLAlchemy."""


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, as SQLAlchemy reads it; None for an in-memory database."""
    rest = url.removeprefix("sqlite://")
    if "?" in rest or "%" in rest or (rest and not rest.startswith("/")):
        raise DirectUnsupported(url)
    database = rest[1:]
    return Path(database) if database and database != ":memory:" else None


class DriverDatabase(ABC):
    """One connection in autocommit; SQL written with ``?`` placeholders for both drivers."""

    dialect: str
    driver_errors: tuple[type[Exception], ...]  # the driver's: each becomes DatabaseUnavailable
    refused_errors: tuple[type[Exception], ...]  # the driver's errors about the rows written (constraint, value)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.translated():
            cur = self._execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return [{n: _read(n, v) for n, v in zip(names, r, strict=True)} for r in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.translated():
            rows = self._execute(sql, params).fetchall()  # to the end: an INSERT ... RETURNING completes
            return rows[0][0] if rows else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """A statement that returns no rows."""
        with self.translated():
            self._execute(sql, params)

    def pairs(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, Any]]:
        with self.translated():
            return [(r[0], r[1]) for r in self._execute(sql, params).fetchall()]

    def bind(self, value: datetime) -> Any:
        """A timestamp as UTCDateTime binds it."""
        return value

    @contextmanager
    def translated(self) -> Iterator[None]:
        try:
            yield
        except self.driver_errors as err:
            raise DatabaseUnavailable.from_error(err) from err

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any]) -> Any: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]: ...

    @abstractmethod
    def write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Each statement (SQL in the driver's own paramstyle, as SQLAlchemy compiled it) with its parameter
        rows through one executemany, all in one transaction. The driver's errors propagate as they are: the
        caller tells a refused row (``refused_errors``) from a database it cannot reach (any other)."""

    @abstractmethod
    def close(self) -> None: ...


class _Sqlite(DriverDatabase):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        import sqlite3
        from urllib.parse import quote

        if not path.is_file():
            raise NoDatabase(path)
        self.driver_errors = (sqlite3.Error,)
        self.refused_errors = (sqlite3.IntegrityError, sqlite3.DataError)
        with self.translated():  # mode=rw: never creates the file
            self._conn: sqlite3.Connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True,
                                                             isolation_level=None, timeout=5.0)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON"):
                self._conn.execute(f"PRAGMA {pragma}")  # as repositories/db.py's connect hook

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        return self._conn.execute(sql, tuple(params))

    def bind(self, value: datetime) -> Any:
        # SQLAlchemy's SQLite DATETIME text, in UTC (repositories/types.py)
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.translated():
            self._conn.execute("BEGIN IMMEDIATE")  # the writer's lock first: read-then-append is one unit
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.executemany(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # (a failed COMMIT, busy or I/O, leaves it open)
                with suppress(*self.driver_errors):  # the first error is the one to report
                    conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()


class _Postgres(DriverDatabase):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        self.driver_errors = (psycopg.Error,)
        self.refused_errors = (psycopg.IntegrityError, psycopg.DataError)
        with self.translated():
            self._conn: psycopg.Connection[Any] = psycopg.connect(url, autocommit=True)

    def _execute(self, sql: str, params: Sequence[Any]) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), tuple(params))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.translated(), self._conn.transaction():
            yield

    def write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._conn.transaction(), self._conn.cursor() as cur:
            for sql, params in statements:
                cur.executemany(sql, params)

    def close(self) -> None:
        self._conn.close()


def _read(name: str, value: Any) -> Any:
    """A column's value as the models' types return it: UTC-aware datetimes, Decimal money, booleans."""
    if value is None:
        return None
    if name in _DATETIMES:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if name in _MONEY:
        return value if isinstance(value, Decimal) else Decimal(value)
    if name in _BOOLEANS:
        return bool(value)
    return value


def open_database(url: str) -> DriverDatabase:
    """A connection for ``url`` (after ``repositories.db.normalise_url``'s spellings).

    Raises NoDatabase for a SQLite file that does not exist, DirectUnsupported for a URL this path leaves
    to SQLAlchemy, DatabaseUnavailable when the database cannot be reached."""
    url = url.strip()
    if url.startswith("sqlite://"):
        path = _sqlite_path(url)
        if path is None:
            raise DirectUnsupported(url)  # an in-memory database has nothing to read
        return _Sqlite(path)
    for scheme in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(scheme):
            return _Postgres("postgresql://" + url.removeprefix(scheme))
    raise DirectUnsupported(url)


class DirectEngineLock:
    def __init__(self, db: DriverDatabase, account: str) -> None:
        self.db, self.account = db, account

    def holder(self) -> dict[str, Any] | None:
        """As ``EngineLockRepository.holder``: the engine row for this account, alive or not."""
        rows = self.db.rows("SELECT * FROM engine_locks WHERE account = ?", (self.account,))
        return rows[0] if rows else None

    def held_by_a_connection(self) -> bool | None:
        """As ``EngineLockRepository.held_by_a_connection``: PostgreSQL's advisory lock still held (the engine's
        process alive, wherever it runs); None on SQLite."""
        if self.db.dialect != "postgresql":
            return None
        held = self.db.scalar(ADVISORY_LOCK_HELD.format(hi="?", lo="?"), lock_key_halves(self.account))
        return bool(held)


class DirectKillSwitches:
    def __init__(self, db: DriverDatabase, account: str) -> None:
        self.db, self.account = db, account

    def record(self, scope: str, to_state: KillState, *, reason: str, actor: str, now: datetime,
               flatten: bool = False) -> KillSwitchChange:
        """As ``KillSwitchRepository.record``: the event and its audit record in one transaction (notified)."""
        with self.db.transaction():
            return self._append(scope, self._state(scope), to_state, reason, actor, now, flatten)

    def resume(self, scope: str, *, reason: str, actor: str, now: datetime) -> KillSwitchChange | None:
        """As ``KillSwitchRepository.resume``: back to ACTIVE from HALTED or REDUCE_ONLY; None, and nothing
        written, when the scope is ACTIVE already."""
        with self.db.transaction():
            from_state = self._state(scope)
            if from_state is KillState.ACTIVE:
                return None
            return self._append(scope, from_state, KillState.ACTIVE, reason, actor, now, False)

    def _state(self, scope: str) -> KillState:
        prev = self.db.scalar("SELECT to_state FROM killswitch_events WHERE account = ? AND scope = ? "
                              "ORDER BY id DESC LIMIT 1", (self.account, scope))
        return KillState(prev) if prev else KillState.ACTIVE

    def _append(self, scope: str, from_state: KillState, to_state: KillState, reason: str, actor: str,
                now: datetime, flatten: bool) -> KillSwitchChange:
        db = self.db
        event_id = int(db.scalar(
            "INSERT INTO killswitch_events (ts, account, scope, from_state, to_state, reason, actor, flatten) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (db.bind(now), self.account, scope, from_state.value, to_state.value, reason, actor, flatten)))
        action, detail = killswitch_audit(event_id, from_state, to_state, reason, flatten)
        db.run("INSERT INTO audit_log (ts, actor, action, scope, detail) VALUES (?, ?, ?, ?, ?)",
               (db.bind(now), actor, action, scope, detail))
        if db.dialect == "postgresql":  # delivered at commit: the engine wakes at once
            db.scalar("SELECT pg_notify(?, ?)", (KILLSWITCH_CHANNEL, self.account))
        return KillSwitchChange(now, scope, from_state, to_state, reason, actor, flatten, event_id)

    def ack_of(self, event_id: int) -> dict[str, Any] | None:
        """As ``KillSwitchRepository.ack_of``: the engine's acknowledgement, once written."""
        rows = self.db.rows("SELECT * FROM killswitch_acks WHERE event_id = ?", (event_id,))
        return rows[0] if rows else None

    def states(self) -> dict[str, KillState]:
        return {row["scope"]: KillState(row["state"]) for row in self.listing()}

    def listing(self) -> list[dict[str, Any]]:
        """As ``KillSwitchRepository.listing``: every scope ever changed, with the change that set it."""
        rows = self.db.rows(
            "SELECT * FROM killswitch_events WHERE id IN "
            "(SELECT max(id) FROM killswitch_events WHERE account = ? GROUP BY scope) ORDER BY scope",
            (self.account,))
        return [{"scope": r["scope"], "state": r["to_state"], "since": r["ts"], "actor": r["actor"],
                 "reason": r["reason"], "event_id": r["id"]} for r in rows]


class DirectSignals:
    def __init__(self, db: DriverDatabase) -> None:
        self.db = db

    def counts(self) -> dict[str, Any]:
        """As ``SignalRepository.counts``."""
        q = self.db
        return database_totals(
            dict(q.pairs("SELECT status, count(*) FROM signals GROUP BY status")),
            int(q.scalar("SELECT count(*) FROM signal_rejects") or 0),
            dict(q.pairs("SELECT status, count(*) FROM orders GROUP BY status")),
            int(q.scalar("SELECT count(*) FROM fills") or 0),
            int(q.scalar("SELECT count(*) FROM row_defects") or 0),
            [*q.pairs("SELECT reason_code, count(*) FROM signals WHERE status = ? GROUP BY reason_code", ("rejected",)),
             *q.pairs("SELECT reason_code, count(*) FROM signal_rejects GROUP BY reason_code")],
        )


class DirectSessions:
    def __init__(self, db: DriverDatabase) -> None:
        self.db = db

    def last(self) -> dict[str, Any] | None:
        """As ``SessionRepository.last``: the latest session row, its summary decoded."""
        rows = self.db.rows("SELECT * FROM sessions ORDER BY id DESC LIMIT 1")
        return session_row(rows[0]) if rows else None


class DirectOrders:
    def __init__(self, db: DriverDatabase) -> None:
        self.db = db

    def open(self) -> list[Order]:
        marks = ", ".join("?" * len(_OPEN))
        return [order_from_row(r) for r in
                self.db.rows(f"SELECT * FROM orders WHERE status IN ({marks}) ORDER BY created_at", _OPEN)]

    def symbols(self) -> set[str]:
        return {r["symbol"] for r in self.db.rows("SELECT DISTINCT symbol FROM orders")}

    def strategies(self) -> set[str]:
        return {r["strategy"] for r in self.db.rows("SELECT DISTINCT strategy FROM orders")}

    def find(self, client_order_ids: Sequence[str]) -> list[Order]:
        keys = list(client_order_ids)
        found: list[Order] = []
        for i in range(0, len(keys), CHUNK):
            part = keys[i:i + CHUNK]
            marks = ", ".join("?" * len(part))
            found.extend(order_from_row(r) for r in
                         self.db.rows(f"SELECT * FROM orders WHERE client_order_id IN ({marks})", part))
        return found


class DirectPositions:
    def __init__(self, db: DriverDatabase, account: str) -> None:
        self.db, self.account = db, account

    def all(self) -> list[Position]:
        return [position_from_row(r) for r in self.db.rows("SELECT * FROM positions WHERE account = ?",
                                                             (self.account,))]


class DirectRepositories:
    """The part of ``Repositories`` the fast operator commands use, on the plain driver."""

    def __init__(self, db: DriverDatabase, account: str) -> None:
        self.db = db
        self.account = account
        self.engine_lock = DirectEngineLock(db, account)
        self.killswitches = DirectKillSwitches(db, account)
        self.orders = DirectOrders(db)
        self.positions = DirectPositions(db, account)
        self.sessions = DirectSessions(db)
        self.signals = DirectSignals(db)

    @classmethod
    def open(cls, url: str, account: str) -> DirectRepositories:
        return cls(open_database(url), account)

    def schema_revision(self) -> str | None:
        """The database's Alembic revision (None when it has no schema yet), as ``repositories.db``'s."""
        try:
            revision = self.db.scalar("SELECT version_num FROM alembic_version")
        except DatabaseUnavailable as err:
            if "alembic_version" in err.detail:
                return None
            raise
        return None if revision is None else str(revision)

    def dispose(self) -> None:
        with self.db.translated():
            self.db.close()
