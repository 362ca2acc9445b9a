"""Operator control through the database: events applied, flattens, acks, trips stored (SQLite and PostgreSQL)."""

from __future__ import annotations

import select
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import Blocked, BlockedCause, Fill, KillState, OrderStatus, Side
from engine.operator import EngineCondition, engine_seen, parse_since
from engine.session import PaperSession
from paper.market import SIM_START
from repositories.db import make_engine
from repositories.killswitch_feed import KillSwitchFeed
from repositories.repos import Repositories
from risk.killswitch import GLOBAL
from tests.conftest import signal_line
from tests.rig import Rig


def open_session(url: str) -> tuple[PaperSession, SimClock]:
    session = PaperSession(load_settings(database_url=url), seed=3)
    clock = SimClock(SIM_START)
    session.prepare(clock, datetime.now(UTC))
    return session, clock


def operator(url: str) -> Repositories:
    return Repositories(make_engine(url), "DU0000001")


def test_operator_halt_with_flatten_cancels_closes_and_acknowledges(db_url: str) -> None:
    session, clock = open_session(db_url)
    session.process_line(signal_line("a1", symbol="AAPL"), clock)  # a market order: a position
    session.process_line(signal_line("m1", symbol="MSFT", order_type="LMT", limit_price=1.0), clock)  # rests
    engine = session.engine
    assert engine.positions["AAPL"].quantity > 0 and len(engine.orders) == 1

    event = operator(db_url).killswitches.record(GLOBAL, KillState.HALTED, reason="drill", actor="ops@desk",
                                                 now=datetime.now(UTC), flatten=True)
    assert session.control.tick(force=True) == 1

    assert engine.killswitches.get(GLOBAL) is KillState.HALTED and engine.orders == {}
    assert engine.positions["AAPL"].quantity == 0  # the closing order was marketable and filled
    assert event.id is not None
    ack = operator(db_url).killswitches.ack_of(event.id)
    assert ack is not None and ack["cancelled"] == 1 and ack["flatten_orders"] == 1 and ack["detail"] is None
    session._finish(datetime.now(UTC), 0.0, 0)


def test_an_event_is_applied_once_however_often_the_feed_is_read(db_url: str) -> None:
    session, _ = open_session(db_url)
    operator(db_url).killswitches.record("symbol:AAPL", KillState.REDUCE_ONLY, reason="news", actor="ops@desk",
                                         now=datetime.now(UTC))
    assert session.control.tick(force=True) == 1
    assert session.control.tick(force=True) == 0
    assert len(session.control.applied) == 1
    session._finish(datetime.now(UTC), 0.0, 0)


def test_a_trip_is_stored_with_its_audit_record_and_not_applied_twice(db_url: str) -> None:
    session, clock = open_session(db_url)
    session.process_line(signal_line("a1", symbol="AAPL"), clock)
    session.engine.on_fill(Fill("ext.1", "placed-in-tws", "AAPL", Side.BUY, D(5), D(100), D(1), clock()))
    repos = operator(db_url)
    assert repos.killswitches.states() == {"symbol:AAPL": KillState.HALTED}
    (trip,) = repos.killswitches.events()
    assert trip.actor == "trigger:unknown_fill" and "never sent" in trip.reason
    assert [a["action"] for a in repos.audit.log()] == ["killswitch.halted"]
    assert session.control.tick(force=True) == 0  # its own event: nothing to apply, nothing to ack
    session._finish(datetime.now(UTC), 0.0, 0)


def test_the_running_engine_is_visible_to_the_cli_until_it_ends(db_url: str) -> None:
    session, _ = open_session(db_url)
    repos = operator(db_url)
    seen = engine_seen(repos, 5.0, datetime.now(UTC))
    assert seen.condition is EngineCondition.RUNNING and seen.holder == session.control.holder
    # its heartbeat a minute old while its process (this one) lives: hung, not gone
    stale = engine_seen(repos, 5.0, datetime.now(UTC) + timedelta(seconds=60))
    assert stale.condition is EngineCondition.HUNG and "HUNG" in stale.sentence
    session._finish(datetime.now(UTC), 0.0, 0)
    assert engine_seen(repos, 5.0, datetime.now(UTC)).condition is EngineCondition.NOT_RUNNING


