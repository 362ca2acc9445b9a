"""The recorder's rows written through the DB-API (repositories.driver_statements) land exactly as SQLAlchemy
would write them, value for value, on SQLite and PostgreSQL; values the driver cannot take are refused rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from repositories.db import make_engine, upgrade
from repositories.driver_statements import DriverStatements, execute
from repositories.recorder import STATEMENTS

T = datetime(2026, 1, 5, 14, 30, 0, 123456, tzinfo=UTC)
ZONED = datetime(2026, 1, 5, 9, 30, 1, tzinfo=timezone(timedelta(hours=-5)))  # stored as its UTC time


def _rows() -> list[tuple[str, list[dict[str, Any]]]]:
    """A batch for every statement the recorder uses, with None, zoned times and Decimals of every shape."""
    order = {
        "client_order_id": "tc-s1", "signal_id": "s1", "session_id": 1, "strategy": "st", "symbol": "AAPL",
        "sec_type": "STK", "currency": "USD", "exchange": "SMART", "side": "BUY", "quantity": Decimal("100"),
        "order_type": "LMT", "limit_price": Decimal("187.2500"), "stop_price": None, "tif": "DAY",
        "status": "Submitted", "filled_qty": Decimal("0"), "avg_fill_price": Decimal("0E-8"),
        "commission": Decimal("-0.00"), "broker_order_id": 7, "perm_id": None, "reason": None,
        "created_at": ZONED, "updated_at": T, "parent_order_id": None, "oca_group": "tc-s1",
    }
    return [
        ("signals", [{
            "signal_id": "s1", "session_id": 1, "ts": ZONED, "received_at": T, "strategy": "st", "symbol": "AAPL",
            "direction": "long", "status": "accepted", "reason_code": None, "reason": None,
            "client_order_id": "tc-s1", "payload": '{"id":"s1"}', "line_no": 3, "ref_price": Decimal("1E+2"),
        }]),
        ("signal_rejects", [{"session_id": 1, "received_at": T, "signal_id": None, "reason_code": "malformed_json",
                             "reason": "not JSON", "raw": "{", "line_no": None}]),
        ("orders", [order]),
        ("order_updates", [{"b_coid": "tc-s1", "status": "Filled", "quantity": Decimal("100"),
                            "filled_qty": Decimal("100.0"), "avg_fill_price": Decimal("187.2412345678"),
                            "commission": Decimal("1.00"), "broker_order_id": 7, "perm_id": 99, "reason": None,
                            "updated_at": ZONED}]),
        ("order_events", [{"client_order_id": "tc-s1", "ts": T, "from_status": None, "to_status": "PendingNew",
                           "reason": None},
                          {"client_order_id": "tc-s1", "ts": ZONED, "from_status": "PendingNew",
                           "to_status": "Filled", "reason": "done"}]),
        ("fills", [{"exec_id": "e1", "client_order_id": "tc-s1", "session_id": 1, "symbol": "AAPL", "side": "BUY",
                    "quantity": Decimal("100"), "price": Decimal("187.24"), "commission": Decimal("1.00"),
                    "ts": T, "source": "paper"}] * 2),  # the second is a replay: skipped, as SQLAlchemy's is
        ("fills_superseded", [{"b_exec_id": "e1"}]),
        ("positions", [{"account": "DU1", "symbol": "AAPL", "quantity": Decimal("100"),
                        "avg_cost": Decimal("187.2512"), "realized_pnl": Decimal("-3.5E-7"),
                        "commissions": Decimal("1.00"), "updated_at": T}]),
        ("positions", [{"account": "DU1", "symbol": "AAPL", "quantity": Decimal("0"),  # the upsert's update
                        "avg_cost": Decimal("0"), "realized_pnl": Decimal("12.50"), "commissions": Decimal("2"),
                        "updated_at": ZONED}]),
    ]


TABLES = ("signals", "signal_rejects", "orders", "order_events", "fills", "positions")
NUMBERED = ("signal_rejects", "order_events")  # their first column is a serial id: PostgreSQL's goes on counting


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row as the database holds it (raw driver values: text on SQLite, NUMERIC on PostgreSQL)."""
    db = make_engine(url)
    with db.connect() as conn:
        out = {t: sorted(tuple(r)[1 if t in NUMBERED else 0:] for r in conn.exec_driver_sql(f"SELECT * FROM {t}"))
               for t in TABLES}
    db.dispose()
    return out


def _write(url: str, driver: bool) -> None:
    db = make_engine(url)
    statements = DriverStatements()
    with db.begin() as conn:
        for name, rows in _rows():
            stmt = STATEMENTS[name][conn.dialect.name]
            if driver:
                execute(conn, statements.batch(name, stmt, conn.dialect, rows))
            else:
                conn.execute(stmt, rows)
    db.dispose()


def _clear(url: str) -> None:
    db = make_engine(url)
    with db.begin() as conn:
        for t in TABLES:
            conn.execute(text(f"DELETE FROM {t}"))
    db.dispose()


def test_rows_written_through_the_driver_are_the_rows_sqlalchemy_writes(db_url: str) -> None:
    upgrade(db_url)
    _write(db_url, driver=False)
    by_sqlalchemy = _dump(db_url)
    _clear(db_url)
    _write(db_url, driver=True)
    assert _dump(db_url) == by_sqlalchemy
    assert all(by_sqlalchemy[t] for t in TABLES)  # every table was written: the comparison covers each


def test_a_naive_time_makes_its_row_refused_not_the_batch(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    db = make_engine(sqlite_url)
    events = [{"client_order_id": "a", "ts": T, "from_status": None, "to_status": "PendingNew", "reason": None},
              {"client_order_id": "b", "ts": T.replace(tzinfo=None), "from_status": None,
               "to_status": "PendingNew", "reason": None}]
    batch = DriverStatements().batch("order_events", STATEMENTS["order_events"]["sqlite"], db.dialect, events)
    db.dispose()
    assert [p[0] for p in batch.params if isinstance(p, tuple)] == ["a"]
    assert [(row["client_order_id"], why.split(":")[0]) for row, why in batch.refused] == [("b", "ValueError")]


def test_a_float_for_money_makes_its_row_refused(sqlite_url: str) -> None:
    db = make_engine(sqlite_url)
    row = {"account": "DU1", "symbol": "AAPL", "quantity": 1.5, "avg_cost": Decimal("1"),
           "realized_pnl": Decimal("0"), "commissions": Decimal("0"), "updated_at": T}
    batch = DriverStatements().batch("positions", STATEMENTS["positions"]["sqlite"], db.dialect, [row])
    db.dispose()
    assert batch.params == []
    assert batch.refused[0][1].startswith("TypeError: Money columns take Decimal")


@pytest.mark.parametrize("value", [T, ZONED, datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)])
def test_times_are_stored_in_sqlalchemys_sqlite_format_of_their_utc_time(sqlite_url: str, value: datetime) -> None:
    db = make_engine(sqlite_url)
    row = {"client_order_id": "a", "ts": value, "from_status": None, "to_status": "New", "reason": None}
    batch = DriverStatements().batch("order_events", STATEMENTS["order_events"]["sqlite"], db.dialect, [row])
    db.dispose()
    stored = batch.row(batch.params[0])["ts"]
    assert stored == value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
