"""The signal inbox: producers add lines, the engine of the account consumes each one exactly once.

Producers: SQL (``INSERT INTO signal_inbox (account, signal_id, raw) VALUES (...)``), ``tradectl submit``,
``engine.client`` and the daemon's ``POST /signals``, all through ``SignalInbox.add`` except the first.
A resubmitted signal id (per account) is the row already there: ``add`` answers with its id, flagged
``duplicate``, and writes nothing.

The engine reads ``pending`` rows in arrival order (``id``) and hands each id to
``Recorder.consume_inbox`` *before* the engine handles the line, so the flush that writes the line's
signals or signal_rejects row also marks the inbox row consumed, in one transaction (``CONSUMED``): after a
crash a row is either consumed with its outcome on disk, or pending with neither, and is read again.

Ids of one account commit in increasing order (PostgreSQL: the arrival trigger of migration 0004; SQLite:
one writer at a time), so reading ``id > the last id taken`` never skips a row. On PostgreSQL every insert
NOTIFYs ``INBOX_CHANNEL`` with ``account:id`` (migration 0005): ``listen`` gives a socket an event loop can
wake on, and the ids tell rows the engine was handed already from rows it must read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from repositories.models import INBOX_RAW_MAX, Base
from repositories.writers import one_writer

INBOX_CHANNEL = "tradectl_inbox"  # PostgreSQL NOTIFY channel (migration 0004's trigger); payload: account:id
SIGNAL_ID_MAX = 128
Source = Literal["sql", "cli", "client", "http"]
SOURCES: tuple[str, ...] = ("sql", "cli", "client", "http")

_inbox: Table = Base.metadata.tables["signal_inbox"]
_signals: Table = Base.metadata.tables["signals"]
_rejects: Table = Base.metadata.tables["signal_rejects"]
_orders: Table = Base.metadata.tables["orders"]

# Run by the recorder in its flush transaction, one parameter set per consumed row: {"b_inbox_id", "consumed_at"}.
# ``consumed_at IS NULL``: a row is never consumed twice, whoever runs the statement again.
CONSUMED = (
    update(_inbox)
    .where(_inbox.c.id == bindparam("b_inbox_id"), _inbox.c.consumed_at.is_(None))
    .values(consumed_at=bindparam("consumed_at"))
)


def consumed_rows(ids: Iterable[int], now: datetime) -> list[dict[str, Any]]:
    """The parameters of ``CONSUMED`` for these inbox ids."""
    return [{"b_inbox_id": i, "consumed_at": now} for i in ids]


class InboxError(ValueError):
    """A line the inbox cannot hold (too long, not text); nothing of the call was written."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What ``add`` did with one line: its inbox row, and whether that row was already there."""

    inbox_id: int
    signal_id: str | None
    duplicate: bool

    def to_json(self) -> dict[str, Any]:
        return {"inbox_id": self.inbox_id, "id": self.signal_id, "duplicate": self.duplicate}


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One pending line, for the engine."""

    id: int
    signal_id: str | None
    raw: str
    source: str
    received_at: datetime


def line_signal_id(raw: str) -> str | None:
    """The ``id`` of a JSON object line, if it has a usable one (the key only: validation is the engine's)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    sid = obj.get("id")
    if isinstance(sid, bool) or not isinstance(sid, str | int):
        return None
    text = str(sid)
    return text if 0 < len(text) <= SIGNAL_ID_MAX else None


# Many rows in one statement (insertmanyvalues), known ids skipped; each inserted row's id and signal id.
_INSERT_MANY = {
    name: d.insert(_inbox).on_conflict_do_nothing(index_elements=["account", "signal_id"])
    .returning(_inbox.c.id, _inbox.c.signal_id, _inbox.c.prev_id)
    for name, d in (("postgresql", postgresql), ("sqlite", sqlite))
}


class SignalInbox:
    """The inbox of one account (the engine that trades it is the one consumer)."""

    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account
        # PostgreSQL: an append that is one INSERT statement runs in autocommit, the statement its own
        # transaction: one round trip to the server, not three (BEGIN, INSERT, COMMIT). Atomic all the same,
        # and the trigger's lock is held to its commit. More rows than one statement takes (SQLAlchemy splits
        # them into pages) keep a transaction: a page committed alone could let another producer's row in
        # between, and the engine takes a commit's rows as contiguous.
        self._one_statement = (db.execution_options(isolation_level="AUTOCOMMIT")
                               if db.dialect.name == "postgresql" else None)

    # -- producers -------------------------------------------------------------------------------------
    @staticmethod
    def check(lines: Sequence[str]) -> None:
        """InboxError naming the first line the inbox cannot hold (checked before anything is written)."""
        for n, raw in enumerate(lines, 1):
            if not isinstance(raw, str):
                raise InboxError(f"line {n}: a line is text, not {type(raw).__name__}")
            if len(raw) > INBOX_RAW_MAX:
                raise InboxError(f"line {n}: {len(raw)} characters, the inbox holds at most {INBOX_RAW_MAX}")
            if "\x00" in raw:
                raise InboxError(f"line {n}: a NUL character (the database cannot store it)")

    def add(self, lines: Sequence[str], source: Source, now: datetime | None = None) -> list[Receipt]:
        """Add lines in this order, all or none; one receipt per line (a known id: the existing row).

        On PostgreSQL an append of one INSERT statement commits with it: should looking up the known ids fail
        after it, the call raises though its new rows are in (the producer's retry finds them as duplicates).
        """
        return self.append(lines, source, now)[0]

    def append(self, lines: Sequence[str], source: Source,
               now: datetime | None = None) -> tuple[list[Receipt], int]:
        """``add``, and the id of this account's row just before the first new one (0: none before it).

        Rows of one account are numbered in commit order, so every row up to that id was committed before
        these: an engine that has taken exactly up to it can take these next without reading the inbox.
        """
        if source not in SOURCES:
            raise InboxError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
        self.check(lines)
        received = now or datetime.now(UTC)
        rows = [{"account": self.account, "signal_id": line_signal_id(raw), "raw": raw, "source": source,
                 "received_at": received} for raw in lines]
        alone = self._one_statement
        if alone is not None and len(rows) <= self.db.dialect.insertmanyvalues_page_size:
            with alone.connect() as conn:
                return self._append_batch(conn, rows)
        with one_writer(self.db), self.db.begin() as conn:
            return self._append_batch(conn, rows)

    def _append_batch(self, conn: Connection, rows: list[dict[str, Any]]) -> tuple[list[Receipt], int]:
        """All lines in one INSERT that skips known ids; their rows are looked up only when some were known.

        Rows are numbered in VALUES order (SQLite rowids; the PostgreSQL trigger, row by row), so the new ids
        in increasing order are the inserted lines in order.
        """
        t = _inbox
        returned = conn.execute(_INSERT_MANY[conn.dialect.name], rows).all()
        new_ids = sorted(int(r.id) for r in returned)
        by_sid = {r.signal_id: int(r.id) for r in returned if r.signal_id is not None}
        known: dict[str, int] = {}
        missing = {r["signal_id"] for r in rows if r["signal_id"] is not None and r["signal_id"] not in by_sid}
        if missing:  # resubmitted ids: their rows, for the receipts
            known = {sid: int(i) for sid, i in conn.execute(
                select(t.c.signal_id, t.c.id).where(t.c.account == self.account, t.c.signal_id.in_(missing)))}
        receipts: list[Receipt] = []
        taken: set[str] = set()  # an id twice in one call: the first is the row, the second a duplicate
        ids = iter(new_ids)
        for row in rows:
            sid = row["signal_id"]
            if sid is None:
                receipts.append(Receipt(next(ids), None, False))
            elif sid in by_sid and sid not in taken:
                taken.add(sid)
                receipts.append(Receipt(next(ids), sid, False))
            else:
                receipts.append(Receipt(by_sid.get(sid) or known[sid], sid, True))
        before = 0
        if new_ids and conn.dialect.name == "postgresql":  # the trigger recorded it under its lock (0009)
            before = next(r.prev_id for r in returned if r.id == new_ids[0]) or 0
        elif new_ids:  # SQLite: one writer at a time, so a query now sees every row before ours
            before = conn.execute(select(func.max(t.c.id)).where(t.c.account == self.account,
                                                                 t.c.id < new_ids[0])).scalar() or 0
        return receipts, int(before)

    # -- the engine ------------------------------------------------------------------------------------
    def pending(self, after_id: int = 0, limit: int = 500) -> list[InboxItem]:
        """Rows not yet consumed with an id above ``after_id``, oldest first."""
        t = _inbox
        stmt = (select(t.c.id, t.c.signal_id, t.c.raw, t.c.source, t.c.received_at)
                .where(t.c.account == self.account, t.c.consumed_at.is_(None), t.c.id > after_id)
                .order_by(t.c.id).limit(limit))
        with self.db.connect() as conn:
            return [InboxItem(r.id, r.signal_id, r.raw, r.source, r.received_at) for r in conn.execute(stmt)]

    def pending_count(self) -> int:
        with self.db.connect() as conn:
            n = conn.execute(select(func.count()).select_from(_inbox).where(
                _inbox.c.account == self.account, _inbox.c.consumed_at.is_(None))).scalar()
        return int(n or 0)

    def listen(self) -> InboxListener | None:
        """A LISTEN connection woken by every insert for this account (None on SQLite: poll instead)."""
        if self.db.dialect.name != "postgresql":
            return None
        return InboxListener(self.db, self.account)

    # -- readers ---------------------------------------------------------------------------------------
    def outcome(self, signal_id: str) -> dict[str, Any] | None:
        """What became of a signal id: accepted (with its order's state), rejected (code and reason), pending
        in this account's inbox, or None when nobody has seen it. Values are JSON-ready."""
        with self.db.connect() as conn:
            inbox = conn.execute(
                select(_inbox.c.id, _inbox.c.received_at, _inbox.c.consumed_at)
                .where(_inbox.c.account == self.account, _inbox.c.signal_id == signal_id)).first()
            out: dict[str, Any] = {"id": signal_id}
            if inbox is not None:
                out.update(inbox_id=inbox.id, received_at=inbox.received_at, consumed_at=inbox.consumed_at)
            sig = conn.execute(
                select(_signals.c.status, _signals.c.reason_code, _signals.c.reason, _signals.c.client_order_id,
                       _signals.c.received_at.label("decided_at"))
                .where(_signals.c.signal_id == signal_id)).first()
            if sig is not None:
                out.update(status=sig.status, reason_code=sig.reason_code, reason=sig.reason,
                           client_order_id=sig.client_order_id, decided_at=sig.decided_at)
                if sig.client_order_id is not None:
                    order = conn.execute(
                        select(_orders.c.status, _orders.c.filled_qty, _orders.c.avg_fill_price, _orders.c.reason)
                        .where(_orders.c.client_order_id == sig.client_order_id)).first()
                    if order is not None:
                        out.update(order_status=order.status, filled_qty=order.filled_qty,
                                   avg_fill_price=order.avg_fill_price, order_reason=order.reason)
                return _plain(out)
            rej = conn.execute(
                select(_rejects.c.reason_code, _rejects.c.reason, _rejects.c.received_at.label("decided_at"))
                .where(_rejects.c.signal_id == signal_id).order_by(_rejects.c.id).limit(1)).first()
            if rej is not None:
                out.update(status="rejected", reason_code=rej.reason_code, reason=rej.reason,
                           client_order_id=None, decided_at=rej.decided_at)
                return _plain(out)
        if inbox is None:
            return None
        out["status"] = "pending" if inbox.consumed_at is None else "consumed"
        return _plain(out)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v.isoformat() if isinstance(v, datetime) else v)
            for k, v in row.items()}


