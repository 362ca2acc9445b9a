"""SQLAlchemy statements compiled once, executed through the DB-API with plain parameter rows.

The recorder writes thousands of rows a second through a handful of statements. ``Connection.execute``
with a list of dicts processes every parameter of every row through SQLAlchemy's machinery, several times
the cost of the driver's own ``executemany`` (docs/performance.md). Here each statement is compiled once per
dialect and set of columns, and each row becomes a tuple (a dict for named paramstyles) of the values the
driver takes: the project's own column types (``Money``, ``UTCDateTime``) by direct conversions that do
what their bind processors do, others by SQLAlchemy's own bind processor. The rows are then plain values
(text, numbers, None): cheap to hand to another process (``background_writer``), and what lands in the
database is the same, value for value (tests/integration/test_driver_statements.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import UpdateBase

from repositories.driver_batch import DriverBatch, Params
from repositories.types import Money, UTCDateTime

Processor = Callable[[Any], Any] | None


def _money_text(value: Any) -> str:
    if type(value) is not Decimal:
        raise TypeError(f"Money columns take Decimal, got {type(value).__name__}: {value!r}")
    return str(value)


def _money_decimal(value: Any) -> Decimal:
    if type(value) is not Decimal:
        raise TypeError(f"Money columns take Decimal, got {type(value).__name__}: {value!r}")
    return value


_UTC_TEXT: dict[datetime, str] = {}  # rows of one signal share their times: most conversions are a lookup


def _utc_text(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME storage format, of the UTC time (``UTCDateTime``)."""
    text = _UTC_TEXT.get(value)  # equal aware times are one instant (one text); a naive one equals none
    if text is None:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware")
        text = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        if len(_UTC_TEXT) >= 4096:
            _UTC_TEXT.clear()
        _UTC_TEXT[value] = text
    return text


def _utc_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware")
    return value


_FAST: dict[tuple[type, str], Processor] = {
    (Money, "sqlite"): _money_text, (Money, "postgresql"): _money_decimal,
    (UTCDateTime, "sqlite"): _utc_text, (UTCDateTime, "postgresql"): _utc_aware,
}


def _converter(names: Sequence[str], processors: Sequence[Processor], defaults: dict[str, Any],
               positional: bool) -> Callable[[dict[str, Any]], Params]:
    """A function made for one statement that turns a row into its parameters in one expression: a generic
    loop over the columns costs about three times as much per row, and the recorder converts ~6 rows a
    signal. The names are the statement's own bind names (column keys), never input."""
    env: dict[str, Any] = {}
    parts = []
    for i, (name, process) in enumerate(zip(names, processors, strict=True)):
        if not name.isidentifier():
            raise ValueError(f"bind name {name!r} is not an identifier")
        source = f"row.get({name!r}, _d{i})" if name in defaults else f"row[{name!r}]"
        env[f"_d{i}"] = defaults.get(name)
        if process is None:
            parts.append(source)
        else:
            env[f"_p{i}"] = process
            parts.append(f"(None if (v{i} := {source}) is None else _p{i}(v{i}))")
    if positional:
        body = "(" + "".join(f"{p}, " for p in parts) + ")"
    else:
        body = "{" + ", ".join(f"{n!r}: {p}" for n, p in zip(names, parts, strict=True)) + "}"
    exec(f"def convert(row):\n    return {body}\n", env)
    convert: Callable[[dict[str, Any]], Params] = env["convert"]
    return convert


class DriverStatement:
    """One statement for one dialect and one set of row keys: its SQL and how a row becomes parameters."""

    __slots__ = ("_convert", "_positional", "names", "sql")

    def __init__(self, stmt: UpdateBase, dialect: Dialect, keys: Sequence[str]) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        self.sql: str = str(compiled)
        binds = compiled.binds
        self._positional = bool(dialect.positional)
        # The rendered names (an anonymous bind, ``.values(source=...)``, has its key apart in ``binds``).
        names: list[str] = (list(compiled.positiontup or ()) if self._positional
                            else list(dict.fromkeys(compiled.bind_names.values())))
        self.names = tuple(names)
        processors: list[Processor] = []
        for n in names:
            type_ = binds[n].type
            key = (type(type_), dialect.name)
            processors.append(_FAST[key] if key in _FAST else type_.dialect_impl(dialect).bind_processor(dialect))
        # Values the statement carries itself (``.values(source="corrected")``): not in the rows.
        defaults = {n: binds[n].effective_value for n in names if not binds[n].required}
        self._convert = _converter(self.names, processors, defaults, self._positional)

    def parameters(self, rows: Iterable[dict[str, Any]]) -> tuple[list[Params], list[tuple[dict[str, Any], str]]]:
        """The driver's parameters for these rows, each value through its column's conversion; and the rows
        a value of which cannot be converted (a naive time, a float for money), with why: refused rows."""
        convert = self._convert
        out: list[Params] = []
        refused: list[tuple[dict[str, Any], str]] = []
        for row in rows:
            try:
                out.append(convert(row))
            except (TypeError, ValueError, ArithmeticError) as err:
                refused.append((row, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"))
        return out, refused


class DriverStatements:
    """A cache of ``DriverStatement`` by statement, dialect and row keys."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str, tuple[str, ...]], tuple[UpdateBase, DriverStatement]] = {}

    def batch(self, name: str, stmt: UpdateBase, dialect: Dialect, rows: list[dict[str, Any]]) -> DriverBatch:
        """These rows (sharing their keys) as one driver batch of ``stmt``."""
        keys = tuple(rows[0])
        key = (id(stmt), dialect.name, keys)
        hit = self._cache.get(key)
        if hit is None or hit[0] is not stmt:  # the statement is kept with its entry: its id stays its own
            hit = (stmt, DriverStatement(stmt, dialect, keys))
            self._cache[key] = hit
        prepared = hit[1]
        params, refused = prepared.parameters(rows)
        return DriverBatch(name, prepared.sql, prepared.names, params, refused)


def execute(conn: Connection, batch: DriverBatch) -> None:
    """The whole batch through one ``executemany`` (its convertible rows: see ``refused``)."""
    if batch.params:
        conn.exec_driver_sql(batch.sql, batch.params)


def execute_all(conn: Connection, batches: Sequence[DriverBatch]) -> None:
    """Every batch, in order. On PostgreSQL in one pipeline: the statements travel together and the server
    answers once, where one ``executemany`` each waits for its own answer. A live order's commit holds four
    or five statements (signal, order, its event, the inbox mark...), ~2 ms here against ~0.6 pipelined, and
    the order waits for that commit before it leaves (docs/performance.md).

    The driver's errors are raised as SQLAlchemy's (``DBAPIError.instance``: IntegrityError for a
    constraint...), as ``exec_driver_sql`` raises them, so callers tell a refused row from an outage alike.
    """
    todo = [b for b in batches if b.params]
    if conn.dialect.name != "postgresql" or len(todo) < 2:
        for batch in todo:
            execute(conn, batch)
        return
    raw = conn.connection  # the pool's DB-API connection, in the transaction ``conn`` began
    driver: Any = raw.driver_connection  # psycopg's Connection
    dbapi_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    cursor: Any = raw.cursor()
    try:
        with driver.pipeline():
            for batch in todo:
                cursor.executemany(batch.sql, batch.params)
    except dbapi_error as err:
        raise DBAPIError.instance(None, None, err, dbapi_error, dialect=conn.dialect) from err
    finally:
        cursor.close()
