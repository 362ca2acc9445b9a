"""Has the database ever seen this signal id? One indexed point lookup on the plain driver.

The engine asks for every id its recent window does not hold. SQLAlchemy's statement machinery costs
tens of microseconds a call; a cached cursor on the DB-API connection costs a few (SQLite). The
connection reads in autocommit, so it sees every committed row and holds no snapshot open.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

# The signal's own row, or an order made for it (a signal row refused by the database is replaced by a
# reject row, and an order adopted at reconciliation may predate its signal's row).
_SQL = {
    "sqlite": "SELECT 1 FROM signals WHERE signal_id = ? UNION ALL SELECT 1 FROM orders WHERE signal_id = ? LIMIT 1",
    "postgresql": "SELECT 1 FROM signals WHERE signal_id = %s UNION ALL SELECT 1 FROM orders WHERE signal_id = %s "
                  "LIMIT 1",
}


class SignalLookup:
    def __init__(self, db: Engine) -> None:
        self.db = db
        self._sql = _SQL[db.dialect.name]
        self._conn: Any = None
        self._cursor: Any = None

    def _open(self) -> Any:
        conn = self.db.raw_connection()
        driver: Any = conn.driver_connection  # sqlite3 or psycopg: the DB-API connection itself
        if self.db.dialect.name == "postgresql":
            driver.autocommit = True
        self._conn = conn
        self._cursor = driver.cursor()
        return self._cursor

    def seen(self, signal_id: str) -> bool:
        """True when a signal with this id was recorded. Raises the driver's error when it cannot tell."""
        cursor = self._cursor or self._open()
        try:
            cursor.execute(self._sql, (signal_id, signal_id))
            return cursor.fetchone() is not None
        except Exception:
            self.close()  # a broken connection is not reused: the next call opens a fresh one
            raise

    def holds_any(self) -> bool:
        """Whether the database holds any signal (or an order made for one): when it holds none at the start
        of a session, only ids that left the engine's memory can be there later, and the engine knows those."""
        cursor = self._cursor or self._open()
        cursor.execute("SELECT 1 FROM signals UNION ALL SELECT 1 FROM orders WHERE signal_id IS NOT NULL LIMIT 1")
        return cursor.fetchone() is not None

    def close(self) -> None:
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is not None:
            try:
                conn.invalidate()
            finally:
                conn.close()
