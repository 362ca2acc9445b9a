"""Brackets on the in-process simulated broker: an entry with its stop loss and take profit, held at the broker.

The exits are children of the entry in one OCA group: they work only once the entry has filled, one filling
cancels the other, and they may only ever reduce the position.
"""

from __future__ import annotations

from decimal import Decimal as D

from broker.base import BrokerOrder
from broker.reconcile import order_from_broker
from engine.domain import Fill, Instrument, KillState, Order, OrderStatus, OrderType, RejectCode, Side, TimeInForce
from risk.killswitch import GLOBAL, symbol_scope
from tests.conftest import T0, signal_line
from tests.rig import Rig


def _bracket(r: Rig, sid: str = "b1", direction: str = "long", **extra: object) -> None:
    levels: dict[str, object] = {"stop_loss": {"distance": 2}, "take_profit": {"distance": 3}, **extra}
    r.engine.on_signal_line(signal_line(sid, "AAPL", direction, 0, **levels))


def _protected() -> tuple[Rig, Order, Order, Order]:
    """A long bracket whose entry filled at once: the rig, the entry, its stop loss and its take profit."""
    r = Rig()
    r.quote()
    _bracket(r)
    entry, stop, target = r.submitted
    return r, entry, stop, target


def _status(order: Order) -> OrderStatus:
    """Read afresh (the broker moves it between asserts)."""
    return order.status


def test_a_signal_with_stop_loss_and_take_profit_sends_an_entry_and_two_exits_in_one_oca_group() -> None:
    _, entry, stop, target = _protected()
    assert entry.intent.parent_id is None and not entry.intent.transmit
    assert [stop.intent.order_type, target.intent.order_type] == [OrderType.STP, OrderType.LMT]
    assert stop.intent.parent_id == target.intent.parent_id == entry.client_order_id
    assert stop.intent.oca_group == target.intent.oca_group == entry.client_order_id
    assert [stop.intent.transmit, target.intent.transmit] == [False, True]
    assert stop.intent.side is target.intent.side is Side.SELL
    assert stop.intent.quantity == target.intent.quantity == entry.intent.quantity
    assert stop.intent.tif is TimeInForce.GTC
    # the entry filled at the ask 100.02: the distances are measured from the reference price (last 100.00)
    assert stop.intent.stop_price == D("98") and target.intent.limit_price == D("103")


def test_a_bracket_is_sized_on_the_distance_to_its_stop_loss() -> None:
    plain, bracketed = Rig(), Rig()
    for r in (plain, bracketed):
        r.quote()
    plain.engine.on_signal_line(signal_line("p1", stop_distance=2))
    _bracket(bracketed)
    assert bracketed.submitted[0].intent.quantity == plain.submitted[0].intent.quantity


def test_exits_do_not_count_as_working_quantity() -> None:
    r = Rig()
    r.quote()
    _bracket(r)
    assert r.engine.book.working("AAPL") == 0  # the entry filled; its exits close only what it opened
    assert r.engine.portfolio.quantity("AAPL") == r.submitted[0].intent.quantity


def test_the_stop_loss_fills_closes_the_position_and_the_take_profit_is_cancelled() -> None:
    r, _, stop, target = _protected()
    r.quote(bid="97.90", ask="97.92")  # the last trades through the stop at 98
    assert stop.status is OrderStatus.FILLED
    assert target.status is OrderStatus.CANCELLED
    assert r.engine.portfolio.quantity("AAPL") == 0
    assert not r.engine.book.orders


def test_the_take_profit_fills_and_the_stop_loss_is_cancelled() -> None:
    r, _, stop, target = _protected()
    r.quote(bid="103.00", ask="103.02")
    assert target.status is OrderStatus.FILLED and stop.status is OrderStatus.CANCELLED
    assert r.engine.portfolio.quantity("AAPL") == 0


def test_a_short_bracket_puts_its_stop_above_and_its_target_below() -> None:
    r = Rig()
    r.quote()
    _bracket(r, direction="short")
    _, stop, target = r.submitted
    assert stop.intent.side is Side.BUY and stop.intent.stop_price == D("102")
    assert target.intent.limit_price == D("97")


def test_exits_wait_at_the_broker_until_the_entry_fills() -> None:
    r = Rig()
    r.quote()
    _bracket(r, order_type="LMT", limit_price=99, stop_loss=97, take_profit=101)
    entry, stop, target = r.submitted
    assert entry.status is OrderStatus.SUBMITTED
    r.quote(bid="96.00", ask="96.02")  # through the stop, but the entry has not filled: the stop must not work
    assert _status(entry) is OrderStatus.FILLED  # the limit buy at 99 fills on this quote...
    assert _status(stop) is OrderStatus.SUBMITTED  # ...and only then do its exits start working
    r.quote(bid="96.00", ask="96.02")
    assert _status(stop) is OrderStatus.FILLED and _status(target) is OrderStatus.CANCELLED
    assert r.engine.portfolio.quantity("AAPL") == 0


