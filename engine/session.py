"""A trading session: database, bus, recorder, engine and kill-switch control wired on one broker, and
the one runner that feeds it signals from any source (engine.sources) until the source ends or a stop.

``Session`` holds what every venue shares, the runner included: signal handling, timers, the kill-switch
wake (PostgreSQL NOTIFY, else a poll) and the summary. A venue (``PaperSession`` here, ``IbkrSession``
in engine.live) only fills in the hooks where they differ: what happens before and after a signal, timer
work on the wall clock, and what happens to working orders when the input ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal as os_signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import structlog

from broker.base import Broker, BrokerSnapshot
from broker.reconcile import OpenOrderRecord, ReconcileReport, reconcile
from engine.bus import EventBus
from engine.clock import SignalTimes, SimClock, perf, wall_clock
from engine.config import Settings
from engine.control import OperatorControl, engine_holder
from engine.domain import (
    ZERO,
    KillState,
    Order,
    Position,
    Quote,
    Signal,
    Venue,
    venue_of,
)
from engine.engine import Engine, InstrumentBook
from engine.logging import flush_repeated
from engine.signals import SignalError, parse_signal
from engine.sources import FileSource, SignalSource, StreamSource, clean_line, text_of
from engine.trade_log import TradeLog
from paper.broker import PaperBroker
from paper.market import SIM_START, RandomWalkMarket, read_quotes_csv
from paper.matching import CommissionSchedule
from repositories.background_writer import BackgroundWriter
from repositories.db import SCHEMA_HEAD, ensure_schema, make_engine, schema_revision, sqlite_file
from repositories.errors import DatabaseUnavailable
from repositories.killswitch_feed import KillSwitchFeed
from repositories.recorder import Recorder, RowDefect
from repositories.repos import Repositories
from repositories.signal_lookup import SignalLookup
from risk.checks import LIMIT_FIELDS, Limits, RiskLimits
from risk.kelly import KellyParams
from risk.triggers import DayMarks, TriggerLimits, TripWires

log = structlog.get_logger("tradectl.session")

STOPPED_REASON = "session stopped (Ctrl-C or SIGTERM): order still working"



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
    """One session's own counts and money (its fills, realized P&L and commissions), beside the account's
    totals (positions carried in from earlier sessions, their realized P&L and commissions)."""

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
    realized_pnl: Decimal  # this session's
    unrealized_pnl: Decimal  # the account's open positions at their last mark
    commissions: Decimal  # this session's
    elapsed_s: float
    account_realized_pnl: Decimal = ZERO  # every session's, as the positions hold them
    account_commissions: Decimal = ZERO
    venue: str = Venue.SIMULATED.value
    account: str = ""
    outcome: str = "completed"  # completed | stopped (by a signal); failed sessions have no summary of their own
    cancelled_at_end: int = 0
    killswitches: dict[str, str] = field(default_factory=dict)
    trips: int = 0
    operator_changes: int = 0
    notes: list[str] = field(default_factory=list)
    database_signals: dict[str, int] = field(default_factory=dict)  # every session's signals by outcome
    unwritten: str | None = None  # set when the session's last rows could not be written (exit 1)

    def to_json(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if isinstance(v, Decimal):
                return f"{v:f}"  # exact, never in exponent form
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, list):
                return [conv(x) for x in v]
            return v

        return {f.name: conv(getattr(self, f.name)) for f in fields(self)}


class Session(ABC):
    """What every session shares: database, bus, recorder, engine, kill-switch control, the runner, the summary."""

    mode = "paper"
    broker_kind = "simulated"  # what the database is bound to with the account (see AccountRepository.claim)
    trades_log_level = "debug"  # order.submitted / order.status / fill.received: a simulated run is a flood

    def __init__(self, settings: Settings, *, on_progress: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.on_progress = on_progress
        self.db = make_engine(settings.database_url)
        self.repos = Repositories(self.db, settings.account)
        self.account = settings.account

    def _refuse_if_traded(self, now: datetime) -> None:
        """EngineLocked when another engine trades the account now; takes nothing (``_open`` claims) and makes
        nothing: a database that does not exist yet, or has no schema, is traded by nobody. One behind the code's
        schema is left to ``_open``, which migrates it first (its lock table may lack columns, or be missing)."""
        path = sqlite_file(self.settings.database_url)
        if (path is not None and not path.exists()) or schema_revision(self.db) != SCHEMA_HEAD:
            return
        self.repos.engine_lock.refuse_if_held(now, stale_after_s=self.settings.killswitch.stale_after_s)

    def _open(self, seed: int | None, started: datetime) -> list[Position]:
        """Migrate, check the database belongs to this account and broker, open the session row.

        Returns the positions the database holds. Raises AccountBound (nothing written) when the database
        belongs to another account or broker kind, EngineLocked when another engine trades the account.
        """
        ensure_schema(self.settings.database_url)
        repos = self.repos
        repos.accounts.claim(self.account, self.broker_kind, wall_clock())
        self.holder = engine_holder()
        repos.engine_lock.claim(self.holder, self.mode, wall_clock(),
                                stale_after_s=self.settings.killswitch.stale_after_s)
        try:
            self.session_id = repos.sessions.start(self.mode, seed, started)
        except BaseException:
            repos.engine_lock.release(self.holder)
            raise
        with self.failing("start"):
            repos.engine_lock.attach_session(self.holder, self.session_id)
        self._last_event = repos.killswitches.last_event_id()  # before the states: nothing falls between
        return repos.positions.all()

    def _wire(self, *, broker: Broker, clock: Callable[[], datetime], positions: list[Position],
              instruments: InstrumentBook) -> None:
        """Bus, recorder, engine on ``broker``, kill-switch states and the operator control loop."""
        s = self.settings
        self.bus = EventBus()
        self.recorder = Recorder(self.db, self.session_id, self.account, s.flush_rows, clock).attach(self.bus)
        self.recorder.on_defects = self._on_row_defects
        TradeLog(self.trades_log_level).attach(self.bus)  # after the recorder: an order is logged once recorded
        self.signal_lookup = SignalLookup(self.db)
        trips = TripWires(trigger_limits(s), s.day.boundary(), s.maintenance.schedule())
        trips.restore({date.fromisoformat(day): DayMarks(start, peak)
                       for day, (start, peak) in self.repos.accounts.trading_days().items()})
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
        self._carried_in = (self.engine.realized_pnl, self.engine.commissions)  # the session's own is what it adds
        self.engine.signal_ids.database_had_signals = self.signal_lookup.holds_any()
        for scope, state in self.repos.killswitches.states().items():
            self.engine.killswitches.set(scope, state)
            if state is not KillState.ACTIVE:
                log.warning("killswitch.active_at_start", scope=scope, state=str(state))
        k = s.killswitch
        holder = self.holder
        self.control = OperatorControl(
            self.engine, repos=self.repos, recorder=self.recorder,
            feed=KillSwitchFeed(self.repos.killswitches, after_id=self._last_event, poll_s=k.poll_ms / 1000),
            holder=holder, flatten_collar=k.flatten_collar_pct, heartbeat_s=k.heartbeat_s,
            reconcile_s=k.reconcile_interval_s,
        )
        self.control.on_heartbeat = self.save_day
        # Enter today's trading day before anything trades: the stored start equity and peak (a restart keeps
        # both, and a loss already past the limit trips now), or a new day at the current equity.
        self.engine.housekeeping(clock())
        self.save_day()
        self.report = self.reconcile_at_start()  # before the first order: our books against the broker's
        # What start-up made (modules, SQLAlchemy's and pydantic's structures: most of the heap) is moved out
        # of the collector's reach: a full collection then walks only what trading made, not the whole heap
        # (a 175 ms pause on a signal's path, measured on a 50,000-signal paper run).
        gc.freeze()

    def set_times(self, times: SignalTimes) -> None:
        """The session's rules for signal time (the engine checks ``verdict`` after dedupe)."""
        self.times = times
        self.engine.signal_time = times.verdict

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
            self.repos.accounts.save_trading_day(trips.day.isoformat(), start_equity=trips.day_start_equity,
                                                 peak_equity=trips.day_peak, now=wall_clock())
        except DatabaseUnavailable as err:  # kept in memory; the next heartbeat tries again
            trips.day_dirty = True
            log.error("trading_day.save_failed", day=str(trips.day), error=str(err).splitlines()[0])

    def reconcile_at_start(self, apply: bool = True) -> ReconcileReport:
        """Compare the database with the broker; the engine adopts, closes and books what differs (this side
        does the I/O: reading rows, closing them, recording adopted signals); trip on breaks."""
        engine, repos = self.engine, self.repos
        stored = {o.client_order_id: o for o in repos.orders.open()}
        report = compare_with_broker(repos, engine.broker.snapshot(),
                                     {sym: p.quantity for sym, p in engine.positions.items()}, stored)
        if not apply:
            return report
        now = wall_clock()
        for coid, status, why in report.close_orders:
            repos.orders.close(coid, status, why, now)
        done = engine.apply_reconcile(report, stored, repos.orders.find)
        for order in done.closed + done.adopted:  # a replay of its signal must find it, even if its row was lost
            if order.intent.signal_id is not None:
                repos.signals.adopt(signal_id=order.intent.signal_id, client_order_id=order.client_order_id,
                                    symbol=order.symbol, strategy=order.intent.strategy, session_id=self.session_id,
                                    now=now)
        self.recorder.flush()
        if not report.clean:
            repos.audit.record(actor="reconciliation", action="reconcile", scope=None, detail=report.to_json(), now=now)
        log.info("reconcile.done", clean=report.clean, adopted_orders=len(report.adopt_orders),
                 closed_orders=len(report.close_orders), inferred_fills=len(report.adopt_fills),
                 kept_open=len(report.keep_open), breaks=len(report.position_breaks))
        engine.reconcile_positions()  # halts each symbol that still differs, with ours and theirs
        return report

    # -- summary ---------------------------------------------------------------------------------------
    @property
    def venue(self) -> Venue:
        return venue_of(self.mode, self.account)

    def _finish(self, started: datetime, elapsed: float, cancelled: int, notes: Iterable[str] = (),
                stopped_after: int | None = None) -> SessionSummary:
        """Settle the books, write the session row's summary and release the account. ``stopped_after``: the
        input lines read when a signal stopped the session."""
        engine = self.engine
        unwritten = self.recorder.flush_final()
        if unwritten is not None:
            log.error("session.rows_not_written", detail=unwritten)
        self.recorder.close()
        gc.unfreeze()  # the session's start-up objects may be collected again (a process running several sessions)
        self.control.tick(force=True)
        self.save_day()
        self.control.close()
        flush_repeated()
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
            counts = self.repos.signals.counts()
            order_counts = self.repos.orders.status_counts(self.session_id)
        except DatabaseUnavailable as err:  # the summary still prints, from memory
            counts, order_counts = {"signals": "database unreachable"}, {}
            log.error("session.summary_counts_unavailable", error=str(err).splitlines()[0])
        realized_before, commissions_before = self._carried_in
        cent = Decimal("0.01")
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
            realized_pnl=(engine.realized_pnl - realized_before).quantize(cent),
            unrealized_pnl=unrealized.quantize(cent),
            commissions=(engine.commissions - commissions_before).quantize(cent),
            elapsed_s=round(elapsed, 3),
            account_realized_pnl=engine.realized_pnl.quantize(cent),
            account_commissions=engine.commissions.quantize(cent),
            venue=self.venue.value,
            account=self.account,
            outcome="completed" if stopped_after is None else "stopped",
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
        summary.notes.extend(notes)
        if stopped_after is not None:
            summary.notes.append(f"stopped by a signal after {stopped_after} input line(s)")
        summary.database_signals = dict(counts["signals"])
        try:
            self.repos.sessions.end(self.session_id, wall_clock(), summary.to_json())
        except DatabaseUnavailable as err:
            log.error("session.end_not_recorded", error=str(err).splitlines()[0])
        self.signal_lookup.close()
        self.db.dispose()
        return summary

    # -- the one runner: sources, signal handling, timers, kill-switch wake, drain ---------------------
    async def run_source(self, source: SignalSource, started: datetime,
                         stop: asyncio.Event | None = None) -> SessionSummary:
        """Trade every line of ``source`` until it ends or SIGINT/SIGTERM, then wind down and summarise.

        The same for every venue and every source; what differs is in the venue hooks (``_before_signal``,
        ``_after_signal``, ``_tick``, ``_wind_down``). A run that raises is recorded as failed.
        """
        with self.failing("run"):
            return await self._run_source(source, started, stop)

    async def _run_source(self, source: SignalSource, started: datetime,
                          stop: asyncio.Event | None) -> SessionSummary:
        loop = asyncio.get_running_loop()
        t0 = perf()
        stop = self._stop = stop if stop is not None else asyncio.Event()
        handled = _on_stop_signals(loop, stop)
        ended = asyncio.Event()  # the timers run until the working orders are settled too
        timers = asyncio.create_task(self._timers(ended))
        n = 0
        progress = self.on_progress
        try:
            try:
                async for line_no, raw in source.lines(stop):
                    line = clean_line(raw, line_no)
                    if not line:
                        continue
                    n += 1
                    await self._handle_line(line, line_no)
                    if progress is not None and (not n % 500 or source.wall_clock):
                        progress(n)
                    if not n & 63:
                        self.control.tick()  # paced inside: reads the kill switches every poll interval
                        await asyncio.sleep(0)  # let broker events and the timers in between signals
            except KeyboardInterrupt:  # Ctrl-C where no handler could be installed: stop, record what was done
                stop.set()
            stopped = stop.is_set()
            if progress is not None:
                progress(n)
            cancelled, notes = await self._wind_down(stopped)
        finally:
            ended.set()
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            for sig in handled:
                loop.remove_signal_handler(sig)
        self.recorder.flush()
        return self._finish(started, perf() - t0, cancelled, notes, n if stopped else None)

    async def _handle_line(self, line: str | bytes, line_no: int) -> None:
        """One input line: parse (an invalid one is recorded as such), its time, the venue, the engine."""
        times = self.times
        parsed = parse_signal(line, times.stamp)
        engine = self.engine
        if isinstance(parsed, SignalError):
            engine.on_invalid_signal(parsed, line_no)
        else:
            times.arrive(parsed)
            engine.expire(engine.clock())
            await self._before_signal(parsed)
            engine.on_signal(parsed, text_of(line), line_no)
            await self._after_signal(parsed)
        self.recorder.end_of_signal()  # persistence after the order, never before it

    async def _timers(self, stop: asyncio.Event) -> None:
        """Off the signal path: the kill-switch feed (woken at once by PostgreSQL NOTIFY, else polled), the
        heartbeat and reconciliation (inside ``control.tick``), flushes on a timer, the venue's market."""
        loop = asyncio.get_running_loop()
        s = self.settings
        poll_s = s.killswitch.poll_ms / 1000
        flush_s = s.flush_interval_ms / 1000
        wake = asyncio.Event()
        fd = self.control.feed.fileno()
        if fd is not None:
            loop.add_reader(fd, wake.set)
        last_flush = loop.time()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=poll_s)
                wake.clear()
                self.control.tick(force=fd is None)
                self._tick()
                if loop.time() - last_flush >= flush_s:
                    self.recorder.hand_off()  # a writer process writes it: the loop never waits for it
                    last_flush = loop.time()
        finally:
            if fd is not None:
                loop.remove_reader(fd)

    # -- venue hooks -----------------------------------------------------------------------------------
    @abstractmethod
    async def _before_signal(self, signal: Signal) -> None:
        """Bring the venue to the signal (the simulated market to its time; IB's quotes subscribed)."""

    @abstractmethod
    async def _after_signal(self, signal: Signal) -> None:
        """After the engine acted on a signal (lockstep rehearsals wait for the gateway here)."""

    @abstractmethod
    def _tick(self) -> None:
        """Timer work of the venue on the wall clock (the simulated market keeps quoting)."""

    @abstractmethod
    async def _wind_down(self, stopped: bool) -> tuple[int, list[str]]:
        """At the end of the input (``stopped``: by a signal): what happens to working orders; (cancels, notes)."""

    def close(self) -> None:
        """Release what a session holds when it ends early (the engine lock, connections)."""
        control = getattr(self, "control", None)
        with contextlib.suppress(Exception):
            if control is not None:
                control.close()  # acks what is pending, releases the lock
            elif hasattr(self, "holder"):
                self.repos.engine_lock.release(self.holder)
        with contextlib.suppress(Exception):
            self.signal_lookup.close()
        recorder = getattr(self, "recorder", None)
        if recorder is not None:
            recorder.close()  # its writer process writes what it was given, then exits
        gc.unfreeze()
        self.db.dispose()

    @contextlib.contextmanager
    def failing(self, stage: str) -> Iterator[None]:
        """Around the parts of a start or a run that may raise once the session row exists: a failure closes
        the row as failed, with why (``tradectl status`` and ``sessions`` say so instead of "running"), and
        releases the account."""
        try:
            yield
        except BaseException as err:
            why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}"
            log.error("session.failed", session_id=self.session_id, stage=stage, error=why)
            try:
                self.repos.sessions.fail(self.session_id, wall_clock(), why, stage)
            except DatabaseUnavailable as db_err:  # the database may be what failed: the row stays open
                log.error("session.end_not_recorded", error=str(db_err).splitlines()[0])
            self.close()
            raise