class InboxListener:
    """LISTEN on a dedicated autocommit psycopg connection (like ``KillSwitchFeed``).

    ``fileno`` is the socket to ``loop.add_reader`` on; ``notified`` drains what arrived and says whether
    any of it was for this account. A notification lost with a dropped connection is covered by reading
    the inbox on a slow timer as well.
    """

    def __init__(self, db: Engine, account: str) -> None:
        import psycopg

        self.account = account
        conninfo = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn: Any = psycopg.connect(conninfo, autocommit=True)
        self._conn.execute(f"LISTEN {INBOX_CHANNEL}")

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def notified(self, timeout: float = 0) -> bool:
        """True when a row for this account was added since the last call (waits up to ``timeout`` s)."""
        stop_after = 1 if timeout else None  # waiting: return at the first one; else drain what is there
        return any(self._ours(n.payload) is not False
                   for n in self._conn.notifies(timeout=timeout, stop_after=stop_after))

    def arrivals(self) -> set[int] | None:
        """Drain what arrived (without waiting): the ids of this account's new rows; None when one came
        without its id (a trigger older than migration 0005): read the inbox to know."""
        ids: set[int] = set()
        for n in self._conn.notifies(timeout=0):
            got = self._ours(n.payload)
            if got is None:
                return None
            if got is not False:
                ids.add(got)
        return ids

    def _ours(self, payload: str) -> int | bool | None:
        """The row id of a notification for this account; None for one without an id; False: not ours."""
        account, _, row = payload.partition(":")
        if account != self.account:
            return False
        return int(row) if row.isdigit() else None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
