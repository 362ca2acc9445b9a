"""Persists what the bus says, in batches: one transaction per flush, executemany per table.

Kill-switch changes are not batched here: they are written at once, with their audit record, by
``engine.control`` (a trip) or the CLI (an operator).

The engine publishes an order before handing it to the broker, and the client order id is derived
from the signal id, so a crash between a flush and the broker finds the order again by ``orderRef``
at reconciliation. Batching is what makes 50k signals/s possible on SQLite.

What must be on disk together arrives as one bus event and is buffered as one unit of work: a new order
with its signal's row (and the inbox mark of the signal's line), a fill with its order's row and its
position. A flush runs only between units, so no transaction, and no crash between two of them, splits
one, whatever the order the engine publishes in or ``flush_rows``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Executable, Table, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.expression import bindparam

from engine.bus import EventBus, SignalRejected
from engine.domain import Fill, Order, Position, RejectCode, Signal, StatusChange
from repositories.background_writer import BackgroundWriter, WriterGone, WriterReply
from repositories.driver_batch import DriverBatch
from repositories.driver_statements import DriverStatements, execute_all
from repositories.inbox import CONSUMED, consumed_rows
from repositories.models import CORRECTED, Base
from repositories.writers import one_writer

log = structlog.get_logger("tradectl.recorder")

_tables = Base.metadata.tables
_signals: Table = _tables["signals"]
_rejects: Table = _tables["signal_rejects"]
_orders: Table = _tables["orders"]
_events: Table = _tables["order_events"]
_fills: Table = _tables["fills"]
_positions: Table = _tables["positions"]
_defects: Table = _tables["row_defects"]

RAW_MAX = 4096  # characters of an input line kept in a reject row written in place of a refused one


_ORDER_UPDATE = (
    update(_orders)
    .where(_orders.c.client_order_id == bindparam("b_coid"))
    .values(
        status=bindparam("status"),
        quantity=bindparam("quantity"),  # an exit cut to the position it protects; an overfill grows an order
        filled_qty=bindparam("filled_qty"),
        avg_fill_price=bindparam("avg_fill_price"),
        commission=bindparam("commission"),
        broker_order_id=bindparam("broker_order_id"),
        perm_id=bindparam("perm_id"),
        reason=bindparam("reason"),
        updated_at=bindparam("updated_at"),
    )
)


# A fill the database already holds (an execution replayed by the broker after a restart) is not
# written twice: the execution id is the key, and a second insert of it does nothing.
_FILL_INSERT: dict[str, Any] = {
    "postgresql": postgresql.insert(_fills).on_conflict_do_nothing(index_elements=["exec_id"]),
    "sqlite": sqlite.insert(_fills).on_conflict_do_nothing(index_elements=["exec_id"]),
}
def _upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_positions)
    return stmt.on_conflict_do_update(
        index_elements=["account", "symbol"],
        set_={c: stmt.excluded[c] for c in ("quantity", "avg_cost", "realized_pnl", "commissions", "updated_at")},
    )


_POSITION_UPSERT: dict[str, UpdateBase] = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}
# What an operator looks a refused row up by, per table (an order update carries its id as b_coid).
_KEYS = {"signals": ("signal_id",), "signal_rejects": ("signal_id",), "orders": ("client_order_id", "b_coid"),
         "order_events": ("client_order_id",), "fills": ("exec_id", "b_exec_id"), "positions": ("symbol",)}


def _row_key(table: str, row: dict[str, Any]) -> str | None:
    for name in _KEYS.get(table, ()):
        value = row.get(name)
        if value is not None:
            return str(value)
    return None


def _statement_table(stmt: Executable) -> str:
    table = getattr(stmt, "table", None)
    return str(getattr(table, "name", "unknown"))


_FILL_SUPERSEDE = (
    update(_fills).where(_fills.c.exec_id == bindparam("b_exec_id")).values(source=CORRECTED)
)


@dataclass(frozen=True, slots=True)
class RowDefect:
    """A row the database refused for what it holds (a violated constraint, a value it cannot store)."""

    table: str
    key: str | None
    error: str
    row: dict[str, Any]

    @property
    def symbol(self) -> str | None:
        value = self.row.get("symbol")
        return value if isinstance(value, str) else None


def is_row_defect(err: Exception) -> bool:
    """True when the error is about the rows written, not about reaching the database.

    IntegrityError and DataError come from the server; a StatementError that is not a DBAPIError failed
    while binding one value (an overflowing timestamp). Everything else (OperationalError, InterfaceError,
    a lost connection) means the database is unavailable: the rows are kept and the write retried.
    """
    if isinstance(err, IntegrityError | DataError):
        return True
    if isinstance(err, DBAPIError):
        return False
    return isinstance(err, StatementError | ValueError | TypeError | ArithmeticError)


def _describe(err: Exception) -> str:
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err) or type(err).__name__
    return f"{type(orig if orig is not None else err).__name__}: {text.splitlines()[0]}"


def _as_json(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, sort_keys=True)


def _order_row(order: Order, session_id: int, now: datetime) -> dict[str, Any]:
    i = order.intent
    inst = i.instrument
    return {
        "client_order_id": i.client_order_id,
        "signal_id": i.signal_id,
        "session_id": session_id,
        "strategy": i.strategy,
        "symbol": inst.symbol,
        "sec_type": inst.sec_type,
        "currency": inst.currency,
        "exchange": inst.exchange,
        "side": i.side.value,
        "quantity": i.quantity,
        "order_type": i.order_type.value,
        "limit_price": i.limit_price,
        "stop_price": i.stop_price,
        "tif": i.tif.value,
        "status": order.status.value,
        "filled_qty": order.filled_qty,
        "avg_fill_price": order.avg_fill_price,
        "commission": order.commission,
        "broker_order_id": order.broker_order_id,
        "perm_id": order.perm_id,
        "reason": order.reason,
        "created_at": order.created_at,
        "updated_at": now,
        "parent_order_id": i.parent_id,
        "oca_group": i.oca_group,
    }


_SAME_ON_BOTH: tuple[tuple[str, UpdateBase], ...] = (
    ("signals", insert(_signals)), ("signal_rejects", insert(_rejects)), ("inbox_consumed", CONSUMED),
    ("orders", insert(_orders)), ("order_updates", _ORDER_UPDATE), ("order_events", insert(_events)),
    ("fills_superseded", _FILL_SUPERSEDE))
STATEMENTS: dict[str, dict[str, UpdateBase]] = {
    **{name: {"sqlite": stmt, "postgresql": stmt} for name, stmt in _SAME_ON_BOTH},
    "fills": _FILL_INSERT, "positions": _POSITION_UPSERT,
}
"""The recorder's statements by batch name and dialect: batches travel by name (to a writer process)."""

