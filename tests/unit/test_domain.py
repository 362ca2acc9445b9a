from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

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
