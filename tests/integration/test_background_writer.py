"""A paper session's rows written by a process of their own (repositories.background_writer): the same rows as
written in process, nothing lost when the worker or the session dies, the database's loss reported."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import BlockedCause
from engine.session import PaperSession
from paper.market import SIM_START
from repositories.background_writer import BackgroundWriter
from repositories.db import ensure_schema, make_engine, upgrade
from repositories.driver_statements import DriverStatements
from repositories.models import SignalRow
from repositories.recorder import STATEMENTS
from tests.conftest import signal_line

TABLES = ("signals", "signal_rejects", "orders", "order_events", "fills", "positions")
NUMBERED = ("signal_rejects", "order_events")  # serial ids first: compared without them


def _content(table: str, row: Any) -> tuple[Any, ...]:
    """A row's values but its serial id and ``updated_at``: when the row was last written, on the session's
    clock, which differs by design (the writer's batches leave once a signal is handled, an in-process flush
    inside one)."""
    return tuple(v for k, v in row.items() if k != "updated_at" and not (k == "id" and table in NUMBERED))


def _lines(n: int) -> list[str]:
    """Every kind of row: orders that fill and flip, a rejection, a malformed line, a duplicate."""
    out = [signal_line(f"s{i}", symbol=("AAPL", "MSFT", "NVDA")[i % 3], direction=("long", "short")[(i // 3) % 2],
                       seconds=i) for i in range(n)]
    return [*out, "{not json", out[0], signal_line("noedge", win_prob=0.1, payoff=1.0, seconds=n + 1)]


def _run(url: str, writer_process: bool, lines: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    settings = load_settings(database_url=url, paper={"writer_process": writer_process}, flush_rows=50)
    session = PaperSession(settings, seed=7)
    summary = session.run_file(lines)
    assert summary.accepted > 0
    db = make_engine(url)
    with db.connect() as conn:
        rows = {t: sorted((_content(t, r) for r in conn.execute(text(f"SELECT * FROM {t}")).mappings()), key=repr)
                for t in TABLES}
    db.dispose()
    return rows


def test_a_writer_process_writes_the_rows_a_session_writes_in_process(tmp_path: Path) -> None:
    lines = _lines(300)
    in_process = _run(f"sqlite:///{tmp_path / 'a.db'}", False, lines)
    by_writer = _run(f"sqlite:///{tmp_path / 'b.db'}", True, lines)
    assert by_writer == in_process
    assert len(in_process["fills"]) >= 290 and in_process["signal_rejects"]  # the comparison covers the run


def test_on_postgresql_the_writer_process_writes_the_rows_a_session_writes_in_process(pg_server: str) -> None:
    """The worker writes through psycopg itself (not SQLAlchemy): the same values, Decimal and UTC times included."""
    from tests.conftest import throwaway_pg_database

    lines = _lines(120)
    with throwaway_pg_database(pg_server) as a, throwaway_pg_database(pg_server) as b:
        in_process = _run(a, False, lines)
        by_writer = _run(b, True, lines)
    assert by_writer == in_process
    assert len(in_process["fills"]) >= 110 and in_process["signal_rejects"]


def _session(url: str, **settings: Any) -> tuple[PaperSession, SimClock]:
    session = PaperSession(load_settings(database_url=url, **settings), seed=1)
    clock = SimClock(SIM_START)
    session.prepare(clock, datetime.now(UTC))
    return session, clock


def _signal_ids(url: str) -> set[str]:
    db = make_engine(url)
    with db.connect() as conn:
        ids = set(conn.execute(select(SignalRow.signal_id)).scalars())
    db.dispose()
    return ids


def test_batches_a_dead_worker_had_not_committed_are_written_in_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    session, clock = _session(url)
    writer = session.recorder.writer
    assert writer is not None
    writer._proc.kill()  # the worker dies; what it was handed is still held by the session
    writer._proc.wait()
    for i in range(600):  # more than a hand-off: the recorder finds the worker gone while handing over
        session.process_line(signal_line(f"k{i}", symbol="AAPL", direction=("long", "short")[i % 2], seconds=i), clock)
    session.recorder.flush()
    assert session.recorder.writer is None  # writing in process from now on
    session.close()
    assert _signal_ids(url) == {f"k{i}" for i in range(600)}


def test_what_was_handed_over_is_written_even_if_the_session_goes_away(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(url)
    db = make_engine(url)
    now = datetime.now(UTC)
    rows = [{"session_id": 1, "received_at": now, "signal_id": f"r{i}", "reason_code": "malformed_json",
             "reason": "not JSON", "raw": "{", "line_no": i} for i in range(2000)]
    batch = DriverStatements().batch("signal_rejects", STATEMENTS["signal_rejects"]["sqlite"], db.dialect, rows)
    writer = BackgroundWriter(url, session_id=1)
    writer.send([batch], now, units=len(rows))
    writer._link.close()  # the session is gone without waiting for an answer
    assert writer._proc.wait(30) == 0
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM signal_rejects").scalar() == 2000
    db.dispose()


def test_the_database_lost_by_the_writer_blocks_orders_and_every_row_is_written_when_it_returns(
        pg_url: str) -> None:
    from tests.tcp_proxy import proxied_database

    ensure_schema(pg_url)
    proxy, proxied = proxied_database(pg_url)
    session, clock = _session(proxied, flush_rows=1)
    recorder = session.recorder
    try:
        session.process_line(signal_line("up1", symbol="AAPL", seconds=1), clock)
        recorder.flush()
        assert recorder.failing is None and recorder.writer is not None
        proxy.cut()
        session.process_line(signal_line("down1", symbol="MSFT", seconds=2), clock)  # handed over; it fails there
        deadline = time.monotonic() + 20
        while recorder.failing is None and time.monotonic() < deadline:
            recorder.flush()  # returns as soon as the worker says the database fails
        assert recorder.failing is not None
        blocked = session.engine.blocked
        assert blocked is not None and blocked.cause is BlockedCause.DATABASE_UNAVAILABLE
        session.process_line(signal_line("down2", symbol="NVDA", seconds=3), clock)
        assert session.engine.stats.reject_reasons.get("blocked") == 1
        proxy.restore()
        deadline = time.monotonic() + 20
        while (recorder.failing is not None or recorder.pending) and time.monotonic() < deadline:
            recorder.flush()
        assert recorder.failing is None and session.engine.blocked is None
    finally:
        session.close()
        proxy.close()
    assert _signal_ids(pg_url) == {"up1", "down1", "down2"}


def test_the_writer_process_writes_without_importing_sqlalchemy() -> None:
    """Its start is part of a short session's end: the plain driver's path imports none of SQLAlchemy (~0.5 s)."""
    import subprocess
    import sys

    probe = ("import sys, pickle; import repositories.background_writer, repositories.driver_batch, "
             "repositories.direct; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_rows_go_to_the_writer_after_the_signal_s_order_has_gone_to_the_broker(tmp_path: Path) -> None:
    """Handing a batch over costs ~1 ms: it must not delay an order, whichever row fills the batch."""
    session, clock = _session(f"sqlite:///{tmp_path / 't.db'}")
    writer = session.recorder.writer
    assert writer is not None
    session.recorder.hand_off_units = 1  # every unit fills a batch
    handed_when_ordered: list[int] = []
    session.bus.order_recorded += lambda order, signal, raw, line_no: handed_when_ordered.append(writer.sent)
    for i in range(3):
        before = writer.sent
        session.process_line(signal_line(f"h{i}", symbol="AAPL", direction=("long", "short")[i % 2], seconds=i),
                             clock)
        assert handed_when_ordered[-1] == before  # nothing handed over on the way to the broker
        assert writer.sent == before + 1  # the signal's rows, in one batch once it was handled
    session.close()


def test_units_recorded_outside_a_signal_go_to_the_writer_within_the_in_flight_bound(tmp_path: Path) -> None:
    """No signal's end comes (a wind-down's market steps, broker events between signals): the bus handler
    hands a batch over once ``max_in_flight`` units wait, so memory stays bounded all the same."""
    session, _ = _session(f"sqlite:///{tmp_path / 't.db'}")
    recorder = session.recorder
    writer = recorder.writer
    assert writer is not None
    recorder.max_in_flight = 8
    before = writer.sent
    for i in range(12):  # straight to the engine, not through the session's line handling: a unit each
        session.engine.on_signal_line(signal_line(f"o{i}", seconds=i))
    assert writer.sent == before + 1 and recorder.pending == 12  # 8 handed over (in flight), 4 buffered
    recorder.flush()
    session.close()
    assert _signal_ids(f"sqlite:///{tmp_path / 't.db'}") == {f"o{i}" for i in range(12)}
