from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from engine.domain import Instrument, OrderIntent, OrderType, Quote, Side
from risk.checks import (
    DEFAULT_CHECKS,
    CheckContext,
    Limits,
    RiskLimits,
    check_instrument,
    check_market_data,
    check_order_size,
    check_position_limit,
    check_price_collar,
    run_checks,
)

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
QUOTE = Quote("AAPL", NOW, D("99.99"), D("100.01"), D("500"), D("500"), D("100.00"))


def intent(qty: str = "10", side: Side = Side.BUY, limit: str | None = None, inst: Instrument | None = None,
           ) -> OrderIntent:
    return OrderIntent("tc-1", "1", "s", inst or Instrument("AAPL"), side, D(qty),
                       OrderType.LMT if limit else OrderType.MKT, D(limit) if limit else None)


def ctx(position: str = "0", working: str = "0", quote: Quote | None = QUOTE, **limits: Any) -> CheckContext:
    return CheckContext(NOW, quote, D(position), D(working), replace(Limits(), **limits))


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
