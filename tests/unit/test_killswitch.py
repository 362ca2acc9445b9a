from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain import Instrument, KillState, OrderIntent, Side
from risk.killswitch import GLOBAL, KillSwitchBoard, parse_scope, reduces_exposure


def intent(qty: D, strategy: str = "s", symbol: str = "AAPL", flatten: bool = False) -> OrderIntent:
    side = Side.BUY if qty > 0 else Side.SELL
    return OrderIntent("tc-1", "1", strategy, Instrument(symbol), side, abs(qty), flatten=flatten)


def test_active_board_lets_everything_through() -> None:
    assert KillSwitchBoard().gate(intent(D(10)), D(0), D(0)).allowed


def test_halted_rejects_new_orders_in_scope_and_names_the_scope() -> None:
    board = KillSwitchBoard({"symbol:AAPL": KillState.HALTED})
    decision = board.gate(intent(D(10)), D(0), D(0))
    assert not decision.allowed and "symbol:AAPL" in (decision.reason or "")
    assert board.gate(intent(D(10), symbol="MSFT"), D(0), D(0)).allowed


def test_halted_still_lets_an_operator_flatten_close_the_position() -> None:
    board = KillSwitchBoard({GLOBAL: KillState.HALTED})
    assert board.gate(intent(D(-100), flatten=True), D(100), D(0)).allowed
    assert not board.gate(intent(D(-150), flatten=True), D(100), D(0)).allowed  # would open a short


def test_reduce_only_never_opens_from_flat() -> None:
    board = KillSwitchBoard({"strategy:s": KillState.REDUCE_ONLY})
    assert not board.gate(intent(D(1)), D(0), D(0)).allowed
    assert not board.gate(intent(D(-1)), D(0), D(0)).allowed


def test_most_restrictive_scope_wins() -> None:
    board = KillSwitchBoard({GLOBAL: KillState.REDUCE_ONLY, "symbol:AAPL": KillState.HALTED})
    assert board.effective("s", "AAPL") == (KillState.HALTED, "symbol:AAPL")


def test_resuming_a_scope_clears_it() -> None:
    board = KillSwitchBoard({GLOBAL: KillState.HALTED})
    assert board.set(GLOBAL, KillState.ACTIVE) is KillState.HALTED
    assert board.snapshot() == {}


@pytest.mark.parametrize(("text", "scope"), [("global", "global"), ("symbol:aapl", "symbol:AAPL"),
                                             ("strategy:MeanRev", "strategy:MeanRev")])
def test_scope_parsing(text: str, scope: str) -> None:
    assert parse_scope(text) == scope


@pytest.mark.parametrize("text", ["", "account", "symbol:", "desk:x"])
def test_bad_scope_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="scope must be"):
        parse_scope(text)


qty = st.integers(-1000, 1000).map(D)


@given(position=qty, working=qty, order=qty.filter(lambda q: q != 0))
def test_reduce_only_never_lets_exposure_grow(position: D, working: D, order: D) -> None:
    board = KillSwitchBoard({GLOBAL: KillState.REDUCE_ONLY})
    if board.gate(intent(order), position, working).allowed:
        before = position + working
        after = before + order
        assert abs(after) < abs(before)
        assert before != 0 and (after == 0 or (after > 0) == (before > 0))


@given(position=qty, working=qty, order=qty)
def test_reducing_exposure_is_symmetric_in_sign(position: D, working: D, order: D) -> None:
    assert reduces_exposure(position, working, order) == reduces_exposure(-position, -working, -order)
