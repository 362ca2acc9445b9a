"""Pre-trade checks: pure functions of (order intent, context) that pass (None) or return a Reject.

Each check reads only what the context hands it, so the same checks run in paper mode, against IBKR,
in the property tests and in the benchmarks. Limits resolve per order: symbol overrides win over
strategy overrides, which win over the account default. The state the checks need (order rates,
recent identical orders, our own resting prices, exposure) is kept by the small pure books at the
end of this module, which the engine updates as orders go out and come back.

The controls follow SEC 15c3-5 (c)(1) and the FIA's pre-trade list: fat finger, position, exposure
and credit limits, price collars, reference-data sanity, throttles, duplicates and self-match.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from annotated_types import Ge, Gt

from engine.domain import ZERO, OrderIntent, OrderType, Quote, RejectCode, Side

INFINITY = Decimal("Infinity")

# Limits are declared once, here: the config section is derived from these fields, their defaults and
# these bounds (annotated-types metadata, which pydantic enforces and the checks never look at).
Amount = Annotated[Decimal, Ge(0)]
Count = Annotated[int, Gt(0)]
Seconds = Annotated[float, Gt(0)]


@dataclass(frozen=True, slots=True)
class Reject:
    """Why an order may not leave the engine. ``code`` is stable (for counting), ``detail`` is for people."""

    code: RejectCode
    detail: str


@dataclass(frozen=True, slots=True)
class Limits:
    """One set of limits; ``None`` switches a check off."""

    max_order_qty: Amount | None = Decimal(10_000)
    max_order_notional: Amount | None = Decimal(1_000_000)
    max_position_qty: Amount | None = Decimal(50_000)
    max_position_notional: Amount | None = Decimal(5_000_000)
    max_gross_exposure: Amount | None = Decimal(4_000_000)  # sum of |position + working| notional
    max_net_exposure: Amount | None = Decimal(2_000_000)  # |sum of signed notional|
    max_leverage: Amount | None = Decimal(4)  # gross exposure <= equity x leverage (buying power)
    max_daily_loss: Amount | None = Decimal(50_000)  # beyond it only exposure-reducing orders pass
    price_collar_pct: Amount | None = Decimal("0.05")
    price_collar_ticks: Count | None = None
    max_quote_age_s: Seconds | None = 5.0
    max_orders_per_s: Count | None = 40  # account; IB paces at 50 messages/s
    max_symbol_orders_per_s: Count | None = 10
    duplicate_window_s: Seconds | None = 1.0
    prevent_self_cross: bool = True
    require_live_data: bool = False  # refuse new orders priced on delayed market data (ibkr.market_data_type)


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

    def longest_duplicate_window(self) -> float:
        """How long the engine must remember sent orders for the duplicate check (any override)."""
        windows = [self.default.duplicate_window_s or 0.0]
        for table in (self.per_strategy, self.per_symbol):
            windows += [float(o.get("duplicate_window_s") or 0.0) for o in table.values()]
        return max(windows)

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
    equity: Decimal = ZERO  # account equity marked to market (for buying power); 0 = unknown
    gross_exposure: Decimal = ZERO  # account, before this order
    net_exposure: Decimal = ZERO  # account, signed, before this order
    symbol_exposure: Decimal = ZERO  # this symbol's signed share of the two above
    day_pnl: Decimal = ZERO  # realized + unrealized since the start of the trading day
    orders_last_s: int = 0  # orders sent in the rolling second, account
    symbol_orders_last_s: int = 0  # the same, this symbol
    last_identical: datetime | None = None  # when the same symbol/side/qty/price last went out
    own_best_bid: Decimal | None = None  # our most aggressive resting buy on this symbol (MKT = Infinity)
    own_best_ask: Decimal | None = None  # our most aggressive resting sell (MKT = 0)
    broker_connected: bool = True
    available_funds: Decimal | None = None  # what the broker says the account may still commit (IB), if it says
    expected_outage: str | None = None  # the link is down in this maintenance window (risk/windows.py)
    quote_delayed: bool = False  # the quote is delayed market data (no live subscription)

    @property
    def reference_price(self) -> Decimal | None:
        q = self.quote
        return None if q is None else q.reference


PreTradeCheck = Callable[[OrderIntent, CheckContext], Reject | None]


def check_instrument(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    inst = intent.instrument
    if not inst.tradable:
        return Reject(RejectCode.NOT_TRADABLE, f"{inst.symbol} is not tradable")
    if intent.quantity <= 0:
        return Reject(RejectCode.BAD_QUANTITY, f"quantity {intent.quantity} is not positive")
    if intent.quantity % inst.lot_size:
        return Reject(RejectCode.LOT_SIZE, f"quantity {intent.quantity} is not a multiple of lot size {inst.lot_size}")
    for name, price in (("limit", intent.limit_price), ("stop", intent.stop_price)):
        if price is not None and (price <= 0 or not inst.on_tick(price)):
            return Reject(RejectCode.OFF_TICK, f"{name} price {price} is not on the {inst.tick_size} tick grid")
    if intent.order_type in (OrderType.LMT, OrderType.STP_LMT) and intent.limit_price is None:
        return Reject(RejectCode.MISSING_PRICE, f"{intent.order_type} order without a limit price")
    return None


def check_market_data(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    quote = ctx.quote
    if quote is None:
        return Reject(RejectCode.NO_MARKET_DATA, f"no quote for {intent.instrument.symbol}")
    max_age = ctx.limits.max_quote_age_s
    if max_age is not None:
        age = (ctx.now - quote.ts).total_seconds()
        if age > max_age:
            return Reject(RejectCode.STALE_MARKET_DATA, f"{quote.symbol} quote is {age:.3f}s old (max {max_age}s)")
    if ctx.quote_delayed and ctx.limits.require_live_data:
        return Reject(RejectCode.DELAYED_MARKET_DATA, f"{quote.symbol} quotes are delayed data and "
                                                      f"require_live_data is set")
    return None


def _order_price(intent: OrderIntent, ctx: CheckContext) -> Decimal:
    """The price exposure is counted at: the limit, else a stop's trigger, else the market."""
    if intent.limit_price is not None:
        return intent.limit_price
    if intent.stop_price is not None:
        return intent.stop_price
    return ctx.reference_price or ZERO


