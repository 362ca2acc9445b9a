"""Signal time (issue: order safety under real use, item 4): which ``ts`` a session believes, what a
line without one is stamped, and that a file given to ``tradectl run`` trips no order-rate trigger."""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.config import load_settings
from engine.live import IbkrSession
from engine.session import PaperSession, SessionSummary
from engine.sources import DEMO_SIGNALS
from repositories.db import make_engine
from repositories.models import FillRow, OrderEventRow, OrderRow, PositionRow, SignalRejectRow, SignalRow
from tests.conftest import T0, signal_line
from tests.ibrig import gateway_in_thread

SYMBOLS = ("AAPL", "AMZN", "MSFT", "NVDA", "QQQ", "SPY", "TSLA", "IBM")


def _stdin(url: str, lines: list[str], **cfg: Any) -> SessionSummary:
    stream = io.StringIO("".join(line + "\n" for line in lines))
    return asyncio.run(PaperSession(load_settings(database_url=url, **cfg), seed=1).run_stream(stream))


def _file(url: str, lines: list[str], **cfg: Any) -> SessionSummary:
    return PaperSession(load_settings(database_url=url, **cfg), seed=1).run_file(lines)


def _outcomes(url: str) -> dict[str, tuple[str, str | None]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(SignalRow.signal_id, SignalRow.status, SignalRow.reason_code)).all()
    engine.dispose()
    return {r.signal_id: (r.status, r.reason_code) for r in rows}


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


# -- the wall clock (stdin) --------------------------------------------------------------------------
def test_on_stdin_a_signal_older_than_max_age_is_rejected_stale_signal(sqlite_url: str) -> None:
    no_ts = json.dumps({"id": "nots", "symbol": "SPY", "direction": "long", "win_prob": 0.6, "payoff": 1.5})
    _stdin(sqlite_url, [signal_line("old1999", ts="1999-06-01T14:30:00Z"),
                        signal_line("old10m", symbol="MSFT", ts=_at(-timedelta(minutes=10))),
                        signal_line("fresh", symbol="NVDA", ts=_at(-timedelta(seconds=1))), no_ts])
    out = _outcomes(sqlite_url)
    assert out["old1999"] == ("rejected", "stale_signal") and out["old10m"] == ("rejected", "stale_signal")
    assert out["fresh"] == ("accepted", None) and out["nots"] == ("accepted", None)  # stamped now


def test_on_stdin_a_signal_later_than_now_plus_the_skew_is_rejected_future_signal(sqlite_url: str) -> None:
    _stdin(sqlite_url, [signal_line("y2099", ts="2099-01-05T14:30:00Z"),
                        signal_line("in1h", symbol="MSFT", ts=_at(timedelta(hours=1))),
                        signal_line("skew", symbol="NVDA", ts=_at(timedelta(milliseconds=500)))])
    out = _outcomes(sqlite_url)
    assert out["y2099"] == ("rejected", "future_signal") and out["in1h"] == ("rejected", "future_signal")
    assert out["skew"] == ("accepted", None)


def test_the_signal_time_limits_are_configured_under_signal_time(sqlite_url: str) -> None:
    _stdin(sqlite_url, [signal_line("old10m", ts=_at(-timedelta(minutes=10)))], signal_time={"max_age_s": 3600})
    assert _outcomes(sqlite_url)["old10m"] == ("accepted", None)


# -- a file on simulated time ------------------------------------------------------------------------
def _written_times(url: str) -> list[datetime]:
    engine = make_engine(url)
    with engine.connect() as conn:
        times = [t for (t,) in conn.execute(select(SignalRow.received_at))]
        times += [t for (t,) in conn.execute(select(SignalRejectRow.received_at))]
        for row in conn.execute(select(OrderRow.created_at, OrderRow.updated_at)):
            times += list(row)
        times += [t for (t,) in conn.execute(select(OrderEventRow.ts))]
        times += [t for (t,) in conn.execute(select(FillRow.ts))]
        times += [t for (t,) in conn.execute(select(PositionRow.updated_at))]
    engine.dispose()
    return times


