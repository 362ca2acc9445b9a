"""SQLAlchemy 2 models: the schema as code. Tables are created only by Alembic migrations.

Ledger tables (signals, signal_rejects, order_events, fills, killswitch_events, audit_log) are
append-only. ``orders`` holds each order's latest state; ``positions`` is a snapshot that must
always equal the sum of ``fills`` (a test holds it to that).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, MetaData, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories.types import Money, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mode: Mapped[str] = mapped_column(String(16))
    account: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    summary: Mapped[str | None] = mapped_column(Text)


class SignalRow(Base):
    __tablename__ = "signals"
    signal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[int] = mapped_column(Integer, index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(24))
    direction: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # accepted | rejected
    reason_code: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    client_order_id: Mapped[str | None] = mapped_column(String(160))
    payload: Mapped[str | None] = mapped_column(Text)
    line_no: Mapped[int | None] = mapped_column(BigInteger)  # the input line, when it came from a file or stdin
    # The quote's reference price the engine sized the signal on (None: it never got that far). Reports measure
    # slippage against it and draw each symbol's price path from it.
    ref_price: Mapped[Decimal | None] = mapped_column(Money)


class SignalRejectRow(Base):
    """Lines that were not valid signals, and repeated signal ids: kept with the reason, never dropped."""

    __tablename__ = "signal_rejects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(Integer, index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signal_id: Mapped[str | None] = mapped_column(String(128), index=True)
    reason_code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text)
    line_no: Mapped[int | None] = mapped_column(BigInteger)  # the input line, when it came from a file or stdin


class OrderRow(Base):
    __tablename__ = "orders"
    client_order_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    signal_id: Mapped[str | None] = mapped_column(String(128), index=True)
    session_id: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(24))
    sec_type: Mapped[str] = mapped_column(String(8))
    currency: Mapped[str] = mapped_column(String(3))
    exchange: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Money)
    order_type: Mapped[str] = mapped_column(String(8))
    limit_price: Mapped[Decimal | None] = mapped_column(Money)
    stop_price: Mapped[Decimal | None] = mapped_column(Money)
    tif: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(16))
    filled_qty: Mapped[Decimal] = mapped_column(Money)
    avg_fill_price: Mapped[Decimal] = mapped_column(Money)
    commission: Mapped[Decimal] = mapped_column(Money)
    broker_order_id: Mapped[int | None] = mapped_column(BigInteger)
    perm_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    parent_order_id: Mapped[str | None] = mapped_column(String(160))  # a bracket exit's entry
    oca_group: Mapped[str | None] = mapped_column(String(160))

    __table_args__ = (Index("ix_orders_status", "status"),)


class OrderEventRow(Base):
    __tablename__ = "order_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(160), index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)


CORRECTED = "corrected"  # fills.source of a fill an execution correction replaced (kept, marked, for the history)


class FillRow(Base):
    __tablename__ = "fills"
    exec_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(160), index=True)
    session_id: Mapped[int] = mapped_column(Integer, index=True)  # a session's fills (migration 0010)
    symbol: Mapped[str] = mapped_column(String(24), index=True)
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal] = mapped_column(Money)
    commission: Mapped[Decimal] = mapped_column(Money)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))


class PositionRow(Base):
    __tablename__ = "positions"
    account: Mapped[str] = mapped_column(String(32), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(24), primary_key=True)
    quantity: Mapped[Decimal] = mapped_column(Money)
    avg_cost: Mapped[Decimal] = mapped_column(Money)
    realized_pnl: Mapped[Decimal] = mapped_column(Money)
    commissions: Mapped[Decimal] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class KillSwitchEventRow(Base):
    """Append-only: the current state of a scope is its latest row. Written by the CLI and the engine."""

    __tablename__ = "killswitch_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    account: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(96), index=True)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    flatten: Mapped[bool] = mapped_column(default=False)


class KillSwitchAckRow(Base):
    """The engine's acknowledgement of a kill-switch event: the CLI waits for it."""

    __tablename__ = "killswitch_acks"
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    engine: Mapped[str] = mapped_column(String(128))
    cancelled: Mapped[int] = mapped_column(Integer)
    flatten_orders: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)  # what the engine could not do (e.g. a flatten refused)


