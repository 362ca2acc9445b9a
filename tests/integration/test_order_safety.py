"""Order safety under real use: one order per signal id whatever its age, ids that cannot collide, a bad
row that is a defect and not an outage, and handler errors that keep an order from leaving unrecorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from engine.bus import SignalRejected
from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import (
    Instrument,
    KillState,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RejectCode,
    Side,
    TimeInForce,
)
from engine.ids import client_order_id_for, engine_order_id, is_ours, signal_id_of
from engine.session import PaperSession
from paper.market import SIM_START
from repositories.db import ensure_schema, make_engine
from repositories.models import OrderRow, RowDefectRow, SignalRejectRow, SignalRow
from repositories.recorder import Recorder
from risk.killswitch import GLOBAL
from tests.conftest import signal_line
from tests.rig import Rig


def _count(url: str, model: Any) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(model)).scalar() or 0
    engine.dispose()
    return int(n)


def _session(url: str, **cfg: Any) -> tuple[PaperSession, SimClock]:
    session = PaperSession(load_settings(database_url=url, **cfg), seed=1)
    clock = SimClock(SIM_START)
    session.prepare(clock, datetime.now(UTC))
    return session, clock


# -- one order per signal id, whatever its age -----------------------------------------------------------

def test_a_signal_id_older_than_the_memory_window_is_still_a_duplicate(db_url: str) -> None:
    symbols = ["AAPL", "MSFT", "SPY", "QQQ"]
    lines = [signal_line(f"s{i}", symbols[i % 4], ["long", "short"][i // 4 % 2], seconds=i) for i in range(1_100)]
    lines.append(signal_line("s0", "AAPL", "short", seconds=1_200))  # far out of the 1,000-id window
    lines.append(signal_line("after", "AAPL", "short", seconds=1_201))
    settings = load_settings(database_url=db_url, dedupe_capacity=1_000, flush_rows=500)
    summary = PaperSession(settings, seed=1).run_file(lines)
    assert summary.duplicates == 1 and summary.unwritten is None
    assert summary.reject_reasons.get("blocked") is None  # the session went on trading
    engine = make_engine(db_url)
    with engine.connect() as conn:
        refs = conn.execute(select(OrderRow.signal_id).where(OrderRow.signal_id == "s0")).all()
        dup = conn.execute(select(SignalRejectRow.reason_code).where(SignalRejectRow.signal_id == "s0")).all()
        after = conn.execute(select(SignalRow.status).where(SignalRow.signal_id == "after")).scalar()
    engine.dispose()
    assert len(refs) == 1 and dup == [("duplicate",)] and after is not None


def test_a_signal_id_from_an_earlier_session_outside_the_window_makes_no_second_order(sqlite_url: str) -> None:
    first = [signal_line(f"a{i}", "AAPL", ["long", "short"][i % 2], seconds=i) for i in range(1_050)]
    PaperSession(load_settings(database_url=sqlite_url, dedupe_capacity=1_000, flush_rows=500), seed=1).run_file(first)
    orders_before = _count(sqlite_url, OrderRow)
    settings = load_settings(database_url=sqlite_url, dedupe_capacity=1_000, flush_rows=500)
    again = PaperSession(settings, seed=2).run_file([signal_line("a0", "MSFT", seconds=5_000)])
    assert again.duplicates == 1 and _count(sqlite_url, OrderRow) == orders_before


def test_a_signal_id_is_remembered_when_its_order_was_adopted_without_its_row() -> None:
    r = Rig()
    r.quote()
    r.engine.signal_ids.remember("adopted-1")
    assert r.engine.on_signal_line(signal_line("adopted-1")) is None
    assert [x.code for x in r.rejected] == ["duplicate"]


def test_an_undecidable_signal_id_is_rejected_not_traded() -> None:
    def down(_: str) -> bool:
        raise ConnectionError("database unreachable")

    r = Rig(signal_lookup=down)
    r.quote()
    assert r.engine.on_signal_line(signal_line("s1")) is None
    (rejected,) = r.rejected
    assert rejected.code == "dedupe_unavailable" and not rejected.valid  # a signal_rejects row, not signals
    assert r.submitted == []


# -- client order ids the engine makes itself ------------------------------------------------------------

@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=12))
def test_no_signal_id_can_produce_an_engine_made_order_id(signal_id: str, tag: str, symbol: str) -> None:
    assert client_order_id_for(signal_id) != engine_order_id("flat", tag, symbol)
    assert signal_id_of(engine_order_id("flat", tag, symbol)) is None
    assert signal_id_of(client_order_id_for(signal_id)) == signal_id
    assert is_ours(engine_order_id("flat", tag, symbol)) and is_ours(client_order_id_for(signal_id))


def test_a_signal_named_like_a_flatten_does_not_take_the_flatten_order_id() -> None:
    r = Rig()
    r.quote()
    taken = r.engine.on_signal_line(signal_line("flat-3-AAPL"))
    assert taken is not None and taken.status is OrderStatus.FILLED
    r.engine.set_killswitch(GLOBAL, KillState.HALTED, "drill", "ops")
    result = r.engine.flatten(GLOBAL, "3", D("0.01"))
    (closing,) = result.sent
    assert closing.client_order_id != taken.client_order_id
    assert closing.status is OrderStatus.FILLED and r.engine.positions["AAPL"].quantity == 0


# -- a bad row is a defect, never an outage --------------------------------------------------------------

def _plant_order(url: str, client_order_id: str) -> None:
    """An order row with this id already in the database, which the engine's next order will collide with."""
    now = datetime.now(UTC)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(OrderRow).values(
            client_order_id=client_order_id, signal_id=None, session_id=0, strategy="manual", symbol="MSFT",
            sec_type="STK", currency="USD", exchange="SMART", side="BUY", quantity=D(1), order_type="MKT",
            limit_price=None, stop_price=None, tif="DAY", status="Cancelled", filled_qty=D(0), avg_fill_price=D(0),
            commission=D(0), broker_order_id=None, perm_id=None, reason="planted", created_at=now, updated_at=now))
    engine.dispose()