def write_batches(conn: Connection, batches: list[DriverBatch]) -> int:
    """Every batch through one executemany each, in order; the rows written. A batch with refused rows
    (values that could not be converted) is for ``salvage``: RowRefused."""
    for batch in batches:
        if batch.refused:
            raise RowRefused(batch.refused[0][1])
    execute_all(conn, batches)
    return sum(len(b.params) for b in batches)


class RowRefused(ValueError):
    """A row a value of which the driver cannot take: the batch is written row by row (``salvage``)."""


def unavailable_reason(err: Exception) -> str:
    orig = getattr(err, "orig", None)
    return str(orig).splitlines()[0] if orig else type(err).__name__


def salvage(db: Engine, batches: list[DriverBatch], session_id: int, now: datetime) -> tuple[int, list[RowDefect]]:
    """Write the batches again row by row, each in a savepoint of one transaction; the rows written and the
    ones refused.

    Every row the database accepts is written; each one it refuses (or whose values could not be converted
    for it) goes to ``row_defects`` with its error, and a refused signal row is replaced by a reject row, so
    every input line still ends as a row. One transaction: an order and its signal, a fill and its position,
    still commit together.
    """
    n = 0
    defects: list[RowDefect] = []
    with one_writer(db), db.connect() as conn:
        sqlite_driver = None
        if conn.dialect.name == "sqlite":  # pysqlite's own transaction handling breaks savepoints
            sqlite_driver = conn.connection.driver_connection
            assert sqlite_driver is not None
            sqlite_driver.isolation_level = None
            conn.exec_driver_sql("BEGIN")
        try:
            trans = conn.begin() if sqlite_driver is None else None
            for batch in batches:
                table = _statement_table(STATEMENTS[batch.name][conn.dialect.name])
                for params in batch.params:
                    try:
                        with conn.begin_nested():
                            conn.exec_driver_sql(batch.sql, params)
                        n += 1
                    except Exception as err:
                        if not is_row_defect(err):
                            raise
                        row = batch.row(params)
                        defects.append(RowDefect(table, _row_key(table, row), _describe(err), row))
                defects += [RowDefect(table, _row_key(table, row), error, row) for row, error in batch.refused]
            for d in defects:
                conn.execute(insert(_defects), [{
                    "session_id": session_id, "ts": now, "table_name": d.table,
                    "row_key": None if d.key is None else d.key[:160], "error": d.error, "row": _as_json(d.row),
                }])
                n += 1
                if d.table in ("signals", "signal_rejects"):
                    n += _replace_line_row(conn, d, session_id, now)
            if trans is not None:
                trans.commit()
            else:
                conn.commit()
        finally:
            if sqlite_driver is not None:
                if sqlite_driver.in_transaction:
                    sqlite_driver.rollback()
                sqlite_driver.isolation_level = ""
    return n, defects


