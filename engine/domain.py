"""Domain types in the trader's words.

Pure data and the rules that belong to the data (the order state machine, position arithmetic,
tick rounding). Nothing here imports SQLAlchemy, ib_async or structlog: adapters translate at
the edge. Money and quantities are ``Decimal`` throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from enum import StrEnum

ZERO = Decimal(0)
ONE = Decimal(1)


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class Direction(StrEnum):
    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


class OrderType(StrEnum):
    MKT = "MKT"
    LMT = "LMT"
    STP = "STP"
    STP_LMT = "STP LMT"


class TimeInForce(StrEnum):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"


class KillState(StrEnum):
    """Trading state of one kill-switch scope, ordered from least to most restrictive."""

    ACTIVE = "ACTIVE"
    REDUCE_ONLY = "REDUCE_ONLY"
    HALTED = "HALTED"

    @property
    def severity(self) -> int:
        return _KILL_SEVERITY[self]


_KILL_SEVERITY = {KillState.ACTIVE: 0, KillState.REDUCE_ONLY: 1, KillState.HALTED: 2}


class Venue(StrEnum):
    """Where a session's orders go, as the operator reads it: a simulation, IB's paper account or real money."""

    SIMULATED = "simulated"
    IB_PAPER = "IB paper account"
    IB_LIVE = "IB live"


def is_paper_account(account: str) -> bool:
    """IB paper accounts start with DU (individual) or DF (advisor paper)."""
    return account.upper().startswith(("DU", "DF"))


def venue_of(mode: str, account: str) -> Venue:
    """The venue of a session row or engine lock (``mode`` paper | ibkr) trading ``account``."""
    if mode != "ibkr":
        return Venue.SIMULATED
    return Venue.IB_PAPER if is_paper_account(account) else Venue.IB_LIVE


class RejectCode(StrEnum):
    """Why a line, a signal or an order made no order at the broker: stable, counted, in the README's table."""

    # the line
    MALFORMED_JSON = "malformed_json"
    INVALID_ENCODING = "invalid_encoding"
    LINE_TOO_LONG = "line_too_long"
    INVALID_SIGNAL = "invalid_signal"
    STALE_SIGNAL = "stale_signal"
    FUTURE_SIGNAL = "future_signal"
    DUPLICATE = "duplicate"
    DEDUPE_UNAVAILABLE = "dedupe_unavailable"
    ROW_DEFECT = "row_defect"
    # the engine
    BLOCKED = "blocked"
    INTERNAL_ERROR = "internal_error"
    UNKNOWN_SYMBOL = "unknown_symbol"
    NO_EDGE = "no_edge"
    ZERO_SIZE = "zero_size"
    AT_TARGET = "at_target"
    KILLSWITCH = "killswitch"
    # the pre-trade checks
    BROKER_DISCONNECTED = "broker_disconnected"
    MAINTENANCE_WINDOW = "maintenance_window"  # the link is down in a maintenance window (risk/windows.py)
    NOT_TRADABLE = "not_tradable"
    BAD_QUANTITY = "bad_quantity"
    LOT_SIZE = "lot_size"
    OFF_TICK = "off_tick"
    MISSING_PRICE = "missing_price"
    NO_MARKET_DATA = "no_market_data"
    STALE_MARKET_DATA = "stale_market_data"
    DELAYED_MARKET_DATA = "delayed_market_data"  # risk.require_live_data, and the quote is IB's delayed data
    MAX_ORDER_QTY = "max_order_qty"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    PRICE_COLLAR = "price_collar"
    MAX_POSITION_QTY = "max_position_qty"
    MAX_POSITION_NOTIONAL = "max_position_notional"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_NET_EXPOSURE = "max_net_exposure"
    BUYING_POWER = "buying_power"
    DAILY_LOSS = "daily_loss"
    ORDER_RATE = "order_rate"
    DUPLICATE_ORDER = "duplicate_order"
    SELF_CROSS = "self_cross"
    # a bracket's exits on the wrong side of its entry (a long's stop_loss at or above the entry price...)
    BRACKET_PRICES = "bracket_prices"


class OrderStatus(StrEnum):
    PENDING_NEW = "PendingNew"  # written, handed to the broker, not yet acknowledged
    # no acknowledgement within the ack timeout: at the broker or lost on the way; reconciliation settles it
    # (it is never sent again), and it counts as working until then
    UNKNOWN = "Unknown"
    SUBMITTED = "Submitted"  # working at the broker
    PARTIALLY_FILLED = "PartiallyFilled"
    PENDING_CANCEL = "PendingCancel"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})
