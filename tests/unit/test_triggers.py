"""Automatic kill-switch triggers: each condition, driven through the engine, trips its scope."""

from datetime import timedelta
from decimal import Decimal as D
from typing import Any

from engine.domain import Fill, KillState, Side
from risk.checks import Limits, RiskLimits
from risk.killswitch import GLOBAL
from risk.triggers import DAILY_LOSS, TriggerLimits, TripWires
from tests.conftest import T0, signal_line
from tests.rig import Rig

# Risk limits wide open, so only the trigger under test acts.
OPEN = RiskLimits(Limits(max_daily_loss=None, duplicate_window_s=None, max_orders_per_s=None,
                         max_symbol_orders_per_s=None, max_gross_exposure=None, max_net_exposure=None,
                         max_leverage=None, max_quote_age_s=None))


def rig(**trigger_limits: Any) -> Rig:
    return Rig(limits=OPEN, trips=TripWires(TriggerLimits(**trigger_limits)))


def buy_aapl(r: Rig) -> None:
    r.quote()
    r.engine.on_signal_line(signal_line("s1"))
    assert r.engine.positions["AAPL"].quantity > 0


def test_daily_loss_limit_puts_the_account_in_reduce_only() -> None:
    r = rig(daily_loss=D(5000), drawdown=None)
    buy_aapl(r)
    r.quote(bid="90.00", ask="90.02")  # ~1000 shares lose ~10 a share
    r.engine.housekeeping(r.clock())
    assert r.engine.killswitches.get(GLOBAL) is KillState.REDUCE_ONLY
    (change,) = r.changes
    assert change.actor == "trigger:daily_loss" and "daily loss limit -5000" in change.reason


def test_drawdown_from_the_days_peak_halts_the_account() -> None:
    r = rig(daily_loss=None, drawdown=D(5000))
    buy_aapl(r)
    r.quote(bid="104.00", ask="104.02")
    r.engine.housekeeping(r.clock())  # a new peak, still up on the day
    assert r.engine.killswitches.get(GLOBAL) is KillState.ACTIVE
    r.quote(bid="98.00", ask="98.02")
    r.engine.housekeeping(r.clock())
    assert r.engine.killswitches.get(GLOBAL) is KillState.HALTED
    assert r.changes[-1].actor == "trigger:drawdown" and "below the day's peak" in r.changes[-1].reason


def test_a_burst_of_broker_rejects_halts_the_account() -> None:
    r = rig(reject_burst=3, reject_window_s=10.0)
    r.quote()
    r.broker.refuse_reason = "201: order rejected by the broker's risk"
    for i in range(3):
        r.clock.advance(timedelta(seconds=1))
        r.quote()
        r.engine.on_signal_line(signal_line(f"s{i}", seconds=i + 1))
    assert r.engine.killswitches.get(GLOBAL) is KillState.HALTED
    assert r.changes[-1].actor == "trigger:reject_burst" and "201" in r.changes[-1].reason


def test_rejects_spread_wider_than_the_window_do_not_trip() -> None:
    r = rig(reject_burst=3, reject_window_s=10.0)
    r.broker.refuse_reason = "201"
    for i in range(5):
        r.clock.advance(timedelta(seconds=6))
        r.quote()
        r.engine.on_signal_line(signal_line(f"s{i}", seconds=6 * (i + 1)))
    assert r.engine.killswitches.get(GLOBAL) is KillState.ACTIVE


def test_repeated_order_rate_breaches_halt_the_strategy() -> None:
    limits = RiskLimits(Limits(max_orders_per_s=2, max_symbol_orders_per_s=None, duplicate_window_s=None))
    r = Rig(limits=limits, trips=TripWires(TriggerLimits(rate_breach_burst=3)))
    symbols = ["AAPL", "MSFT", "IBM", "KO", "PEP", "XOM"]
    for s in symbols:
        r.quote(symbol=s)
    for i, s in enumerate(symbols):
        r.engine.on_signal_line(signal_line(f"s{i}", symbol=s, strategy="fast"))
    assert [x.code for x in r.rejected] == ["order_rate"] * 3 + ["killswitch"]
    assert r.engine.killswitches.get("strategy:fast") is KillState.HALTED
    assert r.changes[-1].actor == "trigger:order_rate"