def _replace_line_row(conn: Connection, d: RowDefect, session_id: int, now: datetime) -> int:
    """A refused signal or reject row still leaves one row for its input line: a reject naming the error.

    Tried with fewer of the original values each time (the id, then the raw line, may be what the
    database refused); the received time is the flush's, since the original may be the bad value.
    """
    raw = d.row.get("payload" if d.table == "signals" else "raw")
    reject = {
        "session_id": session_id, "received_at": now, "signal_id": None,
        "reason_code": RejectCode.ROW_DEFECT.value,
        "reason": f"the database refused the {d.table} row: {d.error}",
        "raw": raw[:RAW_MAX] if isinstance(raw, str) else None, "line_no": d.row.get("line_no"),
    }
    key = d.key if isinstance(d.key, str) and d.key.isprintable() else None
    for attempt in ({**reject, "signal_id": key}, reject, {**reject, "raw": None}):
        try:
            with conn.begin_nested():
                conn.execute(insert(_rejects), [attempt])
            return 1
        except Exception as err:
            if not is_row_defect(err):
                raise
    return 0


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class Recorder:
    """Subscribes to a bus; ``flush`` writes everything buffered since the last flush."""

    def __init__(self, engine: Engine, session_id: int, account: str, flush_rows: int = 20_000,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or _wall_clock  # stamps updated_at: the session's clock (simulated in a paper file)
        self.session_id = session_id
        self.account = account
        self.flush_rows = flush_rows
        self._signals: list[dict[str, Any]] = []
        self._rejects: list[dict[str, Any]] = []
        self._new_orders: dict[str, Order] = {}
        self._dirty_orders: dict[str, Order] = {}
        self._events: list[dict[str, Any]] = []
        self._fills: list[dict[str, Any]] = []
        self._superseded: list[dict[str, Any]] = []
        self._positions: dict[str, Position] = {}
        self._consumed: list[int] = []  # inbox rows whose lines are buffered here: marked in the same flush
        self._inbox_id: int | None = None  # the inbox row of the line being handled, until its row is buffered
        self._pending = 0  # units of work buffered (an order with its signal, a fill with its position, ...)
        self.rows_written = 0
        self.flushes = 0
        self.failing: str | None = None  # why the last write failed, while the database is unreachable
        self.on_health: Callable[[str | None], None] | None = None
        self.on_defects: Callable[[list[RowDefect]], None] | None = None  # rows the database refused
        self.on_flush: Callable[[int, float], None] | None = None  # (rows, seconds) of each committed flush
        self.last_defects: list[RowDefect] = []  # of the last flush
        self.defects = 0
        self.refused_keys: set[str] = set()  # keys of every row refused this session (rare: not bounded)
        self.retry_s = 0.5
        self._retry_at = 0.0
        # Set by a live session to its loop's ``call_soon``: what one turn of the loop buffered is committed
        # together at the end of the turn (a burst of fills, statuses or rejections: one transaction).
        self.defer: Callable[[Callable[[], None]], object] | None = None
        self._flush_scheduled = False
        self._statements = DriverStatements()
        # A paper session's writer process (``use_writer``): batches of ``hand_off_units`` (or ``flush_rows``,
        # if fewer) go to it once the signal that filled them is handled (``end_of_signal``); units recorded
        # outside any signal (a wind-down's market steps) go at ``max_in_flight``, from the bus handler. ``flush``
        # waits up to ``wait_s`` for it. Batches it could not write come back (``_carried``).
        self.writer: BackgroundWriter | None = None
        self.hand_off_units = 256
        # Units handed over and not yet committed, at most: each batch is kept until it is (~6 rows a unit),
        # so this bounds the session's memory when the worker lags (the session then waits for it).
        self.max_in_flight = 4096
        self.wait_s = 5.0
        self._carried: list[DriverBatch] = []

    def attach(self, bus: EventBus) -> Recorder:
        bus.order_recorded += self.on_order_recorded
        bus.signal_rejected += self.on_signal_rejected
        bus.order_status += self.on_order_status
        bus.fill_booked += self.on_fill_booked
        return self

    # -- bus handlers (hot path: append only) ----------------------------------------------------------
    # Each event is one unit of work: its rows are made first, then buffered together and counted once, so
    # a flush (which runs only between units) writes all of a unit or none of it, whatever flush_rows is.
    def on_order_recorded(self, order: Order, signal: Signal | None, raw: str | None, line_no: int | None) -> None:
        """A new order and the signal it answers: both rows (and the line's inbox mark) in one transaction."""
        coid = order.client_order_id
        row = None
        if signal is not None:  # made first: a row that cannot be made leaves nothing of the unit buffered
            row = self._signal_row(signal, order.created_at, "accepted", None, None, coid, raw, line_no)
        if row is not None:
            self._signals.append(row)
            if self._inbox_id is not None:
                self._consumed.append(self._inbox_id)
                self._inbox_id = None
        self._new_orders[coid] = order
        append = self._events.append
        for c in order.history:
            append({
                "client_order_id": c.client_order_id,
                "ts": c.ts,
                "from_status": c.from_status.value if c.from_status is not None else None,
                "to_status": c.to_status.value,
                "reason": c.reason,
            })
        self._bump()

    def on_signal_rejected(self, r: SignalRejected) -> None:
        if r.valid and r.signal is not None:
            row = self._signal_row(r.signal, r.ts, "rejected", r.code.value, r.reason, None, r.raw, r.line_no)
            self._signals.append(row)
        else:
            self._rejects.append(
                {
                    "session_id": self.session_id,
                    "received_at": r.ts,
                    "signal_id": r.signal_id,
                    "reason_code": r.code.value,
                    "reason": r.reason,
                    "raw": r.raw,
                    "line_no": r.line_no,
                }
            )
        if self._inbox_id is not None:
            self._consumed.append(self._inbox_id)
            self._inbox_id = None
        self._bump()

    def on_order_status(self, order: Order, change: StatusChange) -> None:
        coid = order.client_order_id
        if coid not in self._new_orders:
            self._dirty_orders[coid] = order
        self._event(change)
        self._bump()

    def on_fill_booked(self, fill: Fill, order: Order | None, position: Position) -> None:
        """A fill, its order's row and the position it made: one unit, written in one transaction."""
        row = {
            "exec_id": fill.exec_id,
            "client_order_id": fill.client_order_id,
            "session_id": self.session_id,
            "symbol": fill.symbol,
            "side": fill.side.value,
            "quantity": fill.quantity,
            "price": fill.price,
            "commission": fill.commission,
            "ts": fill.ts,
            "source": fill.source,
        }
        self._fills.append(row)
        if fill.corrects is not None:  # the corrected row stays, marked, so the history is complete
            self._superseded.append({"b_exec_id": fill.corrects})
        if order is not None and order.client_order_id not in self._new_orders:
            self._dirty_orders[order.client_order_id] = order
        self._positions[position.symbol] = position
        self._bump()

    def consume_inbox(self, inbox_id: int) -> None:
        """The inbox row whose line is handled next: it is marked consumed with that line's row, in one unit.

        Call it *before* the engine handles the line. The mark is held until the line's row (its signal's,
        with its order, or its rejection) is buffered, and travels with it: a flush the line sets off before
        that row (a cancel of a superseded order with a full buffer) leaves the mark out, so after a crash the
        line is either consumed with its row on disk or pending with neither.
        """
        if self._inbox_id is not None:  # the previous line made no row of its own: marked as before
            self._consumed.append(self._inbox_id)
        self._inbox_id = inbox_id

    # -- writing ---------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Units of work not yet on disk: buffered here, or handed to the writer and not yet committed."""
        return self._pending + (self.writer.units_in_flight if self.writer is not None else 0)

    def flush(self, now: datetime | None = None, force: bool = False) -> int:
        """Write everything buffered in one transaction; return the number of rows written.

        With a ``writer`` (paper sessions), hand the rows to it and wait until it has committed everything
        handed so far: when this returns, what was buffered is on disk (or ``failing`` says why not).

        When the database is unreachable the buffers are kept (nothing is lost), ``on_health`` is told,
        and the write is tried again at most every ``retry_s``; the first write that succeeds says so.
        """
        writer = self.writer
        if writer is not None:
            try:
                n = self.hand_off(now)
                # While the database is down a flush does not hang: it waits as long as a retry (as in process).
                self._apply(writer.wait(writer.sent, self.wait_s if self.failing is None else self.retry_s))
                return n
            except WriterGone as err:
                self._writer_gone(err)
        if not self._pending and not self._carried:
            return 0
        if self.failing is not None and time.monotonic() < self._retry_at and not force:
            return 0
        now = now or self.clock()
        self.last_defects = []
        t0 = time.perf_counter()
        batches = self._carried + self._driver_batches(now)
        try:
            with one_writer(self.engine), self.engine.begin() as conn:
                n = write_batches(conn, batches)
        except Exception as err:
            if not is_row_defect(err):
                if not isinstance(err, DBAPIError):
                    raise
                return self._unavailable(err)
            log.error("recorder.row_defect", error=_describe(err), detail="writing the batch row by row")
            try:
                n, defects = salvage(self.engine, batches, self.session_id, now)
            except Exception as again:  # even row by row nothing could be written: keep it all, retry
                log.exception("recorder.salvage_failed")
                return self._unavailable(again)
            self._refused(defects)
        self._clear()  # only after the commit: a failed transaction keeps every row for the next try
        self._carried = []
        self._written(n, time.perf_counter() - t0)
        return n

    def hand_off(self, now: datetime | None = None) -> int:
        """Give everything buffered to the ``writer`` without waiting for it (paper sessions: persistence off
        the signal path); the number of rows handed. Without a writer: ``flush``."""
        writer = self.writer
        if writer is None:
            return self.flush(now)
        try:
            self._apply(writer.replies())
            if not self._pending:
                return 0
            now = now or self.clock()
            batches = self._driver_batches(now)
            n = sum(len(b.params) + len(b.refused) for b in batches)
            writer.send(batches, now, self._pending)
            self._clear()
            # The writer is behind: wait for it (memory stays bounded). Not while the database is down: the
            # session goes on (blocked for orders) and the rows wait in memory, as they do written in process.
            while writer.units_in_flight > self.max_in_flight and self.failing is None:
                self._apply(writer.wait(writer.acked + 1, self.wait_s))
        except WriterGone as err:
            self._writer_gone(err)
            return self.flush(now)
        return n

    def end_of_signal(self) -> None:
        """A signal has been handled, its order is at the broker: hand a due batch over now. Handing over costs
        ~1 ms a batch (rows made, pickled, sent); inside a bus handler it delayed the order of one signal in
        ~60 by as much."""
        if self.writer is not None and self._pending >= min(self.hand_off_units, self.flush_rows):
            self.hand_off()

    def use_writer(self, writer: BackgroundWriter) -> None:
        """Write through ``writer`` (another process) from now on: the signal path only hands rows over."""
        self.flush()
        self.writer = writer

    def _writer_gone(self, err: Exception) -> None:
        """The writer process died: what it had not committed is written here from now on (nothing lost)."""
        writer, self.writer = self.writer, None
        assert writer is not None
        handed = writer.take_back()
        log.error("recorder.writer_gone", error=str(err), batches=len(handed), detail="writing in process")
        self._carried = [b for h in handed for b in h.batches] + self._carried
        self._pending += sum(h.units for h in handed)

    def close(self) -> None:
        """Stop the writer process once it has written what it was given (the session's end)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()

    def _apply(self, replies: list[WriterReply]) -> None:
        """What the writer reported: commits, refused rows, the database lost or back."""
        for r in replies:
            if r.failing is not None:
                if self.failing is None:
                    self.failing = r.failing
                    log.error("recorder.flush_failed", error=self.failing, buffered=self.pending)
                    if self.on_health is not None:
                        self.on_health(self.failing)
                continue
            self.last_defects = []
            if r.defects:
                log.error("recorder.row_defect", error=r.defects[0].error, detail="written row by row")
                self._refused(r.defects)
            self._written(r.rows, r.seconds)

    def _written(self, n: int, seconds: float) -> None:
        if self.failing is not None:
            log.warning("recorder.recovered", rows=n)
            self.failing = None
            if self.on_health is not None:
                self.on_health(None)
        self.rows_written += n
        self.flushes += 1
        if self.on_flush is not None:
            self.on_flush(n, seconds)
        if self.last_defects and self.on_defects is not None:
            self.on_defects(self.last_defects)

    def _refused(self, defects: list[RowDefect]) -> None:
        for d in defects:
            log.error("recorder.row_refused", table=d.table, key=d.key, error=d.error)
        self.last_defects = defects
        self.defects += len(defects)
        self.refused_keys.update(d.key for d in defects if d.key is not None)

    def _unavailable(self, err: Exception) -> int:
        """The database cannot be reached: keep every row, say so once, try again after ``retry_s``."""
        self._retry_at = time.monotonic() + self.retry_s
        if self.failing is None:
            self.failing = unavailable_reason(err)
            log.error("recorder.flush_failed", error=self.failing, buffered=self._pending)
            if self.on_health is not None:
                self.on_health(self.failing)
        return 0

    def _driver_batches(self, now: datetime) -> list[DriverBatch]:
        """Every buffered row as plain driver values, one batch a statement."""
        dialect = self.engine.dialect
        batch = self._statements.batch
        return [batch(name, STATEMENTS[name][dialect.name], dialect, rows)
                for name, rows in self._batches(dialect.name, now)]

    def _batches(self, dialect: str, now: datetime) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Every buffered row, one batch a statement (``STATEMENTS``), in the order they must be written.

        The rows are plain values made now (an order's row as it stands): they may be written in another
        process (``BackgroundWriter``)."""
        sid = self.session_id
        if self._signals:
            yield "signals", self._signals
        if self._rejects:
            yield "signal_rejects", self._rejects
        if self._consumed:
            yield "inbox_consumed", consumed_rows(self._consumed, now)
        if self._new_orders:
            yield "orders", [_order_row(o, sid, now) for o in self._new_orders.values()]
        if self._dirty_orders:
            yield "order_updates", [
                {
                    "b_coid": o.client_order_id,
                    "status": o.status.value,
                    "quantity": o.intent.quantity,
                    "filled_qty": o.filled_qty,
                    "avg_fill_price": o.avg_fill_price,
                    "commission": o.commission,
                    "broker_order_id": o.broker_order_id,
                    "perm_id": o.perm_id,
                    "reason": o.reason,
                    "updated_at": now,
                }
                for o in self._dirty_orders.values()
            ]
        if self._events:
            yield "order_events", self._events
        if self._fills:
            yield "fills", self._fills
        if self._superseded:
            yield "fills_superseded", self._superseded
        if self._positions:
            yield "positions", self._position_rows(now)

    def _position_rows(self, now: datetime) -> list[dict[str, Any]]:
        return [
            {
                "account": self.account,
                "symbol": p.symbol,
                "quantity": p.quantity,
                "avg_cost": p.avg_cost,
                "realized_pnl": p.realized_pnl,
                "commissions": p.commissions,
                "updated_at": now,
            }
            for p in self._positions.values()
        ]

    def _clear(self) -> None:
        self._signals = []
        self._rejects = []
        self._new_orders = {}
        self._dirty_orders = {}
        self._events = []
        self._fills = []
        self._superseded = []
        self._positions = {}
        self._consumed = []
        self._pending = 0

    def flush_final(self, patience_s: float = 5.0) -> str | None:
        """The last write of a session: retried for up to ``patience_s`` while the database fails; returns why
        it failed, if it did. A writer process still writing (not failing) is waited for."""
        deadline = time.monotonic() + patience_s
        while True:
            self.flush(force=True)
            if self.failing is None:
                if not self.pending and not self._carried:
                    return None
                continue  # the writer is behind, not failing: wait on
            if time.monotonic() >= deadline:
                return f"{self.pending} row(s) could not be written: {self.failing}"
            time.sleep(self.retry_s)

    def commit_now(self, order: Order | None = None) -> bool:
        """Write everything buffered at once (a live order before it leaves); True when it is on disk.

        False also when the database refused the order's own row or its signal's: it must not leave.
        """
        self.flush()
        if self.failing is not None or self._pending:
            return False
        refused = self.refused_keys
        return order is None or not refused or (
            order.client_order_id not in refused and order.intent.signal_id not in refused)

    # -- helpers ---------------------------------------------------------------------------------------
    def _bump(self) -> None:
        self._pending += 1
        if self.writer is not None:
            if self._pending >= self.max_in_flight:  # no signal's end in sight: one batch within the bound
                self.hand_off()
        elif self._pending >= self.flush_rows and self._may_write():
            self.flush()
        elif self.defer is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self.defer(self._end_of_turn)

    def _may_write(self) -> bool:
        return self.failing is None or time.monotonic() >= self._retry_at

    def _end_of_turn(self) -> None:
        self._flush_scheduled = False
        if self._pending and self._may_write():
            self.flush()

    def _event(self, change: StatusChange) -> None:
        self._events.append(
            {
                "client_order_id": change.client_order_id,
                "ts": change.ts,
                "from_status": change.from_status.value if change.from_status is not None else None,
                "to_status": change.to_status.value,
                "reason": change.reason,
            }
        )

    def _signal_row(
        self,
        s: Signal,
        received_at: datetime,
        status: str,
        code: str | None,
        reason: str | None,
        coid: str | None,
        raw: str | None = None,
        line_no: int | None = None,
    ) -> dict[str, Any]:
        return {
            "signal_id": s.id,
            "session_id": self.session_id,
            "ts": s.ts,
            "received_at": received_at,
            "strategy": s.strategy,
            "symbol": s.symbol,
            "direction": s.direction.value,
            "status": status,
            "reason_code": code,
            "reason": reason,
            "client_order_id": coid,
            "payload": raw,
            "line_no": line_no,
            "ref_price": s.reference_price,
        }
