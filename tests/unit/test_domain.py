from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain import (
    ORDER_TRANSITIONS,
    Fill,
    IllegalTransition,
    Instrument,
    Order,
    OrderIntent,
    OrderStatus,
    Position,
    Side,
)

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
AAPL = Instrument("AAPL")


def order(qty: str = "100", side: Side = Side.BUY) -> Order:
    return Order(OrderIntent("tc-1", "1", "s", AAPL, side, D(qty)), NOW)


def fill(qty: str, price: str, side: Side = Side.BUY, exec_id: str = "e1") -> Fill:
    return Fill(exec_id, "tc-1", "AAPL", side, D(qty), D(price), D("1"), NOW)


def test_order_follows_the_happy_path_to_filled() -> None:
    o = order()
    for status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
        o.transition(status, NOW)
    assert o.status is OrderStatus.FILLED
    assert [c.to_status for c in o.history] == [OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED,
                                                 OrderStatus.FILLED]


@pytest.mark.parametrize("terminal", [OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED])
def test_terminal_status_admits_no_further_transition(terminal: OrderStatus) -> None:
    o = order()
    o.status = terminal
    for target in OrderStatus:
        with pytest.raises(IllegalTransition):
            o.transition(target, NOW)


def test_illegal_transition_names_the_order_and_both_states() -> None:
    o = order()
    o.transition(OrderStatus.SUBMITTED, NOW)
    with pytest.raises(IllegalTransition, match=r"tc-1: illegal transition Submitted -> PendingNew"):
        o.transition(OrderStatus.PENDING_NEW, NOW)
    assert o.status is OrderStatus.SUBMITTED


def test_pending_cancel_may_still_fill_because_a_cancel_can_race_a_fill() -> None:
    assert OrderStatus.FILLED in ORDER_TRANSITIONS[OrderStatus.PENDING_CANCEL]


def test_order_fill_beyond_remaining_quantity_is_refused() -> None:
    o = order("10")
    o.apply_fill(D("6"), D("10"), D("1"))
    with pytest.raises(ValueError, match="remaining"):
        o.apply_fill(D("5"), D("10"), D("1"))


def test_order_average_fill_price_is_quantity_weighted() -> None:
    o = order("30")
    o.apply_fill(D("10"), D("100"), D("0"))
    o.apply_fill(D("20"), D("103"), D("0"))
    assert o.avg_fill_price == D("102")


def test_position_realizes_pnl_when_reducing_and_keeps_cost_of_the_rest() -> None:
    p = Position("AAPL")
    p.apply(fill("100", "10.00"))
    realized = p.apply(fill("40", "12.50", Side.SELL))
    assert realized == D("100.00")
    assert p.quantity == D("60") and p.avg_cost == D("10.00")


def test_position_flipping_through_zero_opens_the_remainder_at_the_fill_price() -> None:
    p = Position("AAPL")
    p.apply(fill("100", "10"))
    p.apply(fill("150", "9", Side.SELL))
    assert p.quantity == D("-50") and p.avg_cost == D("9") and p.realized_pnl == D("-100")


def test_short_position_gains_when_price_falls() -> None:
    p = Position("AAPL")
    p.apply(fill("10", "50", Side.SELL))
    assert p.unrealized(D("45")) == D("50")


def test_a_position_closed_in_parts_realizes_exactly_its_proceeds_less_its_cost() -> None:
    """The average cost 100.333... is rounded; the P&L is not: 2 x 102 + 103 - (100 + 100 + 101) = 6."""
    p = Position("AAPL")
    for price in ("100", "100", "101"):
        p.apply(fill("1", price))
    p.apply(fill("2", "102", Side.SELL))
    p.apply(fill("1", "103", Side.SELL))
    assert p.quantity == 0 and str(p.realized_pnl) == "6"  # not 5.999...9 nor 6.000...0


def test_a_short_position_closed_in_parts_realizes_exactly_too() -> None:
    p = Position("AAPL")
    for qty, price in (("3", "50.01"), ("4", "50.02")):
        p.apply(fill(qty, price, Side.SELL))
    for qty, price in (("5", "49.97"), ("2", "50.10")):
        p.apply(fill(qty, price))
    assert p.quantity == 0 and p.realized_pnl == D("3") * D("50.01") + 4 * D("50.02") - 5 * D("49.97") - 2 * D("50.10")
    assert str(p.realized_pnl) == "0.06"


def test_a_position_loaded_from_its_row_starts_from_its_average_cost() -> None:
    p = Position("AAPL", D("10"), D("12.5"), D("-3"), D("1"))  # as repositories.rows loads it
    p.apply(fill("10", "13", Side.SELL))
    assert p.realized_pnl == D("2") and p.quantity == 0 and p.avg_cost == 0


@given(st.lists(st.tuples(st.integers(1, 500), st.integers(1, 100_000)), min_size=1, max_size=12),
       st.booleans())
def test_a_position_that_ends_flat_realized_exactly_what_its_sells_less_its_buys(
        lots: list[tuple[int, int]], short: bool) -> None:
    """Opened in lots, closed in other lots (the same total), in cents: every leftover of the rounded average
    cancels, whatever the split. The sum of every fill's cash is the P&L to the last digit."""
    opening, closing = (Side.SELL, Side.BUY) if short else (Side.BUY, Side.SELL)
    p = Position("AAPL")
    cash = D(0)
    for qty, cents in lots:
        p.apply(fill(str(qty), str(D(cents) / 100), opening))
        cash += D(qty) * D(cents) / 100 * (1 if short else -1)
    total = sum(q for q, _ in lots)
    for i, (qty, cents) in enumerate(reversed(lots)):  # the same quantities back at other prices
        price = D(cents + 7 * (i + 1)) / 100
        p.apply(fill(str(qty), str(price), closing))
        cash += D(qty) * price * (-1 if short else 1)
    assert p.quantity == 0 and total > 0
    assert p.realized_pnl == cash and p.realized_pnl.as_tuple().exponent == -2  # to the cent, no leftover digits


@pytest.mark.parametrize(
    ("price", "side", "expected"),
    [("10.037", Side.BUY, "10.03"), ("10.031", Side.SELL, "10.04"), ("10.035", None, "10.04")],
)
def test_prices_round_to_the_tick_never_worsening_a_limit(price: str, side: Side | None, expected: str) -> None:
    assert AAPL.round_price(D(price), side) == D(expected)


def test_quantity_rounds_toward_zero_to_whole_lots() -> None:
    inst = Instrument("X", lot_size=D("100"))
    assert inst.round_lots(D("250")) == D("200")
    assert inst.round_lots(D("-250")) == D("-200")


def test_a_price_on_the_tick_keeps_the_ticks_digits_never_an_exponent() -> None:
    assert str(AAPL.round_price(D("90.0"), Side.BUY)) == "90.00"  # was 9E+1
    assert str(AAPL.round_price(D("100"))) == "100.00"