OPEN_STATUSES = frozenset(OrderStatus) - TERMINAL_STATUSES  # working (or about to be) at the broker

_S = OrderStatus
# Every legal move. A cancel can race a fill (IB error 10148), so PendingCancel may still fill; a
# market order may fill before any acknowledgement arrives, so PendingNew may fill directly.
ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    _S.PENDING_NEW: frozenset(
        {_S.SUBMITTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.REJECTED, _S.CANCELLED, _S.PENDING_CANCEL, _S.UNKNOWN}
    ),
    _S.UNKNOWN: frozenset(
        {_S.SUBMITTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.REJECTED, _S.CANCELLED, _S.PENDING_CANCEL}
    ),
    _S.SUBMITTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELLED, _S.REJECTED}),
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELLED}),
    _S.PENDING_CANCEL: frozenset({_S.CANCELLED, _S.PARTIALLY_FILLED, _S.FILLED, _S.SUBMITTED}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
}


class IllegalTransition(Exception):
    """An order was asked to move to a status its state machine forbids."""

    def __init__(self, client_order_id: str, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"order {client_order_id}: illegal transition {current} -> {target}")
        self.client_order_id = client_order_id
        self.current = current
        self.target = target


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    sec_type: str = "STK"
    currency: str = "USD"
    exchange: str = "SMART"
    tick_size: Decimal = Decimal("0.01")
    lot_size: Decimal = ONE
    tradable: bool = True

    def round_price(self, price: Decimal, side: Side | None = None) -> Decimal:
        """Round to the tick grid; a buy rounds down and a sell up, so rounding never worsens a limit."""
        ticks = price / self.tick_size
        if side is Side.BUY:
            ticks = ticks.to_integral_value(ROUND_FLOOR)
        elif side is Side.SELL:
            ticks = ticks.to_integral_value(ROUND_CEILING)
        else:
            ticks = ticks.to_integral_value(ROUND_HALF_EVEN)
        # In the tick's own digits (90.00), not normalized: normalize() wrote 90 as 9E+1 into rows, log lines and
        # reject reasons ("BUY 1000 AAPL @ 9E+1 was sent...").
        return (ticks * self.tick_size).quantize(self.tick_size) if ticks else ZERO

    def on_tick(self, price: Decimal) -> bool:
        return (price % self.tick_size) == 0

    def round_lots(self, quantity: Decimal) -> Decimal:
        """Round a quantity toward zero to whole lots."""
        lots = (quantity / self.lot_size).to_integral_value(ROUND_FLOOR if quantity >= 0 else ROUND_CEILING)
        return lots * self.lot_size


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    ts: datetime
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    last: Decimal

    @property
    def reference(self) -> Decimal:
        """The price sizing, checks and marks use: the last trade, or the mid before any trade."""
        return self.last if self.last > 0 else (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class ExitLevel:
    """Where a bracket's exit sits: an absolute price, or a distance from the entry price."""

    value: Decimal
    is_distance: bool = False

    def price(self, entry: Decimal, below: bool) -> Decimal:
        """The exit's price for an entry at ``entry``; a distance lies ``below`` the entry or above it."""
        if not self.is_distance:
            return self.value
        return entry - self.value if below else entry + self.value


@dataclass(slots=True)
class Signal:
    """A validated trading signal (see engine.signals for the wire format).

    Not frozen: a frozen dataclass costs ~0.3 us a field to build, and signals are built at line rate.
    Treat it as immutable, but for ``reference_price``: the engine sets it to the quote's reference price it
    sizes the signal on, and the signal's row keeps it (reports measure slippage and draw prices from it).
    """

    id: str
    ts: datetime
    strategy: str
    symbol: str
    direction: Direction
    win_prob: Decimal | None = None
    payoff: Decimal | None = None
    expected_return: Decimal | None = None
    volatility: Decimal | None = None
    stop_distance: Decimal | None = None
    order_type: OrderType = OrderType.MKT
    limit_price: Decimal | None = None
    sec_type: str = "STK"
    currency: str = "USD"
    exchange: str = "SMART"
    ttl_s: float | None = None
    max_qty: Decimal | None = None
    reference_price: Decimal | None = None  # the quote's reference price the engine sized it on (reports)
    stop_price: Decimal | None = None  # the trigger of a STP / STP LMT entry
    stop_loss: ExitLevel | None = None  # a bracket: protective stop sent with the entry, held at the broker
    take_profit: ExitLevel | None = None

    @property
    def bracket(self) -> bool:
        return self.stop_loss is not None or self.take_profit is not None

    def entry_price(self, reference: Decimal) -> Decimal:
        """Where the entry should trade: its limit, else its trigger, else the market's reference price."""
        if self.limit_price is not None:
            return self.limit_price
        if self.stop_price is not None:
            return self.stop_price
        return reference

    def exits(self, reference: Decimal) -> tuple[Decimal | None, Decimal | None] | str:
        """The bracket's (stop loss, take profit) prices for an entry at ``entry_price(reference)``, or why
        they cannot protect it: a long's stop must lie below the entry and its target above (a short's the
        other way)."""
        entry = self.entry_price(reference)
        long = self.direction is Direction.LONG
        stop = None if self.stop_loss is None else self.stop_loss.price(entry, below=long)
        target = None if self.take_profit is None else self.take_profit.price(entry, below=not long)
        word = "below" if long else "above"
        if stop is not None and (stop <= 0 or (stop >= entry if long else stop <= entry)):
            return f"stop_loss {stop} must lie {word} the entry price {entry} of a {self.direction} signal"
        if target is not None and (target <= 0 or (target <= entry if long else target >= entry)):
            other = "above" if long else "below"
            return f"take_profit {target} must lie {other} the entry price {entry} of a {self.direction} signal"
        return stop, target


@dataclass(slots=True)
class OrderIntent:
    """What the engine wants to send, before the pre-trade checks pass it."""

    client_order_id: str
    signal_id: str | None
    strategy: str
    instrument: Instrument
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MKT
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: TimeInForce = TimeInForce.DAY
    ts: datetime | None = None
    expires_at: datetime | None = None
    flatten: bool = False  # an operator-requested close: passes HALTED, never opens exposure
    # A bracket's exit (stop loss or take profit) names its entry; it works at the broker only once the entry
    # has filled, so it is never counted as working quantity: it can only close what the entry opened.
    parent_id: str | None = None
    oca_group: str | None = None  # the exits of one bracket: one filling cancels the other at the broker
    transmit: bool = True  # IB holds a bracket's orders until its last exit arrives (transmit=True)

    @property
    def is_exit(self) -> bool:
        return self.parent_id is not None

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is Side.BUY else -self.quantity


class BlockedCause(StrEnum):
    """Why the engine refuses every new order for a reason outside the kill-switch board (``Engine.blocked``)."""

    DATABASE_UNAVAILABLE = "database_unavailable"  # the recorder's writes fail: nothing new may leave unrecorded
    KILLSWITCHES_UNREADABLE = "killswitches_unreadable"  # the board cannot be read: a halt may be unseen

    @property
    def text(self) -> str:
        """The cause in words, as the ``blocked`` reject reason, readiness and alerts show it."""
        return _BLOCKED_TEXT[self]


_BLOCKED_TEXT = {
    BlockedCause.DATABASE_UNAVAILABLE: "database unavailable",
    BlockedCause.KILLSWITCHES_UNREADABLE: "kill-switch state unreadable",
}


@dataclass(frozen=True, slots=True)
class Blocked:
    """The engine is blocked: by what (``cause``, to branch on) and the particulars (``detail``, to read)."""

    cause: BlockedCause
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.cause.text}: {self.detail}" if self.detail else self.cause.text