def check_order_size(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    lim = ctx.limits
    if lim.max_order_qty is not None and intent.quantity > lim.max_order_qty:
        return Reject(RejectCode.MAX_ORDER_QTY, f"quantity {intent.quantity} > max {lim.max_order_qty}")
    if lim.max_order_notional is not None:
        notional = intent.quantity * _order_price(intent, ctx)
        if notional > lim.max_order_notional:
            return Reject(RejectCode.MAX_ORDER_NOTIONAL, f"notional {notional:.2f} > max {lim.max_order_notional}")
    return None


def check_position_limit(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    lim = ctx.limits
    exposure = ctx.position + ctx.working
    projected = exposure + intent.signed_quantity
    if abs(projected) <= abs(exposure):
        return None  # reducing exposure is always allowed by position limits
    if lim.max_position_qty is not None and abs(projected) > lim.max_position_qty:
        return Reject(RejectCode.MAX_POSITION_QTY, f"projected position {projected} beyond max {lim.max_position_qty}")
    if lim.max_position_notional is not None:
        notional = abs(projected) * _order_price(intent, ctx)
        if notional > lim.max_position_notional:
            return Reject(
                RejectCode.MAX_POSITION_NOTIONAL,
                f"projected notional {notional:.2f} beyond max {lim.max_position_notional}",
            )
    return None


def check_price_collar(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    """A price too far from the market is a fat finger.

    A limit may not be too far *through* the reference (more aggressive). A stop's trigger may not be too far
    from the reference either way (above it, it waits for a move the signal did not mean; below a buy stop,
    it is a market order at once), and a stop-limit's limit may not be too far through its trigger (where it
    starts to work). Each configured bound applies: a percentage, and a number of ticks (the useful one for
    low-priced symbols, where a percentage is a fraction of a tick).
    """
    ref = ctx.reference_price
    if not ref:
        return None
    stop = intent.stop_price
    if stop is not None:
        reject = _collar(intent, ctx, "stop", stop, abs(stop - ref), ref, "from reference")
        if reject is not None:
            return reject
    limit = intent.limit_price
    if limit is None:
        return None
    base = ref if stop is None else stop
    through = limit - base if intent.side is Side.BUY else base - limit
    if through <= 0:
        return None
    return _collar(intent, ctx, "limit", limit, through, base,
                   "through reference" if stop is None else "through its trigger")


def _collar(intent: OrderIntent, ctx: CheckContext, name: str, price: Decimal, distance: Decimal, base: Decimal,
            relation: str) -> Reject | None:
    lim = ctx.limits
    collar = lim.price_collar_pct
    if collar is not None and distance / base > collar:
        return Reject(RejectCode.PRICE_COLLAR,
                      f"{name} {price} is {distance / base:.2%} {relation} {base} (collar {collar:.2%})")
    ticks = lim.price_collar_ticks
    if ticks is not None:
        n = distance / intent.instrument.tick_size
        if n > ticks:
            return Reject(RejectCode.PRICE_COLLAR, f"{name} {price} is {n:.0f} ticks {relation} {base} "
                                                   f"(collar {ticks})")
    return None


def check_connectivity(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    if ctx.broker_connected:
        return None
    if ctx.expected_outage is not None:
        return Reject(RejectCode.MAINTENANCE_WINDOW, f"the broker link is down in the maintenance window "
                                                     f"{ctx.expected_outage}: no new orders until it returns")
    return Reject(RejectCode.BROKER_DISCONNECTED, "the broker connection is down: no new orders until it returns")


def _projected_symbol_exposure(intent: OrderIntent, ctx: CheckContext) -> tuple[Decimal, Decimal]:
    """This symbol's signed notional before and after the order, marked like the book: at the market."""
    price = ctx.reference_price or _order_price(intent, ctx)
    qty = ctx.position + ctx.working
    return qty * price, (qty + intent.signed_quantity) * price


def _adds_exposure(intent: OrderIntent, ctx: CheckContext) -> bool:
    exposure = ctx.position + ctx.working
    return abs(exposure + intent.signed_quantity) > abs(exposure)


def check_exposure(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    """Account gross and net exposure, and buying power (gross <= equity x leverage)."""
    if not _adds_exposure(intent, ctx):
        return None
    lim = ctx.limits
    before, after = _projected_symbol_exposure(intent, ctx)
    others_gross = ctx.gross_exposure - abs(ctx.symbol_exposure)
    gross = others_gross + abs(after)
    net = ctx.net_exposure - ctx.symbol_exposure + after
    if lim.max_gross_exposure is not None and gross > lim.max_gross_exposure:
        return Reject(RejectCode.MAX_GROSS_EXPOSURE,
                      f"projected gross exposure {gross:.2f} > max {lim.max_gross_exposure}")
    if lim.max_net_exposure is not None and abs(net) > lim.max_net_exposure and abs(net) > abs(ctx.net_exposure):
        return Reject(RejectCode.MAX_NET_EXPOSURE,
                      f"projected net exposure {net:.2f} beyond max {lim.max_net_exposure}")
    if lim.max_leverage is not None:
        power = ctx.equity * lim.max_leverage - others_gross - abs(before)
        added = abs(after) - abs(before)
        if added > power:
            return Reject(
                RejectCode.BUYING_POWER,
                f"order adds {added:.2f} of exposure; buying power left {max(power, ZERO):.2f}"
                f" (equity {ctx.equity:.2f} x leverage {lim.max_leverage})",
            )
        funds = ctx.available_funds
        if funds is not None and added > 0 and added > funds * lim.max_leverage:
            return Reject(
                RejectCode.BUYING_POWER,
                f"order adds {added:.2f} of exposure; the account's available funds {funds:.2f}"
                f" x leverage {lim.max_leverage} allow {max(funds * lim.max_leverage, ZERO):.2f}",
            )
    return None


def check_daily_loss(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    limit = ctx.limits.max_daily_loss
    if limit is None or ctx.day_pnl >= -limit or not _adds_exposure(intent, ctx):
        return None
    return Reject(RejectCode.DAILY_LOSS, f"day P&L {ctx.day_pnl:.2f} is below -{limit}: only exposure-reducing orders")


def check_order_rate(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    lim = ctx.limits
    if lim.max_orders_per_s is not None and ctx.orders_last_s >= lim.max_orders_per_s:
        return Reject(RejectCode.ORDER_RATE,
                      f"{ctx.orders_last_s} orders in the last second (max {lim.max_orders_per_s})")
    if lim.max_symbol_orders_per_s is not None and ctx.symbol_orders_last_s >= lim.max_symbol_orders_per_s:
        return Reject(
            RejectCode.ORDER_RATE,
            f"{ctx.symbol_orders_last_s} {intent.instrument.symbol} orders in the last second"
            f" (max {lim.max_symbol_orders_per_s})",
        )
    return None


def check_duplicate_order(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    window = ctx.limits.duplicate_window_s
    last = ctx.last_identical
    if window is None or last is None:
        return None
    age = (ctx.now - last).total_seconds()
    if age < window:
        price = intent.limit_price if intent.limit_price is not None else "MKT"
        return Reject(
            RejectCode.DUPLICATE_ORDER,
            f"{intent.side} {intent.quantity} {intent.instrument.symbol} @ {price} was sent {age:.3f}s ago"
            f" (window {window}s)",
        )
    return None


def check_self_cross(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    """An order that could trade against our own resting order is a wash trade: reject it."""
    if not ctx.limits.prevent_self_cross:
        return None
    price = intent.limit_price
    if intent.side is Side.BUY:
        rest = ctx.own_best_ask
        if rest is not None and (price is None or price >= rest):
            return Reject(RejectCode.SELF_CROSS, f"buy would cross our own resting sell at {_shown(rest)}")
    else:
        rest = ctx.own_best_bid
        if rest is not None and (price is None or price <= rest):
            return Reject(RejectCode.SELF_CROSS, f"sell would cross our own resting buy at {_shown(rest)}")
    return None


def _shown(price: Decimal) -> str:
    return "MKT" if price in (INFINITY, ZERO) else str(price)


DEFAULT_CHECKS: tuple[PreTradeCheck, ...] = (
    check_connectivity,
    check_instrument,
    check_market_data,
    check_order_size,
    check_price_collar,
    check_position_limit,
    check_exposure,
    check_daily_loss,
    check_order_rate,
    check_duplicate_order,
    check_self_cross,
)


def run_checks(checks: Sequence[PreTradeCheck], intent: OrderIntent, ctx: CheckContext) -> Reject | None:
    """The first reject, or None when every check passes."""
    for check in checks:
        reject = check(intent, ctx)
        if reject is not None:
            return reject
    return None


# -- the state the checks read, kept by the engine ---------------------------------------------------
class RateWindow:
    """Events in a rolling window, account-wide and per key (symbol, strategy)."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.span = timedelta(seconds=seconds)
        self._all: deque[datetime] = deque()
        self._by_key: dict[str, deque[datetime]] = {}

    def _prune(self, times: deque[datetime], now: datetime) -> int:
        edge = now - self.span
        while times and times[0] <= edge:
            times.popleft()
        return len(times)

    def count(self, now: datetime, key: str | None = None) -> int:
        if key is None:
            return self._prune(self._all, now)
        times = self._by_key.get(key)
        return 0 if times is None else self._prune(times, now)

    def add(self, now: datetime, key: str) -> None:
        self._all.append(now)
        times = self._by_key.get(key)
        if times is None:
            times = self._by_key[key] = deque()
        times.append(now)


OrderKey = tuple[str, Side, Decimal, Decimal | None]


class RecentOrders:
    """When each (symbol, side, quantity, price) last went out, forgotten after ``horizon_s``."""

    def __init__(self, horizon_s: float) -> None:
        self.horizon = timedelta(seconds=horizon_s)
        self._sent: OrderedDict[OrderKey, datetime] = OrderedDict()

    def last(self, key: OrderKey, now: datetime) -> datetime | None:
        sent = self._sent
        edge = now - self.horizon
        while sent:
            first = next(iter(sent))
            if sent[first] > edge:
                break
            del sent[first]
        return sent.get(key)

    def add(self, key: OrderKey, now: datetime) -> None:
        self._sent[key] = now
        self._sent.move_to_end(key)

    def __len__(self) -> int:
        return len(self._sent)


class ExposureBook:
    """Signed notional of position + working per symbol, marked at the last price seen for it.

    Updating one symbol is O(1), so gross and net exposure cost nothing per signal however many
    symbols the account holds.
    """

    def __init__(self) -> None:
        self._notional: dict[str, Decimal] = {}
        self._price: dict[str, Decimal] = {}
        self.gross = ZERO
        self.net = ZERO

    def by_symbol(self) -> dict[str, Decimal]:
        """Signed notional per symbol (a copy: the metrics read it at scrape time)."""
        return dict(self._notional)

    def mark(self, symbol: str, quantity: Decimal, price: Decimal | None = None) -> Decimal:
        """Set the symbol's exposure to ``quantity`` at ``price`` (default: its last price); return it."""
        if price is None:
            price = self._price.get(symbol, ZERO)
        else:
            self._price[symbol] = price
        new = quantity * price
        old = self._notional.get(symbol, ZERO)
        if new != old:
            self.gross += abs(new) - abs(old)
            self.net += new - old
            if new:
                self._notional[symbol] = new
            else:
                del self._notional[symbol]
        return new

