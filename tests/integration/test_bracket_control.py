"""Brackets through the database (SQLite and PostgreSQL): their rows name entry and OCA group, a kill keeps the
protection of open positions, and a kill with flatten cancels it before closing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.domain import KillState, OrderStatus
from risk.killswitch import GLOBAL
from tests.conftest import signal_line
from tests.integration.test_control import open_session, operator

BRACKET: dict[str, Any] = {"stop_loss": {"distance": 2}, "take_profit": {"distance": 3}}


def test_exit_rows_name_their_entry_and_oca_group_and_load_back_as_exits(db_url: str) -> None:
    session, clock = open_session(db_url)
    session.process_line(signal_line("b1", **BRACKET), clock)
    session.recorder.flush()
    exits = {o.client_order_id: o for o in operator(db_url).orders.open()}
    assert set(exits) == {"te-sl-b1-AAPL", "te-tp-b1-AAPL"}
    assert {(o.intent.parent_id, o.intent.oca_group) for o in exits.values()} == {("tc-b1", "tc-b1")}
    session._finish(datetime.now(UTC), 0.0, 0)


def test_an_operator_kill_keeps_the_exits_protecting_a_position(db_url: str) -> None:
    session, clock = open_session(db_url)
    session.process_line(signal_line("b1", **BRACKET), clock)
    operator(db_url).killswitches.record(GLOBAL, KillState.HALTED, reason="drill", actor="ops@desk",
                                         now=datetime.now(UTC))
    assert session.control.tick(force=True) == 1
    engine = session.engine
    assert sorted(engine.orders) == ["te-sl-b1-AAPL", "te-tp-b1-AAPL"]
    assert engine.positions["AAPL"].quantity > 0
    session._finish(datetime.now(UTC), 0.0, 0)


def test_a_kill_acknowledgement_says_how_many_protective_exits_it_left_working(db_url: str) -> None:
    session, clock = open_session(db_url)
    session.process_line(signal_line("b1", **BRACKET), clock)
    event = operator(db_url).killswitches.record(GLOBAL, KillState.HALTED, reason="drill", actor="ops@desk",
                                                 now=datetime.now(UTC))
    assert session.control.tick(force=True) == 1
    assert event.id is not None
    ack = operator(db_url).killswitches.ack_of(event.id)
    # "0 cancelled" alone read as "nothing is working" while two GTC exits could still fill
    assert ack is not None and ack["cancelled"] == 0
    assert ack["detail"].startswith("2 exit order(s) protecting a position left working")
    session._finish(datetime.now(UTC), 0.0, 0)


def test_a_kill_with_nothing_protective_working_acknowledges_without_detail(db_url: str) -> None:
    session, clock = open_session(db_url)
    session.process_line(signal_line("p1"), clock)
    event = operator(db_url).killswitches.record(GLOBAL, KillState.HALTED, reason="drill", actor="ops@desk",
                                                 now=datetime.now(UTC))
    assert session.control.tick(force=True) == 1
    assert event.id is not None
    ack = operator(db_url).killswitches.ack_of(event.id)
    assert ack is not None and ack["detail"] is None
    session._finish(datetime.now(UTC), 0.0, 0)


def test_an_operator_kill_with_flatten_cancels_the_protection_then_closes_the_position(db_url: str) -> None:
    session, clock = open_session(db_url)
    session.process_line(signal_line("b1", **BRACKET), clock)
    engine = session.engine
    exits = list(engine.orders.values())
    event = operator(db_url).killswitches.record(GLOBAL, KillState.HALTED, reason="drill", actor="ops@desk",
                                                 now=datetime.now(UTC), flatten=True)
    assert session.control.tick(force=True) == 1
    assert [o.status for o in exits] == [OrderStatus.CANCELLED, OrderStatus.CANCELLED]
    assert engine.positions["AAPL"].quantity == 0 and engine.orders == {}
    assert event.id is not None
    ack = operator(db_url).killswitches.ack_of(event.id)
    assert ack is not None and ack["cancelled"] == 2 and ack["flatten_orders"] == 1
    session._finish(datetime.now(UTC), 0.0, 0)
