"""The engine on the in-process simulated broker, without a database."""

from datetime import timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from engine.dedupe import RecentIds
from engine.domain import KillState, Order, OrderStatus, Position
from engine.engine import InstrumentBook
from paper.broker import PaperBroker
from risk.checks import Limits, RiskLimits
from tests.conftest import T0, signal_line
from tests.rig import Rig


def test_accepted_signal_becomes_a_filled_order_and_a_position() -> None:
    rig = Rig()
    rig.quote()
    order = rig.engine.on_signal_line(signal_line("s1"))
    assert isinstance(order, Order) and order.status is OrderStatus.FILLED
    assert order.client_order_id == "tc-s1"
    assert rig.engine.positions["AAPL"].quantity == order.intent.quantity
    assert rig.statuses == [("tc-s1", OrderStatus.SUBMITTED), ("tc-s1", OrderStatus.FILLED)]


def test_repeated_signal_id_makes_no_second_order() -> None:
    rig = Rig()
    rig.quote()
    rig.engine.on_signal_line(signal_line("s1"))
    assert rig.engine.on_signal_line(signal_line("s1", direction="short")) is None
    assert rig.engine.stats.orders == 1 and rig.rejected[-1].code == "duplicate"


def test_signal_ids_seen_in_earlier_sessions_are_duplicates() -> None:
    rig = Rig(seen_signal_ids=["old-1"])
    rig.quote()
    assert rig.engine.on_signal_line(signal_line("old-1")) is None and rig.rejected[-1].code == "duplicate"


def test_invalid_line_is_published_with_its_reason() -> None:
    rig = Rig()
    rig.engine.on_signal_line('{"id": "x", "symbol": "AAPL", "direction": "long", "win_prob": 3, "payoff": 1}')
    (r,) = rig.rejected
    assert r.code == "invalid_signal" and "win_prob" in r.reason and r.signal_id == "x" and not r.valid


def test_no_quote_means_no_order() -> None:
    rig = Rig()
    assert rig.engine.on_signal_line(signal_line("s1")) is None
    assert rig.rejected[-1].code == "no_market_data"


def test_no_edge_is_rejected_with_its_reason() -> None:
    rig = Rig()
    rig.quote()
    rig.engine.on_signal_line(signal_line("s1", win_prob=0.3, payoff=1))
    assert rig.rejected[-1].code == "no_edge"


def test_signal_at_its_target_makes_no_order() -> None:
    rig = Rig()
    rig.quote()
    rig.engine.on_signal_line(signal_line("s1"))
    rig.engine.on_signal_line(signal_line("s2"))
    assert rig.rejected[-1].code == "at_target" and rig.engine.stats.orders == 1


def test_flat_signal_closes_the_position() -> None:
    rig = Rig()
    rig.quote()
    rig.engine.on_signal_line(signal_line("s1"))
    rig.engine.on_signal_line(signal_line("s2", direction="flat"))
    assert rig.engine.positions["AAPL"].quantity == 0


def test_pre_trade_reject_never_reaches_the_broker() -> None:
    rig = Rig(limits=RiskLimits(Limits(max_order_qty=D("1"))))
    rig.quote()
    assert rig.engine.on_signal_line(signal_line("s1")) is None
    assert rig.rejected[-1].code == "max_order_qty" and rig.broker.matching.orders == {}


def test_halt_rejects_new_signals_and_cancels_working_orders_in_scope() -> None:
    rig = Rig()
    rig.quote()
    resting = rig.engine.on_signal_line(signal_line("s1", order_type="LMT", limit_price=99.0))
    assert resting is not None and resting.status is OrderStatus.SUBMITTED
    cancelled = rig.engine.set_killswitch("symbol:AAPL", KillState.HALTED, "test", "pytest")
    status_after: OrderStatus = resting.status  # mutated by the halt; a fresh name stops mypy's narrowing
    assert cancelled == 1 and status_after is OrderStatus.CANCELLED
    assert rig.engine.on_signal_line(signal_line("s2", direction="short")) is None
    assert rig.rejected[-1].code == "killswitch"


def test_working_limit_order_counts_toward_the_target() -> None:
    rig = Rig()
    rig.quote()
    rig.engine.on_signal_line(signal_line("s1", order_type="LMT", limit_price=99.0))
    rig.engine.on_signal_line(signal_line("s2"))
    assert rig.rejected[-1].code == "at_target"


def test_order_expires_after_its_ttl() -> None:
    rig = Rig()
    rig.quote()
    order = rig.engine.on_signal_line(signal_line("s1", order_type="LMT", limit_price=99.0, ttl_s=5))
    assert order is not None
    rig.clock.advance(timedelta(seconds=6))
    assert rig.engine.expire(rig.clock()) == 1
    assert order.status is OrderStatus.CANCELLED and order.reason == "ttl expired"


def test_duplicate_execution_is_booked_once() -> None:
    rig = Rig()
    rig.quote()
    order = rig.engine.on_signal_line(signal_line("s1"))
    assert order is not None
    before = rig.engine.positions["AAPL"].quantity
    from engine.domain import Fill, Side

    rig.engine.on_fill(Fill(f"{1:08x}", "tc-s1", "AAPL", Side.BUY, D(1), D(100), D(0), T0))
    rig.engine.on_fill(Fill(f"{1:08x}", "tc-s1", "AAPL", Side.BUY, D(1), D(100), D(0), T0))
    assert rig.engine.positions["AAPL"].quantity == before + 1


