"""The engine: one session's signal -> risk -> order -> fill -> position loop.

Order of the gates for each signal: validate, dedupe by signal id, size (Kelly), then the admission every
order passes, a signal's or one the engine makes itself (a flatten): kill switches, pre-trade checks, then
the order is published (so it is recorded before it leaves) and handed to the broker. The broker reports
back through ``on_order_update`` / ``on_fill``. Live orders and their working quantities are the
``OrderBook``'s (engine/order_book.py); positions, P&L, equity and exposure the ``Portfolio``'s
(engine/portfolio.py). Everything here is synchronous and allocation-light: it is the hot path measured by
``scripts/bench_paper.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import overload

import structlog

from broker.base import Broker, BrokerOrder, OrderUpdate
from broker.reconcile import ReconcileReport, order_from_broker
from engine.bus import EventBus, SignalRejected
from engine.dedupe import DedupeUnavailable, SignalIdIndex
from engine.domain import (
    ZERO,
    Blocked,
    Direction,
    Fill,
    IllegalTransition,
    Instrument,
    KillState,
    KillSwitchChange,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    RejectCode,
    Side,
    Signal,
    StatusChange,
    TimeInForce,
)
from engine.ids import STOP_LOSS, TAKE_PROFIT, client_order_id_for, engine_order_id, exit_order_id
from engine.order_book import OrderBook, apply_fill, own_best
from engine.portfolio import RECENT_FILLS, Portfolio
from engine.signals import SignalError, parse_signal
from risk.checks import (
    DEFAULT_CHECKS,
    CheckContext,
    ExposureBook,
    PreTradeCheck,
    RateWindow,
    RecentOrders,
    RiskLimits,
    run_checks,
)
from risk.kelly import KellyParams, full_kelly, target_quantity, within_band
from risk.killswitch import GLOBAL, KillSwitchBoard, symbol_scope
from risk.triggers import Trip, TripWires

ROW_DEFECT = "row_defect"  # the trigger that halts a scope whose rows the database refused

log = structlog.get_logger("tradectl.engine")


class InstrumentBook:
    """Known instruments; in paper mode an unknown symbol gets the default contract terms."""

    def __init__(self, known: Iterable[Instrument] = (), allow_unknown: bool = True) -> None:
        self._known = {i.symbol: i for i in known}
        self.allow_unknown = allow_unknown
        self.unlisted: dict[str, str] = {}  # symbols the broker has no contract for, with why: not instruments

    def unlist(self, symbol: str, why: str) -> None:
        """The broker has no contract for ``symbol``: signals for it are refused as unknown (not lacking data)."""
        self.unlisted[symbol] = why
        self._known.pop(symbol, None)

    def relist(self, symbol: str) -> None:
        self.unlisted.pop(symbol, None)

    def get(self, symbol: str, template: Signal | None = None) -> Instrument | None:
        inst = self._known.get(symbol)
        if inst is None and self.allow_unknown and symbol not in self.unlisted:
            if template is not None:
                inst = Instrument(symbol, template.sec_type, template.currency, template.exchange)
            else:
                inst = Instrument(symbol)
            self._known[symbol] = inst
        return inst

    def __iter__(self) -> Iterator[Instrument]:
        return iter(list(self._known.values()))


@dataclass(slots=True)
class EngineStats:
    signals: int = 0
    accepted: int = 0
    rejected: int = 0
    invalid: int = 0
    duplicates: int = 0
    orders: int = 0
    fills: int = 0
    trips: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlattenResult:
    """What a flatten did: orders sent, and per symbol why nothing was sent where nothing was."""

    sent: list[Order]
    skipped: dict[str, str]


@dataclass(slots=True)
class ReconcileApplied:
    """What the engine did with a reconciliation report (the session writes, audits and logs around it)."""

    closed: list[Order] = field(default_factory=list)  # open rows now final (each with its final state)
    settled: list[Order] = field(default_factory=list)  # live orders that took the broker's final state
    kept_open: list[Order] = field(default_factory=list)  # our open rows still working: tracked again
    adopted: list[Order] = field(default_factory=list)  # found only at the broker: recorded (working ones tracked)
    inferred_fills: list[Fill] = field(default_factory=list)  # executions booked that only the broker had
    cancels_resent: list[str] = field(default_factory=list)  # kept-open orders whose cancel was sent again


_NOT_SENT = frozenset({OrderStatus.REJECTED, OrderStatus.CANCELLED})


def bracket_exits(signal: Signal, instrument: Instrument, reference: Decimal,
                  ) -> tuple[Decimal | None, Decimal | None] | str:
    """The bracket's (stop loss, take profit) on the tick grid, each rounded away from the entry (a rounded
    stop never reaches it), or why they cannot protect the entry."""
    levels = signal.exits(reference)
    if isinstance(levels, str):
        return levels
    stop, target = levels
    away_below, away_above = (Side.BUY, Side.SELL)  # round_price: a BUY rounds down, a SELL up
    long = signal.direction is Direction.LONG
    if stop is not None:
        stop = instrument.round_price(stop, away_below if long else away_above)
        if stop <= 0:
            return f"stop_loss rounds to {stop} on the {instrument.tick_size} tick grid"
    if target is not None:
        target = instrument.round_price(target, away_above if long else away_below)
        if target <= 0:
            return f"take_profit rounds to {target} on the {instrument.tick_size} tick grid"
    return stop, target


class Engine:
    """One session's trading core: signals in, orders out, broker events in.

    It composes an ``OrderBook`` (``book``: live orders and what they leave working) and a ``Portfolio``
    (``portfolio``: positions, P&L, equity, exposure, the fills booked), and owns the gates: every order,
    a signal's or one the engine makes (a flatten), passes ``_admit`` (kill switches, pre-trade checks,
    then recorded and sent).
    """

    def __init__(
        self,
        broker: Broker,
        bus: EventBus,
        *,
        clock: Callable[[], datetime],
        equity: Decimal,
        kelly: KellyParams | None = None,
        limits: RiskLimits | None = None,
        killswitches: KillSwitchBoard | None = None,
        instruments: InstrumentBook | None = None,
        checks: Sequence[PreTradeCheck] = DEFAULT_CHECKS,
        seen_signal_ids: Iterable[str] = (),
        dedupe_capacity: int = 50_000,
        signal_lookup: Callable[[str], bool] | None = None,
        positions: Iterable[Position] = (),
        trips: TripWires | None = None,
    ) -> None:
        self.broker = broker
        self.bus = bus
        self.clock = clock
        self.kelly = kelly or KellyParams()
        self.limits = limits or RiskLimits()
        self.killswitches = killswitches or KillSwitchBoard()
        self.instruments = instruments or InstrumentBook()
        self.checks = tuple(checks)
        self.signal_ids = SignalIdIndex(dedupe_capacity, signal_lookup, seen_signal_ids)
        self.book = OrderBook()
        self.portfolio = Portfolio(equity, positions, dedupe_capacity,
                                   recent_fills=RECENT_FILLS if broker.corrects_executions else 0)
        self.stats = EngineStats()
        self.trips = trips or TripWires()
        self.rates = RateWindow(1.0)
        self.recent_orders = RecentOrders(self.limits.longest_duplicate_window())
        self.broker_connected = True
        self.ack_timeout_s: float | None = None  # live sessions: ibkr.ack_timeout_s
        self.blocked: Blocked | None = None  # set while trading must stop for a reason outside the board
        self.suspect_breaks: dict[str, tuple[Decimal, Decimal]] = {}  # differences awaiting a second look
        # Live sessions commit an order (and its signal) before it leaves; False from the hook stops the order.
        self.before_submit: Callable[[Order], bool] | None = None
        self._raw: str | None = None  # the line and line number of the signal being handled, for its rows
        self._line_no: int | None = None
        # Set by a session: (code, reason) when a signal's ts is too old or too far ahead, checked after dedupe.
        self.signal_time: Callable[[Signal], tuple[RejectCode, str] | None] | None = None
        broker.set_listener(self)
        for symbol in list(self.portfolio.positions):  # quotes the broker had before it had a listener
            quote = broker.quote(symbol)
            if quote is not None:
                self.portfolio.on_price(symbol, quote.reference)

    # -- read-only views for sessions, metrics and health ----------------------------------------------
    @property
    def orders(self) -> Mapping[str, Order]:
        """Live orders by client order id."""
        return self.book.orders

    def protects(self, order: Order) -> bool:
        """Whether ``order`` is a bracket exit protecting an open position (its entry is no longer live)."""
        parent = order.intent.parent_id
        return parent is not None and parent not in self.book.orders

    @property
    def positions(self) -> Mapping[str, Position]:
        return self.portfolio.positions

    @property
    def realized_pnl(self) -> Decimal:
        return self.portfolio.realized_pnl

    @property
    def commissions(self) -> Decimal:
        return self.portfolio.commissions

    @property
    def exposure(self) -> ExposureBook:
        return self.portfolio.exposure

    # -- signals in ------------------------------------------------------------------------------------
    def on_signal_line(self, line: str, line_no: int | None = None) -> Order | None:
        parsed = parse_signal(line)
        if isinstance(parsed, SignalError):
            self.on_invalid_signal(parsed, line_no)
            return None
        return self.on_signal(parsed, line, line_no)

    def on_invalid_signal(self, error: SignalError, line_no: int | None = None) -> None:
        """A line that is not a signal: counted and published so it is stored with its reason."""
        self.stats.signals += 1
        self.stats.invalid += 1
        code = error.code
        self._count_reason(code)
        self.bus.signal_rejected.emit(
            SignalRejected(self.clock(), code, error.reason, None, error.signal_id, error.raw, line_no)
        )

    def on_signal(self, signal: Signal, raw: str | None = None, line_no: int | None = None) -> Order | None:
        """One valid signal through every gate. Never raises: an error before the order leaves rejects it.

        What only a signal has (dedupe, its time, Kelly sizing against position and working orders, the
        cancel of working orders the new target supersedes) happens here; then ``_admit``, as for any order.
        """
        self.stats.signals += 1
        self._raw = raw
        self._line_no = line_no
        now = self.clock()
        book = self.book
        try:
            if self.blocked is not None:  # no lookup: the database may be what is down
                if signal.id in self.signal_ids:
                    self._duplicate(signal, now)
                    return None
                self.signal_ids.remember(signal.id)  # its row is buffered: a retry before the flush is a duplicate
                self.reject(signal, now, RejectCode.BLOCKED, str(self.blocked))
                return None
            try:
                new = self.signal_ids.add(signal.id)
            except DedupeUnavailable as exc:  # fail closed; not a signals row: the id may exist there
                log.error("signal.dedupe_unavailable", signal_id=signal.id, error=str(exc))
                self.stats.rejected += 1
                self._count_reason(RejectCode.DEDUPE_UNAVAILABLE)
                self.bus.signal_rejected.emit(SignalRejected(
                    now, RejectCode.DEDUPE_UNAVAILABLE, f"could not check whether signal id {signal.id!r} was seen "
                    f"before: {exc}", signal, signal.id, self._raw, self._line_no))
                return None
            if not new:
                self._duplicate(signal, now)
                return None
            if self.signal_time is not None and (late := self.signal_time(signal)) is not None:
                self.reject(signal, now, *late)
                return None
            symbol = signal.symbol
            instrument = self.instruments.get(symbol, signal)
            if instrument is None:
                why = self.instruments.unlisted.get(symbol) or "is not a known instrument"
                self.reject(signal, now, RejectCode.UNKNOWN_SYMBOL, f"{symbol} {why}")
                return None
            quote = self.broker.quote(symbol)
            if quote is None:
                self.reject(signal, now, RejectCode.NO_MARKET_DATA, f"no quote for {symbol}")
                return None
            price = signal.reference_price = quote.reference
            exits: tuple[Decimal | None, Decimal | None] | None = None
            if signal.bracket:
                levels = bracket_exits(signal, instrument, price)
                if isinstance(levels, str):
                    self.reject(signal, now, RejectCode.BRACKET_PRICES, levels)
                    return None
                exits = levels
            equity = self.equity()
            self._observe_equity(now, equity)
            target = target_quantity(signal, instrument, price, equity, self.kelly)
            if target == 0 and signal.direction is not Direction.FLAT:
                if full_kelly(signal) <= 0:
                    self.reject(signal, now, RejectCode.NO_EDGE, "Kelly fraction is not positive: no edge to trade")
                    return None
                self.reject(signal, now, RejectCode.ZERO_SIZE, "sized below one lot")
                return None
            pos = self.portfolio.positions.get(symbol)
            position = pos.quantity if pos is not None else ZERO
            working = book.working_qty.get(symbol, ZERO)
            # Sized as a broker that confirms cancels at once would see it: orders whose cancel is on its way
            # (IB confirms later) are gone. Counted, a flat signal read a pending-cancel buy and a working sell
            # as "flat already" and left the sell to fill. The checks still count them until confirmed.
            exposure = position + working - book.cancelling(symbol)
            if within_band(target, exposure, self.kelly.rebalance_band):
                detail = f"position+working {exposure} is within {self.kelly.rebalance_band:.0%} of target {target}"
                self.reject(signal, now, RejectCode.AT_TARGET, detail)
                return None
            delta = target - exposure
            side = Side.BUY if delta > 0 else Side.SELL
            if book.live_by_symbol.get(symbol) and self._cancel_opposing(symbol, side, signal.id):
                # Size against what stays working: a broker that confirms cancels later (IB) must give the same
                # order as one that confirms at once. The checks below still count those orders until confirmed.
                working = book.working_qty.get(symbol, ZERO)
                exposure = position + working - book.cancelling(symbol)
                delta = target - exposure
                if delta == 0:
                    self.reject(signal, now, RejectCode.AT_TARGET, "working orders against the new target were "
                                       f"cancelled; position+working {exposure} is the target")
                    return None
                side = Side.BUY if delta > 0 else Side.SELL
            limit = None if signal.limit_price is None else instrument.round_price(signal.limit_price, side)
            trigger = None if signal.stop_price is None else instrument.round_price(signal.stop_price)
            # A bracket protects what its entry opens: an entry that reduces the position needs no exits.
            protect = exits is not None and side is (Side.BUY if signal.direction is Direction.LONG else Side.SELL)
            if exits is not None and not protect:
                log.info("bracket.not_sent", signal_id=signal.id, symbol=symbol,
                         detail="the order reduces the position: no exits")
            intent = OrderIntent(
                client_order_id_for(signal.id),
                signal.id,
                signal.strategy,
                instrument,
                side,
                abs(delta),
                signal.order_type,
                limit,
                trigger,
                TimeInForce.DAY,
                now,
                now + timedelta(seconds=signal.ttl_s) if signal.ttl_s else None,
                transmit=not protect,
            )
        except Exception as exc:  # fail closed: a bug or an unforeseen value must not stop the engine
            self._internal_error(signal, now, exc)
            return None
        order = self._admit(intent, now, quote, position, working, equity, price, signal)
        if protect and order is not None and order.status not in _NOT_SENT:
            assert exits is not None
            self._send_exits(order, exits, min(abs(delta), abs(target)), now)
        return order

    def _send_exits(self, entry: Order, exits: tuple[Decimal | None, Decimal | None], quantity: Decimal,
                    now: datetime) -> None:
        """A bracket's exits, after its entry: children of the entry in one OCA group, GTC so the position
        stays protected at the broker while this process is down. The last one is transmitted (IB holds the
        entry and the first exit until it arrives). They pass no pre-trade check: they can only close what
        the entry opens, and the broker holds them until it has."""
        i = entry.intent
        inst = i.instrument
        side = Side.SELL if i.side is Side.BUY else Side.BUY
        stop, target = exits
        legs: list[tuple[str, OrderType, Decimal | None, Decimal | None]] = []
        if stop is not None:
            legs.append((STOP_LOSS, OrderType.STP, None, stop))
        if target is not None:
            legs.append((TAKE_PROFIT, OrderType.LMT, target, None))
        tag = i.signal_id or i.client_order_id
        for n, (kind, order_type, limit, trigger) in enumerate(legs):
            intent = OrderIntent(
                exit_order_id(kind, tag, inst.symbol), i.signal_id, i.strategy, inst, side, quantity, order_type,
                limit, trigger, TimeInForce.GTC, now, None, parent_id=i.client_order_id,
                oca_group=i.client_order_id, transmit=n == len(legs) - 1,
            )
            exit_order = self._send(intent, now)
            if exit_order.status in _NOT_SENT:  # no entry without its protection: the bracket is withdrawn
                log.error("bracket.exit_not_sent", client_order_id=intent.client_order_id, entry=i.client_order_id,
                          reason=exit_order.reason, detail="the entry and its other exits are cancelled")
                self.cancel(i.client_order_id, f"its exit {intent.client_order_id} could not be sent")
                self._cancel_exits_of(entry, OrderStatus.CANCELLED)
                return
            log.info("bracket.exit_sent", client_order_id=intent.client_order_id, entry=i.client_order_id,
                     order_type=str(order_type), side=str(side), quantity=str(quantity),
                     price=str(limit if limit is not None else trigger))

    def _cancel_exits_of(self, entry: Order, status: OrderStatus) -> None:
        """An entry that ended without a fill takes its exits with it (IB cancels children with their parent;
        an exit left here would wait for nothing, or, as a lone order, open a position)."""
        coid = entry.client_order_id
        live = self.book.live_by_symbol.get(entry.symbol) or {}
        for o in [o for o in live.values() if o.intent.parent_id == coid]:
            self.cancel(o.client_order_id, f"its entry {coid} is {status}")

    def _check_protection(self, symbol: str) -> None:
        """After every fill of a symbol with exits (an exit's sibling filled, another order moved the position,
        someone else's trade): fit the protection to the position."""
        self._fit_protection(symbol, self.portfolio.quantity(symbol),
                             "protection no longer matches the position")

    def _fit_protection(self, symbol: str, position: Decimal, reason: str) -> None:
        """Exits may only reduce ``position``, and together never by more than it (one bracket's exits, an
        OCA group, count once): each group is cut to what is left of the position, in the order they came,
        and a group with nothing left to protect, or on the wrong side, is cancelled."""
        groups: dict[str, list[Order]] = {}
        for o in self.book.protection(symbol):
            if o.status is not OrderStatus.PENDING_CANCEL:
                groups.setdefault(o.intent.oca_group or o.client_order_id, []).append(o)
        left = abs(position)
        for exits in groups.values():
            reduces = position != 0 and (position > 0) is (exits[0].intent.side is Side.SELL)
            size = max(o.remaining for o in exits)
            keep = min(size, left) if reduces else ZERO
            left -= keep
            for o in exits:
                if keep <= 0:
                    log.warning("bracket.exit_cancelled", client_order_id=o.client_order_id, symbol=symbol,
                                position=str(position), remaining=str(o.remaining))
                    self.cancel(o.client_order_id, f"{reason} {position}")
                elif o.remaining > keep:
                    self._resize(o, o.filled_qty + keep, f"{reason} {position}: cut to {keep}")

    def _resize(self, order: Order, quantity: Decimal, reason: str) -> None:
        """Cut a working exit to ``quantity`` in total, at the broker and in its row (an event says why)."""
        log.warning("bracket.exit_resized", client_order_id=order.client_order_id, symbol=order.symbol,
                    from_quantity=str(order.intent.quantity), quantity=str(quantity))
        order.intent.quantity = quantity
        self.broker.resize(order.client_order_id, quantity)
        self.bus.order_status.emit(order, StatusChange(order.client_order_id, self.clock(), order.status,
                                                       order.status, reason))

    def submit_intent(self, intent: OrderIntent) -> Order | str:
        """Send an order that did not come from a signal (e.g. a flatten); returns it or the reject reason.

        The same admission as a signal's order: the board (which lets a flatten through HALTED only while it
        reduces exposure) and every pre-trade check.
        """
        now = self.clock()
        if self.blocked is not None:
            return f"blocked: {self.blocked}"
        symbol = intent.instrument.symbol
        position = self.portfolio.quantity(symbol)
        working = self.book.working(symbol)
        quote = self.broker.quote(symbol)
        price = None if quote is None else quote.reference
        result = self._admit(intent, now, quote, position, working, self.equity(), price)
        if isinstance(result, tuple):
            code, reason = result
            return reason if code is RejectCode.KILLSWITCH else f"{code}: {reason}"
        return result

    @overload
    def _admit(self, intent: OrderIntent, now: datetime, quote: Quote | None, position: Decimal, working: Decimal,
               equity: Decimal, price: Decimal | None, signal: Signal) -> Order | None: ...

    @overload
    def _admit(self, intent: OrderIntent, now: datetime, quote: Quote | None, position: Decimal, working: Decimal,
               equity: Decimal, price: Decimal | None, signal: None = None) -> Order | tuple[RejectCode, str]: ...

    def _admit(self, intent: OrderIntent, now: datetime, quote: Quote | None, position: Decimal, working: Decimal,
               equity: Decimal, price: Decimal | None, signal: Signal | None = None,
               ) -> Order | tuple[RejectCode, str] | None:
        """The one admission of every order: kill switches, pre-trade checks, then recorded and sent.

        ``signal`` is the signal the order comes from: its rejection is published here (and None returned),
        and an order-rate breach counts against its strategy. An engine-made order gets (code, reason) back.
        An error here fails closed: the order does not leave.
        """
        try:
            gate = self.killswitches.gate(intent, position, working)
            if not gate.allowed:
                verdict: tuple[RejectCode, str] | None = (RejectCode.KILLSWITCH, gate.reason or "kill switch")
            else:
                reject = run_checks(self.checks, intent, self._context(intent, now, quote, position, working, equity,
                                                                       price))
                verdict = None if reject is None else (reject.code, reject.detail)
                if signal is not None and reject is not None and reject.code is RejectCode.ORDER_RATE:
                    self._apply_trip(self.trips.on_rate_breach(now, signal.strategy))
        except Exception as exc:
            if signal is None:
                log.exception("order.internal_error", client_order_id=intent.client_order_id)
                return RejectCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
            self._internal_error(signal, now, exc)
            return None
        if verdict is not None:
            if signal is None:
                return verdict
            self.reject(signal, now, *verdict)
            return None
        if signal is not None:
            self.stats.accepted += 1
        if position and (position > 0) is (intent.side is Side.SELL) and self.book.exits_by_symbol.get(
                intent.instrument.symbol):
            # Admitted, and it closes some of the position: the exits protecting it are cut to what it leaves
            # (cancelled if it leaves nothing, or flips), so that both filling at once cannot close more than
            # the position. Only now: an order refused by a check or a kill switch leaves the protection be.
            self._fit_protection(intent.instrument.symbol, position + intent.signed_quantity,
                                 f"order {intent.client_order_id} reduces the position to")
        return self._send(intent, now, signal)

    def _internal_error(self, signal: Signal, now: datetime, exc: Exception) -> None:
        log.exception("signal.internal_error", signal_id=signal.id)
        self.reject(signal, now, RejectCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _duplicate(self, signal: Signal, now: datetime) -> None:
        self.stats.duplicates += 1
        self._count_reason(RejectCode.DUPLICATE)
        reason = f"signal id {signal.id!r} was already processed"
        self.bus.signal_rejected.emit(SignalRejected(now, RejectCode.DUPLICATE, reason, signal, signal.id, self._raw,
                                                     self._line_no))

    def reject(self, signal: Signal, now: datetime, code: RejectCode, reason: str) -> None:
        """Publish the rejection of the signal being handled (its line and line number travel with it)."""
        self.stats.rejected += 1
        self._count_reason(code)
        self.bus.signal_rejected.emit(SignalRejected(now, code, reason, signal, signal.id, self._raw, self._line_no))

    def _context(
        self, intent: OrderIntent, now: datetime, quote: Quote | None, position: Decimal, working: Decimal,
        equity: Decimal, price: Decimal | None,
    ) -> CheckContext:
        """Everything the pre-trade checks may know, for one order at one instant."""
        symbol = intent.instrument.symbol
        exposure = self.portfolio.exposure
        own_bid = own_ask = None
        live = self.book.live_by_symbol.get(symbol)
        if live:
            own_bid, own_ask = own_best(live.values())
        rates = self.rates
        return CheckContext(
            now,
            quote,
            position,
            working,
            self.limits.for_order(intent.strategy, symbol),
            equity,
            exposure.gross,
            exposure.net,
            exposure.mark(symbol, position + working, price),
            equity - self.trips.day_start_equity,
            rates.count(now),
            rates.count(now, symbol),
            self.recent_orders.last((symbol, intent.side, intent.quantity, intent.limit_price), now),
            own_bid,
            own_ask,
            self.broker_connected,
            self.broker.available_funds(),
            self._expected_outage(),
            self.broker.quote_delayed(symbol),
        )

    def _expected_outage(self) -> str | None:
        """The maintenance window the broker link went down in, while it is down (None otherwise)."""
        if self.broker_connected:
            return None
        window = self.trips.expected_outage()
        return None if window is None else window[0].name

    def _cancel_opposing(self, symbol: str, side: Side, signal_id: str) -> int:
        """A new target supersedes working orders that trade the other way: cancel them (never cross them)."""
        return sum(self.cancel(coid, f"superseded by signal {signal_id}") for coid in self.book.opposing(symbol, side))

    def _count_reason(self, code: RejectCode) -> None:
        reasons = self.stats.reject_reasons
        reasons[code] = reasons.get(code, 0) + 1

    # -- orders out ------------------------------------------------------------------------------------
    def _send(self, intent: OrderIntent, now: datetime, signal: Signal | None = None) -> Order:
        order = Order(intent, now)
        order.history.append(StatusChange(intent.client_order_id, now, None, OrderStatus.PENDING_NEW))
        coid = intent.client_order_id
        book = self.book
        symbol = intent.instrument.symbol
        self.portfolio.mark(symbol, book.add(order))
        self.rates.add(now, symbol)
        if intent.parent_id is None:  # an exit is not an order a later signal could duplicate
            self.recent_orders.add((symbol, intent.side, intent.quantity, intent.limit_price), now)
        self.stats.orders += 1
        book.unsent = order
        try:  # recorded, with its signal as one unit, before it leaves the engine
            if signal is not None:
                self.bus.order_recorded.emit(order, signal, self._raw, self._line_no)
            else:
                self.bus.order_recorded.emit(order, None, None, None)
        except Exception as exc:  # the record is not whole: the order must not leave (fail closed)
            log.exception("order.not_recorded", client_order_id=coid)
            self._fail_closed(order, now, f"internal_error: not recorded ({type(exc).__name__}: {exc}): not sent")
            return order
        commit = self.before_submit
        if commit is not None and not commit(order):  # the record did not reach the database: do not send
            self._fail_closed(order, now, "not recorded (database unavailable or row refused): not sent")
            return order
        book.unsent = None
        if order.status.is_terminal:  # cancelled while it was being recorded (a halt its own record set off)
            return order
        self.broker.submit(order)
        return order

    def _fail_closed(self, order: Order, now: datetime, reason: str) -> None:
        """Reject an order that never left; its bookkeeping is undone even when publishing that fails too."""
        self.book.unsent = None
        if order.status.is_terminal:
            return
        signals_order = order.intent.signal_id is not None and order.intent.parent_id is None  # an exit is not
        self.stats.accepted -= signals_order  # its signal's: that was accepted, with its entry
        self.stats.rejected += signals_order
        self._count_reason(RejectCode.INTERNAL_ERROR)
        try:
            self._transition(order, OrderStatus.REJECTED, now, reason)
        except Exception:
            log.exception("order.reject_not_recorded", client_order_id=order.client_order_id)
            if order.status is not OrderStatus.REJECTED:
                order.status = OrderStatus.REJECTED
                self._retire(order)

    def adopt_order(self, order: Order) -> None:
        """Take over an order that is working at the broker (found by reconciliation): tracked, not sent.

        ``apply_reconcile`` is the way in; this stays while engine/session.py's reconcile_at_start calls it.
        """
        self.portfolio.mark(order.symbol, self.book.adopt(order))
        if order.intent.signal_id is not None:
            self.signal_ids.remember(order.intent.signal_id)

    def cancel(self, client_order_id: str, reason: str) -> bool:
        book = self.book
        order = book.orders.get(client_order_id)
        if order is None or order.status is OrderStatus.PENDING_CANCEL:
            return False
        if order is book.unsent:  # not handed to the broker yet: it is cancelled here and never leaves
            self._transition(order, OrderStatus.CANCELLED, self.clock(), reason)
            return True
        self._transition(order, OrderStatus.PENDING_CANCEL, self.clock(), reason)
        self.broker.cancel(client_order_id, reason)
        return True

    def cancel_where(self, predicate: Callable[[Order], bool], reason: str) -> int:
        """Cancel every live order the predicate selects; return how many cancels were sent.

        A bracket's exits go before entries: cancelling an entry first would leave IB to cancel its exits
        on its own, while ours are still on the way."""
        chosen = sorted((o for o in self.book.orders.values() if predicate(o)),
                        key=lambda o: o.intent.parent_id is None)
        return sum(self.cancel(o.client_order_id, reason) for o in chosen)

    def expire(self, now: datetime) -> int:
        """Cancel orders whose signal's ttl has passed."""
        return sum(self.cancel(coid, "ttl expired") for coid in self.book.expired(now))

    # -- broker events in (BrokerListener) -------------------------------------------------------------
    def on_order_update(self, update: OrderUpdate) -> None:
        order = self.book.orders.get(update.client_order_id)
        if order is None:
            log.warning("order.update_unknown", client_order_id=update.client_order_id, status=update.status)
            return
        if update.broker_order_id is not None:
            order.broker_order_id = update.broker_order_id
        if update.perm_id is not None:
            order.perm_id = update.perm_id
        status = update.status
        if status is order.status or status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
            return  # fills drive filled/partially-filled; repeats are normal (IB repeats orderStatus)
        late_ack = order.status not in (OrderStatus.PENDING_NEW, OrderStatus.UNKNOWN, OrderStatus.PENDING_CANCEL)
        if status is OrderStatus.SUBMITTED and late_ack:
            return  # a late acknowledgement after fills have started
        self._transition(order, status, update.ts, update.reason)
        if status in _NOT_SENT and self.book.exits_by_symbol.get(order.symbol):
            if order.filled_qty == 0:
                self._cancel_exits_of(order, status)
            elif not order.intent.transmit:  # a bracket's entry ended part filled: its exits go with it at IB
                log.error("bracket.unprotected", client_order_id=order.client_order_id, symbol=order.symbol,
                          filled=str(order.filled_qty), status=str(status),
                          detail="the entry ended part filled; its exits are cancelled with it: the filled part "
                                 "has no stop at the broker (send a new signal with stop_loss, or flatten)")
        if status is OrderStatus.REJECTED:  # after the order is final: a trip's cancels must not touch it
            self._apply_trip(self.trips.on_broker_reject(update.ts, update.reason))

    def on_fill(self, fill: Fill) -> None:
        portfolio = self.portfolio
        if not portfolio.exec_ids.add(fill.exec_id):
            log.info("fill.duplicate_ignored", exec_id=fill.exec_id)
            return
        if fill.corrects is not None:
            self._correct(fill)
            return
        book = self.book
        order = book.orders.get(fill.client_order_id)
        if order is not None:
            book.fill(order, fill)
            if order.intent.oca_group is not None:
                book.reduce_oca_siblings(order, fill.quantity)
        else:
            log.warning("fill.unknown_order", exec_id=fill.exec_id, client_order_id=fill.client_order_id)
        pos = portfolio.book(fill, order)
        self.stats.fills += 1
        self.bus.fill_booked.emit(fill, order, pos)  # one unit: the fill, its order's row and the position
        if order is not None:
            status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.PARTIALLY_FILLED
            self._transition(order, status, fill.ts, None)
            if book.exits_by_symbol.get(fill.symbol):
                self._check_protection(fill.symbol)
        else:
            symbol = fill.symbol
            portfolio.mark(symbol, book.working_qty.get(symbol, ZERO))
            if book.exits_by_symbol.get(symbol):  # someone else's trade moved the position our exits protect
                self._check_protection(symbol)
            if fill.source != "inferred":  # reconciliation books fills of orders that ended while we were away
                self._apply_trip(self.trips.on_unknown_fill(symbol, fill.exec_id, fill.client_order_id))
        self._observe_equity(fill.ts, self.equity())

    def _book_inferred(self, fill: Fill, order: Order | None = None) -> None:
        """A fill reconciliation found at the broker and this engine never booked, booked against its order.

        A live order takes it as any fill (it may finish the order). ``order`` is the record of one that
        is no longer live (finished at the broker while we were away, or retired here): the fill moves its
        filled quantity, average price and commission, and the position, so the order's row stays the sum
        of its fills; its status is reconciliation's to set. Runs on the reconcile timer, never per signal.
        """
        if order is None or fill.corrects is not None or fill.client_order_id in self.book.orders:
            self.on_fill(fill)
            return
        if not self.portfolio.exec_ids.add(fill.exec_id):
            return
        apply_fill(order, fill)
        pos = self.portfolio.book(fill, order)
        self.stats.fills += 1
        self.bus.fill_booked.emit(fill, order, pos)  # the order's row is written with it
        self.portfolio.mark(fill.symbol, self.book.working(fill.symbol))
        if self.book.exits_by_symbol.get(fill.symbol):  # an exit filled while we were away
            self._check_protection(fill.symbol)
        self._observe_equity(fill.ts, self.equity())

    def _correct(self, fill: Fill) -> None:
        """An execution correction replaces the fill it names: undo that one's effect, book this one."""
        corrected = self.portfolio.correct(fill)
        if corrected is None:
            log.error("fill.correction_unknown", exec_id=fill.exec_id, corrects=fill.corrects,
                      detail="the corrected fill is not in memory; reconciliation compares positions")
            return
        old, order, pos = corrected
        if order is not None:
            self.book.correct(order, old, fill)
        log.warning("fill.corrected", exec_id=fill.exec_id, corrects=old.exec_id, old_price=str(old.price),
                    price=str(fill.price), old_quantity=str(old.quantity), quantity=str(fill.quantity))
        self.bus.fill_booked.emit(fill, order, pos)
        self.portfolio.mark(fill.symbol, self.book.working(fill.symbol))

    def on_connection(self, connected: bool, ts: datetime, reason: str | None = None) -> None:
        """The broker link went down or came back: new orders stop while it is down."""
        if connected == self.broker_connected:
            return
        self.broker_connected = connected
        self.trips.on_connection(ts, connected)
        if connected:
            log.warning("broker.reconnected", reason=reason)
            self.reconcile_positions(confirm=True)  # what happened while we were away
        else:
            log.error("broker.disconnected", reason=reason)

    def _transition(self, order: Order, status: OrderStatus, ts: datetime, reason: str | None) -> None:
        try:
            change = order.transition(status, ts, reason)
        except IllegalTransition as exc:
            log.error("order.illegal_transition", client_order_id=exc.client_order_id,
                      current=str(exc.current), target=str(exc.target))
            return
        self.bus.order_status.emit(order, change)
        if status.is_terminal:
            self._retire(order)

    def _retire(self, order: Order) -> None:
        working = self.book.retire(order)
        if working is not None:
            self.portfolio.mark(order.symbol, working)

    # -- reconciliation --------------------------------------------------------------------------------
    def booked_executions(self, exec_ids: Iterable[str], lookup: Callable[[list[str]], Iterable[str]]) -> set[str]:
        """Which of ``exec_ids`` are booked already: this session's are in memory; ``lookup`` (the database)
        is asked about the others once, and what it knows is remembered."""
        known = self.portfolio.exec_ids
        ids = list(exec_ids)
        unseen = [e for e in ids if e not in known]
        for exec_id in lookup(unseen) if unseen else ():
            known.add(exec_id)  # booked by an earlier session: not looked up again
        return {e for e in ids if e in known}

    def apply_reconcile(self, report: ReconcileReport, records: Mapping[str, Order] | None = None,
                        load_orders: Callable[[list[str]], Iterable[Order]] | None = None) -> ReconcileApplied:
        """Apply what reconciliation found (``broker.reconcile``); the caller does the reading and writing.

        ``records`` are the orders the database holds that the report may name and this engine does not track
        (at start: every open row), as domain orders; ``load_orders`` gives the records of other orders a
        found execution belongs to (called once, before anything changes, and only when needed). In order:
        open rows the broker finished take their final state (and their signal ids stay taken); those still
        working are tracked again (an acknowledgement lost in a crash is taken, a cancel that may have died
        with the process is sent again); orders only the broker had are recorded and tracked; executions
        only the broker had are booked against their orders; live orders the broker finished take its state.
        Position differences are ``reconcile_positions``'s to judge, after the caller has written all this.
        """
        records = records or {}
        live = self.book.orders
        done = ReconcileApplied()
        finished: dict[str, Order] = {}  # orders no longer working: they take the inferred fills
        for coid, status, why in report.close_orders:
            closed = records.get(coid)
            if coid in live or closed is None:
                continue
            closed.status, closed.reason = status, why
            finished[coid] = closed
            done.closed.append(closed)
        fills_by_order: dict[str, Decimal] = {}
        for f in report.adopt_fills:
            fills_by_order[f.client_order_id] = fills_by_order.get(f.client_order_id, ZERO) + f.quantity
        kept: list[tuple[BrokerOrder, Order]] = []
        for b in report.keep_open:
            order = records[b.client_order_id]
            order.filled_qty = b.filled - fills_by_order.get(b.client_order_id, ZERO)
            kept.append((b, order))
            done.kept_open.append(order)
        now = self.clock()
        for b in report.adopt_orders:
            order = order_from_broker(b, self.instruments.get(b.symbol) or Instrument(b.symbol), now)
            order.filled_qty = b.filled - fills_by_order.get(b.client_order_id, ZERO)
            done.adopted.append(order)
            if order.status.is_terminal:
                finished[order.client_order_id] = order
        tracked = set(live) | {o.client_order_id for o in done.kept_open} | {
            o.client_order_id for o in done.adopted if not o.status.is_terminal}
        wanted = sorted({f.client_order_id for f in report.adopt_fills if f.client_order_id
                         and f.client_order_id not in tracked and f.client_order_id not in finished})
        for coid in wanted:
            if coid in records:
                finished[coid] = records[coid]
        wanted = [c for c in wanted if c not in finished]
        if wanted and load_orders is not None:
            for order in load_orders(wanted):  # may raise: nothing has changed yet
                finished[order.client_order_id] = order
        # -- from here on the engine changes
        for order in done.closed:
            if order.intent.signal_id is not None:  # a replay of its signal must find it, even if its row was lost
                self.signal_ids.remember(order.intent.signal_id)
            log.warning("reconcile.order_closed", client_order_id=order.client_order_id, status=order.status.value,
                        reason=order.reason)
        for b, order in kept:
            self.adopt_order(order)
            coid = order.client_order_id
            if order.status is OrderStatus.PENDING_NEW:  # the acknowledgement was lost in the crash
                self.on_order_update(OrderUpdate(coid, OrderStatus.SUBMITTED, self.clock(),
                                                 "reconciliation: working at the broker", b.broker_order_id,
                                                 b.perm_id))
            elif order.status is OrderStatus.PENDING_CANCEL:  # our cancel may have died with the process
                self.broker.cancel(coid, order.reason or "reconciliation: cancel sent again")
                done.cancels_resent.append(coid)
                log.warning("reconcile.cancel_resent", client_order_id=coid)
        for order in done.adopted:
            self.bus.order_recorded.emit(order, None, None, None)  # recorded with the state the broker reports
            if not order.status.is_terminal:
                self.adopt_order(order)
            elif order.intent.signal_id is not None:
                self.signal_ids.remember(order.intent.signal_id)
            log.warning("reconcile.order_adopted", client_order_id=order.client_order_id, status=order.status.value)
        for fill in report.adopt_fills:
            self._book_inferred(fill, finished.get(fill.client_order_id))
            done.inferred_fills.append(fill)
            log.warning("reconcile.fill_inferred", exec_id=fill.exec_id, client_order_id=fill.client_order_id,
                        symbol=fill.symbol, quantity=str(fill.signed_quantity))
        for coid in sorted({f.client_order_id for f in report.adopt_fills}):
            booked = live.get(coid) or finished.get(coid)
            broker = report.theirs.get(coid)
            if booked is not None and broker is not None and booked.filled_qty != broker.filled:
                log.error("reconcile.order_fills_differ", client_order_id=coid, ours=str(booked.filled_qty),
                          broker=str(broker.filled),
                          detail="the broker's executions do not add up to its filled quantity")
        for b in report.acknowledged:  # Unknown orders the broker has working: their acknowledgement was lost
            if b.client_order_id in live:
                log.warning("reconcile.order_acknowledged", client_order_id=b.client_order_id)
                self.on_order_update(OrderUpdate(b.client_order_id, OrderStatus.SUBMITTED, self.clock(),
                                                 "reconciliation: working at the broker", b.broker_order_id,
                                                 b.perm_id))
        for coid, status, why in report.close_orders:
            working = live.get(coid)
            if working is None:
                continue
            log.warning("reconcile.order_settled", client_order_id=coid, from_status=working.status.value,
                        status=status.value, reason=why)
            self.on_order_update(OrderUpdate(coid, status, self.clock(), why))
            done.settled.append(working)
        return done

    # -- kill switches ---------------------------------------------------------------------------------
    def set_killswitch(
        self, scope: str, state: KillState, reason: str, actor: str, event_id: int | None = None,
        cancel_protection: bool = False,
    ) -> int:
        """Apply a kill-switch change; on HALTED cancel every live order in scope. Returns cancels sent.

        ``event_id`` is the stored event the change came from (an operator's command); a change without
        one originates here (a trigger) and subscribers to ``bus.killswitch`` must store it. The exits that
        protect open positions stay (they can only reduce) unless ``cancel_protection`` (a flatten, which
        closes the positions itself and must not be doubled by a stop).
        """
        previous = self.killswitches.set(scope, state)
        now = self.clock()
        if previous is not state or event_id is not None:
            self.bus.killswitch.emit(KillSwitchChange(now, scope, previous, state, reason, actor, False, event_id))
        if previous is not state:
            event = "killswitch.tripped" if state.severity > previous.severity else "killswitch.changed"
            log.warning(event, scope=scope, from_state=str(previous), to_state=str(state), reason=reason,
                        actor=actor)
        if state is not KillState.HALTED:
            return 0
        board = self.killswitches

        def halts(o: Order) -> bool:
            i = o.intent
            if i.flatten or not board.in_scope(scope, i.strategy, o.symbol):
                return False
            if not self.protects(o):
                return True
            # protection stays (it can only reduce), unless a flatten will close the position in its place
            return cancel_protection and self.can_close(o.symbol)

        return self.cancel_where(halts, f"kill switch {scope} HALTED: {reason}")

    def can_close(self, symbol: str) -> bool:
        """Whether a closing order for ``symbol`` could leave now (the link up, nothing blocking, a quote to
        price it): a flatten that cannot close a position leaves its protection in place."""
        return (self.broker_connected and self.blocked is None and self.instruments.get(symbol) is not None
                and self.broker.quote(symbol) is not None)

    def _apply_trip(self, trip: Trip | None) -> None:
        """An automatic trigger fired: raise the scope to its state, never lower it."""
        if trip is None or self.killswitches.get(trip.scope).severity >= trip.state.severity:
            return
        self.stats.trips += 1
        self.set_killswitch(trip.scope, trip.state, trip.reason, trip.actor)

    def halt_for_row_defect(self, symbol: str | None, reason: str) -> None:
        """The database refused a row of this symbol's orders, fills or position: stop trading it, loudly.

        Without a symbol (an order event of an order no longer in memory) the whole account halts.
        """
        scope = symbol_scope(symbol) if symbol else GLOBAL
        log.error("recorder.scope_halted", scope=scope, reason=reason)
        self._apply_trip(Trip(ROW_DEFECT, scope, KillState.HALTED, reason))

    def symbol_of(self, client_order_id: str | None) -> str | None:
        return self.book.symbol_of(client_order_id)

    def _observe_equity(self, now: datetime, equity: Decimal) -> None:
        for trip in self.trips.on_equity(now, equity):
            self._apply_trip(trip)

    def housekeeping(self, now: datetime) -> None:
        """Timer work: the disconnect timeout, loss limits on prices that moved without a fill, and orders the
        broker has not acknowledged within ``ack_timeout_s`` (Unknown: reconciliation settles them)."""
        self._apply_trip(self.trips.check_disconnect(now))
        self._observe_equity(now, self.equity())
        timeout = self.ack_timeout_s
        if timeout is not None and self.broker_connected:
            late = [o for o in self.book.orders.values()
                    if o.status is OrderStatus.PENDING_NEW and (now - o.created_at).total_seconds() >= timeout]
            for order in late:
                log.error("order.unacknowledged", client_order_id=order.client_order_id, after_s=timeout,
                          detail="not sent again: reconciliation asks the broker whether it has it")
                self._transition(order, OrderStatus.UNKNOWN, now, f"no acknowledgement from the broker in {timeout}s")

    @property
    def unknown_orders(self) -> list[Order]:
        return [o for o in self.book.orders.values() if o.status is OrderStatus.UNKNOWN]

    def reconcile_positions(self, confirm: bool = False) -> dict[str, tuple[Decimal, Decimal]]:
        """Compare our positions with the broker's; trip the symbol on a difference. Returns the breaks.

        With ``confirm`` (checks while trading) a difference trips only when the next check finds the same
        one: a fill the broker has counted may still be waiting for its commission report here.
        """
        if not self.broker_connected:  # the broker's positions are unknown while the link is down, not flat
            return {}
        theirs = {p.symbol: p.quantity for p in self.broker.positions()}
        breaks: dict[str, tuple[Decimal, Decimal]] = {}
        positions = self.portfolio.positions
        for symbol in sorted(set(theirs) | set(positions)):
            pos = positions.get(symbol)
            ours = pos.quantity if pos is not None else ZERO
            broker_qty = theirs.get(symbol, ZERO)
            if ours != broker_qty:
                breaks[symbol] = (ours, broker_qty)
                if confirm and self.suspect_breaks.get(symbol) != (ours, broker_qty):
                    log.warning("reconcile.position_differs", symbol=symbol, ours=str(ours), broker=str(broker_qty),
                                detail="checking again before halting")
                    continue
                log.error("reconcile.position_break", symbol=symbol, ours=str(ours), broker=str(broker_qty),
                          difference=str(broker_qty - ours))
            self._apply_trip(self.trips.on_position_break(symbol, ours, broker_qty))
        self.suspect_breaks = breaks if confirm else {}
        return breaks

    def protection_kept(self, scope: str) -> int:
        """Live exits in scope that protect a position: a halt leaves them working (they can only reduce it)."""
        board = self.killswitches
        return sum(1 for o in self.book.orders.values()
                   if self.protects(o) and o.status is not OrderStatus.PENDING_CANCEL
                   and board.in_scope(scope, o.intent.strategy, o.symbol))

    def pending_cancels(self, scope: str) -> int:
        board = self.killswitches
        return sum(
            1
            for o in self.book.orders.values()
            if o.status is OrderStatus.PENDING_CANCEL and board.in_scope(scope, o.intent.strategy, o.symbol)
        )

    def flatten(self, scope: str, tag: str, collar: Decimal) -> FlattenResult:
        """Send orders that close every position in scope: marketable limits ``collar`` through the touch.

        They pass the same checks as any order except the kill switch itself (``flatten`` lets a reducing
        order through HALTED). Client order ids derive from ``tag`` (the kill event), so a replay finds them.
        Strategy scopes hold no positions of their own (positions are per account and symbol).
        """
        if scope != GLOBAL and not scope.startswith("symbol:"):
            return FlattenResult([], {scope: "positions are per account and symbol: flatten a symbol or global"})
        sent: list[Order] = []
        skipped: dict[str, str] = {}
        now = self.clock()
        positions = self.portfolio.positions
        for symbol in sorted(positions):
            qty = positions[symbol].quantity
            if qty == 0 or (scope != GLOBAL and scope != symbol_scope(symbol)):
                continue
            instrument = self.instruments.get(symbol)
            quote = self.broker.quote(symbol)
            if instrument is None or quote is None:
                skipped[symbol] = "no quote to price a closing order"
                continue
            side = Side.SELL if qty > 0 else Side.BUY
            touch = quote.bid if side is Side.SELL else quote.ask
            raw = touch * (1 - collar) if side is Side.SELL else touch * (1 + collar)
            limit = instrument.round_price(raw, side)  # rounds toward the touch: never past the collar
            intent = OrderIntent(
                engine_order_id("flat", tag, symbol), None, "flatten", instrument, side, abs(qty), OrderType.LMT, limit,
                None, TimeInForce.DAY, now, None, flatten=True,
            )
            result = self.submit_intent(intent)
            if isinstance(result, str):
                skipped[symbol] = result
                log.error("flatten.rejected", symbol=symbol, reason=result)
            else:
                sent.append(result)
                log.warning("flatten.sent", symbol=symbol, side=str(side), quantity=str(abs(qty)), limit=str(limit))
        return FlattenResult(sent, skipped)

    # -- account ---------------------------------------------------------------------------------------
    def equity(self) -> Decimal:
        """What sizing, buying power and the loss triggers use: the account's NetLiquidation when the broker
        reports one (IB), else the books (``initial_equity``, the configured equity, plus our P&L)."""
        account = self.broker.account_equity()
        if account is not None:
            return account
        return self.book_equity()

    def book_equity(self) -> Decimal:
        return self.portfolio.book_equity()

    def on_quote(self, quote: Quote) -> None:
        """Every quote the broker sees (BrokerListener): the position's mark and unrealized P&L follow it."""
        self.portfolio.on_price(quote.symbol, quote.reference)
