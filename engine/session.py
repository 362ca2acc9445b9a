"""Wiring for one paper session: database, simulated broker, market, engine, recorder.

A file runs on simulated time, as fast as the machine allows: the clock follows the signals'
timestamps and the market steps once per signal. Stdin runs on the wall clock, with the market
stepping on a timer, until EOF. When the input ends, the market keeps stepping for a bounded number
of steps so working orders can finish; whatever still works after that is cancelled with the reason
recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal as os_signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from broker.base import Broker, BrokerOrder, BrokerSnapshot, OrderUpdate
from broker.reconcile import OpenOrderRecord, ReconcileReport, reconcile
from engine.bus import EventBus
from engine.config import Settings
from engine.control import OperatorControl, book_inferred_fills, engine_holder, order_from_row
from engine.domain import (
    ZERO,
    Instrument,
    KillState,
    Order,
    OrderIntent,
    OrderStatus,
    Position,
    Quote,
    RejectCode,
    Signal,
    TimeInForce,
)
from engine.engine import Engine, InstrumentBook
from engine.ids import signal_id_of
from engine.signals import MAX_LINE_BYTES, SignalError, bound_raw, parse_signal, strip_bom
from paper.broker import PaperBroker
from paper.market import SIM_START, RandomWalkMarket, read_quotes_csv
from paper.matching import CommissionSchedule
from repositories.db import ensure_schema, make_engine
from repositories.killswitch_feed import KillSwitchFeed
from repositories.models import OrderRow
from repositories.recorder import Recorder, RowDefect
from repositories.signal_lookup import SignalLookup
from repositories.store import Store
from risk.checks import LIMIT_FIELDS, Limits, RiskLimits
from risk.kelly import KellyParams
from risk.triggers import DayMarks, TriggerLimits, TripWires

log = structlog.get_logger("tradectl.session")

DEMO_SIGNALS = Path(__file__).resolve().parent.parent / "paper" / "data" / "demo_signals.jsonl"


class SimClock:
    """Simulated time: moves only forward, to the latest timestamp it is shown.

    ``anchored`` is False until something (a quotes file, or the first ``ts`` of a signal file) has set
    it; until then it reads ``start``.
    """

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.anchored = False

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, ts: datetime) -> None:
        if ts > self.now:
            self.now = ts

    def advance(self, delta: timedelta) -> None:
        self.now = self.now + delta


class SignalTimes:
    """A session's rules for signal time: which ``ts`` to believe, and the time of a line without one.

    On the wall clock (``clock`` None) a signal older than ``max_age_s`` is ``stale_signal`` and one
    later than now + ``max_future_s`` is ``future_signal``; a line without ``ts`` is stamped now.
    On a file's clock the first ``ts`` sets the clock and later ones move it forward, except one more
    than ``max_clock_jump_s`` ahead: that one is ``future_signal`` and the clock stays. A ``ts`` more than
    ``max_age_s`` behind the clock is ``stale_signal``. A line without ``ts`` is stamped the clock plus
    one market step (``paper.step_ms``), and the clock moves there.
    """

    def __init__(self, settings: Settings, clock: SimClock | None) -> None:
        cfg = settings.signal_time
        self.clock = clock
        self.step = timedelta(milliseconds=settings.paper.step_ms)
        self.max_age = timedelta(seconds=cfg.max_age_s)
        self.max_ahead = timedelta(seconds=cfg.max_future_s if clock is None else cfg.max_clock_jump_s)
        self._stamped = False

    def stamp(self) -> datetime:
        """The ``ts`` of a valid line that has none (called by the parser)."""
        clock = self.clock
        if clock is None:
            return wall_clock()
        self._stamped = True
        clock.advance(self.step)
        return clock.now

    def arrive(self, signal: Signal) -> None:
        """A valid signal is about to be handled: bring a file's clock to its ``ts``, unless that is a jump."""
        clock = self.clock
        if clock is None:
            return
        if self._stamped:  # stamped from the clock: it is there already
            self._stamped = False
            return
        if not clock.anchored:
            clock.now = signal.ts
            clock.anchored = True
        elif signal.ts - clock.now <= self.max_ahead:
            clock.advance_to(signal.ts)

    def verdict(self, signal: Signal) -> tuple[RejectCode, str] | None:
        """(code, reason) when the signal's time is not believed; the engine's hook, checked after dedupe."""
        now = self.clock.now if self.clock is not None else wall_clock()
        ahead = signal.ts - now
        if ahead > self.max_ahead:
            what = "now" if self.clock is None else "the file's clock"
            return RejectCode.FUTURE_SIGNAL, (f"field 'ts': {signal.ts.isoformat()} is {_span(ahead)} ahead of {what} "
                                     f"{now.isoformat()} (max {_span(self.max_ahead)})")
        if -ahead > self.max_age:
            return RejectCode.STALE_SIGNAL, (f"field 'ts': {signal.ts.isoformat()} is {_span(-ahead)} older than "
                                    f"{now.isoformat()} (max {_span(self.max_age)})")
        return None