def test_broker_down_longer_than_the_timeout_halts_the_account() -> None:
    r = rig(disconnect_timeout_s=30.0)
    r.quote()
    r.broker.disconnect()
    r.engine.on_signal_line(signal_line("s1"))
    assert r.rejected[-1].code == "broker_disconnected" and r.submitted == []
    r.clock.advance(timedelta(seconds=29))
    r.engine.housekeeping(r.clock())
    assert r.engine.killswitches.get(GLOBAL) is KillState.ACTIVE
    r.clock.advance(timedelta(seconds=2))
    r.engine.housekeeping(r.clock())
    assert r.engine.killswitches.get(GLOBAL) is KillState.HALTED
    assert r.changes[-1].actor == "trigger:disconnect"


def test_a_short_disconnect_does_not_trip() -> None:
    r = rig(disconnect_timeout_s=30.0)
    r.broker.disconnect()
    r.clock.advance(timedelta(seconds=10))
    r.broker.reconnect()
    r.clock.advance(timedelta(seconds=60))
    r.engine.housekeeping(r.clock())
    assert r.engine.killswitches.get(GLOBAL) is KillState.ACTIVE


def test_position_break_with_the_broker_halts_that_symbol() -> None:
    r = rig()
    buy_aapl(r)
    ours = r.engine.positions["AAPL"].quantity
    r.broker.matching.positions["AAPL"].quantity = ours - 100  # the broker knows of a sale we never saw
    breaks = r.engine.reconcile_positions()
    assert breaks == {"AAPL": (ours, ours - 100)}
    assert r.engine.killswitches.get("symbol:AAPL") is KillState.HALTED
    assert "difference -100" in r.changes[-1].reason and r.changes[-1].actor == "trigger:reconciliation_mismatch"


def test_matching_books_trip_nothing() -> None:
    r = rig()
    buy_aapl(r)
    assert r.engine.reconcile_positions() == {} and r.changes == []


def test_fill_for_an_order_never_sent_halts_the_symbol() -> None:
    r = rig()
    r.quote()
    r.engine.on_fill(Fill("x.1", "manual-tws-order", "AAPL", Side.BUY, D(10), D(100), D(1), T0))
    assert r.engine.killswitches.get("symbol:AAPL") is KillState.HALTED
    assert r.engine.positions["AAPL"].quantity == 10  # booked all the same: it happened at the broker
    assert "never sent" in r.changes[-1].reason


def test_a_trip_never_lowers_an_operators_halt() -> None:
    r = rig(daily_loss=D(5000), drawdown=None)
    buy_aapl(r)
    r.engine.set_killswitch(GLOBAL, KillState.HALTED, "operator", "ops@desk")
    r.quote(bid="90.00", ask="90.02")
    r.engine.housekeeping(r.clock())
    assert r.engine.killswitches.get(GLOBAL) is KillState.HALTED and len(r.changes) == 1


def test_a_trip_does_not_resume_when_its_condition_clears() -> None:
    r = rig(daily_loss=D(5000), drawdown=None)
    buy_aapl(r)
    r.quote(bid="90.00", ask="90.02")
    r.engine.housekeeping(r.clock())
    r.quote(bid="110.00", ask="110.02")
    r.engine.housekeeping(r.clock())
    assert r.engine.killswitches.get(GLOBAL) is KillState.REDUCE_ONLY


def test_a_latched_trigger_stays_quiet_after_an_operator_resumes() -> None:
    wires = TripWires(TriggerLimits(daily_loss=D(100), drawdown=None))
    assert [t.trigger for t in wires.on_equity(T0, D(1000))] == []
    assert [t.trigger for t in wires.on_equity(T0, D(850))] == [DAILY_LOSS]
    assert wires.on_equity(T0, D(800)) == []  # still beyond the limit: no second trip
    wires.on_equity(T0, D(950))  # recovered: re-armed
    assert [t.trigger for t in wires.on_equity(T0, D(890))] == [DAILY_LOSS]


def test_a_new_day_starts_a_new_baseline() -> None:
    wires = TripWires(TriggerLimits(daily_loss=D(100), drawdown=None))
    wires.on_equity(T0, D(1000))
    wires.on_equity(T0, D(920))
    assert wires.on_equity(T0 + timedelta(days=1), D(850)) == []  # -70 on the new day
    assert wires.day_start_equity == D(850)
