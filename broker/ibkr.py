"""The IBKR adapter: the ``Broker`` protocol on ``ib_async`` (TWS / IB Gateway, or ``tradectl gateway-sim``).

Translation happens here and nowhere else: domain orders become IB orders (our client order id travels
as ``orderRef``; the account is always set), IB's statuses, executions, commission reports and error
codes become domain ``OrderUpdate`` and ``Fill`` events.

What IB does that the adapter must not get wrong:

- A fill is reported once its commission report arrives (``execDetails`` comes first; a fallback emits it
  without commission if the report never comes). Executions are deduplicated by the full execId; one
  that differs from an earlier one only in the last segment is a correction and replaces it.
- ``ib_async`` turns any order error into a local ``Cancelled``; the error code tells a reject (103, 110,
  200, 201) from a cancel (202). Error 10148 (cancel refused) usually means the order filled: it is never
  booked as cancelled.
- When the socket drops, ``ib_async`` forgets its trades and fills. The adapter reconnects with backoff,
  rebuilds from the open orders, completed orders and executions the gateway replays, and reports what
  changed while it was away. New orders are refused while the link is down.
- Pacing: at most ``pacing_per_s`` order messages a second leave; the rest wait in a queue (logged).
- Account values (NetLiquidation, AvailableFunds, in the base currency) arrive with the account updates
  ``ib_async`` subscribes to on connect, and again whenever IB sends them; the latest are kept here and
  NetLiquidation is the equity the engine sizes on (``account_equity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import structlog
from ib_async import IB, AccountValue, Contract, Stock, Ticker, Trade
from ib_async import Fill as IBFill
from ib_async import Order as IBOrder

from broker.base import BrokerListener, BrokerOrder, BrokerPosition, BrokerSnapshot, OrderUpdate
from broker.ib_codes import (
    DATA_RESUMED,
    DELAYED_TYPES,
    ERRORS,
    GATEWAY_NOTICES,
    MARKET_DATA_TYPES,
    ErrorKind,
    GatewayCondition,
    IbStatus,
    error_kind,
    ib_status,
    order_outcome,
)
from engine.domain import Fill, Order, OrderStatus, OrderType, Quote, Side

log = structlog.get_logger("tradectl.ibkr")
ORDER_CANCELLED = 202  # IB's "Order Canceled - reason:": the adapter reads it as the cancel's reason
_IB_ERROR_LINE = re.compile(r"^(?:Error|Warning) (\d+), reqId")


class _HandledCodes(logging.Filter):
    """ib_async logs every IB error code at ERROR ("Error 202, reqId 29: Order Canceled"), including those
    this adapter handles and reports as its own events (order.status, broker.gateway_condition...): an
    operator's log would say "error" for each cancel. Those lines are demoted to debug; any other code stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _IB_ERROR_LINE.match(str(record.msg))
        if match is None or (int(match.group(1)) not in ERRORS and int(match.group(1)) != ORDER_CANCELLED):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


_HANDLED = _HandledCodes()

def _trade_line(trade: Trade) -> str:
    """A Trade as ib_async's own log lines show it. ``placeOrder``, ``openOrder`` and ``orderStatus`` log the
    trade in f-strings, formatted whatever the log level: the dataclass repr (contract, the ~150 fields of
    the order, status, fills, log) is ~1,400 characters and ~100 us, four or five times an order, on the
    engine's loop, twice what the engine itself spends on the order (docs/performance.md). This names the
    order and its state: what an operator reading those lines needs."""
    o, s = trade.order, trade.orderStatus
    words = [trade.contract.symbol, o.action, str(o.totalQuantity), o.orderType]
    if o.orderType in ("LMT", "STP LMT"):
        words.append(f"limit={o.lmtPrice}")
    if o.orderType in ("STP", "STP LMT"):
        words.append(f"stop={o.auxPrice}")
    if o.tif:
        words.append(o.tif)
    return (f"Trade({' '.join(words)} orderId={o.orderId} permId={o.permId} ref={o.orderRef!r} "
            f"parentId={o.parentId} status={s.status} filled={s.filled} remaining={s.remaining} "
            f"avgFillPrice={s.avgFillPrice} fills={len(trade.fills)})")


setattr(Trade, "__repr__", _trade_line)  # noqa: B010 - mypy refuses assigning a method; one process-wide repr


