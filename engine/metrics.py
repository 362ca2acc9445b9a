"""Prometheus metrics of one session, in a registry of its own (never the process-global one).

Two kinds, chosen by what they cost the signal path:

- **Events** (signals by outcome and reject code, orders by status, fills, kill-switch changes, latency
  histograms) are counted by bus subscribers into plain ints and lists: an attribute increment is ~40 ns,
  a ``prometheus_client`` child ``inc()`` ~280 ns and a ``Histogram.observe`` ~580 ns (both take a lock).
  Everything runs on the session's one thread, so no lock is needed; the counts become Prometheus
  counters and histograms only when ``/metrics`` is scraped.
- **State** (positions, exposure, equity, day P&L, drawdown, kill-switch states, open orders, broker link,
  quote ages, recorder buffer, pacing queue, readiness) is read from the engine, recorder and broker at
  scrape time by a custom collector: nothing is done per signal for it.

Rare events that may come from another thread (IB error codes) use ``prometheus_client`` counters.

Wiring (see the README, "Health and metrics")::

    metrics = SessionMetrics().attach(session.bus)
    metrics.instrument(session.engine)           # signal -> broker / ack / fill latency
    metrics.instrument_recorder(session.recorder)  # write latency
    metrics.collect_from(session, readiness=health.readiness)
    broker.on_ib_error = metrics.observe_ib_error  # IBKR sessions
    body = metrics.render()                      # what /metrics serves
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.bus import EventBus, SignalRejected
from engine.domain import (
    BlockedCause,
    Fill,
    KillState,
    KillSwitchChange,
    Order,
    OrderStatus,
    Position,
    Signal,
    StatusChange,
)

if TYPE_CHECKING:
    from engine.engine import Engine
    from repositories.recorder import Recorder

PREFIX = "tradectl"
GLOBAL_SCOPE = "global"
RECONCILIATION_ACTOR = "trigger:reconciliation_mismatch"
ACCEPTED_CODE = "none"  # the reject-code label of an accepted signal
MAX_TIMED_ORDERS = 100_000  # orders whose start time is kept for the ack / fill latencies (bounded memory)

# 10 µs .. ~20 s, doubling: covers the in-process path (µs) and IB round trips (ms..s).
LATENCY_BUCKETS: tuple[float, ...] = tuple(1e-5 * 2**i for i in range(22))
# 100 µs .. ~13 s for database writes.
WRITE_BUCKETS: tuple[float, ...] = tuple(1e-4 * 2**i for i in range(18))

Readiness = Callable[[], tuple[bool, dict[str, dict[str, Any]]]]


class SessionLike(Protocol):
    """What the collector reads at scrape time; other attributes (``subscribed``) are optional."""

    engine: Engine
    recorder: Recorder


class FastHistogram:
    """A histogram for one thread: ``observe`` is a bisect and two increments; exported at scrape time."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative buckets, Prometheus style (``le`` labels, the last is ``+Inf``)."""
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((_le(bound), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class SessionMetrics:
    """One session's metrics. ``render()`` is the body of ``/metrics``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.wall = clock
        # -- events, counted by bus handlers ---------------------------------------------------------
        self.accepted = 0
        self.rejected: dict[str, int] = {}  # reject code -> count
        self.order_status: dict[str, int] = {s.value: 0 for s in OrderStatus}  # orders entering each status
        self.fills = 0
        self.last_fill_at = 0.0  # wall time of the last fill (0: none this session)
        self.killswitch_changes: dict[tuple[str, str, str], int] = {}  # (scope, to_state, origin) -> count
        self.reconciliation_breaks = 0
        self.to_broker = FastHistogram(LATENCY_BUCKETS)
        self.to_ack = FastHistogram(LATENCY_BUCKETS)
        self.to_fill = FastHistogram(LATENCY_BUCKETS)
        self.write = FastHistogram(WRITE_BUCKETS)
        self.write_rows = 0
        self._t0: float | None = None  # perf_counter at the start of the signal being handled
        self._timed: dict[str, list[float]] = {}  # client order id -> [start, acked, filled] (0/1 flags)
        self.reconciliation_scopes: set[str] = set()  # scopes halted by a position break, until resumed
        # -- rare events from any thread ---------------------------------------------------------------
        self.ib_errors = Counter(f"{PREFIX}_ib_errors", "IB error and notice codes received, by code",
                                 ["code"], registry=self.registry)
        self._ib_children: dict[int, Any] = {}
        self.registry.register(_EventCollector(self))
        self._state: _StateCollector | None = None

    # -- wiring -----------------------------------------------------------------------------------------
    def attach(self, bus: EventBus) -> SessionMetrics:
        """Subscribe to the bus: every handler is a few attribute updates."""
        bus.order_recorded += self.on_order_recorded
        bus.signal_rejected += self.on_signal_rejected
        bus.order_status += self.on_order_status
        bus.fill_booked += self.on_fill_booked
        bus.killswitch += self.on_killswitch
        return self

    def instrument(self, engine: Engine) -> SessionMetrics:
        """Time each signal from the moment the engine takes it: wraps ``engine.on_signal`` on this instance.

        Every caller (``on_signal_line``, the session runners) goes through the instance attribute, so the
        session needs no change. The order-to-broker latency is the time ``on_signal`` took for a signal
        that made an order (the order has been handed to ``broker.submit`` when it returns).
        """
        inner = engine.on_signal
        perf = time.perf_counter
        to_broker = self.to_broker

        def on_signal(signal: Signal, raw: str | None = None, line_no: int | None = None) -> Order | None:
            t0 = self._t0 = perf()
            order = inner(signal, raw, line_no)
            self._t0 = None
            if order is not None:
                to_broker.observe(perf() - t0)
            return order

        setattr(engine, "on_signal", on_signal)  # noqa: B010 (an instance attribute shadows the method)
        return self

    def instrument_recorder(self, recorder: Recorder) -> SessionMetrics:
        """Observe the recorder's write latency through its ``on_flush`` hook."""
        recorder.on_flush = self.observe_write
        return self

    def collect_from(self, session: SessionLike, readiness: Readiness | None = None,
                     broker: Any = None) -> SessionMetrics:
        """Read state gauges from ``session`` at scrape time (and readiness, when given). Replaces any earlier."""
        if self._state is not None:
            self.registry.unregister(self._state)
        self._state = _StateCollector(self, session, readiness, broker)
        self.registry.register(self._state)
        return self

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    # -- bus handlers (hot path) ------------------------------------------------------------------------
    def on_signal_rejected(self, r: SignalRejected) -> None:
        rejected = self.rejected
        code = r.code.value
        rejected[code] = rejected.get(code, 0) + 1

    def on_order_recorded(self, order: Order, signal: Signal | None, raw: str | None, line_no: int | None) -> None:
        if signal is not None:
            self.accepted += 1
        counts = self.order_status
        for change in order.history:  # PendingNew (and anything before it was published)
            counts[change.to_status.value] += 1
        timed = self._timed
        if len(timed) < MAX_TIMED_ORDERS:
            t0 = self._t0
            timed[order.client_order_id] = [t0 if t0 is not None else time.perf_counter(), 0.0, 0.0]

    def on_order_status(self, order: Order, change: StatusChange) -> None:
        status = change.to_status
        if status is not change.from_status:  # partial fills repeat PartiallyFilled: one order, one count
            self.order_status[status.value] += 1
        timed = self._timed.get(order.client_order_id)
        if timed is None:
            return
        if status is OrderStatus.SUBMITTED and not timed[1]:
            timed[1] = 1.0
            self.to_ack.observe(time.perf_counter() - timed[0])
        if status.is_terminal:
            del self._timed[order.client_order_id]

    def on_fill_booked(self, fill: Fill, order: Order | None, position: Position) -> None:
        self.fills += 1
        self.last_fill_at = self.wall()
        if order is None:
            return
        timed = self._timed.get(order.client_order_id)
        if timed is not None and not timed[2]:
            timed[2] = 1.0
            self.to_fill.observe(time.perf_counter() - timed[0])

    def on_killswitch(self, change: KillSwitchChange) -> None:
        key = (change.scope, change.to_state.value, "operator" if change.id is not None else "trigger")
        self.killswitch_changes[key] = self.killswitch_changes.get(key, 0) + 1
        if change.actor == RECONCILIATION_ACTOR and change.to_state is not KillState.ACTIVE:
            self.reconciliation_breaks += 1
            self.reconciliation_scopes.add(change.scope)
        elif change.to_state is KillState.ACTIVE:
            self.reconciliation_scopes.discard(change.scope)

    # -- adapters' hooks --------------------------------------------------------------------------------
    def observe_ib_error(self, code: int) -> None:
        """Count one IB error/notice code (``IbkrBroker.on_ib_error``); safe from any thread."""
        child = self._ib_children.get(code)
        if child is None:
            child = self._ib_children[code] = self.ib_errors.labels(str(code))
        child.inc()

    def observe_write(self, rows: int, seconds: float) -> None:
        """One recorder transaction committed (``Recorder.on_flush``)."""
        self.write.observe(seconds)
        self.write_rows += rows


class _EventCollector(Collector):
    """Exports the counts the bus handlers keep."""

    def __init__(self, m: SessionMetrics) -> None:
        self.m = m

    def collect(self) -> Iterable[Metric]:
        m = self.m
        signals = CounterMetricFamily(f"{PREFIX}_signals", "Signals (and input lines) by outcome and reject code",
                                      labels=["outcome", "code"])
        signals.add_metric(["accepted", ACCEPTED_CODE], m.accepted)
        for code, n in sorted(m.rejected.items()):
            signals.add_metric(["rejected", code], n)
        yield signals
        orders = CounterMetricFamily(f"{PREFIX}_orders", "Orders that entered each status", labels=["status"])
        for status, n in m.order_status.items():
            orders.add_metric([status], n)
        yield orders
        yield CounterMetricFamily(f"{PREFIX}_fills", "Fills booked (corrections included)", value=m.fills)
        last = GaugeMetricFamily(f"{PREFIX}_last_fill_timestamp_seconds",
                                 "Wall time of the last fill this session (0: none yet)", value=m.last_fill_at)
        yield last
        ks = CounterMetricFamily(f"{PREFIX}_killswitch_changes", "Kill-switch changes by scope, new state and origin",
                                 labels=["scope", "state", "origin"])
        for (scope, state, origin), n in sorted(m.killswitch_changes.items()):
            ks.add_metric([scope, state, origin], n)
        yield ks
        yield CounterMetricFamily(f"{PREFIX}_reconciliation_breaks",
                                  "Position differences with the broker that halted a symbol",
                                  value=m.reconciliation_breaks)
        for name, doc, h in (
            ("signal_to_broker_seconds", "From the engine taking a signal to its order handed to the broker",
             m.to_broker),
            ("signal_to_ack_seconds", "From the engine taking a signal to the broker acknowledging its order",
             m.to_ack),
            ("signal_to_fill_seconds", "From the engine taking a signal to its order's first fill", m.to_fill),
            ("recorder_write_seconds", "Duration of one recorder transaction", m.write),
        ):
            yield HistogramMetricFamily(f"{PREFIX}_{name}", doc, buckets=h.buckets(), sum_value=h.sum)
        yield CounterMetricFamily(f"{PREFIX}_recorder_rows", "Rows the recorder's transactions wrote",
                                  value=m.write_rows)

    def describe(self) -> Iterable[Metric]:
        return []


def _num(x: Decimal | int | float) -> float:
    return float(x)


class _StateCollector(Collector):
    """Gauges read from the session's objects at scrape time."""

    def __init__(self, m: SessionMetrics, session: SessionLike, readiness: Readiness | None, broker: Any) -> None:
        self.m = m
        self.session = session
        self.readiness = readiness
        self.broker = broker

    def collect(self) -> Iterable[Metric]:
        s = self.session
        engine = s.engine
        broker = self.broker if self.broker is not None else engine.broker

        yield _gauge("open_orders", "Orders working (not final)", len(engine.orders))
        positions = GaugeMetricFamily(f"{PREFIX}_position", "Position quantity per symbol", labels=["symbol"])
        exposure = GaugeMetricFamily(f"{PREFIX}_exposure_notional",
                                     "Signed notional of position plus working orders per symbol", labels=["symbol"])
        for symbol in sorted(engine.positions):
            positions.add_metric([symbol], _num(engine.positions[symbol].quantity))
        for symbol, notional in sorted(engine.exposure.by_symbol().items()):
            exposure.add_metric([symbol], _num(notional))
        yield positions
        yield exposure
        yield _gauge("exposure_gross", "Gross notional exposure (position plus working)", _num(engine.exposure.gross))
        yield _gauge("exposure_net", "Net notional exposure (position plus working)", _num(engine.exposure.net))
        equity = engine.equity()
        trips = engine.trips
        yield _gauge("equity", "Account equity as the engine marks it", _num(equity))
        yield _gauge("realized_pnl", "Realized P&L (before commissions)", _num(engine.realized_pnl))
        yield _gauge("commissions", "Commissions paid", _num(engine.commissions))
        started = trips.day is not None
        yield _gauge("day_pnl", "Equity minus the day's starting equity",
                     _num(equity - trips.day_start_equity) if started else 0.0)
        yield _gauge("drawdown", "Day's peak equity minus equity",
                     _num(max(trips.day_peak - equity, Decimal(0))) if started else 0.0)
        states = engine.killswitches.snapshot()
        ks = GaugeMetricFamily(f"{PREFIX}_killswitch_state",
                               "Kill-switch state per scope: 0 ACTIVE, 1 REDUCE_ONLY, 2 HALTED", labels=["scope"])
        ks.add_metric([GLOBAL_SCOPE], states.get(GLOBAL_SCOPE, KillState.ACTIVE).severity)
        for scope in sorted(states):
            if scope != GLOBAL_SCOPE:
                ks.add_metric([scope], states[scope].severity)
        yield ks
        yield _gauge("broker_connected", "1 while the broker link is up", 1.0 if engine.broker_connected else 0.0)
        gateway = getattr(engine.broker, "gateway", None)
        if gateway:
            gw = GaugeMetricFamily(f"{PREFIX}_gateway_condition",
                                   "1 while IB Gateway reports this link fine (ib_codes.GatewayCondition)",
                                   labels=["condition"])
            for condition, (ok, _) in sorted(gateway.items()):
                gw.add_metric([condition.value], 1.0 if ok else 0.0)
            yield gw
        blocked = engine.blocked
        yield _gauge("engine_blocked", "1 while the engine refuses new orders for a reason outside the kill switches",
                     1.0 if blocked is not None else 0.0)
        causes = GaugeMetricFamily(f"{PREFIX}_engine_blocked_cause",
                                   "1 for the cause the engine is blocked by, 0 for the others", labels=["cause"])
        for cause in BlockedCause:
            causes.add_metric([cause.value], 1.0 if blocked is not None and blocked.cause is cause else 0.0)
        yield causes
        recorder = s.recorder
        yield _gauge("database_up", "1 while the recorder's writes succeed", 1.0 if recorder.failing is None else 0.0)
        yield _gauge("recorder_buffered_rows", "Rows waiting for the recorder's next transaction",
                     float(recorder.pending))
        yield _gauge("pacing_queue_depth", "Order messages waiting for IB's pacing",
                     float(getattr(broker, "pacing_queue_depth", 0) or 0))
        yield _gauge("reconciliation_differences", "Position differences being looked at or halted",
                     float(len(engine.suspect_breaks) + len(self.m.reconciliation_scopes)))
        ages = GaugeMetricFamily(f"{PREFIX}_quote_age_seconds", "Age of the last quote per symbol watched",
                                 labels=["symbol"])
        now = engine.clock()
        for symbol, age in quote_ages(s, now):
            ages.add_metric([symbol], age)
        yield ages
        if self.readiness is not None:
            ready, conditions = self.readiness()
            yield _gauge("ready", "1 when the engine can trade now (see /readyz)", 1.0 if ready else 0.0)
            cond = GaugeMetricFamily(f"{PREFIX}_ready_condition", "Each readiness condition: 1 ok, 0 not",
                                     labels=["condition"])
            for name, c in conditions.items():
                cond.add_metric([name], 1.0 if c.get("ok") else 0.0)
            yield cond

    def describe(self) -> Iterable[Metric]:
        return []


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def watched_symbols(session: Any) -> list[str]:
    """Symbols whose quotes matter now: held, working, or subscribed (IBKR sessions)."""
    engine = session.engine
    held = {sym for sym, p in engine.positions.items() if p.quantity}
    working = {sym for sym, live in engine.book.live_by_symbol.items() if live}
    subscribed = set(getattr(session, "subscribed", ()) or ())
    return sorted(held | working | subscribed)


def quote_ages(session: Any, now: datetime) -> Iterator[tuple[str, float]]:
    """(symbol, age in seconds) of the broker's last quote for each watched symbol; inf when it has none."""
    broker = session.engine.broker
    for symbol in watched_symbols(session):
        q = broker.quote(symbol)
        yield symbol, (now - q.ts).total_seconds() if q is not None else float("inf")


SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created")}


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can expose: family names with their type's suffixes (``_total``,
    ``_bucket``, ...), whether or not a labelled family has a sample yet."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
        for sample in family.samples:
            names.add(sample.name)
    return names
