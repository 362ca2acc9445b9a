"""The order book on its own: live orders, what they leave working per symbol, expiries, own prices."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

from engine.domain import Fill, Instrument, Order, OrderIntent, OrderStatus, OrderType, Side
from engine.order_book import OrderBook
from tests.conftest import T0


def order(coid: str, side: Side, qty: str, symbol: str = "AAPL", limit: str | None = "100", *,
          order_type: OrderType = OrderType.LMT, ttl_s: float | None = None, flatten: bool = False) -> Order:
    expires = T0 + timedelta(seconds=ttl_s) if ttl_s is not None else None
    intent = OrderIntent(coid, None, "s", Instrument(symbol), side, D(qty), order_type,
                         D(limit) if limit is not None else None, None, ts=T0, expires_at=expires, flatten=flatten)
    return Order(intent, T0)


def fill(exec_id: str, o: Order, qty: str, price: str = "100", commission: str = "0") -> Fill:
    return Fill(exec_id, o.client_order_id, o.symbol, o.intent.side, D(qty), D(price), D(commission), T0)


def test_a_new_order_works_its_whole_quantity_signed_by_its_side() -> None:
    book = OrderBook()
    assert book.add(order("b", Side.BUY, "10")) == D(10)
    assert book.add(order("s", Side.SELL, "4")) == D(6)
    assert book.working("AAPL") == D(6) and book.working("MSFT") == 0


def test_working_quantity_drops_by_each_partial_fill() -> None:
    book = OrderBook()
    o = order("b", Side.BUY, "10")
    book.add(o)
    book.fill(o, fill("e1", o, "3"))
    book.fill(o, fill("e2", o, "2"))
    assert book.working("AAPL") == D(5) and o.filled_qty == D(5) and o.remaining == D(5)


def test_a_cancelled_partly_filled_order_stops_working_its_remainder_when_it_retires() -> None:
    book = OrderBook()
    o = order("b", Side.BUY, "10")
    book.add(o)
    book.fill(o, fill("e1", o, "3"))
    o.status = OrderStatus.CANCELLED
    assert book.retire(o) == 0
    assert book.working("AAPL") == 0 and "b" not in book.orders and not book.live_by_symbol["AAPL"]


def test_a_cancelled_sell_gives_back_its_negative_working_quantity() -> None:
    book = OrderBook()
    book.add(order("b", Side.BUY, "10"))
    s = order("s", Side.SELL, "4")
    book.add(s)
    assert book.retire(s) == D(10)


def test_a_filled_order_retires_without_moving_the_working_quantity() -> None:
    book = OrderBook()
    o = order("b", Side.BUY, "10")
    book.add(o)
    book.fill(o, fill("e1", o, "10"))
    assert book.retire(o) is None and book.working("AAPL") == 0


def test_a_retired_order_forgets_its_history() -> None:
    book = OrderBook()
    o = order("b", Side.BUY, "1")
    book.add(o)
    o.transition(OrderStatus.SUBMITTED, T0)
    book.retire(o)
    assert o.history == []


def test_an_overfill_stops_only_what_was_left_working_and_grows_the_order_to_what_the_broker_executed() -> None:
    book = OrderBook()
    o = order("b", Side.BUY, "10")
    book.add(o)
    book.fill(o, fill("e1", o, "4"))
    book.fill(o, fill("e2", o, "9"))  # 6 were left
    assert book.working("AAPL") == 0 and o.intent.quantity == D(13) and o.filled_qty == D(13)


def test_an_adopted_order_works_only_its_unfilled_remainder() -> None:
    book = OrderBook()
    o = order("b", Side.SELL, "10")
    o.filled_qty = D(7)
    assert book.adopt(o) == D(-3) and book.orders["b"] is o


def test_a_correction_of_a_live_orders_fill_moves_its_working_quantity_and_average_price() -> None:
    book = OrderBook()
    o = order("b", Side.BUY, "10")
    book.add(o)
    old = fill("e1", o, "4", "100", "1")
    book.fill(o, old)
    book.correct(o, old, fill("e1.02", o, "5", "102", "2"))
    assert o.filled_qty == D(5) and o.avg_fill_price == D(102) and o.commission == D(2)
    assert book.working("AAPL") == D(5)


def test_a_correction_of_a_retired_orders_fill_leaves_the_working_quantity_alone() -> None:
    book = OrderBook()
    o = order("b", Side.BUY, "4")
    book.add(o)
    old = fill("e1", o, "4")
    book.fill(o, old)
    book.retire(o)
    book.correct(o, old, fill("e1.02", o, "3"))
    assert o.filled_qty == D(3) and book.working("AAPL") == 0


def test_expired_reports_each_live_order_past_its_ttl_once() -> None:
    book = OrderBook()
    book.add(order("a", Side.BUY, "1", ttl_s=5))
    book.add(order("b", Side.BUY, "1", ttl_s=10))
    gone = order("c", Side.BUY, "1", ttl_s=1)
    book.add(gone)
    gone.status = OrderStatus.CANCELLED
    book.retire(gone)
    assert book.expired(T0 + timedelta(seconds=6)) == ["a"]
    assert book.expired(T0 + timedelta(seconds=6)) == []
    assert book.expired(T0 + timedelta(seconds=10)) == ["b"]


def test_opposing_orders_are_the_other_sides_live_orders_except_flattens_and_those_being_cancelled() -> None:
    book = OrderBook()
    book.add(order("buy", Side.BUY, "1"))
    book.add(order("sell", Side.SELL, "1"))
    book.add(order("flat", Side.SELL, "1", flatten=True))
    cancelling = order("gone", Side.SELL, "1")
    cancelling.status = OrderStatus.PENDING_CANCEL
    book.add(cancelling)
    assert book.opposing("AAPL", Side.BUY) == ["sell"]
    assert book.opposing("MSFT", Side.BUY) == []


def test_cancelling_is_the_signed_remainder_of_orders_awaiting_their_cancel() -> None:
    book = OrderBook()
    a = order("a", Side.SELL, "5")
    b = order("b", Side.BUY, "2")
    for o in (a, b):
        book.add(o)
    a.status = OrderStatus.PENDING_CANCEL
    assert book.cancelling("AAPL") == D(-5) and book.cancelling("MSFT") == 0


def test_own_best_prices_skip_stops_and_orders_being_cancelled_and_a_market_buy_crosses_everything() -> None:
    book = OrderBook()
    book.add(order("b1", Side.BUY, "1", limit="99"))
    book.add(order("b2", Side.BUY, "1", limit="98"))
    book.add(order("stp", Side.BUY, "1", limit="105", order_type=OrderType.STP_LMT))
    book.add(order("s1", Side.SELL, "1", limit="101"))
    away = order("s2", Side.SELL, "1", limit="99.5")
    away.status = OrderStatus.PENDING_CANCEL
    book.add(away)
    assert book.own_best("AAPL") == (D(99), D(101))
    book.add(order("mkt", Side.BUY, "1", limit=None, order_type=OrderType.MKT))
    bid, _ = book.own_best("AAPL")
    assert bid is not None and bid > D(10) ** 9
    assert book.own_best("MSFT") == (None, None)


def test_symbol_of_names_a_live_orders_symbol_only() -> None:
    book = OrderBook()
    book.add(order("b", Side.BUY, "1", symbol="MSFT"))
    assert book.symbol_of("b") == "MSFT" and book.symbol_of("x") is None and book.symbol_of(None) is None


def exit_order(coid: str, parent: str, side: Side = Side.SELL, qty: str = "10") -> Order:
    intent = OrderIntent(coid, None, "s", Instrument("AAPL"), side, D(qty), OrderType.STP, None, D("95"), ts=T0,
                         parent_id=parent, oca_group=parent)
    return Order(intent, T0)


def test_a_brackets_exits_never_count_as_working_quantity() -> None:
    book = OrderBook()
    entry = order("e", Side.BUY, "10")
    book.add(entry)
    stop = exit_order("sl", "e")
    assert book.add(stop) == D(10)
    book.fill(stop, fill("x1", stop, "4"))
    assert book.working("AAPL") == D(10)
    stop.status = OrderStatus.PENDING_CANCEL
    assert book.cancelling("AAPL") == 0
    book.retire(stop)
    assert book.working("AAPL") == D(10) and book.exits_by_symbol["AAPL"] == 0


def test_exits_protect_the_position_only_once_their_entry_is_done() -> None:
    book = OrderBook()
    entry, stop = order("e", Side.BUY, "10"), exit_order("sl", "e")
    book.add(entry)
    book.add(stop)
    assert book.protection("AAPL") == []
    entry.status = OrderStatus.FILLED
    book.retire(entry)
    assert book.protection("AAPL") == [stop]


def test_an_exit_is_neither_superseded_by_a_new_target_nor_a_resting_price_for_the_self_cross_check() -> None:
    book = OrderBook()
    book.add(order("e", Side.BUY, "10"))
    book.add(exit_order("tp", "e"))
    assert book.opposing("AAPL", Side.BUY) == []
    assert book.own_best("AAPL") == (D(100), None)