class EngineLockRow(Base):
    """The engine trading an account: who it is and when it last said it was alive.

    The CLI reads it to know whether anyone will acknowledge a kill-switch change.
    """

    __tablename__ = "engine_locks"
    account: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(160))  # host:pid
    mode: Mapped[str] = mapped_column(String(16))
    session_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    broker_state: Mapped[str | None] = mapped_column(Text)  # JSON: the link and the gateway's conditions


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str | None] = mapped_column(String(96))
    detail: Mapped[str | None] = mapped_column(Text)


class RowDefectRow(Base):
    """A row the database refused (a violated constraint): kept here with its error, never dropped.

    The recorder writes every other row of the batch; an operator reads these with ``tradectl defects``.
    """

    __tablename__ = "row_defects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int | None] = mapped_column(Integer, index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    table_name: Mapped[str] = mapped_column(String(32))
    row_key: Mapped[str | None] = mapped_column(String(160))  # signal id, client order id or execution id
    error: Mapped[str] = mapped_column(Text)
    row: Mapped[str] = mapped_column(Text)  # the refused row as JSON (Decimals and datetimes as text)


class TradingDayRow(Base):
    """Start-of-day equity and the day's peak per account: loss and drawdown limits survive a restart."""

    __tablename__ = "trading_days"
    account: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # ISO date in the configured trading-day zone
    start_equity: Mapped[Decimal] = mapped_column(Money)
    peak_equity: Mapped[Decimal] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AccountBindingRow(Base):
    """The one account (and broker kind) a database belongs to, recorded on first use.

    Paper (simulated) fills must never land in an IB account's positions: a session for another account
    or broker on this database exits 2 and names the owner.
    """

    __tablename__ = "account_binding"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: one owner per database
    account: Mapped[str] = mapped_column(String(32))
    broker: Mapped[str] = mapped_column(String(16))  # "simulated" | "ibkr"
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime)


INBOX_RAW_MAX = 16_384  # characters of one inbox line; the database refuses a longer one


class SignalInboxRow(Base):
    """Signals waiting for the engine of ``account``: the durable inbox producers write to.

    ``id`` is the arrival order. Producers insert (SQL, ``tradectl submit``, the Python client, the daemon's
    ``POST /signals``); the engine sets ``consumed_at`` in the same transaction as the line's signals or
    signal_rejects row, so a row is consumed exactly once across crashes. A resubmitted ``signal_id`` for the
    same account is the same row. On PostgreSQL a trigger (migration 0004) numbers rows in commit order per
    account, records the row before it (``prev_id``) and notifies ``tradectl_inbox`` with ``account:id``.
    """

    __tablename__ = "signal_inbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(32))
    signal_id: Mapped[str | None] = mapped_column(String(128))  # None: the line had no readable id
    raw: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(8), server_default=text("'sql'"))  # sql | cli | client | http
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("CURRENT_TIMESTAMP"))
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The account's row just before this one, set by the PostgreSQL trigger as it numbers the row (migration
    # 0009); NULL on SQLite, and for rows older than that migration.
    prev_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("account", "signal_id"),  # NULL ids are distinct: every id-less line is its own row
        Index("ix_signal_inbox_pending", "account", "consumed_at", "id"),
        Index("ix_signal_inbox_account_id", "account", "id"),  # the row before a commit's first (migration 0005)
        CheckConstraint(f"length(raw) <= {INBOX_RAW_MAX}", name="raw_length"),
        CheckConstraint("source IN ('sql', 'cli', 'client', 'http')", name="source"),
        {"sqlite_autoincrement": True},  # ids never reused, even if the newest rows are deleted
    )