ORDER_TYPES = frozenset(t.value for t in OrderType)
# ocaType of a bracket's exits: an execution reduces the other exit by as much (with overfill protection), so a
# partly filled take profit leaves the stop for what is left (type 1 would cancel the stop outright)
OCA_REDUCE_WITH_BLOCK = 2
COMMISSION_WAIT_S = 2.0
EXEC_MEMORY = 200_000
ACCOUNT_TAGS = frozenset({"NetLiquidation", "AvailableFunds"})


class IbkrError(Exception):
    """Connecting or qualifying failed in a way the operator must hear about."""


def dec(x: float | Decimal | None) -> Decimal:
    """IB sends doubles; their shortest repr is the decimal the gateway printed (``100.0`` -> ``100``)."""
    if x is None:
        return Decimal(0)
    if isinstance(x, Decimal):
        d = x
    elif not math.isfinite(x) or x >= 1e300:  # UNSET_DOUBLE
        return Decimal(0)
    else:
        d = Decimal(repr(x))
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def is_paper_account(account: str) -> bool:
    """IB paper accounts start with DU (individual) or DF (advisor paper)."""
    return account.upper().startswith(("DU", "DF"))


# A new order (no permId yet) refused for its id: 103 duplicate, or 104 when the id is a filled order's (IB reads
# the reused id as a modify of it). Nothing reached IB: sent again with a fresh id, the same orderRef.
ID_IN_USE = frozenset({103, 104})
UNCONFIRMED = frozenset({IbStatus.PENDING_SUBMIT.value, IbStatus.API_PENDING.value})  # ib_async's own, before IB
DUPLICATE_ID_RETRIES = 3


def fresh_gateway_conditions() -> dict[GatewayCondition, tuple[bool, str]]:
    """Every condition fine until the gateway says otherwise (a new API session starts clean)."""
    return {c: (True, "no notice from the gateway since connecting") for c in GatewayCondition}