def test_a_stop_loss_on_the_wrong_side_of_the_entry_is_rejected_with_its_reason() -> None:
    r = Rig()
    r.quote()
    _bracket(r, stop_loss=101)
    assert not r.submitted
    assert r.rejected[0].code is RejectCode.BRACKET_PRICES
    assert "stop_loss 101 must lie below the entry price" in r.rejected[0].reason


def test_a_signal_that_closes_a_protected_position_cancels_its_exits_first() -> None:
    r, _, stop, target = _protected()
    r.engine.on_signal_line(signal_line("close", direction="flat", seconds=1))
    assert stop.status is OrderStatus.CANCELLED and target.status is OrderStatus.CANCELLED
    assert r.engine.portfolio.quantity("AAPL") == 0
    r.quote(bid="90.00", ask="90.02")  # far through the old stop: nothing may trade
    assert r.engine.portfolio.quantity("AAPL") == 0


def test_kill_keeps_the_exits_that_protect_an_open_position() -> None:
    r, _, stop, target = _protected()
    assert r.engine.set_killswitch(GLOBAL, KillState.HALTED, "drill", "ops") == 0
    assert stop.status is OrderStatus.SUBMITTED and target.status is OrderStatus.SUBMITTED
    r.quote(bid="97.90", ask="97.92")
    assert _status(stop) is OrderStatus.FILLED and r.engine.portfolio.quantity("AAPL") == 0


def test_kill_cancels_an_unfilled_brackets_exits_before_its_entry() -> None:
    r = Rig()
    r.quote()
    _bracket(r, order_type="LMT", limit_price=99, stop_loss=97, take_profit=101)
    entry, stop, target = r.submitted
    r.statuses.clear()
    assert r.engine.set_killswitch(symbol_scope("AAPL"), KillState.HALTED, "drill", "ops") == 3
    cancelled = [coid for coid, status in r.statuses if status is OrderStatus.PENDING_CANCEL]
    assert cancelled == [stop.client_order_id, target.client_order_id, entry.client_order_id]
    assert all(o.status is OrderStatus.CANCELLED for o in (entry, stop, target))


def test_a_flatten_kill_cancels_the_protection() -> None:
    r, _, stop, target = _protected()
    assert r.engine.set_killswitch(GLOBAL, KillState.HALTED, "drill", "ops", cancel_protection=True) == 2
    assert stop.status is OrderStatus.CANCELLED and target.status is OrderStatus.CANCELLED


