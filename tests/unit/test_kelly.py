from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.domain import Direction, Instrument, Signal
from risk.kelly import KellyParams, kelly_fraction, kelly_fraction_gaussian, target_quantity

NOW = datetime(2026, 1, 5, tzinfo=UTC)
INST = Instrument("X")


def sig(direction: Direction = Direction.LONG, **changes: Any) -> Signal:
    return replace(Signal("1", NOW, "s", "X", direction, win_prob=D("0.6"), payoff=D("1.5")), **changes)


def test_full_kelly_for_a_binary_bet_is_p_minus_q_over_b() -> None:
    assert kelly_fraction(D("0.6"), D("1.5")) == D("0.6") - D("0.4") / D("1.5")


def test_full_kelly_for_a_gaussian_edge_is_mu_over_sigma_squared() -> None:
    assert kelly_fraction_gaussian(D("0.02"), D("0.2")) == D("0.5")


def test_quantity_is_fraction_times_kelly_times_equity_over_price_without_a_stop() -> None:
    # f* = 0.6 - 0.4/2 = 0.4; half Kelly 0.2 of 100,000 = 20,000 at 100 = 200 shares (cap is 10% = 100)
    params = KellyParams(D("0.5"), D("1"))
    assert target_quantity(sig(payoff=D("2")), INST, D("100"), D("100000"), params) == D("200")


def test_stop_distance_sizes_on_the_loss_per_share() -> None:
    params = KellyParams(D("0.5"), D("1"))
    q = target_quantity(sig(payoff=D("2"), stop_distance=D("5")), INST, D("100"), D("100000"), params)
    assert q == D("1000")  # 20,000 at risk / 5 per share; notional 100,000 = the 100% cap


def test_notional_cap_binds_before_kelly() -> None:
    params = KellyParams(D("1"), D("0.01"))
    assert target_quantity(sig(), INST, D("100"), D("100000"), params) == D("10")


def test_flat_signal_targets_zero() -> None:
    assert target_quantity(sig(Direction.FLAT), INST, D("100"), D("100000"), KellyParams()) == 0


def test_kelly_fraction_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="fraction"):
        KellyParams(D("2"))


edges = st.one_of(
    st.tuples(st.decimals("0.01", "0.99", places=3), st.decimals("0.1", "10", places=2)).map(
        lambda t: {"win_prob": t[0], "payoff": t[1]}
    ),
    st.tuples(st.decimals("-0.05", "0.05", places=4), st.decimals("0.05", "1", places=3)).map(
        lambda t: {"win_prob": None, "payoff": None, "expected_return": t[0], "volatility": t[1]}
    ),
)


@given(
    edge=edges,
    direction=st.sampled_from([Direction.LONG, Direction.SHORT]),
    price=st.decimals("0.5", "5000", places=2),
    equity=st.decimals("1000", "10000000", places=0),
    fraction=st.decimals("0.05", "1", places=2),
    cap=st.decimals("0.01", "1", places=2),
    max_qty=st.one_of(st.none(), st.decimals("1", "100000", places=0)),
    signal_max=st.one_of(st.none(), st.decimals("1", "100000", places=0)),
    lot=st.sampled_from([D("1"), D("100")]),
)
def test_kelly_size_respects_caps_edge_and_direction(
    edge: dict[str, D], direction: Direction, price: D, equity: D, fraction: D, cap: D,
    max_qty: D | None, signal_max: D | None, lot: D,
) -> None:
    s = sig(direction, max_qty=signal_max, **edge)
    q = target_quantity(s, Instrument("X", lot_size=lot), price, equity, KellyParams(fraction, cap, max_qty))
    from risk.kelly import full_kelly

    if full_kelly(s) <= 0:
        assert q == 0
    assert abs(q) * price <= cap * equity
    for limit in (max_qty, signal_max):
        if limit is not None:
            assert abs(q) <= limit
    assert q % lot == 0
    assert q >= 0 if direction is Direction.LONG else q <= 0


def test_exposure_within_the_rebalance_band_needs_no_order() -> None:
    from risk.kelly import within_band

    assert within_band(D(100), D(95), D("0.1"))
    assert not within_band(D(100), D(80), D("0.1"))
    assert not within_band(D(100), D(-95), D("0.1"))
    assert not within_band(D(0), D(5), D("0.1"))