def _span(d: timedelta) -> str:
    s = d.total_seconds()
    return f"{s:.3f}s" if s < 120 else f"{s / 86_400:.2f}d" if s >= 86_400 else f"{s / 3600:.2f}h"


class LongLine(bytes):
    """The head of a line longer than ``MAX_LINE_BYTES`` whose rest was skipped: refused as ``line_too_long``."""


def read_bounded_line(fh: BinaryIO) -> bytes:
    """One physical line (b"" at the end); a line longer than ``MAX_LINE_BYTES`` is skipped to its end."""
    line = fh.readline(MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while True:
            rest = fh.readline(1 << 16)
            if not rest or rest.endswith(b"\n"):
                break
        return LongLine(line)
    return line


def clean_line(line: str | bytes, line_no: int) -> str | bytes:
    """A physical line as the parser takes it: a file's byte order mark and the surrounding whitespace off."""
    if isinstance(line, LongLine):
        return line
    if line_no == 1:
        line = strip_bom(line)
    return line.strip()


def text_of(line: str | bytes) -> str:
    """The stored copy of a line that parsed (so it is valid UTF-8), bounded."""
    return bound_raw(line if isinstance(line, str) else line.decode("utf-8"))


def stop_handler(stop: asyncio.Event, sig: int) -> Callable[[], None]:
    """First SIGINT/SIGTERM: stop taking signals and shut down in order. A second SIGINT: exit at once."""

    def handle() -> None:
        if stop.is_set() and sig == os_signal.SIGINT:
            log.error("session.abort", detail="second Ctrl-C: exiting at once; reconciliation restores the rest")
            os._exit(130)
        log.warning("session.stopping", signal=os_signal.Signals(sig).name)
        stop.set()

    return handle


def wall_clock() -> datetime:
    return datetime.now(UTC)


def risk_limits(settings: Settings) -> RiskLimits:
    r = settings.risk.model_dump()
    default = Limits(**{k: v for k, v in r.items() if k in LIMIT_FIELDS})

    def overrides(table: dict[str, dict[str, Any]], upper: bool) -> dict[str, dict[str, Any]]:
        return {(k.upper() if upper else k): {f: v for f, v in o.items() if v is not None} for k, o in table.items()}

    return RiskLimits(default, overrides(r["per_strategy"], False), overrides(r["per_symbol"], True))


def trigger_limits(settings: Settings) -> TriggerLimits:
    return TriggerLimits(**settings.triggers.model_dump())


def kelly_params(settings: Settings) -> KellyParams:
    k = settings.kelly
    return KellyParams(k.fraction, k.max_fraction_of_equity, k.max_qty, k.rebalance_band)


@dataclass(slots=True)
class SessionSummary:
    session_id: int
    signals: int
    accepted: int
    rejected: int
    invalid: int
    duplicates: int
    reject_reasons: dict[str, int]
    orders: dict[str, int]
    fills: int
    positions: list[dict[str, Any]]
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    commissions: Decimal
    elapsed_s: float
    cancelled_at_end: int = 0
    killswitches: dict[str, str] = field(default_factory=dict)
    trips: int = 0
    operator_changes: int = 0
    notes: list[str] = field(default_factory=list)
    unwritten: str | None = None  # set when the session's last rows could not be written (exit 1)

    def to_json(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if isinstance(v, Decimal):
                return str(v)
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, list):
                return [conv(x) for x in v]
            return v

        return {f.name: conv(getattr(self, f.name)) for f in fields(self)}


class Session:
    """What every session shares: database, bus, recorder, engine, kill-switch control, the summary."""

    mode = "paper"
    broker_kind = "simulated"  # what the database is bound to with the account (see Store.claim_account)

    def __init__(self, settings: Settings, *, on_progress: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.on_progress = on_progress
        self.db = make_engine(settings.database_url)
        self.store = Store(self.db, settings.account)
        self.account = settings.account
        self.stop_requested = False

    def _open(self, seed: int | None, started: datetime) -> list[Position]:
        """Migrate, check the database belongs to this account and broker, open the session row.

        Returns the positions the database holds. Raises AccountBound (nothing written) when the database
        belongs to another account or broker kind, EngineLocked when another engine trades the account.
        """
        ensure_schema(self.settings.database_url)
        self.store.claim_account(self.account, self.broker_kind, wall_clock())
        self.holder = engine_holder()
        k = self.settings.killswitch
        self.store.claim_engine(self.holder, self.mode, wall_clock(), stale_after_s=max(5 * k.heartbeat_s, 3.0))
        try:
            self.session_id = self.store.start_session(self.mode, seed, started)
            self.store.lock_session(self.holder, self.session_id)
        except BaseException:
            self.store.release_engine(self.holder)
            raise
        self._last_event = self.store.last_killswitch_event_id()  # before the states: nothing falls between
        return self.store.positions()

    def _wire(self, broker: Broker, clock: Callable[[], datetime], positions: list[Position],
              instruments: InstrumentBook) -> None:
        """Bus, recorder, engine on ``broker``, kill-switch states and the operator control loop."""
        s = self.settings
        self.bus = EventBus()
        self.recorder = Recorder(self.db, self.session_id, s.account, s.flush_rows, clock).attach(self.bus)
        self.recorder.on_defects = self._on_row_defects
        self.signal_lookup = SignalLookup(self.db)
        trips = TripWires(trigger_limits(s), s.day.boundary())
        trips.restore({date.fromisoformat(day): DayMarks(start, peak)
                       for day, (start, peak) in self.store.trading_days().items()})
        self.engine = Engine(
            broker,
            self.bus,
            clock=clock,
            equity=s.equity,
            kelly=kelly_params(s),
            limits=risk_limits(s),
            instruments=instruments,
            dedupe_capacity=max(s.dedupe_capacity, 2 * s.flush_rows),  # covers every id not yet committed
            signal_lookup=self.signal_lookup.seen,
            positions=positions,
            trips=trips,
        )
        for scope, state in self.store.killswitch_states().items():
            self.engine.killswitches.set(scope, state)
            if state is not KillState.ACTIVE:
                log.warning("killswitch.active_at_start", scope=scope, state=str(state))
        k = s.killswitch
        holder = self.holder
        self.control = OperatorControl(
            self.engine, self.store, self.recorder,
            KillSwitchFeed(self.store, self._last_event, poll_s=k.poll_ms / 1000),
            holder=holder, flatten_collar=k.flatten_collar_pct, heartbeat_s=k.heartbeat_s,
            reconcile_s=k.reconcile_interval_s,
        )
        self.control.on_heartbeat = self.save_day
        # Enter today's trading day before anything trades: the stored start equity and peak (a restart keeps
        # both, and a loss already past the limit trips now), or a new day at the current equity.
        self.engine.housekeeping(clock())
        self.save_day()
        self.report = self.reconcile_at_start()  # before the first order: our books against the broker's

    def _on_row_defects(self, defects: list[RowDefect]) -> None:
        """Rows the database refused are kept in row_defects; trading stops only where state is now unsure."""
        for d in defects:
            if d.table in ("signals", "signal_rejects"):
                continue  # replaced by a reject row naming the error; no order or position differs
            symbol = d.symbol or self.engine.symbol_of(d.key)
            self.engine.halt_for_row_defect(symbol, f"the database refused a {d.table} row ({d.key}): {d.error}")

    def save_day(self) -> None:
        """Write the trading day's start equity and peak when the day rolled or the peak rose.

        Timer work (the control loop's heartbeat, the session's end), never on the signal path.
        """
        trips = self.engine.trips
        if not trips.day_dirty or trips.day is None:
            return
        trips.day_dirty = False
        try:
            self.store.save_trading_day(trips.day.isoformat(), trips.day_start_equity, trips.day_peak, wall_clock())
        except SQLAlchemyError as err:  # kept in memory; the next heartbeat tries again
            trips.day_dirty = True
            log.error("trading_day.save_failed", day=str(trips.day), error=str(err).splitlines()[0])

    def reconcile_at_start(self, apply: bool = True) -> ReconcileReport:
        """Compare the database with the broker; adopt, close and book what differs; trip on breaks."""
        engine, store = self.engine, self.store
        rows = {r["client_order_id"]: r for r in store.open_orders()}
        report = compare_with_broker(store, engine.broker.snapshot(),
                                     {sym: p.quantity for sym, p in engine.positions.items()}, rows)
        if not apply:
            return report
        now = wall_clock()
        finished: dict[str, Order] = {}  # orders no longer working: their rows take the inferred fills
        for coid, status, why in report.close_orders:
            store.close_order(coid, status.value, why, now)
            closed = order_from_row(rows[coid])
            closed.status, closed.reason = status, why
            finished[coid] = closed
            signal_id = rows[coid]["signal_id"]
            if signal_id is not None:  # a replay of its signal must find it, even if the signal's row was lost
                store.adopt_signal(signal_id, coid, rows[coid]["symbol"], rows[coid]["strategy"], self.session_id,
                                   now)
                engine.signal_ids.remember(signal_id)
            log.warning("reconcile.order_closed", client_order_id=coid, status=status.value, reason=why)
        fills_by_order: dict[str, Decimal] = {}
        for f in report.adopt_fills:
            fills_by_order[f.client_order_id] = fills_by_order.get(f.client_order_id, ZERO) + f.quantity
        for b in report.keep_open:
            order = order_from_row(rows[b.client_order_id])
            order.filled_qty = b.filled - fills_by_order.get(b.client_order_id, ZERO)
            engine.adopt_order(order)
            if order.status is OrderStatus.PENDING_NEW:  # the acknowledgement was lost in the crash
                engine.on_order_update(OrderUpdate(order.client_order_id, OrderStatus.SUBMITTED, engine.clock(),
                                                   "reconciliation: working at the broker", b.broker_order_id,
                                                   b.perm_id))
            elif order.status is OrderStatus.PENDING_CANCEL:  # our cancel may have died with the process
                engine.broker.cancel(order.client_order_id, order.reason or "reconciliation: cancel sent again")
                log.warning("reconcile.cancel_resent", client_order_id=order.client_order_id)
        for b in report.adopt_orders:
            order = order_from_broker(b, engine.instruments.get(b.symbol) or Instrument(b.symbol), engine.clock())
            order.filled_qty = b.filled - fills_by_order.get(b.client_order_id, ZERO)
            signal_id = order.intent.signal_id
            if signal_id is not None:
                store.adopt_signal(signal_id, order.client_order_id, b.symbol, order.intent.strategy, self.session_id,
                                   now)
            self.bus.order_submitted.emit(order)  # recorded with the state the broker reports
            if not b.status.is_terminal:
                engine.adopt_order(order)
            else:
                finished[order.client_order_id] = order
                if signal_id is not None:
                    engine.signal_ids.remember(signal_id)
            log.warning("reconcile.order_adopted", client_order_id=order.client_order_id, status=b.status.value)
        book_inferred_fills(engine, store, report.adopt_fills, finished, report.theirs)
        self.recorder.flush()
        if not report.clean:
            store.audit("reconciliation", "reconcile", None, report.to_json(), now)
        log.info("reconcile.done", clean=report.clean, adopted_orders=len(report.adopt_orders),
                 closed_orders=len(report.close_orders), inferred_fills=len(report.adopt_fills),
                 kept_open=len(report.keep_open), breaks=len(report.position_breaks))
        engine.reconcile_positions()  # halts each symbol that still differs, with ours and theirs
        return report

    # -- summary ---------------------------------------------------------------------------------------
    def _finish(self, started: datetime, elapsed: float, cancelled: int) -> SessionSummary:
        engine = self.engine
        unwritten = self.recorder.flush_final()
        if unwritten is not None:
            log.error("session.rows_not_written", detail=unwritten)
        self.control.tick(force=True)
        self.save_day()
        self.control.close()
        st = engine.stats
        positions = []
        unrealized = ZERO
        for pos in sorted(engine.positions.values(), key=lambda p: p.symbol):
            quote = self.engine.broker.quote(pos.symbol)
            mark = quote.reference if quote else pos.avg_cost
            u = pos.unrealized(mark)
            unrealized += u
            positions.append(
                {
                    "symbol": pos.symbol,
                    "quantity": pos.quantity,
                    "avg_cost": pos.avg_cost.quantize(Decimal("0.0001")),
                    "mark": mark,
                    "unrealized_pnl": u.quantize(Decimal("0.01")),
                    "realized_pnl": pos.realized_pnl.quantize(Decimal("0.01")),
                }
            )
        try:
            counts = self.store.counts()
            order_counts = self._session_order_counts()
        except DBAPIError as err:  # the summary still prints, from memory
            counts, order_counts = {"signals": "database unreachable"}, {}
            log.error("session.summary_counts_unavailable", error=str(err.orig).splitlines()[0])
        summary = SessionSummary(
            session_id=self.session_id,
            signals=st.signals,
            accepted=st.accepted,
            rejected=st.rejected,
            invalid=st.invalid,
            duplicates=st.duplicates,
            reject_reasons=dict(sorted(st.reject_reasons.items(), key=lambda kv: -kv[1])),
            orders=order_counts,
            fills=st.fills,
            positions=positions,
            realized_pnl=engine.realized_pnl.quantize(Decimal("0.01")),
            unrealized_pnl=unrealized.quantize(Decimal("0.01")),
            commissions=engine.commissions.quantize(Decimal("0.01")),
            elapsed_s=round(elapsed, 3),
            cancelled_at_end=cancelled,
            killswitches={k: str(v) for k, v in sorted(engine.killswitches.snapshot().items())},
            trips=st.trips,
            operator_changes=len(self.control.applied),
        )
        report = getattr(self, "report", None)
        if report is not None and not report.clean:
            breaks = ", ".join(f"{sym} ours {a} theirs {b}" for sym, (a, b) in sorted(report.position_breaks.items()))
            summary.notes.append(
                f"reconciliation at start: {len(report.adopt_orders)} order(s) adopted, {len(report.adopt_fills)} "
                f"fill(s) inferred, {len(report.close_orders)} order(s) closed, {len(report.keep_open)} still working"
                + (f"; position breaks (halted): {breaks}" if breaks else ""))
        if unwritten is not None:
            summary.notes.append(f"NOT ALL WRITTEN: {unwritten}")
            summary.unwritten = unwritten
        for scope, state in summary.killswitches.items():
            summary.notes.append(f"kill switch {scope} is {state}: `tradectl resume --scope {scope} --reason ...`")
        if st.signals and st.duplicates == st.signals:
            summary.notes.append(
                "every signal was already in the database: use another --db (or delete it) to replay"
            )
        summary.notes.append(f"database totals: {json.dumps(counts['signals'])}")
        try:
            self.store.end_session(self.session_id, wall_clock(), summary.to_json())
        except DBAPIError as err:
            log.error("session.end_not_recorded", error=str(err.orig).splitlines()[0])
        self.signal_lookup.close()
        self.db.dispose()
        return summary

    def _session_order_counts(self) -> dict[str, int]:
        with self.db.connect() as conn:
            rows = conn.execute(
                select(OrderRow.status, func.count())
                .where(OrderRow.session_id == self.session_id)
                .group_by(OrderRow.status)
            ).all()
        return {status: n for status, n in rows}


class PaperSession(Session):
    def __init__(
        self,
        settings: Settings,
        *,
        seed: int = 1,
        quotes: Path | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(settings, on_progress=on_progress)
        self.seed = seed
        self.quotes_path = quotes
        self._quotes: Iterator[Quote] | None = None
        self._next_quote: Quote | None = None
        self._times: SignalTimes | None = None

    def prepare(self, clock: Callable[[], datetime], started: datetime) -> None:
        """Migrate, open the session row, and wire broker, market, bus, recorder and engine."""
        positions = self._open(self.seed, started)
        p = self.settings.paper
        self.broker = PaperBroker(
            clock,
            CommissionSchedule(p.commission_per_share, p.commission_min, p.commission_max_pct),
            p.slippage_ticks,
            timedelta(milliseconds=p.latency_ms),
            exec_prefix=f"{self.session_id:08x}",
            initial_positions={pos.symbol: (pos.quantity, pos.avg_cost) for pos in positions if pos.quantity},
        )
        self.market = RandomWalkMarket(self.seed, step_vol_bps=p.step_vol_bps)
        if self.quotes_path is not None:
            self._quotes = read_quotes_csv(self.quotes_path)
            self._next_quote = next(self._quotes, None)
        self._wire(self.broker, clock, positions, InstrumentBook(allow_unknown=True))

    # -- market ----------------------------------------------------------------------------------------
    def _market_to(self, now: datetime, symbol: str | None) -> None:
        """Bring the market up to ``now``: replay due CSV quotes, or step the symbol's random walk."""
        if self._quotes is not None:
            q = self._next_quote
            while q is not None and q.ts <= now:
                self.broker.on_quote(q)
                q = next(self._quotes, None)
            self._next_quote = q
        elif symbol is not None:
            self.broker.on_quote(self.market.step(symbol, now))

    def _drain(self, clock: SimClock | None, step: timedelta) -> int:
        """Step the market until no order works (bounded); cancel what is left. Returns cancels."""
        engine = self.engine
        for _ in range(self.settings.paper.drain_steps):
            if not engine.orders:
                break
            if clock is not None:
                if self._quotes is not None:
                    if self._next_quote is None:
                        break
                    clock.advance_to(self._next_quote.ts)
                else:
                    clock.advance(step)
            now = engine.clock()
            engine.expire(now)
            if self._quotes is not None:
                self._market_to(now, None)
            else:
                for symbol in sorted(self.broker.working_symbols()):
                    self._market_to(now, symbol)
        return engine.cancel_where(lambda o: True, "input ended: order still working")

    def _quoted_symbols(self) -> list[str]:
        """What the wall-clock market keeps quoting: symbols with a working order or a position (so a flatten,
        the checks and the marks have a fresh price for what is held, not only for what is working)."""
        held = {s for s, p in self.engine.positions.items() if p.quantity}
        return sorted(held | self.broker.working_symbols())

    # -- runs ------------------------------------------------------------------------------------------
    def run_file(self, lines: Iterable[str | bytes]) -> SessionSummary:
        """Each item of ``lines`` is one physical line (its number is the row's ``line_no``)."""
        started = wall_clock()
        clock = SimClock(SIM_START)
        self.prepare(clock, started)
        if self._next_quote is not None:
            clock.now = self._next_quote.ts  # replayed quotes set the time
            clock.anchored = True
        t0 = _perf()
        recorder, progress = self.recorder, self.on_progress
        n = 0
        interrupted = False
        try:
            for line_no, raw in enumerate(lines, 1):
                if self.stop_requested:
                    break
                line = clean_line(raw, line_no)
                if not line:
                    continue
                n += 1
                self.process_line(line, clock, line_no)
                if not n & 63:
                    self.control.tick()  # paced inside: reads the kill switches every poll interval
                if progress is not None and n % 500 == 0:
                    progress(n)
        except KeyboardInterrupt:  # Ctrl-C: stop reading, but record everything handled so far
            interrupted = True
        if interrupted:
            cancelled = self.engine.cancel_where(lambda o: True, "session interrupted (Ctrl-C)")
        else:
            cancelled = self._drain(clock, timedelta(milliseconds=self.settings.paper.step_ms))
        if progress is not None:
            progress(n)
        recorder.flush()
        summary = self._finish(started, _perf() - t0, cancelled)
        if interrupted:
            summary.notes.append(f"interrupted after {n} signals; working orders cancelled")
        return summary

    def process_line(self, line: str | bytes, clock: SimClock | None, line_no: int | None = None) -> None:
        """One input line: parse, bring time and the market to the signal, hand it to the engine.

        ``clock`` is the file's simulated clock, or None on the wall clock (stdin).
        """
        times = self._times
        if times is None or times.clock is not clock:
            times = self._times = SignalTimes(self.settings, clock)
            self.engine.signal_time = times.verdict
        parsed = parse_signal(line, times.stamp)
        engine = self.engine
        if isinstance(parsed, SignalError):
            engine.on_invalid_signal(parsed, line_no)
            return
        times.arrive(parsed)
        now = engine.clock()
        engine.expire(now)
        self._market_to(now, parsed.symbol)
        engine.on_signal(parsed, text_of(line), line_no)

    async def run_stream(self, stream: TextIO) -> SessionSummary:
        """Stdin mode: wall clock, market on a timer, flushes on a timer, until EOF or a stop request."""
        started = wall_clock()
        self.prepare(wall_clock, started)
        t0 = _perf()
        loop = asyncio.get_running_loop()
        step_s = self.settings.paper.step_ms / 1000
        flush_s = self.settings.flush_interval_ms / 1000
        stop = asyncio.Event()
        for sig in (os_signal.SIGINT, os_signal.SIGTERM):
            loop.add_signal_handler(sig, stop_handler(stop, sig))

        async def ticker() -> None:
            last_flush = loop.time()
            while not stop.is_set():
                await asyncio.sleep(step_s)
                now = wall_clock()
                self.engine.expire(now)
                for symbol in self._quoted_symbols():
                    self._market_to(now, symbol)
                if loop.time() - last_flush >= flush_s:
                    self.recorder.flush()
                    last_flush = loop.time()

        async def control_loop() -> None:
            wake = asyncio.Event()
            fd = self.control.feed.fileno()
            if fd is not None:
                loop.add_reader(fd, wake.set)  # PostgreSQL NOTIFY: act at once, not at the next poll
            poll_s = self.settings.killswitch.poll_ms / 1000
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=poll_s)
                    wake.clear()
                    self.control.tick(force=fd is None)
            finally:
                if fd is not None:
                    loop.remove_reader(fd)

        tick_task = asyncio.create_task(ticker())
        control_task = asyncio.create_task(control_loop())
        n = 0
        line_no = 0
        readline = line_reader(stream)
        try:
            while not stop.is_set():
                read: asyncio.Future[str | bytes] = asyncio.ensure_future(loop.run_in_executor(None, readline))
                waiter: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
                pending: list[asyncio.Future[Any]] = [read, waiter]
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    break
                waiter.cancel()
                raw = read.result()
                if not raw:
                    break
                line_no += 1
                line = clean_line(raw, line_no)
                if line:
                    n += 1
                    self.process_line(line, None, line_no)
                    if self.on_progress is not None:
                        self.on_progress(n)
        finally:
            stop.set()
            tick_task.cancel()
            control_task.cancel()
            for sig in (os_signal.SIGINT, os_signal.SIGTERM):
                loop.remove_signal_handler(sig)
        cancelled = 0
        for _ in range(self.settings.paper.drain_steps):
            if not self.engine.orders:
                break
            await asyncio.sleep(step_s)
            now = wall_clock()
            for symbol in sorted(self.broker.working_symbols()):
                self._market_to(now, symbol)
        cancelled = self.engine.cancel_where(lambda o: True, "input ended: order still working")
        self.recorder.flush()
        return self._finish(started, _perf() - t0, cancelled)

def compare_with_broker(store: Store, snap: BrokerSnapshot, positions: dict[str, Decimal],
                        open_rows: dict[str, dict[str, Any]] | None = None) -> ReconcileReport:
    """The reconciliation report for the database behind ``store`` against a broker snapshot (reads only)."""
    rows = open_rows if open_rows is not None else {r["client_order_id"]: r for r in store.open_orders()}
    return reconcile(
        [OpenOrderRecord(c, r["symbol"], r["filled_qty"], r["status"]) for c, r in rows.items()],
        store.existing_order_ids([o.client_order_id for o in snap.orders]),
        store.existing_exec_ids([f.exec_id for f in snap.executions]),
        positions,
        snap,
    )


def order_from_broker(b: BrokerOrder, instrument: Instrument, now: datetime) -> Order:
    """An order only the broker knew of: ours by its orderRef, so its signal id is derived back."""
    coid = b.client_order_id
    signal_id = signal_id_of(coid)
    intent = OrderIntent(coid, signal_id, "adopted", instrument, b.side, b.quantity, b.order_type, b.limit_price,
                         b.stop_price, TimeInForce.DAY, now)
    status = b.status if b.status.is_terminal else OrderStatus.SUBMITTED
    return Order(intent, now, status, ZERO, ZERO, ZERO, b.broker_order_id, b.perm_id,
                 b.reason or "adopted from the broker at reconciliation")


def _perf() -> float:
    import time

    return time.perf_counter()


def read_lines(path: Path | None) -> Iterator[bytes]:
    """The physical lines of a signal file, as bytes: decoding (strict UTF-8) is the parser's job."""
    if path is None:
        path = DEMO_SIGNALS
    with path.open("rb") as fh:
        while line := read_bounded_line(fh):
            yield line


def line_reader(stream: TextIO) -> Callable[[], str | bytes]:
    """``readline`` for a stream: its bytes when it has them (stdin), so invalid UTF-8 is refused, not repaired."""
    buffer: BinaryIO | None = getattr(stream, "buffer", None)
    if buffer is None:
        return stream.readline
    return lambda: read_bounded_line(buffer)


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def stdin_stream() -> TextIO:
    return sys.stdin