def test_postgresql_notify_wakes_the_feed_without_waiting_for_the_poll(pg_url: str) -> None:
    from repositories.db import upgrade

    upgrade(pg_url)
    repos = operator(pg_url)
    feed = KillSwitchFeed(repos.killswitches, after_id=0, fallback_s=3600)
    fd = feed.fileno()
    assert feed.listening and fd is not None
    feed.poll(force=True)
    assert feed.poll() == []
    repos.killswitches.record(GLOBAL, KillState.HALTED, reason="drill", actor="ops@desk", now=datetime.now(UTC))
    readable, _, _ = select.select([fd], [], [], 5.0)  # what the session's event loop waits on
    assert readable
    (event,) = feed.poll()  # woken by NOTIFY although the fallback read is an hour away
    assert event.to_state is KillState.HALTED
    feed.close()


def test_flatten_goes_through_the_pre_trade_checks() -> None:
    from risk.checks import Limits, RiskLimits

    r = Rig(limits=RiskLimits(Limits(max_order_qty=D(50_000))))
    r.quote()
    r.engine.on_signal_line(signal_line("s1"))
    r.engine.limits = RiskLimits(Limits(max_order_qty=D(1)))  # tightened after the position was built
    r.engine.set_killswitch(GLOBAL, KillState.HALTED, "drill", "ops")
    result = r.engine.flatten(GLOBAL, "1", D("0.01"))
    assert result.sent == [] and result.skipped["AAPL"].startswith("max_order_qty")


def test_flatten_is_a_collared_marketable_limit_that_never_opens_a_position() -> None:
    r = Rig()
    r.quote()
    r.engine.on_signal_line(signal_line("s1"))
    held = r.engine.positions["AAPL"].quantity
    r.engine.set_killswitch(GLOBAL, KillState.HALTED, "drill", "ops")
    (order,) = r.engine.flatten(GLOBAL, "9", D("0.01")).sent
    assert order.client_order_id == "te-flat-9-AAPL" and order.intent.side is Side.SELL
    assert order.intent.quantity == held and order.intent.limit_price == D("99.00")  # bid 100.00 less 1%
    assert order.status is OrderStatus.FILLED and r.engine.positions["AAPL"].quantity == 0
    assert r.engine.flatten(GLOBAL, "10", D("0.01")).sent == []  # flat: nothing more to send


def test_flatten_refuses_a_strategy_scope() -> None:
    r = Rig()
    result = r.engine.flatten("strategy:s", "1", D("0.01"))
    assert result.sent == [] and "per account and symbol" in result.skipped["strategy:s"]


def test_reduce_only_lets_a_closing_signal_through_and_refuses_an_opening_one() -> None:
    r = Rig()
    r.quote()
    r.engine.on_signal_line(signal_line("s1"))
    r.engine.set_killswitch(GLOBAL, KillState.REDUCE_ONLY, "drill", "ops")
    r.engine.on_signal_line(signal_line("s2", symbol="AAPL", direction="flat"))
    assert r.engine.positions["AAPL"].quantity == 0
    r.quote(symbol="MSFT")
    r.engine.on_signal_line(signal_line("s3", symbol="MSFT"))
    assert r.rejected[-1].code == "killswitch" and "REDUCE_ONLY" in r.rejected[-1].reason


def test_since_accepts_relative_and_absolute_times() -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert parse_since("15m", now) == now - timedelta(minutes=15)
    assert parse_since("1d", now) == now - timedelta(days=1)
    assert parse_since("2026-11-22T08:00", now) == datetime(2026, 11, 22, 8, tzinfo=UTC)


def test_since_says_what_it_accepts() -> None:
    with pytest.raises(ValueError, match="15m, 2h, 1d"):
        parse_since("yesterday", datetime.now(UTC))