def test_a_signal_that_reduces_a_protected_position_cuts_its_exits_to_what_is_left() -> None:
    r, entry, stop, target = _protected()
    qty = entry.intent.quantity
    # a smaller target for the same symbol: the sell leaves half the position, and half the protection
    r.engine.on_signal_line(signal_line("less", seconds=1, win_prob=0.55, payoff=1.5, max_qty=int(qty) // 2))
    left = qty // 2
    assert r.engine.portfolio.quantity("AAPL") == left
    assert _status(stop) is OrderStatus.SUBMITTED and stop.intent.quantity == left
    assert r.broker.matching.orders[stop.broker_order_id or 0].quantity == left  # cut at the broker too
    r.quote(bid="97.90", ask="97.92")
    assert r.engine.portfolio.quantity("AAPL") == 0  # closed by the stop, never flipped
    assert _status(target) is OrderStatus.CANCELLED


def test_two_brackets_on_one_position_are_cut_together_never_beyond_it() -> None:
    r = Rig()
    r.quote()
    _bracket(r, "b1", max_qty=300)
    _bracket(r, "b2", max_qty=700)  # adds 400: a second bracket protects that part
    assert r.engine.portfolio.quantity("AAPL") == 700
    stops = [o for o in r.submitted if o.intent.order_type is OrderType.STP]
    r.engine.on_signal_line(signal_line("less", seconds=1, win_prob=0.55, payoff=1.5, max_qty=400))
    assert r.engine.portfolio.quantity("AAPL") == 400
    assert sum(o.remaining for o in stops if not o.status.is_terminal) == 400
    r.quote(bid="95.90", ask="95.92")  # through both stops
    assert r.engine.portfolio.quantity("AAPL") == 0


def test_a_closing_signal_refused_by_a_kill_switch_leaves_the_protection_in_place() -> None:
    r, _, stop, target = _protected()
    r.engine.set_killswitch(GLOBAL, KillState.HALTED, "drill", "ops")
    r.engine.on_signal_line(signal_line("close", direction="flat", seconds=1))
    assert r.rejected[-1].code is RejectCode.KILLSWITCH
    assert stop.status is OrderStatus.SUBMITTED and target.status is OrderStatus.SUBMITTED
    r.quote(bid="97.90", ask="97.92")
    assert _status(stop) is OrderStatus.FILLED and r.engine.portfolio.quantity("AAPL") == 0


def test_an_exit_that_cannot_be_recorded_withdraws_the_whole_bracket() -> None:
    r = Rig()
    r.quote()

    def refuse_exits(order: Order, signal: object, raw: object, line_no: object) -> None:
        if order.intent.parent_id is not None:  # the database refusing the stop's row
            raise RuntimeError("row refused")

    r.bus.order_recorded += refuse_exits
    _bracket(r)
    assert r.engine.portfolio.quantity("AAPL") == 0  # the entry was held at the broker, then cancelled
    assert not r.engine.book.orders
    assert _status(r.submitted[0]) is OrderStatus.CANCELLED


def test_the_simulated_broker_holds_an_untransmitted_entry_until_its_last_exit_arrives() -> None:
    r = Rig()
    r.quote()
    seen: list[tuple[str, OrderStatus, int]] = []
    r.bus.order_status += lambda o, c: seen.append((o.client_order_id, c.to_status, len(r.submitted)))
    _bracket(r)
    acks = [(coid, n) for coid, status, n in seen if status is OrderStatus.SUBMITTED]
    assert acks[0] == ("tc-b1", 3)  # acknowledged only once all three orders had been handed over


def test_a_partly_filled_take_profit_leaves_the_stop_for_what_is_left() -> None:
    r, entry, stop, target = _protected()
    r.quote(bid="103.00", ask="103.02", size="300")  # the take profit sells 300
    left = entry.intent.quantity - 300
    assert r.engine.portfolio.quantity("AAPL") == left
    assert _status(stop) is OrderStatus.SUBMITTED and stop.remaining == left
    r.quote(bid="97.90", ask="97.92")
    assert r.engine.portfolio.quantity("AAPL") == 0  # closed, never flipped
    assert _status(target) is OrderStatus.CANCELLED and not r.engine.book.orders


def test_a_position_closed_by_an_order_we_did_not_send_takes_its_exits_with_it() -> None:
    r, entry, stop, target = _protected()
    # a close typed in TWS, found by reconciliation: the exits would now open a short
    r.engine.on_fill(Fill("manual.01", "manual-close", "AAPL", Side.SELL, entry.intent.quantity, D("100"), D(0),
                          T0, source="inferred"))
    assert r.engine.portfolio.quantity("AAPL") == 0
    assert _status(stop) is OrderStatus.CANCELLED and _status(target) is OrderStatus.CANCELLED


def test_an_exit_is_cut_back_when_someone_else_sells_part_of_the_position() -> None:
    r, entry, stop, _ = _protected()
    r.engine.on_fill(Fill("manual.02", "manual-trim", "AAPL", Side.SELL, entry.intent.quantity // 2, D("100"), D(0),
                          T0, source="inferred"))
    assert _status(stop) is OrderStatus.SUBMITTED  # kept, but no larger than what is left
    assert stop.remaining == r.engine.portfolio.quantity("AAPL") == entry.intent.quantity - entry.intent.quantity // 2


def test_exit_prices_are_rounded_to_the_tick_away_from_the_entry() -> None:
    r = Rig()
    r.quote()
    _bracket(r, stop_loss={"distance": 2.005}, take_profit={"distance": 3.005})
    _, stop, target = r.submitted
    assert stop.intent.stop_price == D("97.99") and target.intent.limit_price == D("103.01")


def test_an_exit_found_only_at_the_broker_is_adopted_as_an_exit_of_its_entry() -> None:
    adopted = order_from_broker(
        BrokerOrder("te-sl-x-1-AAPL", "AAPL", Side.SELL, D(100), D(0), OrderStatus.SUBMITTED, OrderType.STP, None,
                    D("95")), Instrument("AAPL"), T0)
    assert (adopted.intent.parent_id, adopted.intent.oca_group, adopted.intent.signal_id) == ("tc-x-1", "tc-x-1", "x-1")
    plain = order_from_broker(BrokerOrder("tc-x-1", "AAPL", Side.BUY, D(100), D(0), OrderStatus.SUBMITTED),
                              Instrument("AAPL"), T0)
    assert plain.intent.parent_id is None


def test_a_flatten_that_cannot_close_the_position_leaves_its_protection() -> None:
    r, _, stop, target = _protected()
    r.broker.disconnect()  # no closing order can leave: the stop must stay the position's protection
    assert r.engine.set_killswitch(GLOBAL, KillState.HALTED, "drill", "ops", cancel_protection=True) == 0
    assert stop.status is OrderStatus.SUBMITTED and target.status is OrderStatus.SUBMITTED


def test_a_bracket_with_a_stop_loss_alone_protects_the_entry() -> None:
    r = Rig()
    r.quote()
    r.engine.on_signal_line(signal_line("s1", stop_loss={"distance": 2}))
    entry, stop = r.submitted
    assert stop.intent.parent_id == entry.client_order_id and stop.intent.transmit
    assert _status(stop) is OrderStatus.SUBMITTED
    r.quote(bid="97.90", ask="97.92")
    assert _status(stop) is OrderStatus.FILLED and r.engine.portfolio.quantity("AAPL") == 0