class IbkrBroker:
    name = "ibkr"
    corrects_executions = True  # IB corrects an execution under a new execId (its last segment differs)

    def __init__(
        self,
        host: str,
        port: int,
        client_id: int,
        account: str,
        clock: Callable[[], datetime],
        *,
        pacing_per_s: int | None = 45,
        connect_timeout_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        market_data_type: int = 1,
        ib: IB | None = None,
    ) -> None:
        logging.getLogger("ib_async.wrapper").addFilter(_HANDLED)  # idempotent: one filter object
        self.host = host
        self.port = port
        self.client_id = client_id
        self.account = account
        self.clock = clock
        self.pacing_per_s = pacing_per_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_s = backoff_s
        self.market_data_type = market_data_type  # reqMarketDataType (ib_codes.MARKET_DATA_TYPES)
        self.ib = ib or IB()
        self.ib.client.MaxRequests = pacing_per_s or 0  # ib_async's own throttle, for every message type
        self.connected = False
        self.closing = False
        self._listener: BrokerListener | None = None
        self._contracts: dict[str, Contract] = {}
        self.unknown: set[str] = set()  # symbols IB has no contract for, as of the last attempt (error 200)
        self._tickers: dict[str, Ticker] = {}
        self.gateway: dict[GatewayCondition, tuple[bool, str]] = fresh_gateway_conditions()
        self._max_order_id = 0  # the highest order id this client has used or been shown
        self._id_retries: dict[str, int] = {}  # orderRef -> fresh-id retries after a 103
        self._quotes: dict[str, Quote] = {}
        self._trades: dict[str, Trade] = {}  # client order id -> the live ib_async Trade
        self._final: dict[str, OrderStatus] = {}  # client order ids we reported final (bounded)
        self._cancel_reasons: dict[str, str] = {}
        self._seen_execs: OrderedDict[str, None] = OrderedDict()
        self._exec_bases: OrderedDict[str, str] = OrderedDict()  # execId prefix -> latest execId
        self._waiting_commission: dict[str, tuple[IBFill, str | None, asyncio.TimerHandle]] = {}
        self._queue: deque[tuple[str, Callable[[], None]]] = deque()
        self._sent: deque[float] = deque()
        self._drain: asyncio.TimerHandle | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._completed: dict[str, Trade] = {}  # orderRef -> the order as the last completed-orders reply had it
        self.paced = 0  # orders that had to wait for pacing
        self.account_values: dict[str, Decimal] = {}  # NetLiquidation, AvailableFunds as IB last sent them
        self.on_ib_error: Callable[[int], None] | None = None  # told every error/notice code (metrics)
        ib_ = self.ib
        ib_.orderStatusEvent += self._on_order_status
        ib_.execDetailsEvent += self._on_exec_details
        ib_.commissionReportEvent += self._on_commission
        ib_.errorEvent += self._on_error
        ib_.disconnectedEvent += self._on_disconnected
        ib_.pendingTickersEvent += self._on_tickers
        ib_.accountValueEvent += self._on_account_value
        ib_.accountSummaryEvent += self._on_account_value

    # -- lifetime ------------------------------------------------------------------------------------
    def set_listener(self, listener: BrokerListener) -> None:
        self._listener = listener

    async def connect(self) -> list[str]:
        """Connect and wait until the gateway's startup replies are in. Returns the managed accounts."""
        login = self.gateway.get(GatewayCondition.LOGIN)
        self.gateway = fresh_gateway_conditions()  # a new API session: its startup notices say the rest
        if login is not None and not login[0]:
            self.gateway[GatewayCondition.LOGIN] = login  # until a handshake completes
        try:
            await self._connect_or_refused()
        except (OSError, TimeoutError) as err:
            self.ib.disconnect()
            if isinstance(err, TimeoutError):  # the socket opened and nothing answered: IB Gateway is not logged in
                self.gateway[GatewayCondition.LOGIN] = (False, f"{self.host}:{self.port} accepts connections but "
                                                               f"does not complete the API handshake: IB Gateway is "
                                                               f"waiting for a login or a 2FA approval")
                log.warning("broker.login_pending", host=self.host, port=self.port)
            raise IbkrError(f"cannot connect to IB at {self.host}:{self.port} as client {self.client_id}: "
                            f"{err or type(err).__name__}") from None
        self.connected = True
        self.gateway[GatewayCondition.LOGIN] = (True, "API handshake completed")
        if self.market_data_type != MARKET_DATA_TYPES["live"]:  # before any reqMktData of this session
            self.ib.reqMarketDataType(self.market_data_type)
        self._seen_id(max((t.order.orderId for t in self.ib.trades()), default=0))
        log.info("broker.connected", host=self.host, port=self.port, client_id=self.client_id,
                 accounts=self.ib.managedAccounts(), server_version=self.ib.client.serverVersion())
        return self.ib.managedAccounts()

    async def _connect_or_refused(self) -> None:
        """``connectAsync``, failing at once when IB refuses the client id (326). IB sends 326 and closes the
        socket, which ib_async does not notice while it connects: it waited the whole connect timeout, and the
        timeout read as a gateway waiting for a login (a false "login needed" alert after every restart that
        IB still held the old session's id through)."""
        loop = asyncio.get_running_loop()
        refused: asyncio.Future[str] = loop.create_future()

        def on_error(_req_id: int, code: int, message: str, _contract: Any) -> None:
            if error_kind(code) is ErrorKind.CLIENT_ID_IN_USE and not refused.done():
                refused.set_result(message)

        connecting = asyncio.ensure_future(self.ib.connectAsync(
            self.host, self.port, clientId=self.client_id, timeout=self.connect_timeout_s, account=self.account))
        self.ib.errorEvent += on_error
        try:
            await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.ib.errorEvent -= on_error
        if refused.done() and not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, TimeoutError, ConnectionError):
                await connecting
            raise ConnectionRefusedError(f"client id {self.client_id} is in use at IB (326): {refused.result()}")
        refused.cancel()
        await connecting  # its result, or its error

    async def close(self) -> None:
        self.closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        for _, _, timer in self._waiting_commission.values():
            timer.cancel()
        if self._drain is not None:
            self._drain.cancel()
        self.connected = False  # a deliberate close is not a disconnect to report
        self.ib.disconnect()

    async def subscribe(self, symbol: str, currency: str = "USD", wait_s: float = 5.0) -> Quote | None:
        """Qualify the contract (cached) and stream its quotes; wait for the first one up to ``wait_s``."""
        if symbol not in self._contracts:
            contract = Stock(symbol, "SMART", currency)
            qualified = await self.ib.qualifyContractsAsync(contract)
            found = qualified[0] if qualified else None
            if not isinstance(found, Contract):
                log.warning("broker.unknown_contract", symbol=symbol)
                self.unknown.add(symbol)
                return None
            self.unknown.discard(symbol)
            self._contracts[symbol] = found
        if symbol not in self._tickers:
            self._tickers[symbol] = self.ib.reqMktData(self._contracts[symbol], "", False, False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while symbol not in self._quotes and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self._quotes.get(symbol)

    async def sync(self) -> None:
        """A round trip: every reply the gateway sent before this one has been processed when it returns (none to
        wait for while the link is down)."""
        if self.ib.isConnected():
            await self.ib.reqCurrentTimeAsync()

    # -- Broker protocol -----------------------------------------------------------------------------
    def submit(self, order: Order) -> None:
        intent = order.intent
        coid = intent.client_order_id
        if not self.connected:
            self._update(coid, OrderStatus.REJECTED, "not connected to IB")
            return
        contract = self._contracts.get(intent.instrument.symbol)
        if contract is None:
            self._update(coid, OrderStatus.REJECTED, f"no qualified IB contract for {intent.instrument.symbol}")
            return
        ib_order = IBOrder(
            action=intent.side.value,
            totalQuantity=float(intent.quantity),
            orderType=intent.order_type.value,
            tif=intent.tif.value,
            orderRef=coid,
            account=self.account,
        )
        if intent.limit_price is not None and intent.order_type in (OrderType.LMT, OrderType.STP_LMT):
            ib_order.lmtPrice = float(intent.limit_price)
        if intent.stop_price is not None:
            ib_order.auxPrice = float(intent.stop_price)
        if intent.oca_group:
            ib_order.ocaGroup = intent.oca_group
            ib_order.ocaType = OCA_REDUCE_WITH_BLOCK
        ib_order.transmit = intent.transmit
        parent = intent.parent_id
        if parent is None:
            self._paced(coid, lambda: self._place(coid, contract, ib_order))
            return

        def place_exit() -> None:  # the entry's IB order id exists once its own (paced) placement has run
            entry = self._trades.get(parent)
            if entry is None:
                self._update(coid, OrderStatus.REJECTED, f"its entry {parent} is not at IB")
                return
            ib_order.parentId = entry.order.orderId
            self._place(coid, contract, ib_order)

        self._paced(coid, place_exit)

    def cancel(self, client_order_id: str, reason: str) -> None:
        trade = self._trades.get(client_order_id)
        if trade is None:
            queued = [i for i, (coid, _) in enumerate(self._queue) if coid == client_order_id]
            if queued:  # never left: take it out of the pacing queue
                del self._queue[queued[0]]
                self._update(client_order_id, OrderStatus.CANCELLED, reason)
            return
        self._cancel_reasons[client_order_id] = reason
        self._paced(client_order_id, lambda: self._cancel_now(trade))

    def resize(self, client_order_id: str, quantity: Decimal) -> None:
        """placeOrder under the same order id with the new total quantity (IB's modify)."""
        trade = self._trades.get(client_order_id)
        if trade is None or trade.isDone():
            return
        order = trade.order
        order.totalQuantity = float(quantity)
        order.transmit = True  # a modify sent with transmit off would wait in TWS, unsent (the stop went so)
        self._paced(client_order_id, lambda: self._modify_now(trade))

    def _modify_now(self, trade: Trade) -> None:
        if self.connected and not trade.isDone():
            self.ib.placeOrder(trade.contract, trade.order)

    def quote_delayed(self, symbol: str) -> bool:
        ticker = self._tickers.get(symbol)
        return ticker is not None and ticker.marketDataType in DELAYED_TYPES

    def quote(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)

    def positions(self) -> list[BrokerPosition]:
        return [
            BrokerPosition(p.contract.symbol, dec(p.position), dec(p.avgCost))
            for p in self.ib.positions(self.account)
            if p.position
        ]

    def snapshot(self) -> BrokerSnapshot:
        """IB's orders (open and completed today), executions and positions as fetched on connect.

        Our open orders found here are adopted: their later statuses and fills map to our client order ids.
        """
        orders = []
        for trade in [*self.ib.trades(), *self._completed.values()]:
            o, st = trade.order, trade.orderStatus
            if not o.orderRef:
                continue
            if st.status in UNCONFIRMED and not (o.permId or st.permId):
                continue  # placed by us and never confirmed by IB: not at the broker as far as anyone knows
            status = self._outcome(trade)
            if status is None:  # working, pending, or a refused cancel (usually: it filled) which is no cancel
                status = OrderStatus.SUBMITTED
            if status is OrderStatus.SUBMITTED and o.orderRef not in self._final:
                self._trades[o.orderRef] = trade
            filled = dec(st.filled) or dec(o.filledQuantity)
            lmt = dec(o.lmtPrice) if o.orderType in ("LMT", "STP LMT") else None
            aux = dec(o.auxPrice) if o.orderType in ("STP", "STP LMT") else None
            orders.append(BrokerOrder(
                o.orderRef, trade.contract.symbol, Side.BUY if o.action == "BUY" else Side.SELL,
                dec(o.totalQuantity), filled, status,
                OrderType(o.orderType) if o.orderType in ORDER_TYPES else OrderType.MKT,
                lmt or None, aux or None, o.orderId or None, o.permId or None, self._last_error(trade),
            ))
        executions = [
            Fill(f.execution.execId, f.execution.orderRef, f.contract.symbol,
                 Side.BUY if f.execution.side == "BOT" else Side.SELL, dec(f.execution.shares),
                 dec(f.execution.price), dec(f.commissionReport.commission), f.execution.time)
            for f in sorted(self.ib.fills(), key=lambda f: f.execution.time)
            if f.execution.execId not in self._waiting_commission  # in flight to the listener already
        ]
        for fill in executions:  # already known: the live path must not book them again
            self._seen_execs[fill.exec_id] = None
            self._exec_bases[fill.exec_id.rsplit(".", 1)[0]] = fill.exec_id
        return BrokerSnapshot(orders, executions, self.positions())

    def refresh(self) -> None:
        """Request today's executions and completed orders again (reqExecutions, reqCompletedOrders).

        ``ib_async`` adds executions it did not have to ``fills()`` without reporting them live, so an
        execDetails lost in flight shows up in the next ``snapshot()``; the completed orders give the final
        state of an order whose last status never arrived. Runs on the reconcile timer, off the signal path.
        """
        if self.connected and self._refresh is None:
            self._refresh = asyncio.get_event_loop().create_task(self._refresh_now())

    @property
    def refreshing(self) -> bool:
        return self._refresh is not None

    @property
    def pacing_queue_depth(self) -> int:
        """Order messages waiting for the pacing budget."""
        return len(self._queue)

    async def _refresh_now(self) -> None:
        try:
            await self.ib.reqExecutionsAsync()
            await self.ib.reqOpenOrdersAsync()  # an order whose acknowledgement never came shows up here
            completed = await self.ib.reqCompletedOrdersAsync(False)
            self._completed = {t.order.orderRef: t for t in completed if t.order.orderRef}
            await self.sync()  # the commission reports follow the executions
        except (ConnectionError, OSError, TimeoutError) as err:
            log.warning("broker.refresh_failed", error=str(err) or type(err).__name__)
        finally:
            self._refresh = None

    def account_equity(self) -> Decimal | None:
        """NetLiquidation as IB last sent it (None until the first account update)."""
        return self.account_values.get("NetLiquidation")

    def available_funds(self) -> Decimal | None:
        return self.account_values.get("AvailableFunds")

    # -- sending -------------------------------------------------------------------------------------
    def _place(self, coid: str, contract: Contract, ib_order: IBOrder) -> None:
        if not self.connected:
            self._update(coid, OrderStatus.REJECTED, "not connected to IB")
            return
        trade = self.ib.placeOrder(contract, ib_order)
        self._trades[coid] = trade
        self._seen_id(trade.order.orderId)
        log.debug("order.submitted", client_order_id=coid, order_id=trade.order.orderId)

    def raise_id_floor(self, order_id: int) -> None:
        """Order ids from now on above ``order_id`` (the highest our database knows, read at start)."""
        self._seen_id(order_id)

    def _seen_id(self, order_id: int) -> None:
        """Order ids only go up: never below one IB has seen from this client (nextValidId can roll back)."""
        if order_id > self._max_order_id:
            self._max_order_id = order_id
        update_req_id = cast(Callable[[int], None], self.ib.client.updateReqId)  # ib_async leaves it untyped
        update_req_id(self._max_order_id + 1)

    def _retry_with_fresh_id(self, coid: str, trade: Trade) -> bool:
        """IB refused a new order's id (103, 104): send the same order, same orderRef, with a fresh id above it.
        Nothing of it reached IB, so this is no blind re-send; at most DUPLICATE_ID_RETRIES times.

        The copy keeps every field (a bracket exit's parentId and OCA group), and is transmitted: what it
        attaches to was transmitted by the bracket's last order or is by this one. A bracket's entry is not
        retried: its exits went out naming the refused id, so it is rejected and the engine cancels them."""
        tries = self._id_retries.get(coid, 0)
        if tries >= DUPLICATE_ID_RETRIES or not self.connected or trade.orderStatus.filled:
            return False
        old = trade.order
        if not old.transmit and not old.parentId:
            log.error("order.id_refused", client_order_id=coid, refused_id=old.orderId, retry=None,
                      detail="a bracket's entry: not retried, its exits name this id; the bracket is rejected")
            return False
        self._id_retries[coid] = tries + 1
        self._seen_id(old.orderId)
        fresh = copy.copy(old)
        fresh.orderId, fresh.permId, fresh.transmit = 0, 0, True
        log.warning("order.id_refused", client_order_id=coid, refused_id=old.orderId, retry=tries + 1)
        self._paced(coid, lambda: self._place(coid, trade.contract, fresh))
        return True

    def _cancel_now(self, trade: Trade) -> None:
        if self.connected and not trade.isDone():
            self.ib.cancelOrder(trade.order)

    def _paced(self, coid: str, send: Callable[[], None]) -> None:
        """Send now if the pacing budget allows, else queue (in order) and say so."""
        limit = self.pacing_per_s
        if limit is None:
            send()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        sent = self._sent
        while sent and now - sent[0] >= 1.0:
            sent.popleft()
        if not self._queue and len(sent) < limit:
            sent.append(now)
            send()
            return
        self._queue.append((coid, send))
        self.paced += 1
        log.warning("order.paced", client_order_id=coid, queued=len(self._queue), limit_per_s=limit)
        if self._drain is None:
            self._drain = loop.call_at(sent[0] + 1.0, self._drain_queue)

    def _drain_queue(self) -> None:
        self._drain = None
        assert self.pacing_per_s is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        sent = self._sent
        while sent and now - sent[0] >= 1.0:
            sent.popleft()
        while self._queue and len(sent) < self.pacing_per_s:
            _, send = self._queue.popleft()
            sent.append(now)
            send()
        if self._queue:
            self._drain = loop.call_at(sent[0] + 1.0, self._drain_queue)

    # -- IB events in --------------------------------------------------------------------------------
    def _on_order_status(self, trade: Trade) -> None:
        coid = trade.order.orderRef
        if not coid or self._trades.get(coid) is not trade:
            return
        ids = (trade.order.orderId, trade.order.permId or None)
        status = self._outcome(trade)
        if status is OrderStatus.SUBMITTED:
            self._update(coid, OrderStatus.SUBMITTED, None, *ids)
        elif status is OrderStatus.REJECTED:
            if (trade.log and trade.log[-1].errorCode in ID_IN_USE and not trade.order.permId
                    and self._retry_with_fresh_id(coid, trade)):
                return
            self._update(coid, OrderStatus.REJECTED, self._last_error(trade) or "Inactive at IB", *ids)
        elif status is OrderStatus.CANCELLED:
            reason = self._cancel_reasons.pop(coid, None) or self._last_error(trade) or "cancelled at IB"
            self._update(coid, OrderStatus.CANCELLED, reason, *ids)
        elif status is OrderStatus.FILLED:
            self._trades.pop(coid, None)  # the fills drive the domain status; nothing left to cancel
        elif trade.log and error_kind(trade.log[-1].errorCode) is ErrorKind.CANCEL_REFUSED:
            log.warning("order.cancel_refused", client_order_id=coid, message=trade.log[-1].message)
        elif trade.orderStatus.status == IbStatus.VALIDATION_ERROR:
            log.warning("order.ib_warning", client_order_id=coid, message=self._last_error(trade))

    @staticmethod
    def _outcome(trade: Trade) -> OrderStatus | None:
        """Our status for the trade as IB reports it (one table for live updates and snapshots alike)."""
        status = ib_status(trade.orderStatus.status)
        if status is None:
            log.warning("order.ib_status_unknown", status=trade.orderStatus.status, order_ref=trade.order.orderRef)
            return None
        code = trade.log[-1].errorCode if trade.log else 0
        return order_outcome(status, code, trade.orderStatus.filled)

    @staticmethod
    def _last_error(trade: Trade) -> str | None:
        for entry in reversed(trade.log):
            if entry.errorCode:
                return f"IB {entry.errorCode}: {entry.message.split(': ', 1)[-1]}"
        return None

    def _on_exec_details(self, trade: Trade, fill: IBFill) -> None:
        self._take_execution(fill)

    def _take_execution(self, fill: IBFill) -> None:
        exec_id = fill.execution.execId
        if exec_id in self._seen_execs or exec_id in self._waiting_commission:
            return
        base = exec_id.rsplit(".", 1)[0]
        previous = self._exec_bases.get(base)
        corrects = previous if previous is not None and previous != exec_id else None
        self._exec_bases[base] = exec_id
        if len(self._exec_bases) > EXEC_MEMORY:
            self._exec_bases.popitem(last=False)
        if fill.commissionReport.execId == exec_id:  # replayed with its report already attached
            self._emit_fill(fill, corrects, Decimal(repr(fill.commissionReport.commission)))
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(COMMISSION_WAIT_S, self._commission_missing, exec_id)
        self._waiting_commission[exec_id] = (fill, corrects, timer)

    def _on_commission(self, trade: Trade, fill: IBFill, report: object) -> None:
        waiting = self._waiting_commission.pop(fill.execution.execId, None)
        if waiting is None:
            return
        ib_fill, corrects, timer = waiting
        timer.cancel()
        self._emit_fill(ib_fill, corrects, dec(fill.commissionReport.commission))

    def _commission_missing(self, exec_id: str) -> None:
        waiting = self._waiting_commission.pop(exec_id, None)
        if waiting is not None:
            log.warning("fill.commission_missing", exec_id=exec_id, waited_s=COMMISSION_WAIT_S)
            self._emit_fill(waiting[0], waiting[1], Decimal(0))

    def _emit_fill(self, ib_fill: IBFill, corrects: str | None, commission: Decimal) -> None:
        ex = ib_fill.execution
        self._seen_execs[ex.execId] = None
        if len(self._seen_execs) > EXEC_MEMORY:
            self._seen_execs.popitem(last=False)
        fill = Fill(
            ex.execId,
            ex.orderRef,
            ib_fill.contract.symbol,
            Side.BUY if ex.side == "BOT" else Side.SELL,
            dec(ex.shares),
            dec(ex.price),
            commission,
            ex.time,
            corrects=corrects,
        )
        if corrects is not None:
            log.warning("fill.correction", exec_id=ex.execId, corrects=corrects, price=str(fill.price))
        self._require_listener().on_fill(fill)

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        hook = self.on_ib_error
        if hook is not None:
            try:
                hook(code)
            except Exception:  # a metric must never change how an error is handled
                log.exception("broker.error_hook_failed", code=code)
        notice = GATEWAY_NOTICES.get(code)
        if notice is not None:
            self._gateway_says(code, notice[0], notice[1], message)
        if code in DATA_RESUMED and not self.gateway[GatewayCondition.MARKET_DATA_SESSION][0]:
            self._gateway_says(code, GatewayCondition.MARKET_DATA_SESSION, True, message)
        kind = error_kind(code)
        if kind is ErrorKind.COMPETING_SESSION:
            log.error("broker.competing_session", code=code, message=message,
                      detail="another live session (IBKR Mobile, a TWS) holds the market data: no quotes here")
        elif kind is ErrorKind.DATA_REQUEST_LOST:
            self._resubscribe()
        elif kind is ErrorKind.NO_LIVE_DATA:
            log.error("broker.no_live_data", code=code, message=message,
                      detail="no live market data subscription for this request: subscribe at IB, or set "
                             "ibkr.market_data_type = \"delayed\" to trade on delayed quotes")
        elif kind is ErrorKind.DELAYED_DATA:
            log.warning("broker.delayed_data", code=code, message=message)
        if kind is ErrorKind.LINK_LOST:
            self._link(False, f"IB {code}: {message}")
        elif kind in (ErrorKind.LINK_RESTORED, ErrorKind.LINK_RESTORED_DATA_LOST):
            self._link(True, f"IB {code}: {message}")
            if kind is ErrorKind.LINK_RESTORED_DATA_LOST:  # the market data subscriptions must be made again
                self._resubscribe()
        elif kind is ErrorKind.PACING:
            log.error("broker.pacing_violation", message=message)
        elif kind in (ErrorKind.FARM_NOTICE, ErrorKind.INFORMATIONAL):
            log.debug("broker.notice", code=code, message=message)

    def _resubscribe(self) -> None:
        """Request every symbol's market data again (1101, 10182: the old subscriptions are gone)."""
        for symbol in list(self._tickers):
            self.ib.cancelMktData(self._contracts[symbol])
            self._tickers[symbol] = self.ib.reqMktData(self._contracts[symbol], "", False, False)
        log.warning("broker.resubscribed", symbols=len(self._tickers))

    def _gateway_says(self, code: int, condition: GatewayCondition, ok: bool, message: str) -> None:
        was = self.gateway[condition][0]
        self.gateway[condition] = (ok, f"IB {code}: {message}")
        if was != ok:
            (log.info if ok else log.warning)("broker.gateway_condition", condition=condition.value, ok=ok,
                                              code=code, message=message)

    def _on_tickers(self, tickers: set[Ticker]) -> None:
        now = self.clock()
        for t in tickers:
            if t.contract is None:
                continue
            bid, ask = t.bid, t.ask
            if not (math.isfinite(bid) and math.isfinite(ask)) or bid <= 0 or ask <= 0:
                continue
            last = t.last if math.isfinite(t.last) and t.last > 0 else 0.0
            symbol = t.contract.symbol
            quote = self._quotes[symbol] = Quote(symbol, now, dec(bid), dec(ask), dec(t.bidSize), dec(t.askSize),
                                                 dec(last))
            if self._listener is not None:
                self._listener.on_quote(quote)

    def _on_account_value(self, value: AccountValue) -> None:
        """Keep this account's NetLiquidation and AvailableFunds (base currency; no model portfolios)."""
        if value.account != self.account or value.tag not in ACCOUNT_TAGS or not value.currency or value.modelCode:
            return
        try:
            amount = Decimal(value.value)
        except InvalidOperation:
            log.warning("account.value_unreadable", tag=value.tag, value=value.value)
            return
        if not amount.is_finite():
            return
        if value.tag not in self.account_values:
            log.info("account.value", account=self.account, tag=value.tag, value=str(amount), currency=value.currency)
        self.account_values[value.tag] = amount

        # -- connection ----------------------------------------------------------------------------------
    def _link(self, up: bool, reason: str) -> None:
        if self._listener is not None:
            self._listener.on_connection(up, self.clock(), reason)

    def _on_disconnected(self) -> None:
        if not self.connected:
            return
        self.connected = False
        self._tickers.clear()  # the last quotes stay: checks then reject new orders as disconnected
        log.error("broker.disconnected", host=self.host, port=self.port)
        self._link(False, "socket to IB closed")
        if not self.closing and self._reconnect is None:
            self._reconnect = asyncio.get_event_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay, cap = self.backoff_s
        try:
            while not self.closing:
                await asyncio.sleep(delay)
                try:
                    await self.connect()
                except IbkrError as err:
                    log.warning("broker.reconnect_failed", error=str(err), retry_in_s=min(delay * 2, cap))
                    delay = min(delay * 2, cap)
                    continue
                try:
                    await self._resync()
                except Exception as err:  # half resynced is not a link: drop it and try again (never stuck down)
                    log.error("broker.resync_failed", error=f"{type(err).__name__}: {err}".splitlines()[0],
                              retry_in_s=min(delay * 2, cap))
                    self.connected = False  # not a disconnect to report again: the engine still sees it down
                    self.ib.disconnect()
                    delay = min(delay * 2, cap)
                    continue
                self._link(True, "reconnected")
                return
        finally:
            self._reconnect = None

    async def _resync(self) -> None:
        """After a reconnect: adopt the gateway's replayed trades, report fills and final states we missed."""
        by_ref: dict[str, Trade] = {}
        for trade in self.ib.trades():
            if trade.order.orderRef:
                by_ref[trade.order.orderRef] = trade
        for fill in sorted(self.ib.fills(), key=lambda f: f.execution.time):
            self._take_execution(fill)
        for coid in list(self._trades):
            found = by_ref.get(coid)
            if found is None:
                del self._trades[coid]
                self._update(coid, OrderStatus.REJECTED, "not found at IB after reconnect: it never arrived")
                continue
            self._trades[coid] = found
            self._on_order_status(found)
        for symbol in list(self._contracts):
            self._tickers[symbol] = self.ib.reqMktData(self._contracts[symbol], "", False, False)
        log.warning("broker.resynced", open_orders=len(self.ib.openTrades()), fills=len(self.ib.fills()))

    # -- helpers -------------------------------------------------------------------------------------
    def _update(self, coid: str, status: OrderStatus, reason: str | None, order_id: int | None = None,
                perm_id: int | None = None) -> None:
        if status.is_terminal:
            if coid in self._final:
                return
            self._final[coid] = status
            if len(self._final) > EXEC_MEMORY:
                del self._final[next(iter(self._final))]
            self._trades.pop(coid, None)
            self._cancel_reasons.pop(coid, None)
        self._require_listener().on_order_update(OrderUpdate(coid, status, self.clock(), reason, order_id, perm_id))

    def _require_listener(self) -> BrokerListener:
        if self._listener is None:
            raise RuntimeError("IbkrBroker has no listener: call set_listener first")
        return self._listener
