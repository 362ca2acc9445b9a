"""Kelly sizing: from a signal's edge to a capped target position.

``p - q/b`` is the fraction of equity to put at risk. Without a stop distance the whole notional counts
as the stake (quantity = fraction * f* * equity / price); with a stop distance, or a bracket's stop loss,
the loss per share when wrong is the stake. A fraction of Kelly (default 1/2) and hard caps keep estimation error from
compounding: at twice Kelly the expected growth is zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from engine.domain import ZERO, Direction, Instrument, Signal


@dataclass(frozen=True, slots=True)
class KellyParams:
    fraction: Decimal = Decimal("0.5")
    max_fraction_of_equity: Decimal = Decimal("0.10")  # notional cap per symbol
    max_qty: Decimal | None = None
    rebalance_band: Decimal = Decimal("0.10")  # no order while within 10% of the target (churn costs)

    def __post_init__(self) -> None:
        if not ZERO < self.fraction <= 1:
            raise ValueError(f"kelly fraction must be in (0, 1], got {self.fraction}")
        if not ZERO < self.max_fraction_of_equity <= 1:
            raise ValueError(f"max_fraction_of_equity must be in (0, 1], got {self.max_fraction_of_equity}")


def kelly_fraction(win_prob: Decimal, payoff: Decimal) -> Decimal:
    """Full Kelly for a binary bet: p - (1 - p) / b."""
    return win_prob - (1 - win_prob) / payoff


def kelly_fraction_gaussian(expected_return: Decimal, volatility: Decimal) -> Decimal:
    """Full Kelly for a continuous return: mu / sigma^2."""
    return expected_return / (volatility * volatility)


def full_kelly(signal: Signal) -> Decimal:
    if signal.win_prob is not None and signal.payoff is not None:
        return kelly_fraction(signal.win_prob, signal.payoff)
    if signal.expected_return is not None and signal.volatility is not None:
        # Like win_prob, expected_return is the trade's, in the signal's direction: negative is no edge.
        return kelly_fraction_gaussian(signal.expected_return, signal.volatility)
    return ZERO


def target_quantity(
    signal: Signal, instrument: Instrument, price: Decimal, equity: Decimal, params: KellyParams
) -> Decimal:
    """Signed target position for the signal; zero for ``flat`` or when the edge is not positive.

    Never above the caps, never of the opposite sign to the signal's direction.
    """
    if signal.direction is Direction.FLAT or price <= 0 or equity <= 0:
        return ZERO
    f_star = full_kelly(signal)
    if f_star <= 0:
        return ZERO
    stake = params.fraction * f_star * equity
    per_unit = risk_per_unit(signal, price)
    qty = stake / per_unit
    qty = min(qty, params.max_fraction_of_equity * equity / price)
    if params.max_qty is not None:
        qty = min(qty, params.max_qty)
    if signal.max_qty is not None:
        qty = min(qty, signal.max_qty)
    qty = instrument.round_lots(max(qty, ZERO))
    return qty if signal.direction is Direction.LONG else -qty


def risk_per_unit(signal: Signal, price: Decimal) -> Decimal:
    """What one unit loses when the signal is wrong: to its bracket's stop loss, else its stop distance, else
    the whole price."""
    stop = signal.stop_loss
    if stop is not None:
        distance = stop.value if stop.is_distance else abs(signal.entry_price(price) - stop.value)
        if distance > 0:
            return distance
    if signal.stop_distance and signal.stop_distance > 0:
        return signal.stop_distance
    return price


def within_band(target: Decimal, current: Decimal, band: Decimal) -> bool:
    """True when ``current`` is on the target's side and within ``band`` of it: not worth an order."""
    if target == current:
        return True
    if target == 0 or current == 0 or (target > 0) != (current > 0):
        return False
    return abs(target - current) <= band * abs(target)
