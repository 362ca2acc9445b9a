"""One admission for every order: a signal's and one the engine makes itself (a flatten) meet the same kill
switches and the same pre-trade checks, and an error in either keeps the order from leaving."""

from __future__ import annotations

from decimal import Decimal as D

from engine.domain import (
    Blocked,
    BlockedCause,
    Instrument,
    KillState,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RejectCode,
    Side,
)
from risk.checks import CheckContext, Limits, Reject, RiskLimits
from risk.killswitch import GLOBAL
from tests.conftest import T0, signal_line
from tests.rig import Rig


def intent(side: Side, qty: str, *, flatten: bool = False, coid: str = "fx-1") -> OrderIntent:
    return OrderIntent(coid, None, "flatten", Instrument("AAPL"), side, D(qty), OrderType.LMT, D("100.00"), ts=T0,
                       flatten=flatten)


def halted_long_100() -> Rig:
    rig = Rig(positions=[Position("AAPL", D(100), D(100))])
    rig.quote()
    rig.engine.set_killswitch(GLOBAL, KillState.HALTED, "test", "pytest")
    return rig


def boom(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    raise ZeroDivisionError("a check that breaks")


def test_an_engine_made_order_is_refused_through_halted_when_it_is_not_a_flatten_even_if_it_reduces() -> None:
    rig = halted_long_100()
    assert rig.engine.submit_intent(intent(Side.SELL, "100")) == "kill switch global is HALTED"
    assert rig.submitted == []


def test_an_engine_made_flatten_is_refused_through_halted_when_it_would_add_exposure() -> None:
    rig = halted_long_100()
    assert rig.engine.submit_intent(intent(Side.BUY, "10", flatten=True)) == "kill switch global is HALTED"
    assert rig.submitted == []


def test_an_engine_made_flatten_passes_halted_when_it_reduces() -> None:
    rig = halted_long_100()
    sent = rig.engine.submit_intent(intent(Side.SELL, "100", flatten=True))
    assert isinstance(sent, Order) and rig.submitted == [sent] and sent.status is not OrderStatus.REJECTED


def test_an_engine_made_flatten_passes_reduce_only_when_it_reduces() -> None:
    rig = Rig(positions=[Position("AAPL", D(100), D(100))])
    rig.quote()
    rig.engine.set_killswitch(GLOBAL, KillState.REDUCE_ONLY, "test", "pytest")
    assert isinstance(rig.engine.submit_intent(intent(Side.SELL, "40", flatten=True)), Order)
    refused = rig.engine.submit_intent(intent(Side.BUY, "10", flatten=True, coid="fx-2"))
    assert refused == "kill switch global is REDUCE_ONLY and the order adds exposure"


def test_an_engine_made_order_meets_the_same_pre_trade_checks_as_a_signals() -> None:
    rig = Rig(limits=RiskLimits(Limits(max_order_qty=D(1))), positions=[Position("AAPL", D(100), D(100))])
    rig.quote()
    refused = rig.engine.submit_intent(intent(Side.SELL, "100", flatten=True))
    assert isinstance(refused, str) and refused.startswith("max_order_qty: ")
    assert rig.engine.on_signal_line(signal_line("s1", direction="flat")) is None
    assert rig.rejected[-1].code == "max_order_qty" and rig.submitted == []


def test_an_engine_made_order_is_refused_while_trading_is_blocked() -> None:
    rig = Rig(positions=[Position("AAPL", D(100), D(100))])
    rig.quote()
    rig.engine.blocked = Blocked(BlockedCause.DATABASE_UNAVAILABLE, "test")
    assert rig.engine.submit_intent(intent(Side.SELL, "100", flatten=True)) == "blocked: database unavailable: test"
    assert rig.submitted == []


def test_an_error_in_a_check_keeps_an_engine_made_order_from_leaving_and_says_why() -> None:
    rig = Rig(checks=[boom], positions=[Position("AAPL", D(100), D(100))])
    rig.quote()
    refused = rig.engine.submit_intent(intent(Side.SELL, "100", flatten=True))
    assert refused == f"{RejectCode.INTERNAL_ERROR}: ZeroDivisionError: a check that breaks"
    assert rig.submitted == [] and rig.engine.orders == {} and rig.engine.stats.orders == 0


def test_an_error_in_a_check_rejects_a_signal_as_an_internal_error_and_nothing_leaves() -> None:
    rig = Rig(checks=[boom])
    rig.quote()
    assert rig.engine.on_signal_line(signal_line("s1")) is None
    assert rig.rejected[-1].code == "internal_error" and "a check that breaks" in rig.rejected[-1].reason
    assert rig.submitted == [] and rig.engine.stats.accepted == 0 and rig.engine.stats.rejected == 1


def test_a_signal_and_an_engine_made_order_count_the_same_working_quantity_at_the_kill_switch() -> None:
    rig = Rig()
    rig.quote()
    resting = rig.engine.on_signal_line(signal_line("s1", order_type="LMT", limit_price=99.0))
    assert resting is not None
    rig.engine.set_killswitch(GLOBAL, KillState.REDUCE_ONLY, "test", "pytest")
    # flat position, a buy working: a sell of less than what works reduces position + working
    assert isinstance(rig.engine.submit_intent(intent(Side.SELL, "1", flatten=True)), Order)