def test_in_a_file_one_far_future_ts_is_rejected_and_never_moves_the_clock(db_url: str) -> None:
    lines = [signal_line(f"s{i}", symbol=SYMBOLS[i % 4], seconds=i) for i in range(12)]
    lines.insert(4, signal_line("bad", symbol="TSLA", ts="2099-01-05T14:30:00Z"))
    summary = _file(db_url, lines)
    out = _outcomes(db_url)
    assert out["bad"] == ("rejected", "future_signal")
    assert summary.fills > 0
    assert all(code not in ("future_signal", "stale_signal") for sid, (_, code) in out.items() if sid != "bad")
    times = _written_times(db_url)
    assert times and max(times) < T0 + timedelta(hours=1), max(times)


def test_in_a_file_a_ts_far_behind_the_clock_is_stale_and_a_long_weekend_is_no_jump(sqlite_url: str) -> None:
    _file(sqlite_url, [signal_line("a", seconds=0), signal_line("old", symbol="MSFT", ts="2001-01-01T00:00:00Z"),
                       signal_line("b", symbol="NVDA", seconds=1),
                       signal_line("tue", symbol="SPY", seconds=4 * 86_400)])  # Friday's close to Tuesday
    out = _outcomes(sqlite_url)
    assert out["old"] == ("rejected", "stale_signal") and out["b"] == ("accepted", None)
    assert out["tue"] == ("accepted", None)


def test_in_a_file_a_line_without_ts_takes_the_time_before_it_plus_one_market_step(sqlite_url: str) -> None:
    no_ts = json.dumps({"id": "nots", "symbol": "MSFT", "direction": "long", "win_prob": 0.6, "payoff": 1.5})
    _file(sqlite_url, [signal_line("a", seconds=5), no_ts], paper={"step_ms": 250})
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        ts = dict(conn.execute(select(SignalRow.signal_id, SignalRow.ts)).all())
    assert ts["nots"] == T0 + timedelta(seconds=5, milliseconds=250)


def test_a_file_without_any_ts_runs_like_the_demo_and_trips_no_trigger(sqlite_url: str) -> None:
    lines = []
    for raw in DEMO_SIGNALS.read_text().splitlines():
        try:
            obj = json.loads(raw)
        except ValueError:  # the demo's deliberately bad lines stay as they are
            lines.append(raw)
            continue
        if isinstance(obj, dict):
            obj.pop("ts", None)
        lines.append(json.dumps(obj))
    summary = _file(sqlite_url, lines)
    assert summary.trips == 0 and "order_rate" not in summary.reject_reasons
    assert "killswitch" not in summary.reject_reasons and summary.accepted > len(lines) // 2
    assert all(state == "ACTIVE" for state in summary.killswitches.values())


def test_every_timestamp_a_paper_file_session_writes_comes_from_its_clock(db_url: str) -> None:
    lines = [signal_line(f"s{i}", symbol=SYMBOLS[i % 3], direction=("long", "short")[i // 3 % 2], seconds=i)
             for i in range(9)]
    lines.append(signal_line("rest", symbol="IBM", seconds=10, order_type="LMT", limit_price=1.0))  # cancelled
    _file(db_url, lines)
    times = _written_times(db_url)
    assert len(times) > 20
    assert all(T0 <= t < T0 + timedelta(hours=1) for t in times), sorted(times)[-1]


# -- a file given to `tradectl run` (wall clock, IBKR adapter) -----------------------------------------
@pytest.mark.timeout(60)
def test_a_file_given_to_run_is_read_no_faster_than_the_order_rate_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    settings = load_settings(database_url=url, risk={"max_orders_per_s": 3, "max_symbol_orders_per_s": 3},
                             triggers={"rate_breach_burst": 2}, ibkr={"drain_s": 0.5})
    lines = [signal_line(f"r{i}", symbol=symbol, seconds=i * 0.01) for i, symbol in enumerate(SYMBOLS)]

    async def go() -> SessionSummary:
        session = IbkrSession(settings, host="127.0.0.1", port=gw.port, client_id=9)
        await session.connect()
        return await session.run([line.encode() for line in lines])

    with gateway_in_thread(step_s=0.02) as gw:
        t0 = time.monotonic()
        summary = asyncio.run(go())
        elapsed = time.monotonic() - t0
    assert "order_rate" not in summary.reject_reasons and summary.trips == 0, summary.reject_reasons
    assert summary.accepted == len(SYMBOLS) and elapsed >= 2.0  # 8 orders at 3 a second