@dataclass(frozen=True, slots=True)
class KillSwitchChange:
    """One change of a kill-switch scope's state. ``id`` is set once it is stored (the CLI waits on it)."""

    ts: datetime
    scope: str
    from_state: KillState
    to_state: KillState
    reason: str
    actor: str
    flatten: bool = False
    id: int | None = None


@dataclass(slots=True)
class StatusChange:
    client_order_id: str
    ts: datetime
    from_status: OrderStatus | None
    to_status: OrderStatus
    reason: str | None = None


@dataclass(slots=True)
class Order:
    """An order the engine owns; its status moves only through ``transition``."""

    intent: OrderIntent
    created_at: datetime
    status: OrderStatus = OrderStatus.PENDING_NEW
    filled_qty: Decimal = ZERO
    avg_fill_price: Decimal = ZERO
    commission: Decimal = ZERO
    broker_order_id: int | None = None
    perm_id: int | None = None
    reason: str | None = None
    history: list[StatusChange] = field(default_factory=list)

    @property
    def client_order_id(self) -> str:
        return self.intent.client_order_id

    @property
    def symbol(self) -> str:
        return self.intent.instrument.symbol

    @property
    def remaining(self) -> Decimal:
        return self.intent.quantity - self.filled_qty

    @property
    def signed_remaining(self) -> Decimal:
        return self.remaining if self.intent.side is Side.BUY else -self.remaining

    def transition(self, target: OrderStatus, ts: datetime, reason: str | None = None) -> StatusChange:
        if target not in ORDER_TRANSITIONS[self.status]:
            raise IllegalTransition(self.client_order_id, self.status, target)
        change = StatusChange(self.client_order_id, ts, self.status, target, reason)
        self.status = target
        if reason is not None:
            self.reason = reason
        self.history.append(change)
        return change

    def apply_fill(self, quantity: Decimal, price: Decimal, commission: Decimal) -> None:
        """Book a fill's quantity and price on the order (status moves separately)."""
        if quantity <= 0 or quantity > self.remaining:
            raise ValueError(
                f"order {self.client_order_id}: fill of {quantity} with {self.remaining} remaining"
            )
        total = self.filled_qty + quantity
        self.avg_fill_price = (self.avg_fill_price * self.filled_qty + price * quantity) / total
        self.filled_qty = total
        self.commission += commission


