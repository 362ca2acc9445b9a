"""Wiring for a session against IBKR (TWS, IB Gateway, or ``tradectl gateway-sim``): ``tradectl run --broker ibkr``.

The same engine, risk path, recorder and kill-switch control as a paper session, on ``IbkrBroker``. It
connects first, checks which account it is about to trade (a live account only with ``--live`` and the
configured account id; never ``--live`` on a paper account), reconciles positions, then reads signals.
A symbol's contract is qualified and its quotes subscribed the first time a signal names it.

``lockstep`` is for rehearsals and tests against the simulator: before each signal ``before_signal`` may
move the simulated market, and after it the session waits for a round trip to the gateway, so every
fill the signal caused is booked before the next one is read (the in-process paper session's order).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as os_signal
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TextIO

import structlog

from broker.ibkr import IbkrBroker, is_paper_account
from engine.config import Settings
from engine.domain import Signal
from engine.engine import InstrumentBook
from engine.session import (
    Session,
    SessionSummary,
    SignalTimes,
    SimClock,
    _perf,
    clean_line,
    line_reader,
    stop_handler,
    text_of,
    wall_clock,
)
from engine.signals import SignalError, parse_signal
from paper.market import SIM_START

log = structlog.get_logger("tradectl.live")

IB_PORTS = {("gateway", False): 4002, ("gateway", True): 4001, ("tws", False): 7497, ("tws", True): 7496}


class AccountRefused(Exception):
    """The account the gateway offers is not one this run may trade; the message says why."""


def check_account(managed: list[str], requested: str, live: bool, configured: str) -> str:
    """The account to trade, or AccountRefused: the guard between a paper rehearsal and real money."""
    if requested not in managed:
        raise AccountRefused(f"account {requested} is not managed by this login (it manages {', '.join(managed)})")
    paper = is_paper_account(requested)
    if live and paper:
        raise AccountRefused(f"--live given but {requested} is a paper account: drop --live to trade it")
    if not live and not paper:
        raise AccountRefused(f"{requested} is a LIVE account: refusing without --live "
                             f"(and the account id must match the configured account)")
    if live and requested != configured:
        raise AccountRefused(f"--live: account {requested} does not match the configured account {configured}")
    return requested


class IbkrSession(Session):
    mode = "ibkr"
    broker_kind = "ibkr"

    def __init__(
        self,
        settings: Settings,
        *,
        host: str,
        port: int,
        client_id: int,
        account: str | None = None,
        live: bool = False,
        clock: SimClock | None = None,
        lockstep: bool = False,
        before_signal: Callable[[Signal], Awaitable[None]] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(settings, on_progress=on_progress)
        self.host, self.port, self.client_id = host, port, client_id
        self.account = account or settings.account
        self.live = live
        self.sim_clock = clock
        self.clock: Callable[[], datetime] = clock if clock is not None else wall_clock
        self.lockstep = lockstep
        self.before_signal = before_signal
        self.subscribed: set[str] = set()
        self.times = SignalTimes(settings, clock)  # a file clock in lockstep rehearsals, else the wall clock
        self.pace = False  # a file on the wall clock: no faster than the order-rate limits

    async def connect(self) -> None:
        """Connect, check the account, open the session and reconcile. Raises IbkrError / AccountRefused."""
        started = wall_clock()
        self._t_connect = _perf()
        ib = self.settings.ibkr
        self.broker = IbkrBroker(self.host, self.port, self.client_id, self.account, self.clock,
                                 pacing_per_s=ib.pacing_per_s, connect_timeout_s=ib.connect_timeout_s)
        managed = await self.broker.connect()
        try:
            check_account(managed, self.account, self.live, self.settings.account)
        except AccountRefused:
            await self.broker.close()
            raise
        try:
            positions = self._open(None, started)  # AccountBound / EngineLocked: leave IB as we found it
        except BaseException:
            await self.broker.close()
            raise
        self._started = started
        for pos in positions:  # marks for what we hold, before the first signal sizes against equity
            if pos.quantity:
                await self._subscribe(pos.symbol)
        for bp in self.broker.positions():
            await self._subscribe(bp.symbol)
        self._wire(self.broker, self.clock, positions, InstrumentBook(allow_unknown=True))
        # Live: a signal is on disk before it is acted on, and an order before it reaches IB (a crash between
        # the two is found again by orderRef). Orders leave at IB's pace, so a commit each costs nothing.
        self.recorder.flush_rows = ib.commit_every
        self.engine.signal_time = self.times.verdict
        self.engine.before_submit = self.recorder.commit_now
        nlv = self.broker.account_equity()
        log.info("session.ready", mode=self.mode, session_id=self.session_id, account=self.account,
                 equity=str(self.engine.equity()),
                 equity_source="IB NetLiquidation" if nlv is not None else "config (IB sent no NetLiquidation)",
                 startup_s=round(_perf() - self._t_connect, 3))

    async def _subscribe(self, symbol: str) -> None:
        if symbol in self.subscribed:
            return
        self.subscribed.add(symbol)
        wait_s = 0.0 if self.lockstep else self.settings.ibkr.quote_wait_s  # lockstep: the hook moves the market
        if await self.broker.subscribe(symbol, wait_s=wait_s) is None and not self.lockstep:
            log.warning("marketdata.no_quote_yet", symbol=symbol)

    async def process_line(self, line: str | bytes, line_no: int | None = None) -> None:
        times = self.times
        parsed = parse_signal(line, times.stamp)
        engine = self.engine
        if isinstance(parsed, SignalError):
            engine.on_invalid_signal(parsed, line_no)
            return
        times.arrive(parsed)
        await self._subscribe(parsed.symbol)
        engine.expire(engine.clock())
        if self.before_signal is not None:
            await self.before_signal(parsed)
        if self.lockstep:
            await self.broker.sync()
        if self.pace:
            await self._pace(parsed)
        engine.on_signal(parsed, text_of(line), line_no)
        if self.lockstep:
            await self.broker.sync()

    async def _pace(self, signal: Signal) -> None:
        """Wait until one more order fits the order-rate limits (account and symbol) of this signal."""
        engine = self.engine
        limits = engine.limits.for_order(signal.strategy, signal.symbol)
        per_account, per_symbol = limits.max_orders_per_s, limits.max_symbol_orders_per_s
        rates = engine.rates
        while True:
            now = engine.clock()
            if ((per_account is None or rates.count(now) < per_account)
                    and (per_symbol is None or rates.count(now, signal.symbol) < per_symbol)):
                return
            await asyncio.sleep(0.005)

    async def run(self, lines: Iterable[str | bytes] = (), stream: TextIO | None = None) -> SessionSummary:
        """Connect (if not yet), trade every line (of ``stream`` when given), drain, cancel what is left.

        ``lines`` (a file) run on the file's clock for their ``ts`` (as in a paper file session) and,
        on the wall clock, no faster than the order-rate limits; ``stream`` (stdin) runs on the wall clock.
        """
        if not hasattr(self, "engine"):
            await self.connect()
        if stream is None and self.sim_clock is None:
            self.times = SignalTimes(self.settings, SimClock(SIM_START))
            self.engine.signal_time = self.times.verdict
            self.pace = True
        loop = asyncio.get_running_loop()
        t0 = _perf()
        stop = asyncio.Event()
        for sig in (os_signal.SIGINT, os_signal.SIGTERM):  # not on Windows loops, nor off the main thread:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # then Ctrl-C is Python's default
                loop.add_signal_handler(sig, stop_handler(stop, sig))
        timers = asyncio.create_task(self._timers(stop))
        n = 0
        try:
            if stream is not None:
                stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
                readline = line_reader(stream)
                line_no = 0
                while not stop.is_set():
                    read: asyncio.Future[Any] = asyncio.ensure_future(loop.run_in_executor(None, readline))
                    await asyncio.wait([read, stopping], return_when=asyncio.FIRST_COMPLETED)
                    if not read.done():  # a stop request while waiting for input
                        read.cancel()
                        break
                    raw = read.result()
                    if not raw:
                        break
                    line_no += 1
                    line = clean_line(raw, line_no)
                    if line:
                        n += 1
                        await self.process_line(line, line_no)
                        self._progress(n)
                stopping.cancel()
            else:
                for line_no, raw in enumerate(lines, 1):
                    if stop.is_set():
                        break
                    line = clean_line(raw, line_no)
                    if line:
                        n += 1
                        await self.process_line(line, line_no)
                        self._progress(n)
                        if not n & 63:
                            await asyncio.sleep(0)  # let broker events in between signals
            stopped = stop.is_set()
            left = 0
            if not stopped:
                cancelled = await self._drain(stop)
            elif self.settings.ibkr.on_stop == "cancel":
                cancelled = await self._drain(stop, wait=False)
            else:
                cancelled, left = 0, len(self.engine.orders)
                log.warning("session.orders_left_working", orders=left,
                            detail="left at IB as configured (ibkr.on_stop = leave); reconciled at the next start")
        finally:
            stop.set()
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            for sig in (os_signal.SIGINT, os_signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        self.recorder.flush()
        summary = self._finish(self._started, _perf() - t0, cancelled)
        await self.broker.close()
        if self.broker.paced:
            summary.notes.append(f"{self.broker.paced} order message(s) waited for IB pacing")
        if stopped:
            summary.notes.append(f"stopped by a signal after {n} input line(s)")
        if left:
            summary.notes.append(f"{left} order(s) left working at IB (ibkr.on_stop = leave): the next start "
                                 f"reconciles them")
        return summary

    def _progress(self, n: int) -> None:
        if self.on_progress is not None:
            self.on_progress(n)

    async def _drain(self, stop: asyncio.Event, wait: bool = True) -> int:
        """Give working orders ``ibkr.drain_s`` to finish, then cancel the rest and wait for IB to confirm."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ibkr.drain_s
        while wait and self.engine.orders and loop.time() < deadline and not stop.is_set():
            await asyncio.sleep(0.05)
        cancelled = self.engine.cancel_where(lambda o: True, "input ended: order still working")
        deadline = loop.time() + self.settings.ibkr.drain_s
        while self.engine.orders and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.broker.connected:
            await self.broker.sync()
        return cancelled

    async def _timers(self, stop: asyncio.Event) -> None:
        """Kill-switch feed, heartbeats, reconciliation timer and recorder flushes, off the signal path."""
        s = self.settings
        poll_s = s.killswitch.poll_ms / 1000
        flush_s = s.flush_interval_ms / 1000
        loop = asyncio.get_running_loop()
        last_flush = loop.time()
        while not stop.is_set():
            await asyncio.sleep(poll_s)
            self.control.tick()
            if loop.time() - last_flush >= flush_s:
                self.recorder.flush()
                last_flush = loop.time()
