"""Pre-trade checks: pure functions of (order intent, context) that pass (None) or return a Reject.

Each check reads only what the context hands it, so the same checks run in paper mode, against IBKR,
in the property tests and in the benchmarks. Limits resolve per order: symbol overrides win over
strategy overrides, which win over the account default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.domain import ZERO, OrderIntent, OrderType, Quote, Side


@dataclass(frozen=True, slots=True)
class Reject:
    """Why an order may not leave the engine. ``code`` is stable (for counting), ``detail`` is for people."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Limits:
    """One set of limits; ``None`` switches a check off."""

    max_order_qty: Decimal | None = Decimal(10_000)
    max_order_notional: Decimal | None = Decimal(1_000_000)
    max_position_qty: Decimal | None = Decimal(50_000)
    max_position_notional: Decimal | None = Decimal(5_000_000)
    price_collar_pct: Decimal | None = Decimal("0.05")
    max_quote_age_s: float | None = 5.0


LIMIT_FIELDS = frozenset(f.name for f in fields(Limits))


@dataclass(slots=True)
class RiskLimits:
    """Account defaults plus partial overrides per strategy and per symbol."""

    default: Limits = field(default_factory=Limits)
    per_strategy: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    per_symbol: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    _cache: dict[tuple[str, str], Limits] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for where, table in (("strategy", self.per_strategy), ("symbol", self.per_symbol)):
            for name, override in table.items():
                unknown = set(override) - LIMIT_FIELDS
                if unknown:
                    raise ValueError(f"risk override for {where} {name!r}: unknown limit(s) {sorted(unknown)}")

    def for_order(self, strategy: str, symbol: str) -> Limits:
        key = (strategy, symbol)
        limits = self._cache.get(key)
        if limits is None:
            limits = self.default
            if strategy in self.per_strategy:
                limits = replace(limits, **self.per_strategy[strategy])
            if symbol in self.per_symbol:
                limits = replace(limits, **self.per_symbol[symbol])
            self._cache[key] = limits
        return limits


@dataclass(slots=True)
class CheckContext:
    """What a check may know about the world at the instant the order is considered."""

    now: datetime
    quote: Quote | None
    position: Decimal  # signed, this symbol, account
    working: Decimal  # signed remaining quantity of open orders, this symbol
    limits: Limits

    @property
    def reference_price(self) -> Decimal | None:
        q = self.quote
        if q is None:
            return None
        return q.last if q.last > 0 else q.mid


PreTradeCheck = Callable[[OrderIntent, CheckContext], Reject | None]


def check_instrument(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    inst = intent.instrument
    if not inst.tradable:
        return Reject("not_tradable", f"{inst.symbol} is not tradable")
    if intent.quantity <= 0:
        return Reject("bad_quantity", f"quantity {intent.quantity} is not positive")
    if intent.quantity % inst.lot_size:
        return Reject("lot_size", f"quantity {intent.quantity} is not a multiple of lot size {inst.lot_size}")
    for name, price in (("limit", intent.limit_price), ("stop", intent.stop_price)):
        if price is not None and (price <= 0 or not inst.on_tick(price)):
            return Reject("off_tick", f"{name} price {price} is not on the {inst.tick_size} tick grid")
    if intent.order_type in (OrderType.LMT, OrderType.STP_LMT) and intent.limit_price is None:
        return Reject("missing_price", f"{intent.order_type} order without a limit price")
    return None


def check_market_data(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    quote = ctx.quote
    if quote is None:
        return Reject("no_market_data", f"no quote for {intent.instrument.symbol}")
    max_age = ctx.limits.max_quote_age_s
    if max_age is not None:
        age = (ctx.now - quote.ts).total_seconds()
        if age > max_age:
            return Reject("stale_market_data", f"{quote.symbol} quote is {age:.3f}s old (max {max_age}s)")
    return None


def _order_price(intent: OrderIntent, ctx: CheckContext) -> Decimal:
    if intent.limit_price is not None:
        return intent.limit_price
    return ctx.reference_price or ZERO


def check_order_size(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    lim = ctx.limits
    if lim.max_order_qty is not None and intent.quantity > lim.max_order_qty:
        return Reject("max_order_qty", f"quantity {intent.quantity} > max {lim.max_order_qty}")
    if lim.max_order_notional is not None:
        notional = intent.quantity * _order_price(intent, ctx)
        if notional > lim.max_order_notional:
            return Reject("max_order_notional", f"notional {notional:.2f} > max {lim.max_order_notional}")
    return None


def check_position_limit(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    lim = ctx.limits
    exposure = ctx.position + ctx.working
    projected = exposure + intent.signed_quantity
    if abs(projected) <= abs(exposure):
        return None  # reducing exposure is always allowed by position limits
    if lim.max_position_qty is not None and abs(projected) > lim.max_position_qty:
        return Reject("max_position_qty", f"projected position {projected} beyond max {lim.max_position_qty}")
    if lim.max_position_notional is not None:
        notional = abs(projected) * _order_price(intent, ctx)
        if notional > lim.max_position_notional:
            return Reject(
                "max_position_notional",
                f"projected notional {notional:.2f} beyond max {lim.max_position_notional}",
            )
    return None


def check_price_collar(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    """A limit price more than the collar *through* the reference (more aggressive) is a fat finger."""
    collar = ctx.limits.price_collar_pct
    limit = intent.limit_price
    ref = ctx.reference_price
    if collar is None or limit is None or not ref:
        return None
    through = (limit - ref) / ref if intent.side is Side.BUY else (ref - limit) / ref
    if through > collar:
        return Reject(
            "price_collar", f"limit {limit} is {through:.2%} through reference {ref} (collar {collar:.2%})"
        )
    return None


DEFAULT_CHECKS: tuple[PreTradeCheck, ...] = (
    check_instrument,
    check_market_data,
    check_order_size,
    check_position_limit,
    check_price_collar,
)


def run_checks(checks: Sequence[PreTradeCheck], intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    """The first reject, or None when every check passes."""
    for check in checks:
        reject = check(intent, ctx)
        if reject is not None:
            return reject
    return None