def test_engine_refuses_to_trade_while_it_cannot_read_the_kill_switches(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repositories.errors import DatabaseUnavailable

    session, clock = open_session(sqlite_url)

    def unreadable(force: bool = False) -> list[object]:
        raise DatabaseUnavailable("database is locked")

    with monkeypatch.context() as m:
        m.setattr(session.control.feed, "poll", unreadable)
        session.control.tick(force=True)
        session.process_line(signal_line("b1"), clock)
        assert session.engine.stats.reject_reasons == {"blocked": 1} and session.engine.stats.orders == 0
        assert session.engine.blocked == Blocked(BlockedCause.KILLSWITCHES_UNREADABLE, "database is locked")
        session.recorder.failing = "connection refused"  # and the writes fail meanwhile
        m.setattr(session.recorder, "flush", lambda *a, **k: 0)
        session.control.tick(force=True)
        assert session.engine.blocked.cause is BlockedCause.KILLSWITCHES_UNREADABLE  # the first cause stays
    session.control.tick(force=True)  # readable again: blocked by the database while its writes fail
    assert session.engine.blocked == Blocked(BlockedCause.DATABASE_UNAVAILABLE, "connection refused")
    session.recorder.failing = None
    session.control._database_health(None)  # what the recorder's next good write says
    assert session.engine.blocked is None
    session.control.tick(force=True)  # readable again: trading resumes by itself (no switch had changed)
    session.process_line(signal_line("b2"), clock)
    assert session.engine.stats.orders == 1
    session._finish(datetime.now(UTC), 0.0, 0)


def test_a_reconcile_due_while_the_broker_link_is_down_compares_nothing_and_halts_nothing(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """IB's adapter holds no positions and no orders while disconnected: the timer's reconciliation during a
    gateway restart read every held symbol as a break and halted them all (a service trial)."""
    from broker.base import BrokerSnapshot

    session, clock = open_session(sqlite_url)
    session.process_line(signal_line("a1", symbol="AAPL"), clock)  # a position
    session.process_line(signal_line("m1", symbol="MSFT", order_type="LMT", limit_price=1.0), clock)  # working
    broker, engine, control = session.broker, session.engine, session.control
    held = broker.positions()
    assert held and engine.orders
    # IB's adapter while disconnected: no positions, an empty snapshot
    monkeypatch.setattr(broker, "positions", lambda: [] if not broker.connected else held)
    monkeypatch.setattr(broker, "snapshot", lambda: BrokerSnapshot([], [], []))
    broker.disconnect("gateway restart")
    for _ in range(3):  # the due reconcile, and the second look it would have scheduled
        control._next_reconcile = 0.0
        control.tick(force=True)
    assert operator(sqlite_url).killswitches.states() == {}
    assert engine.suspect_breaks == {} and [o.status for o in engine.orders.values()] == [OrderStatus.SUBMITTED]
    session._finish(datetime.now(UTC), 0.0, 0)


def test_a_difference_seen_on_reconnecting_is_confirmed_by_a_later_look_not_at_once(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reconnect compares at once (a first sighting); the timer, overdue after the outage, confirmed it on
    the very next tick while fills made around the restart were still arriving (a review). A difference that
    stays is still halted, a second look later."""
    from broker.base import BrokerPosition

    session, clock = open_session(sqlite_url)
    session.process_line(signal_line("a1", symbol="AAPL"), clock)
    broker, engine, control = session.broker, session.engine, session.control
    (held,) = broker.positions()
    monkeypatch.setattr(broker, "positions", lambda: [BrokerPosition("AAPL", held.quantity + 5, held.avg_cost)])
    broker.disconnect("gateway restart")
    control._next_reconcile = 0.0
    control.tick(force=True)  # due, but the link is down: nothing compared
    broker.reconnect()  # compares at once: a first sighting
    assert "AAPL" in engine.suspect_breaks
    control.tick(force=True)
    assert operator(sqlite_url).killswitches.states() == {}  # not confirmed on the next tick
    control._next_reconcile = 0.0  # the second look's time has come
    control.tick(force=True)
    assert operator(sqlite_url).killswitches.states() == {"symbol:AAPL": KillState.HALTED}
    session._finish(datetime.now(UTC), 0.0, 0)
