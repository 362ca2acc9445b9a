from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from engine.domain import Instrument, OrderIntent, OrderType, Quote, Side
from risk.checks import (
    DEFAULT_CHECKS,
    LIMIT_FIELDS,
    CheckContext,
    ExposureBook,
    Limits,
    RateWindow,
    RecentOrders,
    RiskLimits,
    check_connectivity,
    check_daily_loss,
    check_duplicate_order,
    check_exposure,
    check_instrument,
    check_market_data,
    check_order_rate,
    check_order_size,
    check_position_limit,
    check_price_collar,
    check_self_cross,
    run_checks,
)

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
QUOTE = Quote("AAPL", NOW, D("99.99"), D("100.01"), D("500"), D("500"), D("100.00"))


def intent(qty: str = "10", side: Side = Side.BUY, limit: str | None = None, inst: Instrument | None = None,
           ) -> OrderIntent:
    return OrderIntent("tc-1", "1", "s", inst or Instrument("AAPL"), side, D(qty),
                       OrderType.LMT if limit else OrderType.MKT, D(limit) if limit else None)


def ctx(position: str = "0", working: str = "0", quote: Quote | None = QUOTE, **kw: Any) -> CheckContext:
    """A context for a $1M account; keyword arguments naming a limit set that limit, others a context field."""
    limits = {k: v for k, v in kw.items() if k in LIMIT_FIELDS}
    fields = {k: v for k, v in kw.items() if k not in LIMIT_FIELDS}
    fields.setdefault("equity", D(1_000_000))
    return CheckContext(NOW, quote, D(position), D(working), replace(Limits(), **limits), **fields)


def test_a_normal_order_passes_every_default_check() -> None:
    assert run_checks(DEFAULT_CHECKS, intent(), ctx()) is None


def test_quantity_above_max_is_a_fat_finger() -> None:
    r = check_order_size(intent("101"), ctx(max_order_qty=D("100")))
    assert r is not None and r.code == "max_order_qty"


def test_notional_above_max_is_a_fat_finger() -> None:
    r = check_order_size(intent("20"), ctx(max_order_notional=D("1000")))
    assert r is not None and r.code == "max_order_notional" and "2000.00" in r.detail


def test_projected_position_counts_working_orders() -> None:
    r = check_position_limit(intent("10"), ctx(position="80", working="15", max_position_qty=D("100")))
    assert r is not None and r.code == "max_position_qty"


def test_reducing_order_passes_position_limits_even_when_over_them() -> None:
    assert check_position_limit(intent("10", Side.SELL), ctx(position="500", max_position_qty=D("100"))) is None


def test_limit_price_through_the_collar_is_rejected() -> None:
    r = check_price_collar(intent(limit="106.00"), ctx(price_collar_pct=D("0.05")))
    assert r is not None and r.code == "price_collar"


def test_passive_limit_far_from_the_market_is_not_a_collar_breach() -> None:
    assert check_price_collar(intent(limit="50.00"), ctx(price_collar_pct=D("0.05"))) is None
    assert check_price_collar(intent(limit="150.00", side=Side.SELL), ctx(price_collar_pct=D("0.05"))) is None


def test_stale_quote_is_rejected() -> None:
    old = Quote("AAPL", NOW - timedelta(seconds=10), D("1"), D("1.01"), D("1"), D("1"), D("1"))
    r = check_market_data(intent(), ctx(quote=old, max_quote_age_s=5.0))
    assert r is not None and r.code == "stale_market_data"


def test_missing_quote_fails_closed() -> None:
    r = check_market_data(intent(), ctx(quote=None))
    assert r is not None and r.code == "no_market_data"


@pytest.mark.parametrize(
    ("order", "code"),
    [
        (intent(limit="100.005"), "off_tick"),
        (intent("150", inst=Instrument("AAPL", lot_size=D("100"))), "lot_size"),
        (intent(inst=Instrument("AAPL", tradable=False)), "not_tradable"),
        (intent("0"), "bad_quantity"),
    ],
)
def test_reference_data_checks(order: OrderIntent, code: str) -> None:
    r = check_instrument(order, ctx())
    assert r is not None and r.code == code


def test_symbol_override_wins_over_strategy_override_over_default() -> None:
    limits = RiskLimits(Limits(max_order_qty=D("100")), {"s": {"max_order_qty": D("50")}},
                        {"AAPL": {"max_order_qty": D("5")}})
    assert limits.for_order("s", "AAPL").max_order_qty == D("5")
    assert limits.for_order("s", "MSFT").max_order_qty == D("50")
    assert limits.for_order("t", "MSFT").max_order_qty == D("100")


