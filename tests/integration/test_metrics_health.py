"""Metrics and readiness of an in-process paper session: what /metrics says equals what the database holds,
and /readyz follows the broker link, the database, a global halt and a block."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from starlette.applications import Starlette

from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import Blocked, BlockedCause, KillState
from engine.health import Health, health_routes, observe, readiness
from engine.metrics import SessionMetrics
from engine.session import PaperSession
from repositories.db import make_engine
from repositories.models import FillRow, OrderRow, SignalRejectRow, SignalRow
from repositories.repos import Repositories
from tests.conftest import signal_line
from tests.integration.test_persistence import mixed_lines


class ObservedSession(PaperSession):
    """A paper session with health and metrics wired the way the daemon wires them."""

    health: Health
    metrics: SessionMetrics

    def prepare(self, clock: Any, started: datetime) -> None:
        super().prepare(clock, started)
        self.health, self.metrics = observe(self)


def samples(metrics: SessionMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def finished(sqlite_url: str) -> Iterator[tuple[ObservedSession, str]]:
    session = ObservedSession(load_settings(database_url=sqlite_url), seed=3)
    session.run_file(mixed_lines(90))
    yield session, sqlite_url


def test_signals_by_outcome_and_code_equal_the_database_rows(finished: tuple[ObservedSession, str]) -> None:
    session, url = finished
    with make_engine(url).connect() as conn:
        rows = conn.execute(select(SignalRow.status, SignalRow.reason_code, func.count())
                            .group_by(SignalRow.status, SignalRow.reason_code)).all()
        others = conn.execute(select(SignalRejectRow.reason_code, func.count())
                              .group_by(SignalRejectRow.reason_code)).all()
    expected: dict[tuple[str, str], int] = {}
    for status, code, n in rows:
        key = ("accepted", "none") if status == "accepted" else ("rejected", str(code))
        expected[key] = expected.get(key, 0) + n
    for code, n in others:
        expected[("rejected", code)] = expected.get(("rejected", code), 0) + n
    got = {(dict(k[1])["outcome"], dict(k[1])["code"]): int(v)
           for k, v in samples(session.metrics).items() if k[0] == "tradectl_signals_total"}
    assert {k: v for k, v in got.items() if v} == expected
    assert sum(expected.values()) == len(mixed_lines(90))


def test_orders_by_status_equal_the_database_rows(finished: tuple[ObservedSession, str]) -> None:
    session, url = finished
    with make_engine(url).connect() as conn:
        by_status = dict(conn.execute(select(OrderRow.status, func.count()).group_by(OrderRow.status)).all())
        total = conn.execute(select(func.count()).select_from(OrderRow)).scalar()
    got = {dict(k[1])["status"]: int(v) for k, v in samples(session.metrics).items() if k[0] == "tradectl_orders_total"}
    assert total and got["PendingNew"] == total  # every order entered PendingNew once
    for status in ("Filled", "Cancelled", "Rejected"):  # every order is final once the session drained
        assert got[status] == by_status.get(status, 0), status


def test_fills_and_positions_equal_the_database(finished: tuple[ObservedSession, str]) -> None:
    session, url = finished
    repos = Repositories(make_engine(url), "DU0000001")
    s = samples(session.metrics)
    with make_engine(url).connect() as conn:
        fills = conn.execute(select(func.count()).select_from(FillRow)).scalar()
    assert fills and s[("tradectl_fills_total", ())] == fills
    for p in repos.positions.all():
        assert s[("tradectl_position", (("symbol", p.symbol),))] == float(p.quantity)


def test_latency_histograms_count_every_order_handed_to_the_broker(finished: tuple[ObservedSession, str]) -> None:
    session, _ = finished
    s = samples(session.metrics)
    orders = s[("tradectl_orders_total", (("status", "PendingNew"),))]
    assert s[("tradectl_signal_to_broker_seconds_count", ())] == orders
    assert s[("tradectl_signal_to_ack_seconds_count", ())] == s[("tradectl_orders_total", (("status", "Submitted"),))]
    assert 0 < s[("tradectl_signal_to_fill_seconds_count", ())] <= orders
    assert s[("tradectl_recorder_write_seconds_count", ())] >= 1


def test_state_gauges_read_the_engine_at_scrape_time(finished: tuple[ObservedSession, str]) -> None:
    session, _ = finished
    engine = session.engine
    s = samples(session.metrics)
    assert s[("tradectl_equity", ())] == pytest.approx(float(engine.equity()))
    assert s[("tradectl_open_orders", ())] == 0
    assert s[("tradectl_killswitch_state", (("scope", "global"),))] == 0
    engine.set_killswitch("global", KillState.HALTED, "test", "tester")
    assert samples(session.metrics)[("tradectl_killswitch_state", (("scope", "global"),))] == 2


def test_ib_error_codes_are_counted_by_code() -> None:
    metrics = SessionMetrics()
    for code in (1100, 2104, 1100):
        metrics.observe_ib_error(code)
    s = samples(metrics)
    assert s[("tradectl_ib_errors_total", (("code", "1100"),))] == 2
    assert s[("tradectl_ib_errors_total", (("code", "2104"),))] == 1


# -- readiness ---------------------------------------------------------------------------------------------
@pytest.fixture
def live(sqlite_url: str) -> Iterator[ObservedSession]:
    """A prepared session holding a position (so its quote is watched), mid-run."""
    from engine.clock import SimClock
    from paper.market import SIM_START

    session = ObservedSession(load_settings(database_url=sqlite_url), seed=1)
    clock = SimClock(SIM_START)
    session.prepare(clock, SIM_START)
    session.process_line(signal_line("r1", "AAPL", seconds=0).replace("2026-01-05T14:30:00+00:00",
                                                                      SIM_START.isoformat()), clock)
    try:
        yield session
    finally:
        session.control.close()
        session.db.dispose()


def test_a_session_that_can_trade_is_ready(live: ObservedSession) -> None:
    ready, conditions = live.health.readiness()
    assert ready, conditions
    assert set(conditions) >= {"broker", "market_data", "database", "engine_lock", "not_halted", "not_blocked",
                               "reconciliation", "loop"}


def test_readiness_follows_the_broker_link(live: ObservedSession) -> None:
    live.broker.disconnect("gateway restart")
    ready, conditions = readiness(live)
    assert not ready and not conditions["broker"]["ok"]
    live.broker.reconnect()
    assert readiness(live)[0]


def test_readiness_follows_a_global_halt(live: ObservedSession) -> None:
    live.engine.set_killswitch("global", KillState.HALTED, "operator", "tester")
    ready, conditions = readiness(live)
    assert not ready and not conditions["not_halted"]["ok"]
    live.engine.set_killswitch("global", KillState.ACTIVE, "resume", "tester")
    assert readiness(live)[0]


def test_readiness_follows_an_engine_block(live: ObservedSession) -> None:
    live.engine.blocked = Blocked(BlockedCause.DATABASE_UNAVAILABLE, "test")
    ready, conditions = readiness(live)
    assert not ready and conditions["not_blocked"] == {"ok": False, "detail": "database unavailable: test"}
    live.engine.blocked = None
    assert readiness(live)[0]


def test_an_unreadable_board_shows_as_the_database_and_as_its_cause(live: ObservedSession) -> None:
    live.engine.blocked = Blocked(BlockedCause.KILLSWITCHES_UNREADABLE, "OperationalError")
    ready, conditions = readiness(live)
    assert not ready and conditions["database"] == {"ok": False,
                                                    "detail": "kill-switch state unreadable: OperationalError"}
    s = samples(live.metrics)
    assert s[("tradectl_engine_blocked", ())] == 1
    assert s[("tradectl_engine_blocked_cause", (("cause", "killswitches_unreadable"),))] == 1
    assert s[("tradectl_engine_blocked_cause", (("cause", "database_unavailable"),))] == 0
    live.engine.blocked = None
    assert samples(live.metrics)[("tradectl_engine_blocked_cause", (("cause", "killswitches_unreadable"),))] == 0


def test_readiness_follows_the_database(live: ObservedSession) -> None:
    live.recorder.failing = "connection refused"
    ready, conditions = readiness(live)
    assert not ready and not conditions["database"]["ok"]
    live.recorder.failing = None
    assert readiness(live)[0]


def test_readiness_names_a_stale_quote(live: ObservedSession) -> None:
    from datetime import timedelta

    clock = live.engine.clock
    assert isinstance(clock, SimClock)
    clock.advance(timedelta(seconds=60))
    ready, conditions = readiness(live, max_quote_age_s=5)
    assert not ready and "AAPL" in conditions["market_data"]["detail"]


def test_readiness_names_a_position_break(live: ObservedSession) -> None:
    live.engine.suspect_breaks = {"AAPL": (D(1), D(2))}
    ready, conditions = readiness(live)
    assert not ready and "AAPL" in conditions["reconciliation"]["detail"]


def test_a_stale_loop_heartbeat_is_unhealthy(live: ObservedSession) -> None:
    now = [100.0]
    health = Health(live, loop_stale_s=5, monotonic=lambda: now[0])
    assert health.alive()
    now[0] += 6
    assert not health.alive() and not health.readiness()[1]["loop"]["ok"]


def test_routes_answer_200_when_ready_and_503_with_the_failing_condition(live: ObservedSession) -> None:
    app = Starlette(routes=health_routes(live.health, live.metrics))

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ok = await client.get("/readyz")
            live.engine.set_killswitch("global", KillState.HALTED, "operator", "tester")
            halted = await client.get("/readyz")
            return [ok, halted, await client.get("/healthz"), await client.get("/metrics")]

    ok, halted, healthz, metrics = asyncio.run(asyncio.wait_for(go(), 10))
    assert ok.status_code == 200 and ok.json()["ready"] is True
    assert halted.status_code == 503 and halted.json()["failing"] == ["not_halted"]
    assert healthz.status_code == 200 and healthz.json()["alive"] is True
    assert metrics.status_code == 200 and b"tradectl_ready 0.0" in metrics.content


# -- readiness through real faults: the gateway drops, the database goes away ------------------------------
async def _until(condition: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting until: {what}"
        await asyncio.sleep(0.01)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_readyz_turns_not_ready_when_the_gateway_drops_and_ready_when_it_is_back(sqlite_url: str) -> None:
    from tests.ibrig import lockstep_session

    async def scenario() -> list[tuple[int, list[str]]]:
        gw, session, _ = await lockstep_session(load_settings(database_url=sqlite_url), client_id=5)
        session.broker.backoff_s = (0.05, 0.2)
        health, metrics = observe(session)
        app = Starlette(routes=health_routes(health, metrics))
        seen = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

            async def ask() -> None:
                r = await client.get("/readyz")
                seen.append((r.status_code, r.json()["failing"]))

            await session.process_line(signal_line("g1", symbol="AAPL", seconds=1))
            await ask()
            gw.drop_connections()
            await _until(lambda: not session.engine.broker_connected, "the engine sees the drop")
            await ask()
            await _until(lambda: session.engine.broker_connected, "reconnected")
            await session.broker.sync()
            await ask()
        session.control.close()
        await session.broker.close()
        await gw.stop()
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] == (200, [])
    assert seen[1][0] == 503 and "broker" in seen[1][1]
    assert seen[2] == (200, [])


@pytest.mark.timeout(60)
def test_readiness_turns_not_ready_when_the_database_goes_away_and_ready_when_it_returns(pg_url: str) -> None:
    import time

    from engine.clock import SimClock
    from paper.market import SIM_START
    from repositories.db import ensure_schema
    from tests.tcp_proxy import proxied_database

    ensure_schema(pg_url)
    proxy, proxied = proxied_database(pg_url)
    # Written in process, as a live session writes: the failure is known at the write (a paper session's
    # writer process reports it a moment later: tests/integration/test_background_writer.py).
    settings = load_settings(database_url=proxied, flush_rows=1, paper={"writer_process": False})
    session = ObservedSession(settings, seed=1)
    clock = SimClock(SIM_START)
    session.prepare(clock, SIM_START)
    try:
        session.process_line(signal_line("up1", symbol="AAPL").replace("2026-01-05T14:30:00+00:00",
                                                                       SIM_START.isoformat()), clock)
        assert session.health.readiness()[0]
        proxy.cut()
        session.process_line(signal_line("down1", symbol="MSFT").replace("2026-01-05T14:30:00+00:00",
                                                                         SIM_START.isoformat()), clock)
        ready, conditions = session.health.readiness()
        assert not ready and not conditions["database"]["ok"] and not conditions["not_blocked"]["ok"]
        assert samples(session.metrics)[("tradectl_database_up", ())] == 0
        proxy.restore()
        time.sleep(session.recorder.retry_s)
        session.recorder.flush()
        assert session.health.readiness()[0]
    finally:
        session.control.close()
        session.db.dispose()
        proxy.close()
