"""What a session report reads: one session's (or one trading day's) signals, rejections, orders and fills,
and the fills before it (the positions it started from). Plain records; the figures are computed elsewhere
(``engine/report_figures.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Select, func, select

from engine.domain import Fill, OrderStatus, Side
from repositories.errors import reading
from repositories.models import FillRow, OrderEventRow, OrderRow, SessionRow, SignalRejectRow, SignalRow

SUPERSEDED = "corrected"  # fills.source of an execution a correction replaced: never counted


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: int
    mode: str
    account: str
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class SignalRecord:
    signal_id: str
    ts: datetime  # the signal's own time
    strategy: str
    symbol: str
    status: str  # accepted | rejected
    reason_code: str | None
    ref_price: Decimal | None  # the quote's reference the engine sized it on
    client_order_id: str | None


@dataclass(frozen=True, slots=True)
class LineReject:
    """A line that was not a valid signal, or a repeated id (``signal_rejects``)."""

    received_at: datetime
    reason_code: str


@dataclass(frozen=True, slots=True)
class OrderRecord:
    client_order_id: str
    signal_id: str | None
    strategy: str
    symbol: str
    side: Side
    quantity: Decimal
    status: str
    created_at: datetime  # when it left the engine for the broker
    acked_at: datetime | None  # the broker's first answer (the first status after PendingNew)
    entry: str | None = None  # a bracket exit's entry: its fills are the exit's, not the signal's decision


@dataclass(frozen=True, slots=True)
class ReportRecords:
    """Everything one report is made of. ``opening_fills`` come before the period, oldest first: replayed, they
    give the positions (and their P&L so far) the period started from."""

    title: str
    sessions: list[SessionInfo]
    signals: list[SignalRecord]
    line_rejects: list[LineReject]
    orders: list[OrderRecord]
    fills: list[Fill]
    opening_fills: list[Fill]


def _fill(r: Any) -> Fill:
    return Fill(r.exec_id, r.client_order_id, r.symbol, Side(r.side), r.quantity, r.price, r.commission, r.ts,
                r.source)


def _acked(orders: Any) -> Any:
    """When the broker first answered each of ``orders`` (a list of ids or a select of them): the first status
    change out of PendingNew."""
    return (select(OrderEventRow.client_order_id, func.min(OrderEventRow.ts).label("acked_at"))
            .where(OrderEventRow.from_status == OrderStatus.PENDING_NEW.value,
                   OrderEventRow.client_order_id.in_(orders))
            .group_by(OrderEventRow.client_order_id).subquery())


class ReportData:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def session(self, session_id: int | None = None) -> SessionInfo | None:
        """The session with this id, or the latest when None."""
        stmt = select(SessionRow.__table__)
        stmt = stmt.where(SessionRow.id == session_id) if session_id is not None else stmt.order_by(
            SessionRow.id.desc()).limit(1)
        with reading(self.db) as conn:
            row = conn.execute(stmt).first()
        return None if row is None else SessionInfo(row.id, row.mode, row.account, row.started_at, row.ended_at)

    def for_session(self, info: SessionInfo) -> ReportRecords:
        """One session's records; its opening positions are the fills of the sessions before it."""
        n = info.id
        return self._records(
            f"session {n}", [info],
            signals=SignalRow.session_id == n, line_rejects=SignalRejectRow.session_id == n,
            orders=OrderRow.session_id == n, fills=FillRow.session_id == n, before=FillRow.session_id < n,
            before_order=(FillRow.session_id, FillRow.ts, FillRow.exec_id),
        )

    def for_window(self, title: str, start: datetime, end: datetime) -> ReportRecords:
        """The records stamped in [start, end) (a trading day); its opening positions are the fills before it."""
        with reading(self.db) as conn:
            sessions = [SessionInfo(r.id, r.mode, r.account, r.started_at, r.ended_at) for r in conn.execute(
                select(SessionRow.__table__).where(SessionRow.id.in_(
                    select(FillRow.session_id).where(FillRow.ts >= start, FillRow.ts < end).union(
                        select(SignalRow.session_id).where(SignalRow.received_at >= start,
                                                           SignalRow.received_at < end))))
                .order_by(SessionRow.id))]
        return self._records(
            title, sessions,
            signals=(SignalRow.received_at >= start) & (SignalRow.received_at < end),
            line_rejects=(SignalRejectRow.received_at >= start) & (SignalRejectRow.received_at < end),
            orders=(OrderRow.created_at >= start) & (OrderRow.created_at < end),
            fills=(FillRow.ts >= start) & (FillRow.ts < end), before=FillRow.ts < start,
            before_order=(FillRow.ts, FillRow.exec_id),
        )

    def _records(self, title: str, sessions: list[SessionInfo], *, signals: Any, line_rejects: Any, orders: Any,
                 fills: Any, before: Any, before_order: Sequence[Any]) -> ReportRecords:
        counted = FillRow.source != SUPERSEDED
        acked = _acked(select(OrderRow.client_order_id).where(orders))
        order_stmt: Select[Any] = (
            select(OrderRow.client_order_id, OrderRow.signal_id, OrderRow.strategy, OrderRow.symbol, OrderRow.side,
                   OrderRow.quantity, OrderRow.status, OrderRow.created_at, acked.c.acked_at, OrderRow.parent_order_id)
            .outerjoin(acked, acked.c.client_order_id == OrderRow.client_order_id)
            .where(orders).order_by(OrderRow.created_at, OrderRow.client_order_id))
        with reading(self.db) as conn:
            signal_rows = [
                SignalRecord(r.signal_id, r.ts, r.strategy, r.symbol, r.status, r.reason_code, r.ref_price,
                             r.client_order_id)
                for r in conn.execute(
                    select(SignalRow.signal_id, SignalRow.ts, SignalRow.strategy, SignalRow.symbol, SignalRow.status,
                           SignalRow.reason_code, SignalRow.ref_price, SignalRow.client_order_id)
                    .where(signals).order_by(SignalRow.ts, SignalRow.signal_id))]
            rejects = [LineReject(r.received_at, r.reason_code) for r in conn.execute(
                select(SignalRejectRow.received_at, SignalRejectRow.reason_code).where(line_rejects)
                .order_by(SignalRejectRow.id))]
            order_rows = [
                OrderRecord(r.client_order_id, r.signal_id, r.strategy, r.symbol, Side(r.side), r.quantity, r.status,
                            r.created_at, r.acked_at, r.parent_order_id)
                for r in conn.execute(order_stmt)]
            period = [_fill(r) for r in conn.execute(
                select(FillRow.__table__).where(fills, counted).order_by(FillRow.ts, FillRow.exec_id))]
            opening = [_fill(r) for r in conn.execute(
                select(FillRow.__table__).where(before, counted).order_by(*before_order))]
            # Strategies of the orders the period's fills belong to (an order may come from before the period).
            missing = sorted({f.client_order_id for f in period} - {o.client_order_id for o in order_rows})
        if missing:
            order_rows.extend(self._orders(missing))
        return ReportRecords(title, sessions, signal_rows, rejects, order_rows, period, opening)

    def _orders(self, client_order_ids: list[str]) -> list[OrderRecord]:
        found: list[OrderRecord] = []
        with reading(self.db) as conn:
            for i in range(0, len(client_order_ids), 500):
                acked = _acked(client_order_ids[i:i + 500])
                stmt = (select(OrderRow.client_order_id, OrderRow.signal_id, OrderRow.strategy, OrderRow.symbol,
                               OrderRow.side, OrderRow.quantity, OrderRow.status, OrderRow.created_at,
                               acked.c.acked_at, OrderRow.parent_order_id)
                        .outerjoin(acked, acked.c.client_order_id == OrderRow.client_order_id)
                        .where(OrderRow.client_order_id.in_(client_order_ids[i:i + 500])))
                found.extend(OrderRecord(r.client_order_id, r.signal_id, r.strategy, r.symbol, Side(r.side),
                                         r.quantity, r.status, r.created_at, r.acked_at, r.parent_order_id)
                             for r in conn.execute(stmt))
        return found
