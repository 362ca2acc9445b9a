"""Persists what the bus says, in batches: one transaction per flush, executemany per table.

Kill-switch changes are not batched here: they are written at once, with their audit record, by
``engine.control`` (a trip) or the CLI (an operator).

The engine publishes an order before handing it to the broker, and the client order id is derived
from the signal id, so a crash between a flush and the broker finds the order again by ``orderRef``
at reconciliation. Batching is what makes 50k signals/s possible on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Table, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import bindparam

from engine.bus import EventBus, SignalRejected
from engine.domain import Fill, Order, OrderStatus, Position, Signal, StatusChange
from repositories.models import Base

log = structlog.get_logger("tradectl.recorder")

_tables = Base.metadata.tables
_signals: Table = _tables["signals"]
_rejects: Table = _tables["signal_rejects"]
_orders: Table = _tables["orders"]
_events: Table = _tables["order_events"]
_fills: Table = _tables["fills"]
_positions: Table = _tables["positions"]

CORRECTED = "corrected"  # fills.source of a fill an execution correction replaced

_ORDER_UPDATE = (
    update(_orders)
    .where(_orders.c.client_order_id == bindparam("b_coid"))
    .values(
        status=bindparam("status"),
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
_FILL_SUPERSEDE = (
    update(_fills).where(_fills.c.exec_id == bindparam("b_exec_id")).values(source=CORRECTED)
)


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
    }


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
        self._pending = 0
        self.rows_written = 0
        self.flushes = 0
        self.failing: str | None = None  # why the last write failed, while the database is unreachable
        self.on_health: Callable[[str | None], None] | None = None
        self.retry_s = 0.5
        self._retry_at = 0.0

    def attach(self, bus: EventBus) -> Recorder:
        bus.signal_accepted += self.on_signal_accepted
        bus.signal_rejected += self.on_signal_rejected
        bus.order_submitted += self.on_order_submitted
        bus.order_status += self.on_order_status
        bus.fill += self.on_fill
        bus.position += self.on_position
        return self

    # -- bus handlers (hot path: append only) ----------------------------------------------------------
    def on_signal_accepted(self, signal: Signal, order: Order, raw: str | None, line_no: int | None) -> None:
        self._signals.append(
            self._signal_row(signal, order.created_at, "accepted", None, None, order.client_order_id, raw, line_no)
        )
        self._bump()

    def on_signal_rejected(self, r: SignalRejected) -> None:
        if r.valid and r.signal is not None:
            self._signals.append(
                self._signal_row(r.signal, r.ts, "rejected", r.code, r.reason, None, r.raw, r.line_no))
        else:
            self._rejects.append(
                {
                    "session_id": self.session_id,
                    "received_at": r.ts,
                    "signal_id": r.signal_id,
                    "reason_code": r.code,
                    "reason": r.reason,
                    "raw": r.raw,
                    "line_no": r.line_no,
                }
            )
        self._bump()

    def on_order_submitted(self, order: Order) -> None:
        self._new_orders[order.client_order_id] = order
        for change in order.history:
            self._event(change)
        if order.intent.signal_id is not None and order.status is OrderStatus.PENDING_NEW:
            self._pending += 1  # its signal's row follows at once: the two are written in one transaction
        else:
            self._bump()

    def on_order_status(self, order: Order, change: StatusChange) -> None:
        coid = order.client_order_id
        if coid not in self._new_orders:
            self._dirty_orders[coid] = order
        self._event(change)
        self._bump()

    def on_fill(self, fill: Fill, order: Order | None) -> None:
        self._fills.append(
            {
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
        )
        if fill.corrects is not None:  # the corrected row stays, marked, so the history is complete
            self._superseded.append({"b_exec_id": fill.corrects})
        if order is not None and order.client_order_id not in self._new_orders:
            self._dirty_orders[order.client_order_id] = order
        self._bump()

    def on_position(self, position: Position) -> None:
        """No flush of its own: the fill that moved the position comes next and writes both."""
        self._positions[position.symbol] = position

    # -- writing ---------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._pending

    def flush(self, now: datetime | None = None, force: bool = False) -> int:
        """Write everything buffered in one transaction; return the number of rows written.

        When the database is unreachable the buffers are kept (nothing is lost), ``on_health`` is told,
        and the write is tried again at most every ``retry_s``; the first write that succeeds says so.
        """
        if not self._pending and not self._positions:
            return 0
        if self.failing is not None and time.monotonic() < self._retry_at and not force:
            return 0
        now = now or self.clock()
        try:
            with self.engine.begin() as conn:
                n = self._write(conn, now)
        except DBAPIError as err:
            self._retry_at = time.monotonic() + self.retry_s
            if self.failing is None:
                self.failing = str(err.orig).splitlines()[0] if err.orig else type(err).__name__
                log.error("recorder.flush_failed", error=self.failing, buffered=self._pending)
                if self.on_health is not None:
                    self.on_health(self.failing)
            return 0
        self._clear()  # only after the commit: a failed transaction keeps every row for the next try
        if self.failing is not None:
            log.warning("recorder.recovered", rows=n)
            self.failing = None
            if self.on_health is not None:
                self.on_health(None)
        self.rows_written += n
        self.flushes += 1
        return n

    def _write(self, conn: Connection, now: datetime) -> int:
        n = 0
        sid = self.session_id
        if self._signals:
            conn.execute(insert(_signals), self._signals)
            n += len(self._signals)
        if self._rejects:
            conn.execute(insert(_rejects), self._rejects)
            n += len(self._rejects)
        if self._new_orders:
            conn.execute(insert(_orders), [_order_row(o, sid, now) for o in self._new_orders.values()])
            n += len(self._new_orders)
        if self._dirty_orders:
            conn.execute(
                _ORDER_UPDATE,
                [
                    {
                        "b_coid": o.client_order_id,
                        "status": o.status.value,
                        "filled_qty": o.filled_qty,
                        "avg_fill_price": o.avg_fill_price,
                        "commission": o.commission,
                        "broker_order_id": o.broker_order_id,
                        "perm_id": o.perm_id,
                        "reason": o.reason,
                        "updated_at": now,
                    }
                    for o in self._dirty_orders.values()
                ],
            )
            n += len(self._dirty_orders)
        if self._events:
            conn.execute(insert(_events), self._events)
            n += len(self._events)
        if self._fills:
            conn.execute(_FILL_INSERT[conn.dialect.name], self._fills)
            n += len(self._fills)
        if self._superseded:
            conn.execute(_FILL_SUPERSEDE, self._superseded)
            n += len(self._superseded)
        if self._positions:
            self._upsert_positions(conn, now)
            n += len(self._positions)
        return n

    def _upsert_positions(self, conn: Connection, now: datetime) -> None:
        rows = [
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
        dialect = conn.dialect.name
        stmt: Any = (postgresql.insert(_positions) if dialect == "postgresql" else sqlite.insert(_positions))
        stmt = stmt.on_conflict_do_update(
            index_elements=["account", "symbol"],
            set_={c: stmt.excluded[c] for c in ("quantity", "avg_cost", "realized_pnl", "commissions", "updated_at")},
        )
        conn.execute(stmt, rows)

    def _clear(self) -> None:
        self._signals = []
        self._rejects = []
        self._new_orders = {}
        self._dirty_orders = {}
        self._events = []
        self._fills = []
        self._superseded = []
        self._positions = {}
        self._pending = 0

    def flush_final(self, patience_s: float = 5.0) -> str | None:
        """The last write of a session: retried for up to ``patience_s``; returns why it failed, if it did."""
        deadline = time.monotonic() + patience_s
        while True:
            self.flush(force=True)
            if self.failing is None:
                return None
            if time.monotonic() >= deadline:
                return f"{self._pending} row(s) could not be written: {self.failing}"
            time.sleep(self.retry_s)

    def commit_now(self, order: Order | None = None) -> bool:
        """Write everything buffered at once (a live order before it leaves); True when it is on disk."""
        self.flush()
        return self.failing is None and not self._pending

    # -- helpers ---------------------------------------------------------------------------------------
    def _bump(self) -> None:
        self._pending += 1
        if self._pending >= self.flush_rows and (self.failing is None or time.monotonic() >= self._retry_at):
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
        }
