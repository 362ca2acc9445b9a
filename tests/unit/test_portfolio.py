"""The portfolio on its own: positions, P&L and commissions as the sum of the fills, corrections in place
of the fills they name, exposure marked one symbol at a time, equity from the books."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from engine.domain import Fill, Position, Quote, Side
from engine.portfolio import Portfolio
from tests.conftest import T0


def fill(exec_id: str, side: Side, qty: str, price: str, commission: str = "0", symbol: str = "AAPL",
         corrects: str | None = None) -> Fill:
    return Fill(exec_id, "tc-x", symbol, side, D(qty), D(price), D(commission), T0, corrects=corrects)


def test_a_fill_moves_the_position_realized_pnl_and_commissions() -> None:
    p = Portfolio(D(1000))
    p.book(fill("e1", Side.BUY, "10", "100", "1"), None)
    pos = p.book(fill("e2", Side.SELL, "4", "110", "1"), None)
    assert pos.quantity == D(6) and p.quantity("AAPL") == D(6)
    assert p.realized_pnl == D(40) and p.commissions == D(2)


def test_an_execution_id_is_new_once() -> None:
    p = Portfolio(D(1000))
    assert p.is_new_execution("e1") and not p.is_new_execution("e1")


def test_a_correction_replaces_its_fill_in_position_and_realized_pnl() -> None:
    p = Portfolio(D(1000))
    p.book(fill("e1", Side.BUY, "10", "100", "1"), None)
    p.book(fill("e2", Side.SELL, "10", "110", "1"), None)
    assert p.realized_pnl == D(100)
    corrected = p.correct(fill("e2.02", Side.SELL, "8", "105", "3", corrects="e2"))
    assert corrected is not None
    old, order, pos = corrected
    assert old.exec_id == "e2" and order is None
    assert pos.quantity == D(2) and p.realized_pnl == D(40) and p.commissions == D(4)


def test_a_correction_takes_the_place_of_its_fill_in_the_recent_fills_memory() -> None:
    p = Portfolio(D(1000))
    p.book(fill("e1", Side.BUY, "10", "100"), None)
    p.correct(fill("e1.02", Side.BUY, "9", "100", corrects="e1"))
    assert list(p.recent_fills) == ["e1.02"]
    assert p.correct(fill("e1.03", Side.BUY, "8", "100", corrects="e1.02")) is not None
    assert p.quantity("AAPL") == D(8)


def test_a_correction_of_a_fill_no_longer_in_memory_books_nothing() -> None:
    p = Portfolio(D(1000), recent_fills=1)
    p.book(fill("e1", Side.BUY, "10", "100"), None)
    p.book(fill("e2", Side.BUY, "1", "100"), None)
    assert p.correct(fill("e1.02", Side.BUY, "5", "100", corrects="e1")) is None
    assert p.quantity("AAPL") == D(11) and list(p.recent_fills) == ["e2"]


def test_exposure_is_marked_one_symbol_at_a_time_at_its_last_price() -> None:
    p = Portfolio(D(1000))
    p.book(fill("e1", Side.BUY, "10", "100"), None)
    assert p.mark("AAPL", D(5), D(100)) == D(1500)  # position 10 + working 5
    assert p.mark("MSFT", D(-2), D(50)) == D(-100)
    assert (p.exposure.gross, p.exposure.net) == (D(1600), D(1400))
    assert p.mark("AAPL", D(0)) == D(1000)  # the working order went; still at 100
    assert (p.exposure.gross, p.exposure.net) == (D(1100), D(900))
    assert p.exposure.by_symbol() == {"AAPL": D(1000), "MSFT": D(-100)}


def test_a_flat_symbol_with_nothing_working_leaves_the_exposure_book() -> None:
    p = Portfolio(D(1000))
    p.mark("MSFT", D(3), D(10))
    p.mark("MSFT", D(0))
    assert p.exposure.by_symbol() == {} and p.exposure.gross == 0


def test_book_equity_is_the_configured_equity_plus_realized_less_commissions_plus_open_positions_marked() -> None:
    p = Portfolio(D(1000))
    p.book(fill("e1", Side.BUY, "10", "100", "1"), None)
    p.book(fill("e2", Side.SELL, "5", "104", "1"), None)  # realized 20
    p.book(fill("e3", Side.SELL, "3", "50", symbol="KO"), None)  # short 3 at 50, no quote for it

    def quote(symbol: str) -> Quote | None:
        return Quote("AAPL", T0, D(107), D(109), D(1), D(1), D(108)) if symbol == "AAPL" else None

    assert p.marked_equity(quote) == D(1000) + D(20) - D(2) + D(5) * D(8)
    p.on_price("AAPL", D(108))
    assert p.book_equity() == p.marked_equity(quote)


def test_equity_follows_each_price_and_each_fill_without_re_marking_every_position() -> None:
    p = Portfolio(D(1000))
    p.on_price("AAPL", D(100))  # a price before any position: kept for the first fill
    p.book(fill("e1", Side.BUY, "10", "100"), None)
    assert p.book_equity() == D(1000)
    p.on_price("AAPL", D(103))
    assert p.unrealized == D(30) and p.book_equity() == D(1030)
    p.book(fill("e2", Side.SELL, "10", "103"), None)  # closed: realized 30, nothing open
    assert p.unrealized == 0 and p.book_equity() == D(1030)


def test_positions_from_an_earlier_session_carry_their_pnl_and_commissions() -> None:
    p = Portfolio(D(1000), [Position("AAPL", D(3), D(90), D(12), D(2)), Position("KO", D(0), D(0), D(-5), D(1))])
    assert p.quantity("AAPL") == D(3) and p.realized_pnl == D(7) and p.commissions == D(3)


def test_a_correction_of_an_opening_fill_moves_the_average_cost() -> None:
    p = Portfolio(D(1000))
    p.book(fill("e1", Side.BUY, "10", "100"), None)
    p.correct(fill("e1.02", Side.BUY, "10", "101", corrects="e1"))
    pos = p.positions["AAPL"]
    assert (pos.quantity, pos.avg_cost, p.realized_pnl) == (D(10), D(101), D(0))


def test_fills_booked_after_the_corrected_one_are_booked_again_on_the_corrected_position() -> None:
    p = Portfolio(D(1000))
    p.book(fill("e1", Side.BUY, "10", "100"), None)
    p.book(fill("e2", Side.SELL, "10", "110"), None)
    p.book(fill("k1", Side.BUY, "7", "50", symbol="KO"), None)
    p.book(fill("e3", Side.SELL, "4", "120"), None)  # opens a short at 120
    p.correct(fill("e2.02", Side.SELL, "8", "105", corrects="e2"))  # 2 left long at 100: e3 closes them
    pos = p.positions["AAPL"]
    assert (pos.quantity, pos.avg_cost) == (D(-2), D(120))
    assert p.realized_pnl == D(8 * 5 + 2 * 20) == pos.realized_pnl
    assert list(p.recent_fills) == ["e1", "e2.02", "k1", "e3"] and p.quantity("KO") == D(7)
    p.correct(fill("e3.02", Side.SELL, "2", "120", corrects="e3"))  # the replayed state serves a later correction
    assert (pos.quantity, p.realized_pnl) == (D(0), D(8 * 5 + 2 * 20))


@given(st.lists(st.tuples(st.sampled_from(["AAPL", "KO", "SPY"]), st.sampled_from([Side.BUY, Side.SELL]),
                          st.integers(1, 50), st.integers(90, 110), st.booleans()), max_size=60))
def test_equity_kept_incrementally_equals_every_position_marked_afresh(
        steps: list[tuple[str, Side, int, int, bool]]) -> None:
    p = Portfolio(D(10_000))
    quotes: dict[str, Quote] = {}
    for i, (symbol, side, qty, price, is_quote) in enumerate(steps):
        if is_quote:
            quotes[symbol] = Quote(symbol, T0, D(price) - 1, D(price) + 1, D(1), D(1), D(price))
            p.on_price(symbol, quotes[symbol].reference)
        else:
            p.book(fill(f"e{i}", side, str(qty), str(price), symbol=symbol), None)
    assert p.book_equity() == p.marked_equity(quotes.get)


def test_a_portfolio_with_no_recent_fills_memory_books_fills_and_cannot_correct_them() -> None:
    p = Portfolio(D(1000), recent_fills=0)
    p.book(fill("e1", Side.BUY, "10", "100"), None)
    assert p.quantity("AAPL") == D(10) and not p.recent_fills
    assert p.correct(fill("e1.02", Side.BUY, "9", "100", corrects="e1")) is None
