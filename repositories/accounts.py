"""The account a database belongs to, and the account's trading days (start and peak equity)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from repositories.errors import reading, translated, writing
from repositories.models import AccountBindingRow, SessionRow, TradingDayRow

BROKER_OF_MODE = {"paper": "simulated", "ibkr": "ibkr"}  # a session's mode -> the broker kind it trades at


class AccountBound(Exception):
    """The database belongs to another account or broker kind; the message names the owner."""

    def __init__(self, binding: dict[str, Any], account: str, broker: str) -> None:
        super().__init__(
            f"this database belongs to account {binding['account']} at broker {binding['broker']} (since "
            f"{binding['bound_at']:%Y-%m-%d %H:%M:%S} UTC), not to account {account} at broker {broker}: "
            f"one database holds one account's positions; use another --db")
        self.binding = binding


class AccountRepository:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account

    # -- the account a database belongs to -----------------------------------------------------------
    def binding(self) -> dict[str, Any] | None:
        with reading(self.db) as conn:
            row = conn.execute(select(AccountBindingRow.__table__).where(AccountBindingRow.id == 1)).mappings().first()
            return dict(row) if row else None

    def claim(self, account: str, broker: str, now: datetime) -> dict[str, Any]:
        """Bind the database to ``account`` at ``broker`` on first use, or raise AccountBound naming its owner.

        A database used before bindings existed belongs to the account and broker of its first session.
        Checked before anything else is written, so a refused session leaves the database as it was.
        """
        binding = self.binding()
        if binding is None:
            with reading(self.db) as conn:
                first = conn.execute(select(SessionRow.account, SessionRow.mode, SessionRow.started_at)
                                     .order_by(SessionRow.id).limit(1)).first()
            owner = (first.account, BROKER_OF_MODE.get(first.mode, first.mode), first.started_at) if first else (
                account, broker, now)
            with translated():
                try:
                    with self.db.begin() as conn:
                        conn.execute(insert(AccountBindingRow).values(id=1, account=owner[0], broker=owner[1],
                                                                      bound_at=owner[2]))
                except IntegrityError:  # another session bound it between our read and our write: theirs stands
                    pass
            binding = self.binding()
            assert binding is not None
        if (binding["account"], binding["broker"]) != (account, broker):
            raise AccountBound(binding, account, broker)
        return binding

    # -- trading days ----------------------------------------------------------------------------------
    def trading_days(self, limit: int = 31) -> dict[str, tuple[Decimal, Decimal]]:
        """The latest ``limit`` trading days of the account: ISO day -> (start equity, peak equity)."""
        t = TradingDayRow.__table__
        stmt = select(t.c.day, t.c.start_equity, t.c.peak_equity).where(t.c.account == self.account)
        with reading(self.db) as conn:
            rows = conn.execute(stmt.order_by(t.c.day.desc()).limit(limit)).all()
        return {day: (start, peak) for day, start, peak in rows}

    def save_trading_day(self, day: str, *, start_equity: Decimal, peak_equity: Decimal, now: datetime) -> None:
        """Record a trading day: its first start equity stands; the peak only rises."""
        t = TradingDayRow.__table__
        key = (t.c.account == self.account) & (t.c.day == day)
        with writing(self.db) as conn:
            peak = conn.execute(select(t.c.peak_equity).where(key)).scalar()
            if peak is None:
                conn.execute(insert(TradingDayRow).values(account=self.account, day=day, start_equity=start_equity,
                                                          peak_equity=peak_equity, updated_at=now))
            elif peak_equity > peak:
                conn.execute(update(TradingDayRow).where(key).values(peak_equity=peak_equity, updated_at=now))
