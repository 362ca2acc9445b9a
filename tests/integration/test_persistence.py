"""Paper sessions persisted end to end, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from engine.config import load_settings
from engine.domain import BlockedCause
from engine.session import STOPPED_REASON, PaperSession, SessionSummary
from repositories.db import make_engine
from repositories.models import FillRow, OrderEventRow, OrderRow, SignalRejectRow, SignalRow
from repositories.repos import Repositories
from tests.conftest import T0, signal_line


def run(url: str, lines: list[str], seed: int = 1, quotes: Path | None = None, **cfg: Any) -> SessionSummary:
    return PaperSession(load_settings(database_url=url, **cfg), seed=seed, quotes=quotes).run_file(lines)


def mixed_lines(n: int = 60) -> list[str]:
    lines = []
    for i in range(n):
        symbol = ["AAPL", "MSFT", "SPY"][i % 3]
        direction = ["long", "short", "flat", "long"][i % 4]
        lines.append(signal_line(f"s{i}", symbol, direction, seconds=i))
    lines.insert(5, "not json at all")
    lines.insert(9, '{"id": "bad-1", "symbol": "AAPL", "direction": "long", "win_prob": 7, "payoff": 1}')
    lines.insert(12, lines[3])  # a repeated id
    return lines


def test_every_line_ends_in_the_database_with_an_outcome(db_url: str) -> None:
    lines = mixed_lines()
    run(db_url, lines)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        signals = conn.execute(select(SignalRow.status, SignalRow.reason_code, SignalRow.client_order_id)).all()
        rejects = conn.execute(select(SignalRejectRow.reason_code, SignalRejectRow.raw)).all()
        orders = conn.execute(select(func.count()).select_from(OrderRow)).scalar()
    assert len(signals) + len(rejects) == len(lines)
    accepted = [s for s in signals if s.status == "accepted"]
    assert all(s.client_order_id for s in accepted) and len(accepted) == orders
    assert all(s.reason_code for s in signals if s.status == "rejected")
    assert sorted(r.reason_code for r in rejects) == ["duplicate", "invalid_signal", "malformed_json"]
    assert "not json at all" in [r.raw for r in rejects]


def test_no_signal_makes_two_orders_even_across_sessions(db_url: str) -> None:
    lines = mixed_lines(30)
    run(db_url, lines)
    second = run(db_url, lines)
    assert second.duplicates == 30 + 1
    engine = make_engine(db_url)
    with engine.connect() as conn:
        per_signal = conn.execute(
            select(OrderRow.signal_id, func.count()).group_by(OrderRow.signal_id).having(func.count() > 1)
        ).all()
    assert per_signal == []


def test_positions_equal_the_sum_of_fills(db_url: str) -> None:
    run(db_url, mixed_lines(90))
    repos = Repositories(make_engine(db_url), "DU0000001")
    positions = {p.symbol: p.quantity for p in repos.positions.all()}
    assert positions == repos.fills.totals()
    assert any(q != 0 for q in positions.values())


def test_every_order_status_change_is_recorded(db_url: str) -> None:
    run(db_url, [signal_line("s1", order_type="LMT", limit_price=1.0, seconds=1)])
    engine = make_engine(db_url)
    with engine.connect() as conn:
        events = conn.execute(
            select(OrderEventRow.from_status, OrderEventRow.to_status, OrderEventRow.reason).order_by(OrderEventRow.id)
        ).all()
        final = conn.execute(select(OrderRow.status, OrderRow.reason)).one()
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "PendingNew"), ("PendingNew", "Submitted"), ("Submitted", "PendingCancel"),
        ("PendingCancel", "Cancelled"),
    ]
    assert final.status == "Cancelled" and final.reason == "input ended: order still working"


def test_money_round_trips_exactly(db_url: str) -> None:
    run(db_url, mixed_lines(12))
    engine = make_engine(db_url)
    with engine.connect() as conn:
        prices = conn.execute(select(FillRow.price, FillRow.commission)).all()
    assert prices and all(isinstance(p, D) and isinstance(c, D) for p, c in prices)
    assert all(p == p.quantize(D("0.01")) for p, _ in prices)


def test_same_seed_gives_the_same_fills(tmp_path: Path) -> None:
    lines = mixed_lines(60)
    fills = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        run(url, lines, seed=42)
        with make_engine(url).connect() as conn:
            fills.append(conn.execute(
                select(FillRow.exec_id, FillRow.symbol, FillRow.side, FillRow.quantity, FillRow.price, FillRow.ts)
                .order_by(FillRow.exec_id)).all())
    assert fills[0] == fills[1] and len(fills[0]) > 10


def test_another_seed_gives_other_prices(tmp_path: Path) -> None:
    lines = mixed_lines(30)
    prices = []
    for seed in (1, 2):
        url = f"sqlite:///{tmp_path / str(seed)}.db"
        run(url, lines, seed=seed)
        with make_engine(url).connect() as conn:
            prices.append(conn.execute(select(FillRow.price).order_by(FillRow.exec_id)).scalars().all())
    assert prices[0] != prices[1]


def test_quotes_csv_drives_fills_and_stale_quotes_reject(tmp_path: Path) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("ts,symbol,bid,ask,bid_size,ask_size\n"
                   f"{T0.isoformat()},AAPL,100.00,100.02,1000,1000\n")
    url = f"sqlite:///{tmp_path / 'q.db'}"
    summary = run(url, [signal_line("s1", seconds=1), signal_line("s2", "AAPL", "short", seconds=60)], quotes=csv)
    with make_engine(url).connect() as conn:
        fills = conn.execute(select(FillRow.price)).scalars().all()
        reasons = conn.execute(select(SignalRow.reason_code).where(SignalRow.status == "rejected")).scalars().all()
    assert fills == [D("100.02")]
    assert reasons == ["stale_market_data"]
    assert summary.accepted == 1


def test_a_signal_row_keeps_the_reference_price_it_was_sized_on(db_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("ts,symbol,bid,ask,bid_size,ask_size,last\n"
                   f"{T0.isoformat()},AAPL,100.00,100.02,1000,1000,100.01\n")
    lines = [signal_line("s1", seconds=1), signal_line("s2", "AAPL", "long", seconds=2, win_prob=0.3, payoff=1.5),
             signal_line("s3", "MSFT", seconds=3)]
    run(db_url, lines, quotes=csv)
    with make_engine(db_url).connect() as conn:
        rows = dict(conn.execute(select(SignalRow.signal_id, SignalRow.ref_price)).all())
    assert rows == {"s1": D("100.01"), "s2": D("100.01"), "s3": None}  # s2: no edge; s3: never quoted


def test_a_restarted_session_starts_from_the_stored_positions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = run(url, [signal_line("s1", seconds=1)])
    qty = first.positions[0]["quantity"]
    second = run(url, [signal_line("s2", "AAPL", "flat", seconds=2)])
    assert second.accepted == 1 and second.positions[0]["quantity"] == 0
    assert qty > 0


@settings(max_examples=15)
@given(
    seed=st.integers(0, 10_000),
    plan=st.lists(
        st.tuples(st.sampled_from(["AAPL", "MSFT"]), st.sampled_from(["long", "short", "flat"]),
                  st.sampled_from(["MKT", "LMT"]), st.integers(0, 200)),
        min_size=1, max_size=25,
    ),
)
def test_property_positions_equal_sum_of_fills_for_random_signals_and_quotes(
    tmp_path_factory: object, seed: int, plan: list[tuple[str, str, str, int]]
) -> None:
    import tempfile

    lines = []
    for i, (symbol, direction, otype, bps) in enumerate(plan):
        extra: dict[str, object] = {}
        if otype == "LMT" and direction != "flat":
            extra = {"order_type": "LMT", "limit_price": 50 + bps}  # anywhere from far below to through
        lines.append(signal_line(f"p{i}", symbol, direction, seconds=i, **extra))
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/p.db"
        run(url, lines, seed=seed, risk={"price_collar_pct": None})
        repos = Repositories(make_engine(url), "DU0000001")
        stored = {p.symbol: p.quantity for p in repos.positions.all()}
        totals = repos.fills.totals()
        assert {k: v for k, v in stored.items() if v} == {k: v for k, v in totals.items() if v}
        assert repos.orders.open() == []


def test_summary_json_is_plain_data(tmp_path: Path) -> None:
    summary = run(f"sqlite:///{tmp_path / 'j.db'}", mixed_lines(10))
    assert json.loads(json.dumps(summary.to_json()))["signals"] == 13


def test_ctrl_c_mid_file_keeps_what_was_handled_and_cancels_working_orders(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'i.db'}"

    def lines() -> Iterator[str]:
        yield signal_line("i1", order_type="LMT", limit_price=1.0, seconds=1)
        yield signal_line("i2", "MSFT", seconds=2)
        raise KeyboardInterrupt

    session = PaperSession(load_settings(database_url=url), seed=1)
    summary = session.run_file(lines())
    assert summary.signals == 2 and summary.cancelled_at_end >= 1
    with make_engine(url).connect() as conn:
        rows = dict(conn.execute(select(OrderRow.signal_id, OrderRow.reason)).all())
    assert rows["i1"] == STOPPED_REASON and set(rows) == {"i1", "i2"}
    assert Repositories(make_engine(url), "DU0000001").orders.open() == []


@pytest.mark.timeout(60)
def test_the_database_going_away_halts_new_orders_keeps_everything_and_writes_it_when_it_returns(
        pg_url: str) -> None:
    from engine.clock import SimClock
    from paper.market import SIM_START
    from repositories.db import ensure_schema
    from tests.tcp_proxy import proxied_database

    ensure_schema(pg_url)
    proxy, proxied = proxied_database(pg_url)
    # Written in process, as a live session writes: the failure is known at the write (a paper session's
    # writer process reports it a moment later: tests/integration/test_background_writer.py).
    settings = load_settings(database_url=proxied, flush_rows=1, paper={"writer_process": False})
    session = PaperSession(settings, seed=1)
    clock = SimClock(SIM_START)
    session.prepare(clock, datetime.now(UTC))
    session.process_line(signal_line("up1", symbol="AAPL", seconds=1), clock)
    assert session.recorder.failing is None
    proxy.cut()
    session.process_line(signal_line("down1", symbol="MSFT", seconds=2), clock)  # its write fails
    assert session.recorder.failing is not None
    blocked = session.engine.blocked
    assert blocked is not None and blocked.cause is BlockedCause.DATABASE_UNAVAILABLE
    assert str(blocked).startswith("database unavailable: ")  # the reject reason reads as before
    session.process_line(signal_line("down2", symbol="NVDA", seconds=3), clock)
    assert session.engine.stats.reject_reasons.get("blocked") == 1  # no order while writes fail
    proxy.restore()
    time.sleep(session.recorder.retry_s)
    session.recorder.flush()
    assert session.recorder.failing is None and session.engine.blocked is None
    session.process_line(signal_line("up2", symbol="SPY", seconds=4), clock)
    session.recorder.flush()
    session.control.close()
    proxy.close()
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        rows = dict(conn.execute(select(SignalRow.signal_id, SignalRow.reason_code)).all())
    engine.dispose()
    assert set(rows) == {"up1", "down1", "down2", "up2"}  # nothing written during the outage was lost
    assert rows["down2"] == "blocked"