def test_a_refused_row_is_kept_with_its_error_and_every_other_row_is_written(db_url: str) -> None:
    ensure_schema(db_url)
    _plant_order(db_url, "tc-clash")
    lines = [signal_line("ok1", "AAPL", seconds=1), signal_line("clash", "MSFT", seconds=2),
             signal_line("ok2", "SPY", seconds=3)]
    summary = PaperSession(load_settings(database_url=db_url), seed=1).run_file(lines)
    assert summary.unwritten is None and summary.reject_reasons.get("blocked") is None
    engine = make_engine(db_url)
    with engine.connect() as conn:
        defects = conn.execute(select(RowDefectRow.table_name, RowDefectRow.row_key, RowDefectRow.error)).all()
        signals = set(conn.execute(select(SignalRow.signal_id)).scalars())
        orders = set(conn.execute(select(OrderRow.client_order_id)).scalars())
    engine.dispose()
    assert [(t, k) for t, k, _ in defects] == [("orders", "tc-clash")]
    assert "unique" in defects[0][2].lower()
    assert {"ok1", "clash", "ok2"} <= signals and {"tc-ok1", "tc-ok2", "tc-clash"} <= orders
    assert summary.killswitches.get("symbol:MSFT") == "HALTED"  # only the scope whose state is unsure
    assert summary.killswitches.get("global", "ACTIVE") == "ACTIVE"