@dataclass(slots=True)
class Fill:
    exec_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    commission: Decimal
    ts: datetime
    source: str = "broker"  # "broker", or "inferred" when adopted during reconciliation
    corrects: str | None = None  # the execution id this one replaces (an IB execution correction)

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is Side.BUY else -self.quantity


@dataclass(slots=True)
class Position:
    """Net position in one symbol, average-cost accounting.

    ``avg_cost`` is a quotient, rounded to Decimal's 28 digits, and so is the P&L a partial close realizes
    against it. When the position goes flat the round trip's P&L is known exactly (its fills' cash: sells less
    buys), and the closing fill realizes what makes ``realized_pnl`` exactly that: a position opened and closed
    in lots realizes to the cent, where against the rounded average it kept leftovers such as
    -2155.789999999999999999999891. The trip's cash is not stored: a position loaded from its row starts its
    trip from ``avg_cost x quantity``."""

    symbol: str
    quantity: Decimal = ZERO
    avg_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    commissions: Decimal = ZERO
    # The open round trip: its fills' cash so far (sells less buys, exact) and realized_pnl when it began.
    trip_cash: Decimal | None = field(default=None, compare=False, repr=False)
    trip_start: Decimal | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.trip_cash is None:
            self.trip_cash = -self.avg_cost * self.quantity
        if self.trip_start is None:
            self.trip_start = self.realized_pnl

    def apply(self, fill: Fill) -> Decimal:
        """Book a fill; return the P&L it realized (before commission)."""
        qty = fill.signed_quantity
        price = fill.price
        self.commissions += fill.commission
        held = self.quantity
        cash = self.trip_cash if self.trip_cash is not None else -self.avg_cost * held
        start = self.trip_start if self.trip_start is not None else self.realized_pnl
        if held == 0 or (held > 0) == (qty > 0):
            new_qty = held + qty
            self.avg_cost = (self.avg_cost * abs(held) + price * abs(qty)) / abs(new_qty)
            self.quantity = new_qty
            self.trip_cash, self.trip_start = cash - price * qty, start
            return ZERO
        new_qty = held + qty
        if new_qty == 0 or (new_qty > 0) != (held > 0):  # the trip ends here: its P&L is its cash, exactly
            total = start + cash + price * held  # the closing part's cash: -price x (-held)
            realized = total - self.realized_pnl
            self.realized_pnl = total
            self.trip_start = total
            if new_qty == 0:
                self.avg_cost, self.trip_cash = ZERO, ZERO
            else:  # flipped through zero: the remainder opens the next trip at this price
                self.avg_cost, self.trip_cash = price, -price * new_qty
            self.quantity = new_qty
            return realized
        closing = abs(qty)
        realized = (price - self.avg_cost) * closing if held > 0 else (self.avg_cost - price) * closing
        self.realized_pnl += realized
        self.quantity = new_qty
        self.trip_cash, self.trip_start = cash - price * qty, start
        return realized

    @property
    def state(self) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal | None, Decimal | None]:
        """Everything a fill changes: to go back to it (an execution correction replays later fills)."""
        return self.quantity, self.avg_cost, self.realized_pnl, self.commissions, self.trip_cash, self.trip_start

    def restore(self, state: tuple[Decimal, Decimal, Decimal, Decimal, Decimal | None, Decimal | None]) -> None:
        (self.quantity, self.avg_cost, self.realized_pnl, self.commissions, self.trip_cash,
         self.trip_start) = state

    def unrealized(self, mark: Decimal) -> Decimal:
        return (mark - self.avg_cost) * self.quantity if self.quantity else ZERO