def test_illegal_broker_transition_is_logged_not_applied(caplog: pytest.LogCaptureFixture) -> None:
    from broker.base import OrderUpdate

    rig = Rig()
    rig.quote()
    order = rig.engine.on_signal_line(signal_line("s1", order_type="LMT", limit_price=99.0))
    assert order is not None
    order.status = OrderStatus.PARTIALLY_FILLED
    rig.engine.on_order_update(OrderUpdate("tc-s1", OrderStatus.REJECTED, T0))
    assert order.status is OrderStatus.PARTIALLY_FILLED


def test_recent_ids_forget_the_oldest_beyond_capacity() -> None:
    ids = RecentIds(2, ["a", "b"])
    assert ids.add("c") and "a" not in ids and "b" in ids and len(ids) == 2


def test_unknown_symbols_are_refused_when_not_allowed() -> None:
    rig = Rig(instruments=InstrumentBook(allow_unknown=False))
    rig.quote()
    rig.engine.on_signal_line(signal_line("s1"))
    assert rig.rejected[-1].code == "unknown_symbol"


def test_a_position_difference_found_while_trading_halts_only_when_the_next_check_sees_it_again() -> None:
    rig = Rig()
    rig.broker.matching.positions["AAPL"] = Position("AAPL", D(100), D(10))  # the broker counts a fill we lack
    assert rig.engine.reconcile_positions(confirm=True) == {"AAPL": (D(0), D(100))}
    assert rig.engine.killswitches.get("symbol:AAPL") is KillState.ACTIVE  # maybe a report in flight
    rig.engine.reconcile_positions(confirm=True)
    assert rig.engine.killswitches.get("symbol:AAPL") is KillState.HALTED


class CorrectingBroker(PaperBroker):
    """A simulated broker that, like IB, may correct an execution after reporting it."""

    corrects_executions = True


def test_an_engine_on_a_broker_that_never_corrects_executions_keeps_no_fills_in_memory() -> None:
    rig = Rig()
    rig.quote()
    rig.engine.on_signal_line(signal_line("s1"))
    assert rig.engine.stats.fills == 1 and len(rig.engine.portfolio.recent_fills) == 0


def test_an_engine_on_a_broker_that_corrects_executions_books_a_correction_of_a_recent_fill() -> None:
    from engine.domain import Fill

    rig = Rig(CorrectingBroker)
    rig.quote()
    order = rig.engine.on_signal_line(signal_line("s1"))
    assert isinstance(order, Order)
    (exec_id,) = rig.engine.portfolio.recent_fills
    first = rig.engine.portfolio.recent_fills[exec_id][0]
    rig.engine.on_fill(Fill(f"{exec_id}.02", first.client_order_id, "AAPL", first.side, first.quantity - 1,
                            first.price, first.commission, T0, corrects=exec_id))
    assert rig.engine.positions["AAPL"].quantity == order.intent.quantity - 1
    assert order.filled_qty == order.intent.quantity - 1


class LateCancelBroker(PaperBroker):
    """Confirms cancels only when told, as IB does some time after the request."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.asked: list[tuple[str, str]] = []

    def cancel(self, client_order_id: str, reason: str) -> None:
        self.asked.append((client_order_id, reason))

    def confirm_cancels(self) -> None:
        asked, self.asked = self.asked, []
        for coid, reason in asked:
            super().cancel(coid, reason)


def test_a_flat_signal_cancels_a_working_order_even_while_an_opposing_cancel_is_unconfirmed() -> None:
    """A pending-cancel buy and a working sell summed to zero: the flat signal was refused as at_target and the
    sell then filled, leaving a short position against a flat target (a service trial)."""
    rig = Rig(broker_cls=LateCancelBroker)
    broker = rig.broker
    assert isinstance(broker, LateCancelBroker)
    rig.quote()
    rig.engine.on_signal_line(signal_line("long", order_type="LMT", limit_price=90.0))  # rests
    rig.engine.on_signal_line(signal_line("short", direction="short", order_type="LMT", limit_price=110.0))
    assert [coid for coid, _ in broker.asked] == ["tc-long"]  # superseded, its cancel not confirmed yet
    rig.engine.on_signal_line(signal_line("flat", direction="flat"))
    assert [r.signal_id for r in rig.rejected if r.code == "at_target"] == ["flat"]  # nothing new to send...
    assert [coid for coid, _ in broker.asked] == ["tc-long", "tc-short"]  # ...but the working sell is cancelled
    broker.confirm_cancels()
    assert rig.engine.orders == {} and rig.engine.positions.get("AAPL") is None


def test_a_signal_sized_against_an_unconfirmed_cancel_sends_what_the_target_needs() -> None:
    """As a broker that confirms cancels at once would: the leaving buy is gone, so the long target needs a new
    one (before, the engine counted the leaving order and sent nothing). The pre-trade checks still count it:
    should the cancel lose the race to a fill, the position limits bound what both can make."""
    rig = Rig(broker_cls=LateCancelBroker)
    broker = rig.broker
    assert isinstance(broker, LateCancelBroker)
    rig.quote()
    rig.engine.on_signal_line(signal_line("long", order_type="LMT", limit_price=90.0))
    first = rig.submitted[-1]
    rig.engine.on_signal_line(signal_line("flat", direction="flat"))
    assert [coid for coid, _ in broker.asked] == ["tc-long"]
    rig.engine.on_signal_line(signal_line("again", order_type="LMT", limit_price=91.0))  # not a duplicate order
    assert rig.submitted[-1].client_order_id == "tc-again"
    assert rig.submitted[-1].intent.quantity == first.intent.quantity