def test_trading_goes_on_after_a_refused_row(sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    _plant_order(sqlite_url, "tc-clash")
    session, clock = _session(sqlite_url, flush_rows=1)
    session.process_line(signal_line("clash", "MSFT", seconds=1), clock)
    assert session.recorder.failing is None and session.engine.blocked is None
    session.process_line(signal_line("later", "AAPL", seconds=2), clock)
    assert session.engine.stats.accepted == 2 and session.engine.positions["AAPL"].quantity > 0
    session.recorder.flush()
    session.control.close()
    assert _count(sqlite_url, RowDefectRow) == 1


def test_a_live_order_whose_row_is_refused_is_not_sent(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_schema(db_url)
    _plant_order(db_url, "tc-clash")
    session, clock = _session(db_url, flush_rows=1)
    session.engine.before_submit = session.recorder.commit_now  # as tradectl run wires it
    sent: list[str] = []
    submit = session.broker.submit

    def recording_submit(order: Order) -> None:
        sent.append(order.client_order_id)
        submit(order)

    monkeypatch.setattr(session.broker, "submit", recording_submit)
    session.process_line(signal_line("clash", "MSFT", seconds=1), clock)
    assert sent == []
    session.process_line(signal_line("fine", "AAPL", seconds=2), clock)
    assert sent == ["tc-fine"]
    session.recorder.flush()
    session.control.close()


def test_a_value_the_database_cannot_hold_becomes_a_defect_and_its_line_still_a_row(db_url: str) -> None:
    session, _ = _session(db_url, flush_rows=1_000)
    # SQLite cannot hold a time past year 9999 in UTC; PostgreSQL cannot hold a NUL in text.
    overflow = datetime(9999, 12, 31, 22, 0, tzinfo=timezone(-timedelta(hours=5)))
    invalid = RejectCode.INVALID_SIGNAL
    session.bus.signal_rejected.emit(SignalRejected(overflow, invalid, "bad", None, None, "r\x00w", 7))
    session.bus.signal_rejected.emit(SignalRejected(datetime.now(UTC), invalid, "fine", None, None, "x", 8))
    written = session.recorder.flush()
    assert written > 0 and session.recorder.failing is None
    session.control.close()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rejects = conn.execute(select(SignalRejectRow.line_no, SignalRejectRow.reason_code)
                               .order_by(SignalRejectRow.line_no)).all()
        defects = conn.execute(select(RowDefectRow.table_name)).scalars().all()
    engine.dispose()
    assert defects == ["signal_rejects"]
    assert rejects == [(7, "row_defect"), (8, "invalid_signal")]


# -- handler errors fail closed --------------------------------------------------------------------------

def test_an_error_recording_an_order_keeps_it_from_the_broker() -> None:
    r = Rig()
    r.quote()

    def broken(*_: object) -> None:
        raise RuntimeError("buffer full")

    r.bus.order_recorded += broken
    order = r.engine.on_signal_line(signal_line("s1"))
    assert order is not None and order.status is OrderStatus.REJECTED
    assert order.reason is not None and "buffer full" in order.reason
    assert r.broker.working_symbols() == set() and "AAPL" not in r.engine.positions
    assert r.engine.book.working_qty.get("AAPL", D(0)) == 0 and r.engine.stats.reject_reasons["internal_error"] == 1


def test_an_error_recording_an_engine_made_order_keeps_it_from_the_broker() -> None:
    r = Rig(positions=[Position("AAPL", D(100), D(100))])
    r.quote()
    seen: list[tuple[object, ...]] = []

    def broken(*args: object) -> None:
        seen.append(args[1:])
        raise RuntimeError("buffer full")

    r.bus.order_recorded += broken
    result = r.engine.submit_intent(OrderIntent(
        "fx-1", None, "flatten", Instrument("AAPL"), Side.SELL, D(100), OrderType.LMT, D("99.00"), None,
        TimeInForce.DAY, r.clock(), None, flatten=True))
    assert seen == [(None, None, None)]  # no signal, and no line of an earlier signal, travels with it
    assert isinstance(result, Order) and result.status is OrderStatus.REJECTED
    assert r.broker.working_symbols() == set() and r.engine.positions["AAPL"].quantity == 100


def test_an_error_while_sizing_rejects_the_signal_and_the_engine_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Rig()
    r.quote()
    r.quote(symbol="MSFT")
    quote = r.broker.quote

    def flaky(symbol: str) -> Any:
        if symbol == "MSFT":
            raise ArithmeticError("quote feed broke")
        return quote(symbol)

    monkeypatch.setattr(r.broker, "quote", flaky)
    assert r.engine.on_signal_line(signal_line("bad", "MSFT")) is None
    assert [(x.code, x.signal_id) for x in r.rejected] == [("internal_error", "bad")]
    assert "quote feed broke" in r.rejected[0].reason
    assert r.engine.on_signal_line(signal_line("good", "AAPL")) is not None


def test_a_recorder_error_that_is_not_a_database_error_is_not_mistaken_for_an_outage() -> None:
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError

    from repositories.recorder import is_row_defect

    assert is_row_defect(IntegrityError("insert", {}, Exception("UNIQUE constraint failed")))
    assert is_row_defect(DataError("insert", {}, Exception("value too long")))
    assert not is_row_defect(OperationalError("insert", {}, Exception("connection refused")))
    assert Recorder is not None


@pytest.mark.parametrize("count", [3])
def test_every_row_of_a_batch_with_one_refused_row_is_written(sqlite_url: str, count: int) -> None:
    ensure_schema(sqlite_url)
    _plant_order(sqlite_url, "tc-x1")
    session, clock = _session(sqlite_url, flush_rows=10_000)
    for i in range(count):
        session.process_line(signal_line(f"x{i}", ["MSFT", "AAPL", "SPY"][i], seconds=i + 1), clock)
    session.recorder.flush()
    session.control.close()
    assert _count(sqlite_url, SignalRow) == count and _count(sqlite_url, RowDefectRow) == 1


def test_an_operator_sees_refused_rows_with_their_error(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    ensure_schema(sqlite_url)
    _plant_order(sqlite_url, "tc-clash")
    PaperSession(load_settings(database_url=sqlite_url), seed=1).run_file([signal_line("clash", "MSFT")])
    runner = CliRunner()
    listed = runner.invoke(app, ["defects", "--db", sqlite_url, "--json"])
    assert listed.exit_code == 0
    (row,) = json.loads(listed.stdout)
    assert (row["table_name"], row["row_key"]) == ("orders", "tc-clash") and "UNIQUE" in row["error"]
    status = runner.invoke(app, ["status", "--db", sqlite_url, "--json"])
    assert json.loads(status.stdout)["counts"]["row_defects"] == 1
