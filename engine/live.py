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
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import TextIO

import structlog

from broker.ib_codes import MARKET_DATA_TYPES
from broker.ibkr import IbkrBroker, is_paper_account
from engine.clock import SignalTimes, SimClock, perf, wall_clock
from engine.config import Settings
from engine.domain import Position, Signal
from engine.engine import Engine, InstrumentBook
from engine.session import Session, SessionSummary
from engine.sources import FileSource, SignalSource, StreamSource
from paper.market import SIM_START
from repositories.repos import Repositories

log = structlog.get_logger("tradectl.live")

IB_PORTS = {("gateway", False): 4002, ("gateway", True): 4001, ("tws", False): 7497, ("tws", True): 7496}
HOLD_POLL_S = 0.05  # how often a held signal looks whether the link is back


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
    trades_log_level = "info"  # an operator follows each order at IB

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
        if self.account != settings.account:  # every row, lock and kill switch of this run is that account's
            self.repos = Repositories(self.db, self.account)
        self.live = live
        self.sim_clock = clock
        self.clock: Callable[[], datetime] = clock if clock is not None else wall_clock
        self.lockstep = lockstep
        self.before_signal = before_signal
        self.subscribed: set[str] = set()
        self.pace = False  # a file on the wall clock: no faster than the order-rate limits

    async def connect(self) -> None:
        """Connect, check the account, open the session and reconcile. Raises IbkrError / AccountRefused."""
        started = wall_clock()
        self._t_connect = perf()
        ib = self.settings.ibkr
        self._refuse_if_traded(started)  # before IB: a second engine never touches the gateway
        self.broker = IbkrBroker(self.host, self.port, self.client_id, self.account, self.clock,
                                 pacing_per_s=ib.pacing_per_s, connect_timeout_s=ib.connect_timeout_s,
                                 market_data_type=MARKET_DATA_TYPES[ib.market_data_type])
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
        try:
            with self.failing("start"):
                await self._wire_live(positions)
        except BaseException:
            await self.broker.close()
            raise

    async def _wire_live(self, positions: list[Position]) -> None:
        ib = self.settings.ibkr
        for pos in positions:  # marks for what we hold, before the first signal sizes against equity
            if pos.quantity:
                await self._subscribe(pos.symbol)
        for bp in self.broker.positions():
            await self._subscribe(bp.symbol)
        self.broker.raise_id_floor(self.repos.orders.max_broker_order_id())  # nextValidId can roll back
        self._wire(broker=self.broker, clock=self.clock, positions=positions,
                   instruments=InstrumentBook(allow_unknown=True))
        # Live: an order is on disk with its signal (and the signal's inbox mark) before it reaches IB (a crash
        # between the two is found again by orderRef). Everything else one turn of the loop buffered (fills,
        # statuses, rejections) is committed at the end of the turn, or every ``commit_every`` units: a crash
        # before it loses only what the broker reports again (executions, order states) or an inbox line not
        # yet marked consumed, which is read again.
        self.recorder.flush_rows = ib.commit_every
        self.recorder.defer = asyncio.get_running_loop().call_soon
        self.set_times(SignalTimes(self.settings, self.sim_clock))  # a file clock in lockstep rehearsals
        self.engine.before_submit = self.recorder.commit_now
        self.engine.ack_timeout_s = ib.ack_timeout_s
        nlv = self.broker.account_equity()
        log.info("session.ready", mode=self.mode, venue=self.venue.value, session_id=self.session_id,
                 account=self.account,
                 equity=str(self.engine.equity()),
                 equity_source="IB NetLiquidation" if nlv is not None else "config (IB sent no NetLiquidation)",
                 startup_s=round(perf() - self._t_connect, 3))

    async def _subscribe(self, symbol: str) -> None:
        if symbol in self.subscribed:
            return
        self.subscribed.add(symbol)
        wait_s = 0.0 if self.lockstep else self.settings.ibkr.quote_wait_s  # lockstep: the hook moves the market
        engine: Engine | None = getattr(self, "engine", None)  # None while wiring: the held symbols' marks
        try:
            quote = await self.broker.subscribe(symbol, wait_s=wait_s)
        except ConnectionError as err:  # the link is down: asked again with the next signal for it
            if engine is None:  # a held symbol at start: fail the start (retried), never trade it unwatched
                raise
            self.subscribed.discard(symbol)  # (it used to end the session: the error left the signal loop)
            log.warning("marketdata.subscribe_failed", symbol=symbol, error=f"{type(err).__name__}: {err}")
            return
        if engine is not None and symbol in self.broker.unknown:
            # A mistyped ticker: refused as unknown_symbol, and not watched (its missing quote made /readyz
            # fail and the quote-age alert fire for good). The next signal for it asks IB again.
            self.subscribed.discard(symbol)
            engine.instruments.unlist(symbol, "has no unique contract at IB (no security definition, or "
                                              "ambiguous): check the ticker")
            return
        if engine is not None:
            engine.instruments.relist(symbol)
        if quote is None and not self.lockstep:
            log.warning("marketdata.no_quote_yet", symbol=symbol)

    async def process_line(self, line: str | bytes, line_no: int | None = None) -> None:
        """One line, outside a run (tests drive a connected session line by line)."""
        await self._handle_line(line, line_no or 0)

    # -- venue hooks -----------------------------------------------------------------------------------
    async def _before_signal(self, signal: Signal) -> None:
        await self._hold_through_maintenance(signal)
        await self._subscribe(signal.symbol)
        if self.before_signal is not None:
            await self.before_signal(signal)
        if self.lockstep:
            await self.broker.sync()
        if self.pace:
            await self._pace(signal)

    async def _hold_through_maintenance(self, signal: Signal) -> None:
        """``[maintenance] signals = "hold"``: while the link is down in a maintenance window, wait until it is
        back and resynced (the signal is then judged as usual), the window has ended and the disconnect
        trigger's timeout passed (the trip refuses it), or the session stops."""
        engine = self.engine
        window = None if engine.broker_connected else engine.trips.expected_outage()
        if window is None or self.settings.maintenance.signals != "hold":
            return
        timeout = engine.trips.limits.disconnect_timeout_s or 0.0
        until = window[1] + timedelta(seconds=timeout)
        stop = getattr(self, "_stop", None)
        log.warning("signal.held", signal_id=signal.id, window=window[0].name, until=until.isoformat())
        while not engine.broker_connected and engine.clock() < until and not (stop is not None and stop.is_set()):
            await asyncio.sleep(HOLD_POLL_S)
        if engine.broker_connected and signal.symbol in self.subscribed:
            # resynced means its market data too: a quote from before the restart would be judged stale
            back = engine.clock()
            deadline = asyncio.get_running_loop().time() + self.settings.ibkr.quote_wait_s
            while asyncio.get_running_loop().time() < deadline and not (stop is not None and stop.is_set()):
                quote = self.broker.quote(signal.symbol)
                if quote is not None and quote.ts >= back:
                    break
                await asyncio.sleep(HOLD_POLL_S)
        log.info("signal.released", signal_id=signal.id, broker_connected=engine.broker_connected)

    async def _after_signal(self, signal: Signal) -> None:
        if self.lockstep:  # every fill the signal caused is booked before the next line is read
            await self.broker.sync()

    def _tick(self) -> None:
        return None  # IB's market moves by itself; quotes arrive as events

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

    async def run(self, lines: Iterable[str | bytes] = (), stream: TextIO | None = None,
                  source: SignalSource | None = None, stop: asyncio.Event | None = None) -> SessionSummary:
        """Connect (if not yet) and trade ``source`` (or the lines of ``stream``, or ``lines``) to its end.

        ``lines`` (a file) run on the file's clock for their ``ts`` (as in a paper file session) and,
        on the wall clock, no faster than the order-rate limits; streams and the inbox run on the wall clock.
        """
        if not hasattr(self, "engine"):
            await self.connect()
        if source is None:
            source = StreamSource(stream) if stream is not None else FileSource(lines)
        if not source.wall_clock and self.sim_clock is None:
            self.set_times(SignalTimes(self.settings, SimClock(SIM_START)))
            self.pace = True
        try:
            summary = await self.run_source(source, self._started, stop)
        finally:
            await self.broker.close()
        if self.broker.paced:
            summary.notes.append(f"{self.broker.paced} order message(s) waited for IB pacing")
        return summary

    async def _wind_down(self, stopped: bool) -> tuple[int, list[str]]:
        """Input ended: working orders get ``ibkr.drain_s`` to finish, then are cancelled. Stopped by a signal:
        left working at IB (``ibkr.on_stop = leave``, the default; the next start reconciles them) or
        cancelled (``cancel``). Either way the exits protecting open positions stay at IB: they are the
        positions' protection while no engine runs."""
        protecting = sum(self.engine.protects(o) for o in self.engine.orders.values())
        notes = [f"{protecting} bracket exit(s) left protecting positions at IB"] if protecting else []
        if not stopped:
            return await self._drain(self._stop), notes
        if self.settings.ibkr.on_stop == "cancel":
            return await self._drain(self._stop, wait=False), notes
        left = len(self.engine.orders) - protecting
        if not left:
            return 0, notes
        log.warning("session.orders_left_working", orders=left,
                    detail="left at IB as configured (ibkr.on_stop = leave); reconciled at the next start")
        return 0, [f"{left} order(s) left working at IB (ibkr.on_stop = leave): the next start reconciles them",
                   *notes]

    async def _drain(self, stop: asyncio.Event, wait: bool = True) -> int:
        """Give working orders ``ibkr.drain_s`` to finish, then cancel the rest and wait for IB to confirm."""
        engine = self.engine
        loop = asyncio.get_running_loop()

        def working() -> bool:
            return any(not engine.protects(o) for o in engine.orders.values())

        deadline = loop.time() + self.settings.ibkr.drain_s
        while wait and working() and loop.time() < deadline and not stop.is_set():
            await asyncio.sleep(0.05)
        cancelled = engine.cancel_where(lambda o: not engine.protects(o), "input ended: order still working")
        deadline = loop.time() + self.settings.ibkr.drain_s
        while working() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.broker.connected:
            await self.broker.sync()
        return cancelled
