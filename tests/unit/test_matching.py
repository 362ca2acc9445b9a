from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from engine.domain import OrderType, Quote, Side, TimeInForce
from paper.matching import CommissionSchedule, MatchingEngine, SimOrder

T = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def quote(bid: str, ask: str, size: str = "100", ts: datetime = T, last: str | None = None) -> Quote:
    return Quote("AAPL", ts, D(bid), D(ask), D(size), D(size), D(last or bid))


def order(oid: int, qty: str, side: Side = Side.BUY, otype: OrderType = OrderType.MKT, limit: str | None = None,
          stop: str | None = None, tif: TimeInForce = TimeInForce.DAY) -> SimOrder:
    return SimOrder(oid, oid, f"r{oid}", "AAPL", side, D(qty), otype, D(limit) if limit else None,
                    D(stop) if stop else None, tif)


def test_market_buy_takes_the_ask_plus_slippage() -> None:
    m = MatchingEngine(slippage_ticks=2)
    m.on_quote(quote("10.00", "10.02"))
    (ex,) = m.add(order(1, "50"), T)
    assert ex.price == D("10.04") and ex.quantity == D("50") and ex.order.status == "Filled"


def test_order_larger_than_displayed_size_fills_across_several_quotes() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "100"))
    first = m.add(order(1, "250"), T)
    assert [e.quantity for e in first] == [D("100")]
    second = m.on_quote(quote("10.01", "10.03", "100", T + timedelta(seconds=1)))
    third = m.on_quote(quote("10.02", "10.04", "100", T + timedelta(seconds=2)))
    assert [e.quantity for e in second + third] == [D("100"), D("50")]
    assert third[0].order.status == "Filled"
    assert third[0].avg_price == (D("10.02") * 100 + D("10.03") * 100 + D("10.04") * 50) / 250


def test_two_orders_cannot_both_take_the_same_displayed_size() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "100"))
    m.add(order(1, "80"), T)
    (ex,) = m.add(order(2, "80"), T)
    assert ex.quantity == D("20")


def test_limit_rests_until_the_market_crosses_it_and_fills_at_the_touch() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02"))
    assert m.add(order(1, "10", otype=OrderType.LMT, limit="9.95"), T) == []
    assert m.on_quote(quote("9.96", "9.98", ts=T + timedelta(seconds=1))) == []
    (ex,) = m.on_quote(quote("9.92", "9.94", ts=T + timedelta(seconds=2)))
    assert ex.price == D("9.94")


def test_sell_stop_triggers_on_last_and_then_trades_as_market() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", last="10.01"))
    assert m.add(order(1, "10", Side.SELL, OrderType.STP, stop="9.90"), T) == []
    (ex,) = m.on_quote(quote("9.88", "9.90", ts=T + timedelta(seconds=1), last="9.89"))
    assert ex.price == D("9.88")


def test_ioc_remainder_is_cancelled() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "30"))
    (ex,) = m.add(order(1, "100", tif=TimeInForce.IOC), T)
    assert ex.quantity == D("30") and ex.order.status == "Cancelled"


def test_latency_delays_the_fill_until_a_later_quote() -> None:
    m = MatchingEngine(latency=timedelta(milliseconds=50))
    m.on_quote(quote("10.00", "10.02"))
    assert m.add(order(1, "10"), T) == []
    assert m.on_quote(quote("10.00", "10.02", ts=T + timedelta(milliseconds=10))) == []
    assert len(m.on_quote(quote("10.00", "10.02", ts=T + timedelta(milliseconds=60)))) == 1


def test_commission_has_a_per_order_minimum_across_partial_fills() -> None:
    m = MatchingEngine(CommissionSchedule(D("0.005"), D("1.00"), D("0.01")))
    m.on_quote(quote("100.00", "100.02", "100"))
    first = m.add(order(1, "300"), T)
    later = m.on_quote(quote("100.00", "100.02", "200", T + timedelta(seconds=1)))
    assert first[0].commission == D("1.00")  # 100 * 0.005 = 0.50, minimum 1.00
    assert first[0].commission + later[0].commission == D("1.50")  # 300 * 0.005


def test_commission_is_capped_at_a_share_of_trade_value() -> None:
    assert CommissionSchedule().order_total(D("1000"), D("100")) == D("1.00")
    assert CommissionSchedule(min_per_order=D("1")).order_total(D("10"), D("50")) == D("0.50")


def test_cancel_of_a_filled_order_is_refused() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02"))
    m.add(order(1, "10"), T)
    assert m.cancel(1) is None and m.cancel(99) is None


