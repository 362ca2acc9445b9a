"""The simulated IB Gateway: a TCP server speaking the TWS API socket protocol on the paper matching engine.

Unmodified clients (``ib_async``, IB's own ``ibapi``) connect, trade and cannot tell: the handshake with
version negotiation, everything ``IB.connect()`` waits for, orders (place, modify, cancel, global
cancel) with openOrder / orderStatus / execDetails / commissionReport, positions, portfolio and
account values, market data and contract details, and IB's refusals (103, 104, 105, 110, 200, 201,
326, 10147, 10148, the pacing disconnect). ``Faults`` lets tests and rehearsals drop connections,
delay or drop replies, send an execution twice or a correction, and restart with orders working; a
running simulator takes the same controls as JSON lines on its control port (``tradectl gateway-ctl``).

Orders are keyed by IB's permId inside the matching engine; (clientId, orderId) finds them for the
client that placed them. State (orders, executions, positions, order-id sequences) lives across
client connections and restarts of the listener, as a real gateway's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as dt_time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import structlog

from broker.ib_codes import IbStatus
from engine.domain import ZERO, OrderType, Quote, Side, TimeInForce
from paper import wire
from paper.market import RandomWalkMarket, read_quotes_csv
from paper.matching import CommissionSchedule, Execution, MatchingEngine, SimOrder
from paper.wire import SimContract, WireExecution, WireOrder, negotiate

log = structlog.get_logger("tradectl.gateway")

DEFAULT_SYMBOLS = ("AAPL", "AMZN", "MSFT", "NVDA", "QQQ", "SPY", "TSLA", "IBM")
PACING_LIMIT = 50  # client messages per second before IB disconnects (error 100)
START_API = 71  # the one message a client may send before it has a client id
ORDER_TYPES = {t.value: t for t in OrderType}
TIFS = {t.value: t for t in TimeInForce}


def con_id_for(symbol: str) -> int:
    """A stable contract id per symbol (real conIds are stable too)."""
    return 100_000 + zlib.crc32(symbol.encode()) % 900_000_000


def _oca_type_at(version: int) -> int:
    """Where placeOrder carries ocaType: after hidden (34), the deprecated sharesAllocation, discretionaryAmt,
    goodAfterTime, goodTillDate, the FA fields (faProfile only before server version 177), modelCode,
    shortSaleSlot, designatedLocation and exemptCode."""
    return 46 if version >= 177 else 47


def _dec(text: str) -> Decimal | None:
    if text in ("", wire.UNSET_DOUBLE):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


@dataclass(slots=True)
class Faults:
    """Fault controls; each is consumed or cleared explicitly, so a test states exactly what goes wrong."""

    reply_delay_s: float = 0.0  # every reply waits this long (order kept)
    drop_replies: dict[int, int] = field(default_factory=dict)  # message id -> how many to drop
    duplicate_next_execution: bool = False
    reject_next: str | None = None  # the next new order gets 201 with this reason
    refuse_short: set[str] = field(default_factory=set)  # sells that would open/extend a short: 201
    connectivity_lost: bool = False  # between 1100 and 1102: orders wait, no fills are reported live
    # orderRefs whose next execution is filled but never reported live (execDetails and its commission report
    # lost in flight; positions and order status still go out); "*" means the next execution of any order
    drop_exec: set[str] = field(default_factory=set)
    # after a session ends (a drop, a restart) its client id is refused with 326 for this long: IB has not
    # noticed yet that the old connection is gone, as after a real gateway restart
    client_id_linger_s: float = 0.0
    competing_session: bool = False  # 10197: another live session holds the market data; no quotes go out
    # the next API session is told a nextValidId this much lower than the ids already used (seen at IB after
    # restarts: a client that trusts it reuses ids, and a reused id of a working order is a modify of it)
    id_rollback: int = 0
    duplicate_id_next: bool = False  # the next new order is refused with 103 (duplicate order id)
    duplicate_id_ref: str | None = None  # ...or the next one with this orderRef
    # the account has no live market data subscription: live requests get 354, delayed ones (reqMarketDataType
    # 3 or 4) 10167 and delayed ticks
    delayed_only: bool = False
    drop_next_placement: bool = False  # the next placeOrder vanishes: no answer, nothing recorded (IB paper does)
    login_pending: bool = False  # a login or 2FA waits: connections are accepted, the handshake never answered

    def to_json(self) -> dict[str, Any]:
        return {"reply_delay_s": self.reply_delay_s, "drop_replies": dict(self.drop_replies),
                "duplicate_next_execution": self.duplicate_next_execution, "reject_next": self.reject_next,
                "refuse_short": sorted(self.refuse_short), "connectivity_lost": self.connectivity_lost,
                "drop_exec": sorted(self.drop_exec), "client_id_linger_s": self.client_id_linger_s,
                "competing_session": self.competing_session, "id_rollback": self.id_rollback,
                "duplicate_id_next": self.duplicate_id_next, "duplicate_id_ref": self.duplicate_id_ref,
                "delayed_only": self.delayed_only,
                "drop_next_placement": self.drop_next_placement, "login_pending": self.login_pending}


class _Client:
    """One API connection."""

    def __init__(self, gw: GatewaySim, writer: asyncio.StreamWriter, version: int) -> None:
        self.gw = gw
        self.writer = writer
        self.version = version
        self.client_id: int | None = None
        self.positions = False  # reqPositions subscription
        self.account_updates = False
        self.market: dict[int, str] = {}  # reqId -> symbol
        self.market_data_type = 1  # reqMarketDataType: 1 live, 2 frozen, 3 delayed, 4 delayed-frozen
        self.delayed_reqs: set[int] = set()  # market data requests answered with delayed ticks
        # placeOrder messages with transmit=0: held (as TWS holds them) until an order of the same bracket
        # arrives with transmit=1, and lost with this connection if none does
        self.untransmitted: list[list[str]] = []
        self._times: deque[float] = deque()
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._flusher: asyncio.TimerHandle | None = None

    @property
    def open(self) -> bool:
        return not self.writer.is_closing()

    def send(self, fields: list[object]) -> None:
        faults = self.gw.faults
        msg_id = int(str(fields[0]))
        left = faults.drop_replies.get(msg_id)
        if left:
            faults.drop_replies[msg_id] = left - 1
            log.info("gateway.reply_dropped", msg=msg_id, client_id=self.client_id)
            return
        data = wire.frame(fields)
        if faults.reply_delay_s > 0 or self._delayed:
            loop = asyncio.get_running_loop()
            self._delayed.append((loop.time() + faults.reply_delay_s, data))
            if self._flusher is None:
                self._flusher = loop.call_at(self._delayed[0][0], self._flush_delayed)
            return
        if self.open:
            self.writer.write(data)

    def _flush_delayed(self) -> None:
        self._flusher = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._delayed and self._delayed[0][0] <= now:
            data = self._delayed.popleft()[1]
            if self.open:
                self.writer.write(data)
        if self._delayed:
            self._flusher = loop.call_at(self._delayed[0][0], self._flush_delayed)

    def error(self, req_id: int, code: int, message: str) -> None:
        self.send(wire.error(self.version, req_id, code, message))

    def paced_out(self, limit: int | None) -> bool:
        """Record one incoming message; True when the client exceeded ``limit`` messages in a second."""
        if limit is None:
            return False
        now = time.monotonic()
        times = self._times
        times.append(now)
        while times and now - times[0] > 1.0:
            times.popleft()
        return len(times) > limit

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.writer.close()


class GatewaySim:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4002,
        account: str = "DU0000001",
        *,
        seed: int = 1,
        symbols: tuple[str, ...] = DEFAULT_SYMBOLS,
        quotes: Path | None = None,
        clock: Callable[[], datetime] | None = None,
        step_s: float | None = 0.25,
        commission: CommissionSchedule | None = None,
        pacing_limit: int | None = PACING_LIMIT,
        starting_cash: Decimal = Decimal(1_000_000),
        control_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.account = account
        self.clock = clock or (lambda: datetime.now(UTC))
        self.step_s = step_s
        self.pacing_limit = pacing_limit
        self.control_port = control_port
        self.faults = Faults()
        # Execution ids are unique for the life of an account at IB; a simulator started again against the same
        # database must not repeat them (the fills table keeps one row per id): the start time is in them.
        self.matching = MatchingEngine(commission, exec_prefix=f"{(time.time_ns() // 1_000_000) & 0xFFFFFFFF:08x}")
        self.market = RandomWalkMarket(seed)
        self._quotes: Iterator[Quote] | None = None
        if quotes is not None:
            rows = list(read_quotes_csv(quotes))
            symbols = tuple(sorted({q.symbol for q in rows}))
            self._quotes = iter(rows)
        self.contracts = {s: SimContract(con_id_for(s), s) for s in symbols}
        self._by_con_id = {c.con_id: c for c in self.contracts.values()}
        self.cash = starting_cash
        self._perm_ids = iter(range(1_000_001, 2**62))
        self.next_valid_id: dict[int, int] = {}  # clientId -> lowest order id it may use next
        self.live: dict[tuple[int, int], SimOrder] = {}  # (clientId, orderId) -> working order
        self._held: list[tuple[int, int]] = []  # accepted during an outage, not yet at the exchange
        self.done: dict[tuple[int, int], SimOrder] = {}
        self.completed_at: dict[int, tuple[datetime, str]] = {}  # permId -> (when, why)
        self.executions: list[WireExecution] = []
        self._corrections: dict[str, int] = {}  # exec id prefix -> last correction number
        self._clients: dict[int, _Client] = {}
        self._ended_at: dict[int, float] = {}  # client id -> when its last session ended (monotonic)
        self.refused_in_use = 0  # connections refused with 326 (client id in use)
        self._daily: asyncio.Task[None] | None = None  # the scheduled daily restart
        self._server: asyncio.Server | None = None
        self._control: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._handlers = self._handler_table()
        self.on_order: Callable[[str], None] | None = None  # told each new order's orderRef as it arrives
        self.messages_in = 0

    # -- lifetime ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # port 0 asks the OS for a free one
        if self.control_port is not None and self._control is None:
            self._control = await asyncio.start_server(self._serve_control, "127.0.0.1", self.control_port)
            self.control_port = self._control.sockets[0].getsockname()[1]
        if self.step_s is not None and self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_market(self.step_s))
        log.info("gateway.listening", host=self.host, port=self.port, account=self.account,
                 control_port=self.control_port)

    async def stop(self) -> None:
        if self._daily is not None:
            self._daily.cancel()
            self._daily = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            self._control = None
        await self._close_listener()

    async def _close_listener(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def restart(self, down_s: float = 0.0) -> None:
        """Fault: the gateway restarts. Sockets drop, the port is closed for ``down_s``; orders keep working."""
        log.warning("gateway.restarting", down_s=down_s)
        await self._close_listener()
        await asyncio.sleep(down_s)
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def restart_daily(self, at: dt_time, tz: tzinfo, down_s: float) -> None:
        """Restart every day at ``at`` in ``tz`` (wall clock), down ``down_s``: IB Gateway's auto-restart."""
        while True:
            now = datetime.now(tz)
            due = datetime.combine(now.date(), at, tzinfo=tz)
            if due <= now:
                due += timedelta(days=1)
            log.info("gateway.restart_scheduled", at=due.isoformat(), down_s=down_s)
            await asyncio.sleep((due - now).total_seconds())
            await self.restart(down_s)

    def schedule_restart(self, at: dt_time, tz: tzinfo, down_s: float) -> None:
        """Start (or replace) the daily restart."""
        if self._daily is not None:
            self._daily.cancel()
        self._daily = asyncio.get_running_loop().create_task(self.restart_daily(at, tz, down_s))

    # -- fault controls ------------------------------------------------------------------------------
    def drop_connections(self) -> int:
        """Fault: every API socket drops (the gateway's state stays). Returns how many were open."""
        clients = list(self._clients.values())
        for c in clients:
            c.close()
            self._ended(c.client_id)
        self._clients.clear()
        if clients:
            log.warning("gateway.connections_dropped", clients=len(clients))
        return len(clients)

    def compete(self, on: bool = True) -> None:
        """Fault: a competing live session (IBKR Mobile, another TWS) takes the market data (10197), or gives it
        back (2104)."""
        self.faults.competing_session = on
        if on:
            self._broadcast(10197, "No market data during competing live session")
        else:
            self._broadcast(2104, "Market data farm connection is OK:usfarm")

    def lose_connectivity(self) -> None:
        """Fault: IB's servers become unreachable (1100); sockets stay up, nothing trades or reports."""
        self.faults.connectivity_lost = True
        self._broadcast(1100, "Connectivity between IB and Trader Workstation has been lost.")

    def restore_connectivity(self, data_lost: bool = False) -> None:
        """1101 (data lost: resubscribe) or 1102 (maintained). Orders resume matching on the next quotes."""
        self.faults.connectivity_lost = False
        held, self._held = self._held, []
        for key in held:  # orders accepted during the outage go to the exchange now
            order = self.live.get(key)
            if order is not None:
                self._to_exchange(key, order)
        if data_lost:
            self._broadcast(1101, "Connectivity between IB and TWS has been restored- data lost.")
        else:
            self._broadcast(1102, "Connectivity between IB and TWS has been restored- data maintained.")

    def correct_execution(self, exec_id: str, price: Decimal) -> WireExecution:
        """Fault: IB corrects an execution's price; the correction's execId differs in its last segment."""
        base = exec_id.rsplit(".", 1)[0]
        original = next((e for e in reversed(self.executions) if e.exec_id.rsplit(".", 1)[0] == base), None)
        if original is None:
            raise KeyError(f"no execution {exec_id} to correct")
        n = self._corrections.get(base, int(original.exec_id.rsplit(".", 1)[1])) + 1
        self._corrections[base] = n
        corrected = WireExecution(f"{base}.{n:02d}", original.ts, original.order, original.shares, price,
                                  original.cum_qty, original.avg_price, original.commission, None)
        symbol = self._symbol_of(original.order)
        pos = self.matching.positions[symbol]
        signed = original.shares if original.order.action == "BUY" else -original.shares
        if pos.quantity:  # the corrected price moves the average cost of what is still held, and the trip's cash
            pos.avg_cost += (price - original.price) * signed / pos.quantity
            if pos.trip_cash is not None:
                pos.trip_cash -= (price - original.price) * signed
        self.cash -= (price - original.price) * signed
        self.executions.append(corrected)
        log.warning("gateway.execution_corrected", exec_id=corrected.exec_id, corrects=original.exec_id,
                    price=str(price))
        self._send_execution(symbol, corrected)
        return corrected

    # -- market --------------------------------------------------------------------------------------
    def step(self, symbol: str, ts: datetime | None = None) -> Quote:
        """Move ``symbol``'s seeded random walk one step, as the in-process paper session does per signal."""
        quote = self.market.step(symbol, ts or self.clock())
        self.on_quote(quote)
        return quote

    def on_quote(self, quote: Quote) -> None:
        executions = self.matching.on_quote(quote) if not self.faults.connectivity_lost else []
        if self.faults.connectivity_lost:
            self.matching.quotes[quote.symbol] = quote
        for c in self._clients.values():
            if self.faults.competing_session:
                break
            for req_id, symbol in c.market.items():
                if symbol == quote.symbol:
                    self._send_quote(c, req_id, quote)
        self._report(executions)

    async def _tick_market(self, step_s: float) -> None:
        while True:
            await asyncio.sleep(step_s)
            if self._quotes is not None:
                quote = next(self._quotes, None)
                if quote is not None:
                    self.on_quote(quote)
                continue
            wanted = {o.symbol for o in self.matching.working()}
            for c in self._clients.values():
                wanted.update(c.market.values())
            for symbol in sorted(wanted):
                self.step(symbol)

    def _send_quote(self, c: _Client, req_id: int, q: Quote) -> None:
        if req_id in c.delayed_reqs:
            bid, ask, last, bid_size, ask_size = (wire.DELAYED_BID, wire.DELAYED_ASK, wire.DELAYED_LAST,
                                                  wire.DELAYED_BID_SIZE, wire.DELAYED_ASK_SIZE)
        else:
            bid, ask, last, bid_size, ask_size = wire.BID, wire.ASK, wire.LAST, wire.BID_SIZE, wire.ASK_SIZE
        c.send(wire.tick_price(req_id, bid, q.bid, q.bid_size))
        c.send(wire.tick_price(req_id, ask, q.ask, q.ask_size))
        c.send(wire.tick_price(req_id, last, q.last, Decimal(100)))
        c.send(wire.tick_size(req_id, bid_size, q.bid_size))
        c.send(wire.tick_size(req_id, ask_size, q.ask_size))

    # -- connections ---------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client: _Client | None = None
        try:
            if await reader.readexactly(4) != b"API\0":
                writer.close()
                return
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            versions = (await reader.readexactly(size)).decode(errors="replace").rstrip("\0")
            while self.faults.login_pending:  # IB Gateway waiting for a login or 2FA: the socket opens, no answer
                await asyncio.sleep(0.05)
            version = negotiate(versions)
            if version is None:  # a real gateway answers nothing useful and drops the socket
                log.warning("gateway.version_refused", client_versions=versions)
                writer.close()
                return
            client = _Client(self, writer, version)
            writer.write(wire.frame([version, self.clock().strftime("%Y%m%d %H:%M:%S UTC")]))
            while client.open:
                fields = await wire.read_frame(reader)
                self.messages_in += 1
                if client.paced_out(self.pacing_limit):
                    client.error(-1, 100, f"Max rate of messages per second has been exceeded:"
                                                    f"max={self.pacing_limit} rec={len(client._times)} (1)")
                    log.warning("gateway.pacing_disconnect", client_id=client.client_id)
                    break
                if fields:
                    try:
                        self._dispatch(client, fields)
                    except (IndexError, ValueError) as exc:  # a malformed request: say so, keep serving
                        log.error("gateway.bad_request", fields=fields[:4], error=str(exc))
                        client.error(-1, 320, f"Server error when reading an API client request: {exc}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if client is not None and client.client_id is not None and self._clients.get(client.client_id) is client:
                del self._clients[client.client_id]
                self._ended(client.client_id)
                log.info("gateway.client_disconnected", client_id=client.client_id)
            writer.close()

    def _dispatch(self, c: _Client, f: list[str]) -> None:
        msg = int(f[0])
        if c.client_id is None and msg != START_API:
            return  # nothing before startApi
        handler = self._handlers.get(msg)
        if handler is None:
            log.info("gateway.unhandled", msg=msg, client_id=c.client_id)
            return
        handler(c, f)

    def _handler_table(self) -> dict[int, Callable[[_Client, list[str]], None]]:
        """Incoming message id -> handler (the TWS API's outgoing message ids, as the client sends them)."""
        ignored: Callable[[_Client, list[str]], None] = lambda c, f: None  # noqa: E731
        return {
            3: lambda c, f: self._place_order(c, f),  # placeOrder
            4: lambda c, f: self._cancel_order(c, int(f[2])),  # cancelOrder [4, 1, orderId, manualCancelOrderTime?]
            1: lambda c, f: self._req_mkt_data(c, int(f[2]), f),  # reqMktData [1, 11, reqId, contract(12), ...]
            2: self._cancel_mkt_data,  # cancelMktData [2, 2, reqId]
            9: lambda c, f: self._contract_details(c, int(f[2]), f),  # reqContractDetails [9, 8, reqId, ...]
            START_API: lambda c, f: self._start_api(c, int(f[2])),  # startApi [71, 2, clientId, optCapab]
            61: self._req_positions,
            64: self._cancel_positions,
            5: self._req_open_orders,  # this client's
            16: self._req_open_orders,  # all clients'
            99: self._req_completed_orders,  # [99, apiOnly]
            6: self._req_account_updates,  # [6, 2, subscribe, account]
            76: self._req_account_updates_multi,  # [76, 1, reqId, account, modelCode, ledgerAndNLV]
            7: lambda c, f: self._req_executions(c, int(f[2]), f),  # [7, 3, reqId, clientId, acct, time, ...]
            8: lambda c, f: c.send([wire.NEXT_VALID_ID, 1, self._next_id(c)]),  # reqIds
            49: lambda c, f: c.send([wire.CURRENT_TIME, 1, int(self.clock().timestamp())]),  # reqCurrentTime
            58: self._req_global_cancel,
            62: self._req_account_summary,  # [62, 1, reqId, group, tags]
            59: lambda c, f: setattr(c, "market_data_type", int(f[2])),  # reqMarketDataType [59, 1, type]
            15: ignored,  # reqManagedAccts: sent at connect already
            63: ignored,  # cancelAccountSummary
            77: ignored,  # cancelAccountUpdatesMulti
        }

    def _cancel_mkt_data(self, c: _Client, f: list[str]) -> None:
        c.market.pop(int(f[2]), None)

    def _req_positions(self, c: _Client, f: list[str]) -> None:
        c.positions = True
        for symbol, pos in sorted(self.matching.positions.items()):
            c.send(wire.position(self.account, self._contract(symbol), pos.quantity, pos.avg_cost))
        c.send([wire.POSITION_END, 1])

    def _cancel_positions(self, c: _Client, f: list[str]) -> None:
        c.positions = False

    def _req_open_orders(self, c: _Client, f: list[str]) -> None:
        every_client = int(f[0]) == 16
        for (cid, _), order in sorted(self.live.items()):
            if every_client or cid == c.client_id or c.client_id == 0:
                self._send_open_order(c, order)
                self._send_status(c, order)
        c.send([wire.OPEN_ORDER_END, 1])

    def _req_completed_orders(self, c: _Client, f: list[str]) -> None:
        for order in self.done.values():
            when, why = self.completed_at.get(order.perm_id, (self.clock(), ""))
            c.send(wire.completed_order(c.version, self._contract(order.symbol), self._wire(order), when, why))
        c.send([wire.COMPLETED_ORDERS_END])

    def _req_account_updates(self, c: _Client, f: list[str]) -> None:
        c.account_updates = f[2] == "1"
        if c.account_updates:
            self._account_updates(c)

    def _req_account_updates_multi(self, c: _Client, f: list[str]) -> None:
        req = f[2]
        for key, value in self._account_values():
            c.send([wire.ACCOUNT_UPDATE_MULTI, 1, req, self.account, "", key, value, "USD"])
        c.send([wire.ACCOUNT_UPDATE_MULTI_END, 1, req])

    def _req_global_cancel(self, c: _Client, f: list[str]) -> None:
        for live_key, order in list(self.live.items()):
            self._cancel(live_key, order, "global cancel")

    def _req_account_summary(self, c: _Client, f: list[str]) -> None:
        for key, value in self._account_values():
            c.send([wire.ACCOUNT_SUMMARY, 1, f[2], self.account, key, value, "USD"])
        c.send([wire.ACCOUNT_SUMMARY_END, 1, f[2]])

    def _ended(self, client_id: int | None) -> None:
        if client_id is not None:
            self._ended_at[client_id] = time.monotonic()

    def _lingering(self, client_id: int) -> bool:
        ended = self._ended_at.get(client_id)
        return ended is not None and time.monotonic() - ended < self.faults.client_id_linger_s

    def _start_api(self, c: _Client, client_id: int) -> None:
        if client_id in self._clients or self._lingering(client_id):
            self.refused_in_use += 1
            c.error(-1, 326, "Unable to connect as the client id is already in use. "
                                       "Retry with a unique client id.")
            c.close()
            return
        c.client_id = client_id
        self._clients[client_id] = c
        c.send([wire.MANAGED_ACCTS, 1, self.account])
        if self.faults.id_rollback:
            self.next_valid_id[client_id] = max(1, self._next_id(c) - self.faults.id_rollback)
            self.faults.id_rollback = 0
        c.send([wire.NEXT_VALID_ID, 1, self._next_id(c)])
        for code, text in ((2104, "Market data farm connection is OK:usfarm"),
                           (2106, "HMDS data farm connection is OK:ushmds"),
                           (2158, "Sec-def data farm connection is OK:secdefnj")):
            c.error(-1, code, text)
        if self.faults.connectivity_lost:
            c.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
        log.info("gateway.client_connected", client_id=client_id, server_version=c.version)

    def _next_id(self, c: _Client) -> int:
        assert c.client_id is not None
        return self.next_valid_id.setdefault(c.client_id, 1)

    # -- orders --------------------------------------------------------------------------------------
    def _place_order(self, c: _Client, f: list[str], transmitted: bool = False) -> None:
        assert c.client_id is not None
        order_id = int(f[1])
        if self.faults.drop_next_placement and order_id not in {k[1] for k in self.live if k[0] == c.client_id}:
            self.faults.drop_next_placement = False
            log.warning("gateway.placement_dropped", client_id=c.client_id, order_id=order_id)
            return
        key = (c.client_id, order_id)
        quantity = _dec(f[17]) or ZERO
        lmt, aux = _dec(f[19]), _dec(f[20])
        live = self.live.get(key)
        if live is not None:
            self._modify(c, key, live, quantity, lmt, aux)
            return
        if not transmitted and self._hold_or_release(c, f, order_id):
            return
        if key in self.done and self.done[key].status == IbStatus.FILLED:
            c.error(order_id, 104, f"Can't modify a filled order. Order id {order_id} is "
                                             f"{self.done[key].status}.")
            return
        targeted = self.faults.duplicate_id_ref is not None and self.faults.duplicate_id_ref == f[26]
        if order_id < self._next_id(c) or key in self.done or self.faults.duplicate_id_next or targeted:
            self.faults.duplicate_id_next = False
            if targeted:
                self.faults.duplicate_id_ref = None
            c.error(order_id, 103, "Duplicate order id")
            return
        self.next_valid_id[c.client_id] = order_id + 1
        contract = self._contract_from(f, 2)
        if contract is None:
            c.error(order_id, 200, "No security definition has been found for the request")
            return
        side = Side.BUY if f[16].upper() == "BUY" else Side.SELL
        order_type = ORDER_TYPES.get(f[18].upper())
        tif = TIFS.get(f[21].upper() or "DAY")
        account = f[23] or self.account
        order = SimOrder(next(self._perm_ids), 0, f[26], contract.symbol, side, quantity,
                         order_type or OrderType.MKT, lmt, aux, tif or TimeInForce.DAY, account, c.client_id,
                         oca_group=f[22])
        if self.on_order is not None:  # benches time a signal to its order's arrival here
            self.on_order(order.ref)
        order.perm_id = order.order_id
        order.extra["order_id"] = order_id
        order.extra["order_type"] = f[18].upper()
        order.extra["oca_type"] = order.oca_type = int(f[_oca_type_at(c.version)] or 0)
        parent = int(f[28] or 0)
        order.extra["parent_id"] = parent
        parent_order = None
        if parent:
            parent_order = self.live.get((c.client_id, parent)) or self.done.get((c.client_id, parent))
            order.parent_id = parent_order.order_id if parent_order is not None else 0  # 0: none, cancelled
            order.parent = parent_order
        reason = self._refusal(order, order_type, tif, account, contract)
        if reason is None and self.faults.reject_next is not None:
            reason, self.faults.reject_next = self.faults.reject_next, None
        if reason is not None:
            order.status = IbStatus.INACTIVE
            self.done[key] = order
            self.completed_at[order.perm_id] = (self.clock(), f"Rejected: {reason}")
            c.error(order_id, 201, f"Order rejected - reason:{reason}")
            self._send_open_order(c, order)
            self._send_status(c, order)
            log.info("gateway.order_rejected", client_id=c.client_id, order_id=order_id, reason=reason)
            return
        if lmt is not None and order.order_type in (OrderType.LMT, OrderType.STP_LMT) and lmt % contract.min_tick:
            c.error(order_id, 110, "The price does not conform to the minimum price variation for "
                                             "this contract.")
            return
        self.live[key] = order
        stop_waits = order.order_type in (OrderType.STP, OrderType.STP_LMT)
        held = parent_order is not None and parent_order.status != IbStatus.FILLED  # a child waits for its parent
        order.status = IbStatus.PRE_SUBMITTED if stop_waits or held else IbStatus.SUBMITTED
        self._send_open_order(c, order)
        self._send_status(c, order)
        if self.faults.connectivity_lost:
            self._held.append(key)  # accepted, but it reaches the exchange only when connectivity returns
            return
        self._to_exchange(key, order)

    def _hold_or_release(self, c: _Client, f: list[str], order_id: int) -> bool:
        """transmit=0 holds an order (True); an order with transmit=1 first releases the held orders of its
        bracket (its parent and the parent's other children), in the order they came."""
        if f[27] == "0":
            c.untransmitted.append(f)
            log.info("gateway.order_held", client_id=c.client_id, order_id=order_id, order_ref=f[26])
            return True
        parent = int(f[28] or 0) or order_id
        batch = [h for h in c.untransmitted if int(h[1]) == parent or int(h[28] or 0) == parent]
        if batch:
            c.untransmitted = [h for h in c.untransmitted if h not in batch]
            for held in batch:
                self._place_order(c, held, transmitted=True)
        return False

    def _to_exchange(self, key: tuple[int, int], order: SimOrder) -> None:
        self._report(self.matching.add(order, self.clock()))
        if order.is_done and key in self.live:
            self._retire(key, order, "IOC remainder cancelled" if order.status == IbStatus.CANCELLED else "")

    def _settle_rule_cancels(self) -> None:
        """Orders the exchange cancelled by its rules (an OCA sibling executed, a parent was cancelled)."""
        for order, why in self.matching.drain_cancelled():
            key = (order.client_id, int(str(order.extra["order_id"])))
            if key in self.live:
                self._retire(key, order, why)

    def _refusal(self, order: SimOrder, order_type: OrderType | None, tif: TimeInForce | None, account: str,
                 contract: SimContract) -> str | None:
        """The gateway's own pre-trade refusals (error 201), in IB's words where IB has them."""
        if account != self.account:
            return f"Account {account} is not managed by this login"
        if order_type is None:
            return f"Unsupported order type {order.extra['order_type']}"
        if tif is None:
            return "Unsupported time in force"
        if order.quantity <= 0:
            return "The order size must be positive"
        if order_type in (OrderType.LMT, OrderType.STP_LMT) and order.limit_price is None:
            return "A limit order needs a limit price"
        if order_type in (OrderType.STP, OrderType.STP_LMT) and order.stop_price is None:
            return "A stop order needs a stop price"
        if order.side is Side.SELL and contract.symbol in self.faults.refuse_short:
            pos = self.matching.positions.get(contract.symbol)
            held = pos.quantity if pos is not None else ZERO
            working_sells = sum((o.remaining for o in self.matching.working(contract.symbol)
                                 if o.side is Side.SELL), ZERO)
            if held - working_sells - order.quantity < 0:
                return "The contract is not available for short sale."
        return None

    def _modify(self, c: _Client, key: tuple[int, int], order: SimOrder, quantity: Decimal, lmt: Decimal | None,
                aux: Decimal | None) -> None:
        try:
            self.matching.modify(order.order_id, quantity, lmt, aux)
        except ValueError as exc:
            c.error(key[1], 105, f"Order being modified does not match original order: {exc}")
            return
        log.info("gateway.order_modified", client_id=key[0], order_id=key[1], quantity=str(quantity),
                 limit=str(lmt))
        if order.is_done:  # cut down to what had filled
            self._retire(key, order, "")
            return
        self._send_open_order(c, order)
        self._send_status(c, order)
        if not self.faults.connectivity_lost:
            self._report(self.matching.rematch(order.order_id, self.clock()))

    def _cancel_order(self, c: _Client, order_id: int) -> None:
        assert c.client_id is not None
        key = (c.client_id, order_id)
        order = self.live.get(key)
        held = [h for h in c.untransmitted if int(h[1]) == order_id]
        if order is None and held:  # never transmitted: it goes, as TWS drops an untransmitted order
            c.untransmitted.remove(held[0])
            c.error(order_id, 202, "Order Canceled - reason:untransmitted order cancelled")
            return
        if order is None:
            done = self.done.get(key)
            if done is None:
                c.error(order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            else:
                c.error(order_id, 10148, f"OrderId {order_id} that needs to be cancelled cannot be "
                                                   f"cancelled, state: {done.status}.")
            return
        self._cancel(key, order, "")

    def _cancel(self, key: tuple[int, int], order: SimOrder, why: str) -> None:
        if self.matching.cancel(order.order_id) is None:
            order.status = IbStatus.CANCELLED  # accepted during an outage: never reached the matching engine
        self._retire(key, order, why)
        if self.matching.rule_cancels:  # a cancelled parent takes its waiting children with it
            self._settle_rule_cancels()

    def _retire(self, key: tuple[int, int], order: SimOrder, why: str) -> None:
        """A working order reached a final state: tell its client, keep it for completed-order queries."""
        self.live.pop(key, None)
        self.done[key] = order
        self.completed_at[order.perm_id] = (self.clock(), why or order.status)
        c = self._clients.get(key[0])
        if c is None:
            return
        if order.status == IbStatus.CANCELLED:
            self._send_status(c, order)
            c.error(key[1], 202, f"Order Canceled - reason:{why}")
        else:
            self._send_open_order(c, order)
            self._send_status(c, order)

    # -- executions ----------------------------------------------------------------------------------
    def _report(self, executions: list[Execution]) -> None:
        self._report_executions(executions)
        if self.matching.rule_cancels:  # after the execution that caused them, as IB reports an OCA cancel
            self._settle_rule_cancels()

    def _report_executions(self, executions: list[Execution]) -> None:
        for ex in executions:
            order = ex.order
            signed = ex.quantity if order.side is Side.BUY else -ex.quantity
            self.cash -= signed * ex.price + ex.commission
            wex = WireExecution(ex.exec_id, ex.ts, self._wire(order), ex.quantity, ex.price, ex.cum_qty,
                                ex.avg_price, ex.commission, ex.realized or None)
            self.executions.append(wex)
            self._send_execution(order.symbol, wex)
            key = (order.client_id, int(str(order.extra["order_id"])))
            c = self._clients.get(order.client_id)
            if order.status == IbStatus.FILLED:
                if key in self.live:
                    self._retire(key, order, "")
            elif c is not None:
                self._send_status(c, order, ex.price)

    def _send_execution(self, symbol: str, e: WireExecution) -> None:
        contract = self._contract(symbol)
        times = 2 if self.faults.duplicate_next_execution else 1
        self.faults.duplicate_next_execution = False
        c = self._clients.get(e.order.client_id)
        lost = self.faults.drop_exec & {e.order.order_ref, "*"}
        if lost:
            ref = e.order.order_ref
            self.faults.drop_exec.discard(ref if ref in lost else "*")  # the order's own entry before the wildcard
            log.info("gateway.execution_dropped", exec_id=e.exec_id, order_ref=e.order.order_ref)
            c = None
        if c is not None:
            for _ in range(times):
                c.send(wire.exec_details(c.version, -1, contract, e, self.account))
                c.send(wire.commission_report(e))
        pos = self.matching.positions.get(symbol)
        if pos is None:
            return
        quote = self.matching.quotes.get(symbol)
        mark = quote.reference if quote is not None else e.price
        for other in self._clients.values():
            if other.positions:
                other.send(wire.position(self.account, contract, pos.quantity, pos.avg_cost))
            if other.account_updates:
                other.send(wire.portfolio(self.account, contract, pos.quantity, mark, pos.avg_cost, pos.realized_pnl))
                for key, value in self._account_values():
                    other.send([wire.ACCT_VALUE, 2, key, value, "USD", self.account])

    def _req_executions(self, c: _Client, req_id: int, f: list[str]) -> None:
        client_filter = int(f[3] or 0)
        symbol = f[6].upper() if len(f) > 6 else ""
        side = f[9].upper() if len(f) > 9 else ""
        for e in self.executions:
            if client_filter and e.order.client_id != client_filter:
                continue
            sym = self._symbol_of(e.order)
            if symbol and sym != symbol:
                continue
            if side and side not in (e.order.action, "BOT" if e.order.action == "BUY" else "SLD"):
                continue
            c.send(wire.exec_details(c.version, req_id, self._contract(sym), e, self.account))
        c.send([wire.EXECUTION_DATA_END, 1, req_id])
        for e in self.executions:  # TWS sends the commission reports after the executions
            if (not client_filter or e.order.client_id == client_filter) and (
                    not symbol or self._symbol_of(e.order) == symbol):
                c.send(wire.commission_report(e))

    # -- market data and contracts -------------------------------------------------------------------
    def _contract_from(self, f: list[str], at: int) -> SimContract | None:
        """The contract fields (conId, symbol, secType, ...) starting at index ``at`` of a request."""
        by_id = self._by_con_id.get(int(f[at] or 0))
        if by_id is not None:
            return by_id
        if f[at + 2] not in ("STK", "") or (f[at + 9] and f[at + 9] != "USD"):
            return None
        return self.contracts.get(f[at + 1].upper())

    def _req_mkt_data(self, c: _Client, req_id: int, f: list[str]) -> None:
        contract = self._contract_from(f, 3)
        if contract is None:
            c.error(req_id, 200, "No security definition has been found for the request")
            return
        if self.faults.delayed_only:
            if c.market_data_type < 3:
                c.error(req_id, 354, "Requested market data is not subscribed.Delayed market data is available.")
                return
            c.error(req_id, 10167, "Requested market data is not subscribed. Displaying delayed market data.")
            c.delayed_reqs.add(req_id)
        c.market[req_id] = contract.symbol
        c.send([wire.MARKET_DATA_TYPE, 1, req_id, 3 if req_id in c.delayed_reqs else 1])
        quote = self.matching.quotes.get(contract.symbol)
        if quote is not None:
            self._send_quote(c, req_id, quote)

    def _contract_details(self, c: _Client, req_id: int, f: list[str]) -> None:
        contract = self._contract_from(f, 3)
        if contract is None:
            c.error(req_id, 200, "No security definition has been found for the request")
            return
        c.send(wire.contract_details(c.version, req_id, contract))
        c.send([wire.CONTRACT_DATA_END, 1, req_id])

    # -- account -------------------------------------------------------------------------------------
    def net_liquidation(self) -> Decimal:
        value = self.cash
        for symbol, pos in self.matching.positions.items():
            quote = self.matching.quotes.get(symbol)
            value += pos.quantity * (quote.reference if quote is not None else pos.avg_cost)
        return value

    def _account_values(self) -> list[tuple[str, str]]:
        nlv = self.net_liquidation().quantize(Decimal("0.01"))
        cash = self.cash.quantize(Decimal("0.01"))
        return [("NetLiquidation", str(nlv)), ("TotalCashValue", str(cash)), ("AvailableFunds", str(nlv)),
                ("BuyingPower", str(nlv * 4))]

    def _account_updates(self, c: _Client) -> None:
        for key, value in self._account_values():
            c.send([wire.ACCT_VALUE, 2, key, value, "USD", self.account])
        for symbol, pos in sorted(self.matching.positions.items()):
            quote = self.matching.quotes.get(symbol)
            mark = quote.reference if quote is not None else pos.avg_cost
            c.send(wire.portfolio(self.account, self._contract(symbol), pos.quantity, mark, pos.avg_cost,
                                  pos.realized_pnl))
        c.send([wire.ACCT_UPDATE_TIME, 1, self.clock().strftime("%H:%M")])
        c.send([wire.ACCT_DOWNLOAD_END, 1, self.account])

    # -- helpers -------------------------------------------------------------------------------------
    def _contract(self, symbol: str) -> SimContract:
        contract = self.contracts.get(symbol)
        if contract is None:
            contract = self.contracts[symbol] = SimContract(con_id_for(symbol), symbol)
            self._by_con_id[contract.con_id] = contract
        return contract

    def _symbol_of(self, o: WireOrder) -> str:
        key = (o.client_id, o.order_id)
        order = self.live.get(key) or self.done[key]
        return order.symbol

    def _wire(self, order: SimOrder) -> WireOrder:
        return WireOrder(int(str(order.extra["order_id"])), order.client_id, order.perm_id, order.side.value,
                         order.quantity, str(order.extra["order_type"]), order.limit_price, order.stop_price,
                         order.tif.value, order.account, order.ref, order.status, order.filled,
                         int(str(order.extra.get("parent_id", 0))), order.oca_group,
                         int(str(order.extra.get("oca_type", 0))))

    def _send_open_order(self, c: _Client, order: SimOrder) -> None:
        c.send(wire.open_order(c.version, self._contract(order.symbol), self._wire(order)))

    def _send_status(self, c: _Client, order: SimOrder, last_fill: Decimal = ZERO) -> None:
        c.send(wire.order_status(self._wire(order), order.avg_price, last_fill))

    def _broadcast(self, code: int, message: str) -> None:
        for c in self._clients.values():
            c.error(-1, code, message)

    # -- control port --------------------------------------------------------------------------------
    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """JSON lines: ``{"cmd": "drop"}`` -> ``{"ok": true, ...}``. Loopback only."""
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    reply = await self.control(str(request.pop("cmd")), **request)
                except Exception as exc:  # a bad command must not take the simulator down
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def orders_view(self) -> list[dict[str, Any]]:
        """Every order this gateway holds, working and done, as ``gateway-ctl orders`` lists them."""
        rows = []
        for (client_id, order_id), o in sorted([*self.live.items(), *self.done.items()]):
            rows.append({"order_id": order_id, "client_id": client_id, "perm_id": o.perm_id, "order_ref": o.ref,
                         "symbol": o.symbol, "action": o.side.value, "quantity": str(o.quantity),
                         "order_type": str(o.extra["order_type"]),
                         "limit": None if o.limit_price is None else str(o.limit_price),
                         "stop": None if o.stop_price is None else str(o.stop_price), "tif": o.tif.value,
                         "status": str(o.status), "filled": str(o.filled),
                         "parent_id": int(str(o.extra.get("parent_id", 0))), "oca_group": o.oca_group})
        return rows

    async def control(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One fault or query by name: the Python API behind the control port."""
        f = self.faults
        if cmd == "status":
            return {"ok": True, "clients": sorted(self._clients), "working": len(self.live),
                    "executions": len(self.executions), "faults": f.to_json(),
                    "positions": {s: str(p.quantity) for s, p in sorted(self.matching.positions.items())}}
        if cmd == "orders":
            return {"ok": True, "orders": self.orders_view()}
        if cmd == "drop":
            return {"ok": True, "dropped": self.drop_connections()}
        if cmd == "restart":
            await self.restart(float(args.get("down_s", 0.0)))
            return {"ok": True}
        if cmd == "outage":
            self.lose_connectivity()
            return {"ok": True}
        if cmd == "restore":
            self.restore_connectivity(str(args.get("data_lost", "")).lower() in ("1", "true", "yes"))
            return {"ok": True}
        if cmd == "delay":
            f.reply_delay_s = float(args["seconds"])
            return {"ok": True}
        if cmd == "drop-replies":
            f.drop_replies[int(args["msg"])] = int(args.get("count", 1))
            return {"ok": True}
        if cmd == "drop-exec":
            f.drop_exec.add(str(args.get("ref", "*")))
            return {"ok": True}
        if cmd == "duplicate-exec":
            f.duplicate_next_execution = True
            return {"ok": True}
        if cmd == "correct":
            e = self.correct_execution(str(args["exec_id"]), Decimal(str(args["price"])))
            return {"ok": True, "exec_id": e.exec_id}
        if cmd == "reject-next":
            f.reject_next = str(args.get("reason", "rejected by the simulator"))
            return {"ok": True}
        if cmd == "refuse-short":
            f.refuse_short.add(str(args["symbol"]).upper())
            return {"ok": True}
        if cmd == "step":
            q = self.step(str(args["symbol"]).upper())
            return {"ok": True, "bid": str(q.bid), "ask": str(q.ask), "last": str(q.last)}
        if cmd == "quote":  # the market at a price of the operator's choosing: a stop to trigger, a limit to fill
            bid, ask = Decimal(str(args["bid"])), Decimal(str(args["ask"]))
            size = Decimal(str(args.get("size", 10_000)))
            q = Quote(str(args["symbol"]).upper(), self.clock(), bid, ask, size, size,
                      Decimal(str(args.get("last", bid))))
            self.on_quote(q)
            return {"ok": True, "bid": str(q.bid), "ask": str(q.ask), "last": str(q.last)}
        if cmd == "compete":
            self.compete(str(args.get("on", "1")).lower() in ("1", "true", "yes"))
            return {"ok": True}
        if cmd == "id-rollback":
            f.id_rollback = int(args.get("by", 10))
            return {"ok": True}
        if cmd == "duplicate-id-next":  # ref=ORDERREF: the next order with that orderRef, not just the next one
            if "ref" in args:
                f.duplicate_id_ref = str(args["ref"])
            else:
                f.duplicate_id_next = True
            return {"ok": True}
        if cmd == "delayed-only":
            f.delayed_only = str(args.get("on", "1")).lower() in ("1", "true", "yes")
            return {"ok": True}
        if cmd == "login-pending":
            f.login_pending = str(args.get("on", "1")).lower() in ("1", "true", "yes")
            return {"ok": True}
        if cmd == "drop-placement":
            f.drop_next_placement = True
            return {"ok": True}
        if cmd == "linger":
            f.client_id_linger_s = float(args["seconds"])
            return {"ok": True}
        if cmd == "restart-daily":
            from zoneinfo import ZoneInfo

            at = dt_time.fromisoformat(str(args["at"]))
            self.schedule_restart(at, ZoneInfo(str(args.get("tz", "UTC"))), float(args.get("down_s", 60.0)))
            return {"ok": True, "at": at.isoformat(), "tz": str(args.get("tz", "UTC"))}
        if cmd == "clear":
            self.faults = Faults()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


@contextmanager
def serve_in_thread(port: int = 0, **kw: Any) -> Iterator[GatewaySim]:
    """A simulated gateway on its own thread and loop, for code that runs its own asyncio.run (the CLI)."""
    loop = asyncio.new_event_loop()
    gw = GatewaySim(port=port, **kw)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(gw.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(gw.stop())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield gw
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