def _on_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[int]:
    """SIGINT/SIGTERM stop the session in order (a second Ctrl-C exits at once). Not on Windows loops nor
    off the main thread: there Ctrl-C is Python's default."""
    installed: list[int] = []
    for sig in (os_signal.SIGINT, os_signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop_handler(stop, sig))
            installed.append(sig)
    return installed


def stop_handler(stop: asyncio.Event, sig: int) -> Callable[[], None]:
    """First SIGINT/SIGTERM: stop taking signals and shut down in order. A second SIGINT: exit at once."""

    def handle() -> None:
        if stop.is_set() and sig == os_signal.SIGINT:
            log.error("session.abort", detail="second Ctrl-C: exiting at once; reconciliation restores the rest")
            os._exit(130)
        log.warning("session.stopping", signal=os_signal.Signals(sig).name)
        stop.set()

    return handle


class PaperSession(Session):
    """The simulated broker and market, in process. A file runs on its own clock as fast as the machine
    allows (the market steps once per signal); stdin runs on the wall clock with the market on a timer."""

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
        self.sim_clock: SimClock | None = None

    def prepare(self, clock: Callable[[], datetime], started: datetime) -> None:
        """Migrate, open the session row, and wire broker, market, bus, recorder and engine."""
        positions = self._open(self.seed, started)
        with self.failing("start"):
            self._prepare(clock, positions)

    def _prepare(self, clock: Callable[[], datetime], positions: list[Position]) -> None:
        p = self.settings.paper
        writer = None
        if p.writer_process:  # started first: its start-up overlaps the session's
            writer = BackgroundWriter(self.db.url.render_as_string(hide_password=False), self.session_id)
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
        self.sim_clock = clock if isinstance(clock, SimClock) else None
        if self.sim_clock is not None and self._next_quote is not None:
            self.sim_clock.now = self._next_quote.ts  # replayed quotes set the time
            self.sim_clock.anchored = True
        try:
            self._wire(broker=self.broker, clock=clock, positions=positions,
                       instruments=InstrumentBook(allow_unknown=True))
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        if writer is not None:
            self.recorder.use_writer(writer)
        self.set_times(SignalTimes(self.settings, self.sim_clock))

    # -- runs ------------------------------------------------------------------------------------------
    def run_file(self, lines: Iterable[str | bytes]) -> SessionSummary:
        """Each item of ``lines`` is one physical line (its number is the row's ``line_no``)."""
        started = wall_clock()
        self.prepare(SimClock(SIM_START), started)
        return asyncio.run(self.run_source(FileSource(lines), started))

    async def run_stream(self, stream: TextIO) -> SessionSummary:
        """Stdin: the wall clock, the market on a timer, until EOF or a stop request."""
        started = wall_clock()
        self.prepare(wall_clock, started)
        return await self.run_source(StreamSource(stream), started)

    def process_line(self, line: str | bytes, clock: SimClock | None, line_no: int | None = None) -> None:
        """One line, outside a run (tests and tools drive a prepared session line by line)."""
        if self.times.clock is not clock:
            self.set_times(SignalTimes(self.settings, clock))
        handled = self._handle_line(line, line_no or 0)
        try:
            handled.send(None)  # the paper venue's hooks never suspend
        except StopIteration:
            return
        raise RuntimeError("the paper venue suspended while handling a line")

    # -- venue hooks -----------------------------------------------------------------------------------
    async def _before_signal(self, signal: Signal) -> None:
        self._market_to(self.engine.clock(), signal.symbol)

    async def _after_signal(self, signal: Signal) -> None:
        return None  # in process: every fill the signal caused is booked already

    def _tick(self) -> None:
        if self.sim_clock is None:  # on the wall clock the market keeps quoting what we hold or work
            now = wall_clock()
            self.engine.expire(now)
            for symbol in self._quoted_symbols():
                self._market_to(now, symbol)

    async def _wind_down(self, stopped: bool) -> tuple[int, list[str]]:
        """The simulated exchange lives in this process: working orders get ``paper.drain_steps`` market
        steps to finish, then are cancelled (at once when stopped by a signal)."""
        engine = self.engine
        if stopped:
            n = engine.cancel_where(lambda o: True, STOPPED_REASON)
            return n, ["working orders cancelled (the simulated exchange ends with the session)"] if n else []
        clock = self.sim_clock
        step = timedelta(milliseconds=self.settings.paper.step_ms)
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
            else:
                await asyncio.sleep(step.total_seconds())
            now = engine.clock()
            engine.expire(now)
            if self._quotes is not None:
                self._market_to(now, None)
            else:
                for symbol in sorted(self.broker.working_symbols()):
                    self._market_to(now, symbol)
        return engine.cancel_where(lambda o: True, "input ended: order still working"), []

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

    def _quoted_symbols(self) -> list[str]:
        """What the wall-clock market keeps quoting: symbols with a working order or a position (so a flatten,
        the checks and the marks have a fresh price for what is held, not only for what is working)."""
        held = {s for s, p in self.engine.positions.items() if p.quantity}
        return sorted(held | self.broker.working_symbols())


def compare_with_broker(repos: Repositories, snap: BrokerSnapshot, positions: dict[str, Decimal],
                        open_orders: dict[str, Order] | None = None) -> ReconcileReport:
    """The reconciliation report for the database behind ``repos`` against a broker snapshot (reads only)."""
    stored = open_orders if open_orders is not None else {o.client_order_id: o for o in repos.orders.open()}
    return reconcile(
        [OpenOrderRecord(c, o.symbol, o.filled_qty, o.status.value) for c, o in stored.items()],
        repos.orders.existing_ids([o.client_order_id for o in snap.orders]),
        repos.fills.existing_exec_ids([f.exec_id for f in snap.executions]),
        positions,
        snap,
    )