def test_broker_side_position_is_the_sum_of_executions() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    m.add(order(1, "100"), T)
    m.add(order(2, "30", Side.SELL), T)
    assert m.positions["AAPL"].quantity == D("70")


def test_modify_changes_a_working_order() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02"))
    m.add(order(1, "10", otype=OrderType.LMT, limit="9.00"), T)
    assert m.modify(1, D("20"), D("9.50"), None).limit_price == D("9.50")
    assert m.working("AAPL")[0].quantity == D("20")


def _bracket(m: MatchingEngine, entry_limit: str = "9.00") -> tuple[SimOrder, SimOrder, SimOrder]:
    entry = order(1, "100", limit=entry_limit, otype=OrderType.LMT)
    stop = order(2, "100", Side.SELL, OrderType.STP, stop="9.50")
    target = order(3, "100", Side.SELL, OrderType.LMT, limit="11.00")
    for child in (stop, target):
        child.parent_id, child.parent, child.oca_group = 1, entry, "b"  # the broker hands the entry over
    for o in (entry, stop, target):
        m.add(o, T)
    return entry, stop, target


def test_a_child_order_waits_presubmitted_until_its_parent_fills() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    _, stop, _ = _bracket(m)
    assert stop.status == "PreSubmitted"
    assert m.on_quote(quote("9.40", "9.42", "1000")) == []  # through the stop, but the entry has not filled


def test_children_start_working_once_the_parent_has_filled() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    entry, stop, target = _bracket(m)
    m.on_quote(quote("8.98", "9.00", "1000"))  # the entry buys at 9.00
    assert entry.status == "Filled" and (stop.status, target.status) == ("PreSubmitted", "Submitted")
    (ex,) = m.on_quote(quote("11.00", "11.02", "1000"))
    assert ex.order is target


def test_an_exit_filling_whole_cancels_the_other_exit_of_its_oca_group() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    _, _, target = _bracket(m, entry_limit="10.02")  # fills at once
    (ex,) = m.on_quote(quote("9.40", "9.42", "1000"))
    assert ex.order.ref == "r2"
    assert [(o.ref, why) for o, why in m.drain_cancelled()] == [("r3", "OCA group b: order 2 executed")]
    assert target.status == "Cancelled" and m.working() == []


def test_cancelling_a_parent_cancels_its_waiting_children() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    _bracket(m)
    m.cancel(1)
    assert sorted(o.ref for o, _ in m.drain_cancelled()) == ["r2", "r3"]


def test_a_child_of_an_unknown_parent_is_cancelled_at_once() -> None:
    m = MatchingEngine()
    child = order(5, "10", Side.SELL, OrderType.STP, stop="9.00")
    child.parent_id = 0
    assert m.add(child, T) == [] and child.status == "Cancelled"


def test_the_exchange_forgets_an_order_once_it_is_done() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    m.add(order(1, "10"), T)  # fills at once
    resting = order(2, "10", limit="9.00", otype=OrderType.LMT)
    m.add(resting, T)
    m.cancel(2)
    assert m.orders == {}  # a long session's memory does not grow with the orders it handled


def test_a_held_child_cancelled_before_its_parent_fills_stays_cancelled() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    _, stop, _ = _bracket(m)
    m.cancel(2)
    m.on_quote(quote("8.98", "9.00", "1000"))  # the entry fills: only the take profit starts working
    assert stop.status == "Cancelled" and [o.ref for o in m.working()] == ["r3"]


def test_a_child_refused_for_want_of_a_parent_is_not_kept() -> None:
    m = MatchingEngine()
    child = order(5, "10", Side.SELL, OrderType.STP, stop="9.00")
    child.parent_id = 0
    m.add(child, T)
    assert m.orders == {}


def test_a_partly_filled_exit_reduces_the_other_by_as_much_not_cancels_it() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    _, stop, target = _bracket(m, entry_limit="10.02")
    m.on_quote(quote("11.00", "11.02", "30"))  # the take profit sells 30 of 100
    assert (target.filled, stop.quantity, stop.status) == (D(30), D(70), "Submitted")
    (ex,) = m.on_quote(quote("9.40", "9.42", "1000"))
    assert ex.order is stop and ex.quantity == D(70)  # the stop closes what is left, no more
    assert [o.ref for o, _ in m.drain_cancelled()] == ["r3"] and m.positions["AAPL"].quantity == 0


def test_oca_type_1_cancels_the_others_on_any_execution() -> None:
    m = MatchingEngine()
    m.on_quote(quote("10.00", "10.02", "1000"))
    _, stop, target = _bracket(m, entry_limit="10.02")
    stop.oca_type = target.oca_type = 1
    m.on_quote(quote("11.00", "11.02", "30"))
    assert stop.status == "Cancelled"
