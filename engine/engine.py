"""The engine: one session's signal -> risk -> order -> fill -> position loop.

Order of the gates for each signal: validate, dedupe by signal id, size (Kelly), kill switches,
pre-trade checks, then the order is published (so it is recorded before it leaves) and handed to the
broker. The broker reports back through ``on_order_update`` / ``on_fill``. Everything here is
synchronous and allocation-light: it is the hot path measured by ``scripts/bench_paper.py``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import structlog

from broker.base import Broker, OrderUpdate
from engine.bus import EventBus, SignalRejected
from engine.dedupe import DedupeUnavailable, RecentIds, SignalIdIndex
from engine.domain import (
    ZERO,
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
from engine.ids import client_order_id_for, engine_order_id
from engine.signals import SignalError, parse_signal
from risk.checks import (
    DEFAULT_CHECKS,
    INFINITY,
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

RECENT_FILLS = 10_000  # fills kept in memory so an execution correction can find the one it replaces


class InstrumentBook:
    """Known instruments; in paper mode an unknown symbol gets the default contract terms."""

    def __init__(self, known: Iterable[Instrument] = (), allow_unknown: bool = True) -> None:
        self._known = {i.symbol: i for i in known}
        self.allow_unknown = allow_unknown

    def get(self, symbol: str, template: Signal | None = None) -> Instrument | None:
        inst = self._known.get(symbol)
        if inst is None and self.allow_unknown:
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


class Engine:
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
        dedupe_capacity: int = 200_000,
        signal_lookup: Callable[[str], bool] | None = None,
        positions: Iterable[Position] = (),
        trips: TripWires | None = None,
    ) -> None:
        self.broker = broker
        self.bus = bus
        self.clock = clock
        self.initial_equity = equity
        self.kelly = kelly or KellyParams()
        self.limits = limits or RiskLimits()
        self.killswitches = killswitches or KillSwitchBoard()
        self.instruments = instruments or InstrumentBook()
        self.checks = tuple(checks)
        self.signal_ids = SignalIdIndex(dedupe_capacity, signal_lookup, seen_signal_ids)
        self.exec_ids = RecentIds(dedupe_capacity)  # this session's; earlier ones: reconciliation reads the DB
        self._recent_fills: OrderedDict[str, tuple[Fill, Order | None]] = OrderedDict()  # for corrections
        self.positions: dict[str, Position] = {p.symbol: p for p in positions}
        self.orders: dict[str, Order] = {}  # live orders only; terminal ones are retired
        self.working_qty: dict[str, Decimal] = {}
        self.realized_pnl = sum((p.realized_pnl for p in self.positions.values()), ZERO)
        self.commissions = sum((p.commissions for p in self.positions.values()), ZERO)
        self.stats = EngineStats()
        self._expiries: list[tuple[datetime, str]] = []
        self.trips = trips or TripWires()
        self.rates = RateWindow(1.0)
        self.recent_orders = RecentOrders(self.limits.longest_duplicate_window())
        self.exposure = ExposureBook()
        self.live_by_symbol: dict[str, dict[str, Order]] = {}
        self.broker_connected = True
        self.blocked: str | None = None  # set while trading must stop for a reason outside the board
        self.suspect_breaks: dict[str, tuple[Decimal, Decimal]] = {}  # differences awaiting a second look
        # Live sessions commit an order (and its signal) before it leaves; False from the hook stops the order.
        self.before_submit: Callable[[Order], bool] | None = None
        self._raw: str | None = None  # the line and line number of the signal being handled, for its rows
        self._line_no: int | None = None
        self._unsent: Order | None = None  # the order being recorded, not yet handed to the broker
        # Set by a session: (code, reason) when a signal's ts is too old or too far ahead, checked after dedupe.
        self.signal_time: Callable[[Signal], tuple[RejectCode, str] | None] | None = None
        broker.set_listener(self)

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
        """One valid signal through every gate. Never raises: an error before the order leaves rejects it."""
        self.stats.signals += 1
        self._raw = raw
        self._line_no = line_no
        now = self.clock()
        try:
            intent = self._admit(signal, now)
        except Exception as exc:  # fail closed: a bug or an unforeseen value must not stop the engine
            log.exception("signal.internal_error", signal_id=signal.id)
            self.reject(signal, now, RejectCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return None
        if intent is None:
            return None
        self.stats.accepted += 1
        return self._send(intent, now, signal)

    def _admit(self, signal: Signal, now: datetime) -> OrderIntent | None:
        """Dedupe, size and gate a signal: the order to send, or None once the rejection is published."""
        stats = self.stats
        if self.blocked is not None:  # no lookup: the database may be what is down
            if signal.id in self.signal_ids:
                self._duplicate(signal, now)
                return None
            self.signal_ids.remember(signal.id)  # its row is buffered: a retry before the flush is a duplicate
            self.reject(signal, now, RejectCode.BLOCKED, self.blocked)
            return None
        try:
            new = self.signal_ids.add(signal.id)
        except DedupeUnavailable as exc:  # fail closed; not a signals row: the id may exist there
            log.error("signal.dedupe_unavailable", signal_id=signal.id, error=str(exc))
            stats.rejected += 1
            self._count_reason(RejectCode.DEDUPE_UNAVAILABLE)
            self.bus.signal_rejected.emit(SignalRejected(
                now, RejectCode.DEDUPE_UNAVAILABLE, f"could not check whether signal id {signal.id!r} was seen before: "
                f"{exc}", signal, signal.id, self._raw, self._line_no))
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
            self.reject(signal, now, RejectCode.UNKNOWN_SYMBOL, f"{symbol} is not a known instrument")
            return None
        quote = self.broker.quote(symbol)
        if quote is None:
            self.reject(signal, now, RejectCode.NO_MARKET_DATA, f"no quote for {symbol}")
            return None
        price = quote.reference
        equity = self.equity()
        self._observe_equity(now, equity)
        target = target_quantity(signal, instrument, price, equity, self.kelly)
        if target == 0 and signal.direction is not Direction.FLAT:
            if full_kelly(signal) <= 0:
                self.reject(signal, now, RejectCode.NO_EDGE, "Kelly fraction is not positive: no edge to trade")
                return None
            self.reject(signal, now, RejectCode.ZERO_SIZE, "sized below one lot")
            return None
        pos = self.positions.get(symbol)
        position = pos.quantity if pos is not None else ZERO
        working = self.working_qty.get(symbol, ZERO)
        exposure = position + working
        if within_band(target, exposure, self.kelly.rebalance_band):
            detail = f"position+working {exposure} is within {self.kelly.rebalance_band:.0%} of target {target}"
            self.reject(signal, now, RejectCode.AT_TARGET, detail)
            return None
        delta = target - exposure
        side = Side.BUY if delta > 0 else Side.SELL
        if self.live_by_symbol.get(symbol) and self._cancel_opposing(symbol, side, signal.id):
            # Size against what stays working: a broker that confirms cancels later (IB) must give the same
            # order as one that confirms at once. The checks below still count those orders until confirmed.
            cancelling = sum((o.signed_remaining for o in self.live_by_symbol[symbol].values()
                              if o.status is OrderStatus.PENDING_CANCEL), ZERO)
            working = self.working_qty.get(symbol, ZERO)
            exposure = position + working - cancelling
            delta = target - exposure
            if delta == 0:
                self.reject(signal, now, RejectCode.AT_TARGET, "working orders against the new target were "
                                   f"cancelled; position+working {exposure} is the target")
                return None
            side = Side.BUY if delta > 0 else Side.SELL
        limit = None
        if signal.order_type is OrderType.LMT and signal.limit_price is not None:
            limit = instrument.round_price(signal.limit_price, side)
        intent = OrderIntent(
            client_order_id_for(signal.id),
            signal.id,
            signal.strategy,
            instrument,
            side,
            abs(delta),
            signal.order_type,
            limit,
            None,
            TimeInForce.DAY,
            now,
            now + timedelta(seconds=signal.ttl_s) if signal.ttl_s else None,
        )
        gate = self.killswitches.gate(intent, position, working)
        if not gate.allowed:
            self.reject(signal, now, RejectCode.KILLSWITCH, gate.reason or "kill switch")
            return None
        ctx = self._context(intent, now, quote, position, working, equity, price)
        reject = run_checks(self.checks, intent, ctx)
        if reject is not None:
            if reject.code is RejectCode.ORDER_RATE:
                self._apply_trip(self.trips.on_rate_breach(now, signal.strategy))
            self.reject(signal, now, reject.code, reject.detail)
            return None
        return intent

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
        exposure = self.exposure
        own_bid = own_ask = None
        live = self.live_by_symbol.get(symbol)
        if live:
            own_bid, own_ask = _own_best(live.values())
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
        )

    def _cancel_opposing(self, symbol: str, side: Side, signal_id: str) -> int:
        """A new target supersedes working orders that trade the other way: cancel them (never cross them)."""
        stale = [
            o.client_order_id
            for o in self.live_by_symbol[symbol].values()
            if o.intent.side is not side and not o.intent.flatten and o.status is not OrderStatus.PENDING_CANCEL
        ]
        return sum(self.cancel(coid, f"superseded by signal {signal_id}") for coid in stale)

    def _count_reason(self, code: RejectCode) -> None:
        reasons = self.stats.reject_reasons
        reasons[code] = reasons.get(code, 0) + 1

    # -- orders out ------------------------------------------------------------------------------------
    def _send(self, intent: OrderIntent, now: datetime, signal: Signal | None = None) -> Order:
        order = Order(intent, now)
        order.history.append(StatusChange(intent.client_order_id, now, None, OrderStatus.PENDING_NEW))
        coid = intent.client_order_id
        self.orders[coid] = order
        symbol = intent.instrument.symbol
        live = self.live_by_symbol.get(symbol)
        if live is None:
            live = self.live_by_symbol[symbol] = {}
        live[coid] = order
        working = self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) + intent.signed_quantity
        self._mark_exposure(symbol, working)
        self.rates.add(now, symbol)
        self.recent_orders.add((symbol, intent.side, intent.quantity, intent.limit_price), now)
        if intent.expires_at is not None:
            heapq.heappush(self._expiries, (intent.expires_at, coid))
        self.stats.orders += 1
        self._unsent = order
        try:
            self.bus.order_submitted.emit(order)  # recorded before it leaves the engine
            if signal is not None:
                self.bus.signal_accepted.emit(signal, order, self._raw, self._line_no)
        except Exception as exc:  # the record is not whole: the order must not leave (fail closed)
            log.exception("order.not_recorded", client_order_id=coid)
            self._fail_closed(order, now, f"internal_error: not recorded ({type(exc).__name__}: {exc}): not sent")
            return order
        commit = self.before_submit
        if commit is not None and not commit(order):  # the record did not reach the database: do not send
            self._fail_closed(order, now, "not recorded (database unavailable or row refused): not sent")
            return order
        self._unsent = None
        if order.status.is_terminal:  # cancelled while it was being recorded (a halt its own record set off)
            return order
        self.broker.submit(order)
        return order

    def _fail_closed(self, order: Order, now: datetime, reason: str) -> None:
        """Reject an order that never left; its bookkeeping is undone even when publishing that fails too."""
        self._unsent = None
        if order.status.is_terminal:
            return
        self.stats.accepted -= order.intent.signal_id is not None
        self.stats.rejected += order.intent.signal_id is not None
        self._count_reason(RejectCode.INTERNAL_ERROR)
        try:
            self._transition(order, OrderStatus.REJECTED, now, reason)
        except Exception:
            log.exception("order.reject_not_recorded", client_order_id=order.client_order_id)
            if order.status is not OrderStatus.REJECTED:
                order.status = OrderStatus.REJECTED
                self._retire(order)

    def adopt_order(self, order: Order) -> None:
        """Take over an order that is working at the broker (found by reconciliation): tracked, not sent."""
        coid = order.client_order_id
        self.orders[coid] = order
        symbol = order.symbol
        self.live_by_symbol.setdefault(symbol, {})[coid] = order
        working = self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) + order.signed_remaining
        self._mark_exposure(symbol, working)
        if order.intent.signal_id is not None:
            self.signal_ids.remember(order.intent.signal_id)

    def submit_intent(self, intent: OrderIntent) -> Order | str:
        """Send an order that did not come from a signal (e.g. a flatten); returns it or the reject reason.

        The same gates as a signal's order: the board (which lets a flatten through HALTED only while it
        reduces exposure) and every pre-trade check.
        """
        now = self.clock()
        if self.blocked is not None:
            return f"blocked: {self.blocked}"
        symbol = intent.instrument.symbol
        pos = self.positions.get(symbol)
        position = pos.quantity if pos is not None else ZERO
        working = self.working_qty.get(symbol, ZERO)
        gate = self.killswitches.gate(intent, position, working)
        if not gate.allowed:
            return gate.reason or "kill switch"
        quote = self.broker.quote(symbol)
        price = None if quote is None else quote.reference
        ctx = self._context(intent, now, quote, position, working, self.equity(), price)
        reject = run_checks(self.checks, intent, ctx)
        if reject is not None:
            return f"{reject.code}: {reject.detail}"
        return self._send(intent, now)

    def cancel(self, client_order_id: str, reason: str) -> bool:
        order = self.orders.get(client_order_id)
        if order is None or order.status is OrderStatus.PENDING_CANCEL:
            return False
        if order is self._unsent:  # not handed to the broker yet: it is cancelled here and never leaves
            self._transition(order, OrderStatus.CANCELLED, self.clock(), reason)
            return True
        self._transition(order, OrderStatus.PENDING_CANCEL, self.clock(), reason)
        self.broker.cancel(client_order_id, reason)
        return True

    def cancel_where(self, predicate: Callable[[Order], bool], reason: str) -> int:
        """Cancel every live order the predicate selects; return how many cancels were sent."""
        return sum(self.cancel(o.client_order_id, reason) for o in list(self.orders.values()) if predicate(o))

    def expire(self, now: datetime) -> int:
        """Cancel orders whose signal's ttl has passed."""
        n = 0
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, coid = heapq.heappop(heap)
            if coid in self.orders:
                n += self.cancel(coid, "ttl expired")
        return n

    # -- broker events in (BrokerListener) -------------------------------------------------------------
    def on_order_update(self, update: OrderUpdate) -> None:
        order = self.orders.get(update.client_order_id)
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
        late_ack = order.status not in (OrderStatus.PENDING_NEW, OrderStatus.PENDING_CANCEL)
        if status is OrderStatus.SUBMITTED and late_ack:
            return  # a late acknowledgement after fills have started
        self._transition(order, status, update.ts, update.reason)
        if status is OrderStatus.REJECTED:  # after the order is final: a trip's cancels must not touch it
            self._apply_trip(self.trips.on_broker_reject(update.ts, update.reason))

    def on_fill(self, fill: Fill) -> None:
        if not self.exec_ids.add(fill.exec_id):
            log.info("fill.duplicate_ignored", exec_id=fill.exec_id)
            return
        if fill.corrects is not None:
            self._correct(fill)
            return
        order = self.orders.get(fill.client_order_id)
        recent = self._recent_fills
        recent[fill.exec_id] = (fill, order)
        if len(recent) > RECENT_FILLS:
            recent.popitem(last=False)
        symbol = fill.symbol
        if order is not None:
            if fill.quantity > order.remaining:  # the broker filled more than we think was left: it is right
                log.error("fill.overfill", exec_id=fill.exec_id, client_order_id=order.client_order_id,
                          quantity=str(fill.quantity), remaining=str(order.remaining))
                self.working_qty[symbol] -= order.signed_remaining
                order.intent.quantity = order.filled_qty + fill.quantity
            else:
                self.working_qty[symbol] -= fill.signed_quantity
            order.apply_fill(fill.quantity, fill.price, fill.commission)
        else:
            log.warning("fill.unknown_order", exec_id=fill.exec_id, client_order_id=fill.client_order_id)
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        self.realized_pnl += pos.apply(fill)
        self.commissions += fill.commission
        self.stats.fills += 1
        self.bus.position.emit(pos)  # first: a fill's row and its position are written in one transaction
        self.bus.fill.emit(fill, order)
        if order is not None:
            status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.PARTIALLY_FILLED
            self._transition(order, status, fill.ts, None)
        else:
            self._mark_exposure(symbol, self.working_qty.get(symbol, ZERO))
            if fill.source != "inferred":  # reconciliation books fills of orders that ended while we were away
                self._apply_trip(self.trips.on_unknown_fill(symbol, fill.exec_id, fill.client_order_id))
        self._observe_equity(fill.ts, self.equity())

    def on_inferred_fill(self, fill: Fill, order: Order | None = None) -> None:
        """A fill reconciliation found at the broker and this engine never booked, booked against its order.

        A live order takes it as any fill (it may finish the order). ``order`` is the record of one that
        is no longer live (finished at the broker while we were away, or retired here): the fill moves its
        filled quantity, average price and commission, and the position, so the order's row stays the sum
        of its fills; its status is reconciliation's to set. Runs on the reconcile timer, never per signal.
        """
        if order is None or fill.corrects is not None or fill.client_order_id in self.orders:
            self.on_fill(fill)
            return
        if not self.exec_ids.add(fill.exec_id):
            return
        if fill.quantity > order.remaining:  # the broker filled more than the record says was left: it is right
            log.error("fill.overfill", exec_id=fill.exec_id, client_order_id=order.client_order_id,
                      quantity=str(fill.quantity), remaining=str(order.remaining))
            order.intent.quantity = order.filled_qty + fill.quantity
        order.apply_fill(fill.quantity, fill.price, fill.commission)
        recent = self._recent_fills
        recent[fill.exec_id] = (fill, order)
        if len(recent) > RECENT_FILLS:
            recent.popitem(last=False)
        symbol = fill.symbol
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        self.realized_pnl += pos.apply(fill)
        self.commissions += fill.commission
        self.stats.fills += 1
        self.bus.position.emit(pos)  # first: a fill's row and its position are written in one transaction
        self.bus.fill.emit(fill, order)  # the order's row is written with it
        self._mark_exposure(symbol, self.working_qty.get(symbol, ZERO))
        self._observe_equity(fill.ts, self.equity())

    def _correct(self, fill: Fill) -> None:
        """An execution correction replaces the fill it names: undo that one's effect, book this one."""
        assert fill.corrects is not None
        known = self._recent_fills.pop(fill.corrects, None)
        if known is None:
            log.error("fill.correction_unknown", exec_id=fill.exec_id, corrects=fill.corrects,
                      detail="the corrected fill is not in memory; reconciliation compares positions")
            return
        old, order = known
        self._recent_fills[fill.exec_id] = (fill, order)
        symbol = fill.symbol
        pos = self.positions[symbol]
        undo = Fill(old.exec_id, old.client_order_id, symbol, Side.SELL if old.side is Side.BUY else Side.BUY,
                    old.quantity, old.price, -old.commission, fill.ts)
        self.realized_pnl += pos.apply(undo) + pos.apply(fill)
        self.commissions += fill.commission - old.commission
        if order is not None:
            filled = order.filled_qty - old.quantity + fill.quantity
            value = order.avg_fill_price * order.filled_qty - old.price * old.quantity + fill.price * fill.quantity
            order.avg_fill_price = value / filled if filled else ZERO
            if order.client_order_id in self.orders:
                self.working_qty[symbol] -= fill.signed_quantity - old.signed_quantity
            order.filled_qty = filled
            order.commission += fill.commission - old.commission
        log.warning("fill.corrected", exec_id=fill.exec_id, corrects=old.exec_id, old_price=str(old.price),
                    price=str(fill.price), old_quantity=str(old.quantity), quantity=str(fill.quantity))
        self.bus.position.emit(pos)  # first: a fill's row and its position are written in one transaction
        self.bus.fill.emit(fill, order)
        self._mark_exposure(symbol, self.working_qty.get(symbol, ZERO))

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
        coid = order.client_order_id
        self.orders.pop(coid, None)
        symbol = order.symbol
        live = self.live_by_symbol.get(symbol)
        if live is not None:
            live.pop(coid, None)
        if order.remaining:
            working = self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) - order.signed_remaining
            self._mark_exposure(symbol, working)
        order.history.clear()  # persisted already; a retired order must not pin memory

    def _mark_exposure(self, symbol: str, working: Decimal) -> None:
        pos = self.positions.get(symbol)
        self.exposure.mark(symbol, (pos.quantity if pos is not None else ZERO) + working)

    # -- kill switches ---------------------------------------------------------------------------------
    def set_killswitch(
        self, scope: str, state: KillState, reason: str, actor: str, event_id: int | None = None
    ) -> int:
        """Apply a kill-switch change; on HALTED cancel every live order in scope. Returns cancels sent.

        ``event_id`` is the stored event the change came from (an operator's command); a change without
        one originates here (a trigger) and subscribers to ``bus.killswitch`` must store it.
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
        return self.cancel_where(
            lambda o: board.in_scope(scope, o.intent.strategy, o.symbol) and not o.intent.flatten,
            f"kill switch {scope} HALTED: {reason}",
        )

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
        order = self.orders.get(client_order_id) if client_order_id is not None else None
        return order.symbol if order is not None else None

    def _observe_equity(self, now: datetime, equity: Decimal) -> None:
        for trip in self.trips.on_equity(now, equity):
            self._apply_trip(trip)

    def housekeeping(self, now: datetime) -> None:
        """Timer work: the disconnect timeout, and loss limits on prices that moved without a fill."""
        self._apply_trip(self.trips.check_disconnect(now))
        self._observe_equity(now, self.equity())

    def reconcile_positions(self, confirm: bool = False) -> dict[str, tuple[Decimal, Decimal]]:
        """Compare our positions with the broker's; trip the symbol on a difference. Returns the breaks.

        With ``confirm`` (checks while trading) a difference trips only when the next check finds the same
        one: a fill the broker has counted may still be waiting for its commission report here.
        """
        theirs = {p.symbol: p.quantity for p in self.broker.positions()}
        breaks: dict[str, tuple[Decimal, Decimal]] = {}
        for symbol in sorted(set(theirs) | set(self.positions)):
            pos = self.positions.get(symbol)
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

    def pending_cancels(self, scope: str) -> int:
        board = self.killswitches
        return sum(
            1
            for o in self.orders.values()
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
        for symbol in sorted(self.positions):
            qty = self.positions[symbol].quantity
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
        unrealized = ZERO
        for pos in self.positions.values():
            if pos.quantity:
                quote = self.broker.quote(pos.symbol)
                if quote is not None:
                    unrealized += pos.unrealized(quote.reference)
        return self.initial_equity + self.realized_pnl - self.commissions + unrealized


def _own_best(orders: Iterable[Order]) -> tuple[Decimal | None, Decimal | None]:
    """Our most aggressive resting buy and sell prices (a market order counts as crossing everything)."""
    bid: Decimal | None = None
    ask: Decimal | None = None
    for o in orders:
        i = o.intent
        if i.order_type in (OrderType.STP, OrderType.STP_LMT):
            continue  # not resting in the book until triggered
        if o.status is OrderStatus.PENDING_CANCEL:
            continue  # being cancelled: a new order on the other side is what replaces it
        limit = i.limit_price
        if i.side is Side.BUY:
            p = limit if limit is not None else INFINITY
            if bid is None or p > bid:
                bid = p
        else:
            p = limit if limit is not None else ZERO
            if ask is None or p < ask:
                ask = p
    return bid, ask