def test_unknown_override_key_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="max_ordr_qty"):
        RiskLimits(Limits(), {"s": {"max_ordr_qty": 1}})


# -- exposure, credit, loss ---------------------------------------------------------------------------
def test_gross_exposure_counts_every_symbol_of_the_account() -> None:
    r = check_exposure(intent("100"), ctx(gross_exposure=D("995000"), max_gross_exposure=D("1000000")))
    assert r is not None and r.code == "max_gross_exposure"


def test_net_exposure_limit_rejects_orders_that_push_net_further_out() -> None:
    c = ctx(gross_exposure=D("600000"), net_exposure=D("600000"), max_net_exposure=D("600500"))
    r = check_exposure(intent("10"), c)
    assert r is not None and r.code == "max_net_exposure"


def test_an_order_that_shrinks_exposure_passes_exposure_limits_when_over_them() -> None:
    c = ctx(position="100", gross_exposure=D("9000000"), net_exposure=D("9000000"), symbol_exposure=D("10000"))
    assert check_exposure(intent("50", Side.SELL), c) is None


def test_buying_power_is_equity_times_leverage_less_exposure_held() -> None:
    c = ctx(equity=D("10000"), gross_exposure=D("19500"), max_leverage=D("2"))
    assert check_exposure(intent("5"), c) is None  # adds 500: exactly the 500 left
    r = check_exposure(intent("6"), c)
    assert r is not None and r.code == "buying_power" and "buying power left 500.00" in r.detail


def test_the_accounts_available_funds_cap_what_an_order_may_add() -> None:
    c = ctx(available_funds=D("250"), max_leverage=D("2"))  # IB says 250 left: 500 of exposure at 2x
    assert check_exposure(intent("5"), c) is None  # adds 500 at 100
    r = check_exposure(intent("6"), c)
    assert r is not None and r.code == "buying_power" and "available funds 250.00" in r.detail
    assert check_exposure(intent("6"), ctx(max_leverage=D("2"))) is None  # no word from the broker: equity rules


def test_no_equity_means_no_buying_power() -> None:
    r = check_exposure(intent("1"), ctx(equity=D("0")))
    assert r is not None and r.code == "buying_power"


def test_beyond_the_daily_loss_only_reducing_orders_pass() -> None:
    r = check_daily_loss(intent("10"), ctx(day_pnl=D("-50001"), max_daily_loss=D("50000")))
    assert r is not None and r.code == "daily_loss"
    assert check_daily_loss(intent("10", Side.SELL), ctx(position="10", day_pnl=D("-60000"))) is None
    assert check_daily_loss(intent("10"), ctx(day_pnl=D("-49999"), max_daily_loss=D("50000"))) is None


# -- collars in ticks, rates, duplicates, self-cross -------------------------------------------------
def test_collar_in_ticks_catches_what_a_percentage_misses_on_low_priced_symbols() -> None:
    penny = Quote("AAPL", NOW, D("0.50"), D("0.51"), D("1"), D("1"), D("0.50"))
    c = ctx(quote=penny, price_collar_pct=D("0.50"), price_collar_ticks=5)
    assert check_price_collar(intent(limit="0.55"), c) is None
    r = check_price_collar(intent(limit="0.56"), c)
    assert r is not None and r.code == "price_collar" and "6 ticks" in r.detail


def test_order_rate_is_limited_per_account_and_per_symbol() -> None:
    r = check_order_rate(intent(), ctx(orders_last_s=40, max_orders_per_s=40))
    assert r is not None and r.code == "order_rate"
    r = check_order_rate(intent(), ctx(symbol_orders_last_s=3, max_symbol_orders_per_s=3))
    assert r is not None and "AAPL orders" in r.detail
    assert check_order_rate(intent(), ctx(orders_last_s=39, symbol_orders_last_s=2, max_symbol_orders_per_s=3)) is None


def test_default_order_rate_stays_under_ib_pacing() -> None:
    rate = Limits().max_orders_per_s
    assert rate is not None and rate < 50


def test_identical_order_inside_the_window_is_a_duplicate() -> None:
    r = check_duplicate_order(intent(limit="100.00"), ctx(last_identical=NOW - timedelta(milliseconds=300)))
    assert r is not None and r.code == "duplicate_order" and "0.300s ago" in r.detail
    assert check_duplicate_order(intent(limit="100.00"), ctx(last_identical=NOW - timedelta(seconds=2))) is None


