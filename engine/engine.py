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
    Side,
    Signal,
    StatusChange,
    TimeInForce,
)
from engine.signals import SignalError, parse_signal
from risk.checks import DEFAULT_CHECKS, CheckContext, PreTradeCheck, RiskLimits, run_checks
from risk.kelly import KellyParams, full_kelly, target_quantity, within_band
from risk.killswitch import KillSwitchBoard

log = structlog.get_logger("tradectl.engine")


def client_order_id_for(signal_id: str) -> str:
    """Derived, not random: a signal replayed after a crash finds its order at the broker by orderRef."""
    return f"tc-{signal_id}"


class RecentIds:
    """A set with a bounded memory: remembers the last ``capacity`` ids (a daemon must not grow)."""

    def __init__(self, capacity: int, initial: Iterable[str] = ()) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        for i in initial:
            self.add(i)

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already known."""
        ids = self._ids
        if key in ids:
            return False
        ids[key] = None
        if len(ids) > self.capacity:
            ids.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)


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
    reject_reasons: dict[str, int] = field(default_factory=dict)


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
        positions: Iterable[Position] = (),
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
        self.signal_ids = RecentIds(dedupe_capacity, seen_signal_ids)
        self.exec_ids = RecentIds(dedupe_capacity)
        self.positions: dict[str, Position] = {p.symbol: p for p in positions}
        self.orders: dict[str, Order] = {}  # live orders only; terminal ones are retired
        self.working_qty: dict[str, Decimal] = {}
        self.realized_pnl = sum((p.realized_pnl for p in self.positions.values()), ZERO)
        self.commissions = sum((p.commissions for p in self.positions.values()), ZERO)
        self.stats = EngineStats()
        self._expiries: list[tuple[datetime, str]] = []
        broker.set_listener(self)

    # -- signals in ------------------------------------------------------------------------------------
    def on_signal_line(self, line: str) -> Order | None:
        parsed = parse_signal(line)
        if isinstance(parsed, SignalError):
            self.on_invalid_signal(parsed)
            return None
        return self.on_signal(parsed, line)

    def on_invalid_signal(self, error: SignalError) -> None:
        """A line that is not a signal: counted and published so it is stored with its reason."""
        self.stats.signals += 1
        self.stats.invalid += 1
        self._count_reason(error.code)
        self.bus.signal_rejected.emit(
            SignalRejected(self.clock(), error.code, error.reason, None, error.signal_id, error.raw)
        )

    def on_signal(self, signal: Signal, raw: str | None = None) -> Order | None:
        stats = self.stats
        stats.signals += 1
        now = self.clock()
        if not self.signal_ids.add(signal.id):
            stats.duplicates += 1
            self._count_reason("duplicate")
            reason = f"signal id {signal.id!r} was already processed"
            self.bus.signal_rejected.emit(SignalRejected(now, "duplicate", reason, signal, signal.id, raw))
            return None
        symbol = signal.symbol
        instrument = self.instruments.get(symbol, signal)
        if instrument is None:
            return self._reject(signal, now, "unknown_symbol", f"{symbol} is not a known instrument", raw)
        quote = self.broker.quote(symbol)
        if quote is None:
            return self._reject(signal, now, "no_market_data", f"no quote for {symbol}", raw)
        price = quote.last if quote.last > 0 else quote.mid
        target = target_quantity(signal, instrument, price, self.equity(), self.kelly)
        if target == 0 and signal.direction is not Direction.FLAT:
            if full_kelly(signal) <= 0:
                return self._reject(signal, now, "no_edge", "Kelly fraction is not positive: no edge to trade", raw)
            return self._reject(signal, now, "zero_size", "sized below one lot", raw)
        pos = self.positions.get(symbol)
        position = pos.quantity if pos is not None else ZERO
        working = self.working_qty.get(symbol, ZERO)
        exposure = position + working
        if within_band(target, exposure, self.kelly.rebalance_band):
            detail = f"position+working {exposure} is within {self.kelly.rebalance_band:.0%} of target {target}"
            return self._reject(signal, now, "at_target", detail, raw)
        delta = target - exposure
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
            return self._reject(signal, now, "killswitch", gate.reason or "kill switch", raw)
        ctx = CheckContext(now, quote, position, working, self.limits.for_order(signal.strategy, symbol))
        reject = run_checks(self.checks, intent, ctx)
        if reject is not None:
            return self._reject(signal, now, reject.code, reject.detail, raw)
        order = self._send(intent, now)
        stats.accepted += 1
        self.bus.signal_accepted.emit(signal, order, raw)
        return order

    def _reject(self, signal: Signal, now: datetime, code: str, reason: str, raw: str | None) -> Order | None:
        """Publish the rejection; returns None (no order) so callers can ``return self._reject(...)``."""
        self.stats.rejected += 1
        self._count_reason(code)
        self.bus.signal_rejected.emit(SignalRejected(now, code, reason, signal, signal.id, raw))
        return None

    def _count_reason(self, code: str) -> None:
        reasons = self.stats.reject_reasons
        reasons[code] = reasons.get(code, 0) + 1

    # -- orders out ------------------------------------------------------------------------------------
    def _send(self, intent: OrderIntent, now: datetime) -> Order:
        order = Order(intent, now)
        order.history.append(StatusChange(intent.client_order_id, now, None, OrderStatus.PENDING_NEW))
        coid = intent.client_order_id
        self.orders[coid] = order
        symbol = intent.instrument.symbol
        self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) + intent.signed_quantity
        if intent.expires_at is not None:
            heapq.heappush(self._expiries, (intent.expires_at, coid))
        self.stats.orders += 1
        self.bus.order_submitted.emit(order)  # recorded before it leaves the engine
        self.broker.submit(order)
        return order

    def submit_intent(self, intent: OrderIntent) -> Order | str:
        """Send an order that did not come from a signal (e.g. a flatten); returns it or the reject reason."""
        now = self.clock()
        symbol = intent.instrument.symbol
        pos = self.positions.get(symbol)
        position = pos.quantity if pos is not None else ZERO
        working = self.working_qty.get(symbol, ZERO)
        gate = self.killswitches.gate(intent, position, working)
        if not gate.allowed:
            return gate.reason or "kill switch"
        quote = self.broker.quote(symbol)
        ctx = CheckContext(now, quote, position, working, self.limits.for_order(intent.strategy, symbol))
        reject = run_checks(self.checks, intent, ctx)
        if reject is not None:
            return f"{reject.code}: {reject.detail}"
        return self._send(intent, now)

    def cancel(self, client_order_id: str, reason: str) -> bool:
        order = self.orders.get(client_order_id)
        if order is None or order.status is OrderStatus.PENDING_CANCEL:
            return False
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

    def on_fill(self, fill: Fill) -> None:
        if not self.exec_ids.add(fill.exec_id):
            log.info("fill.duplicate_ignored", exec_id=fill.exec_id)
            return
        order = self.orders.get(fill.client_order_id)
        symbol = fill.symbol
        if order is not None:
            order.apply_fill(fill.quantity, fill.price, fill.commission)
            self.working_qty[symbol] -= fill.signed_quantity
        else:
            log.warning("fill.unknown_order", exec_id=fill.exec_id, client_order_id=fill.client_order_id)
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        self.realized_pnl += pos.apply(fill)
        self.commissions += fill.commission
        self.stats.fills += 1
        self.bus.fill.emit(fill, order)
        self.bus.position.emit(pos)
        if order is not None:
            status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.PARTIALLY_FILLED
            self._transition(order, status, fill.ts, None)

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
        self.orders.pop(order.client_order_id, None)
        if order.remaining:
            symbol = order.symbol
            self.working_qty[symbol] = self.working_qty.get(symbol, ZERO) - order.signed_remaining
        order.history.clear()  # persisted already; a retired order must not pin memory

    # -- kill switches ---------------------------------------------------------------------------------
    def set_killswitch(self, scope: str, state: KillState, reason: str, actor: str) -> int:
        """Apply a kill-switch change; on HALTED cancel every live order in scope. Returns cancels sent."""
        previous = self.killswitches.set(scope, state)
        now = self.clock()
        if previous is not state:
            self.bus.killswitch.emit(KillSwitchChange(now, scope, previous, state, reason, actor))
            log.warning("killswitch.changed", scope=scope, from_state=str(previous), to_state=str(state),
                        reason=reason, actor=actor)
        if state is not KillState.HALTED:
            return 0
        board = self.killswitches
        return self.cancel_where(
            lambda o: board.in_scope(scope, o.intent.strategy, o.symbol) and not o.intent.flatten,
            f"kill switch {scope} HALTED: {reason}",
        )

    # -- account ---------------------------------------------------------------------------------------
    def equity(self) -> Decimal:
        unrealized = ZERO
        for pos in self.positions.values():
            if pos.quantity:
                quote = self.broker.quote(pos.symbol)
                if quote is not None:
                    unrealized += pos.unrealized(quote.last if quote.last > 0 else quote.mid)
        return self.initial_equity + self.realized_pnl - self.commissions + unrealized

    def unrealized_pnl(self) -> Decimal:
        return self.equity() - self.initial_equity - self.realized_pnl + self.commissions