@pytest.mark.parametrize(
    ("order", "bid", "ask", "crosses"),
    [
        (intent(limit="100.05"), None, "100.05", True),  # buy at our resting sell
        (intent(limit="100.04"), None, "100.05", False),
        (intent(), None, "100.05", True),  # a market buy crosses any resting sell
        (intent(limit="99.95", side=Side.SELL), "99.95", None, True),
        (intent(limit="99.96", side=Side.SELL), "99.95", None, False),
        (intent(limit="99.90", side=Side.SELL), None, "100.05", False),  # same side never crosses
    ],
)
def test_self_cross(order: OrderIntent, bid: str | None, ask: str | None, crosses: bool) -> None:
    c = ctx(own_best_bid=D(bid) if bid else None, own_best_ask=D(ask) if ask else None)
    r = check_self_cross(order, c)
    assert (r is not None and r.code == "self_cross") is crosses


def test_disconnected_broker_rejects_new_orders() -> None:
    r = check_connectivity(intent(), ctx(broker_connected=False))
    assert r is not None and r.code == "broker_disconnected"


# -- the books the engine keeps for the checks -------------------------------------------------------
def test_rate_window_forgets_what_is_older_than_a_second() -> None:
    w = RateWindow(1.0)
    for ms in (0, 200, 900):
        w.add(NOW + timedelta(milliseconds=ms), "AAPL")
    w.add(NOW + timedelta(milliseconds=950), "MSFT")
    assert w.count(NOW + timedelta(milliseconds=999)) == 4
    assert w.count(NOW + timedelta(milliseconds=1200), "AAPL") == 1
    assert w.count(NOW, "TSLA") == 0


def test_recent_orders_forget_after_their_horizon() -> None:
    book = RecentOrders(1.0)
    key = ("AAPL", Side.BUY, D(10), None)
    book.add(key, NOW)
    assert book.last(key, NOW + timedelta(milliseconds=500)) == NOW
    assert book.last(key, NOW + timedelta(seconds=2)) is None and len(book) == 0


def test_exposure_book_keeps_gross_and_net_as_symbols_change() -> None:
    book = ExposureBook()
    book.mark("AAPL", D(100), D(10))
    book.mark("MSFT", D(-50), D(20))
    assert (book.gross, book.net) == (D(2000), D(0))
    book.mark("AAPL", D(0))
    assert (book.gross, book.net) == (D(1000), D(-1000))  # AAPL no longer counts


def test_exposure_is_marked_at_the_market_not_at_a_far_away_limit() -> None:
    # A buy 10,000 @ 1.00 while the market is 100: if it ever fills, the position is worth ~1,000,000.
    r = check_exposure(intent("10000", limit="1.00"), ctx(max_gross_exposure=D("500000")))
    assert r is not None and r.code == "max_gross_exposure"


def stop_intent(stop: str, limit: str | None = None, side: Side = Side.BUY, qty: str = "10") -> OrderIntent:
    return OrderIntent("tc-s", "s", "s", Instrument("AAPL"), side, D(qty),
                       OrderType.STP_LMT if limit else OrderType.STP, D(limit) if limit else None, D(stop))


def test_a_stop_trigger_too_far_from_the_reference_is_a_fat_finger() -> None:
    r = check_price_collar(stop_intent("150"), ctx(price_collar_pct=D("0.05")))
    assert r is not None and r.code == "price_collar" and "stop 150 is 50.00% from reference" in r.detail


def test_a_buy_stop_far_below_the_market_is_a_fat_finger_too() -> None:
    r = check_price_collar(stop_intent("50"), ctx(price_collar_pct=D("0.05")))
    assert r is not None and r.code == "price_collar"


def test_a_stop_trigger_within_the_collar_passes() -> None:
    assert check_price_collar(stop_intent("102"), ctx(price_collar_pct=D("0.05"))) is None


def test_a_stop_limits_limit_is_collared_against_its_trigger_not_the_market() -> None:
    ok = check_price_collar(stop_intent("104", limit="108"), ctx(price_collar_pct=D("0.05")))  # 3.8% through
    far = check_price_collar(stop_intent("104", limit="110"), ctx(price_collar_pct=D("0.05")))  # 5.8% through
    assert ok is None
    assert far is not None and "through its trigger 104" in far.detail


def test_a_stop_trigger_off_the_tick_grid_is_rejected() -> None:
    r = check_instrument(stop_intent("101.005"), ctx())
    assert r is not None and r.code == "off_tick"


def test_a_stop_entrys_exposure_is_counted_at_its_trigger() -> None:
    r = check_position_limit(stop_intent("120", qty="10"), ctx(max_position_notional=D("1100")))
    assert r is not None and r.code == "max_position_notional" and "1200.00" in r.detail
