"""TWS API socket encoding for the simulated gateway: framing and the server -> client messages.

Each encoder returns the message's fields exactly as a real gateway of the negotiated server version
sends them (157..178; from 201 on IB switches to protobuf). The client libraries' decoders
(``ib_async.decoder``, ``ibapi.decoder`` / ``orderdecoder``) are the authority on field order; the
counts are pinned by tests (openOrder 120/128/127, completedOrder 92/97/96 fields at 157/176/178).

Framing: a 4-byte big-endian length, then ``\\0``-terminated ASCII fields.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

UNSET_DOUBLE = "1.7976931348623157E308"
UNSET_INTEGER = "2147483647"

MIN_SERVER_VERSION = 157  # the floor both ib_async and ibapi accept
MAX_SERVER_VERSION = 178  # the newest text-protocol layout implemented here (below 201: protobuf)

# Incoming (server -> client) message ids.
TICK_PRICE, TICK_SIZE, ORDER_STATUS, ERR_MSG, OPEN_ORDER = 1, 2, 3, 4, 5
ACCT_VALUE, PORTFOLIO_VALUE, ACCT_UPDATE_TIME, NEXT_VALID_ID, CONTRACT_DATA, EXECUTION_DATA = 6, 7, 8, 9, 10, 11
MANAGED_ACCTS, CURRENT_TIME, CONTRACT_DATA_END, OPEN_ORDER_END, ACCT_DOWNLOAD_END = 15, 49, 52, 53, 54
EXECUTION_DATA_END, MARKET_DATA_TYPE, COMMISSION_REPORT, POSITION_DATA, POSITION_END = 55, 58, 59, 61, 62
ACCOUNT_SUMMARY, ACCOUNT_SUMMARY_END, ACCOUNT_UPDATE_MULTI, ACCOUNT_UPDATE_MULTI_END = 63, 64, 73, 74
COMPLETED_ORDER, COMPLETED_ORDERS_END = 101, 102

# Tick types (TWS API TickType).
BID_SIZE, BID, ASK, ASK_SIZE, LAST, LAST_SIZE = 0, 1, 2, 3, 4, 5
# the same ticks of delayed data (reqMarketDataType 3 or 4, no live subscription)
DELAYED_BID, DELAYED_ASK, DELAYED_LAST, DELAYED_BID_SIZE, DELAYED_ASK_SIZE = 66, 67, 68, 69, 70
MARKET_DATA_TYPES = {1: "live", 2: "frozen", 3: "delayed", 4: "delayed_frozen"}


def frame(fields: Sequence[object]) -> bytes:
    payload = b"".join(_text(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(payload)) + payload


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")
    return str(value)


async def read_frame(reader: asyncio.StreamReader) -> list[str]:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    payload = await reader.readexactly(size)
    return payload.decode(errors="replace").split("\0")[:-1]


def negotiate(version_text: str) -> int | None:
    """The server version for a client's ``v<min>..<max>`` (or ``v<n>``); None when no overlap."""
    text = version_text.split(" ", 1)[0].removeprefix("v")
    low, _, high = text.partition("..")
    try:
        cmin, cmax = int(low), int(high or low)
    except ValueError:
        return None
    version = min(cmax, MAX_SERVER_VERSION)
    if version < MIN_SERVER_VERSION or version < cmin:
        return None
    return version


def ib_time(ts: datetime) -> str:
    return ts.strftime("%Y%m%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class SimContract:
    """A stock the simulator knows: what reqContractDetails answers and every order message carries."""

    con_id: int
    symbol: str
    sec_type: str = "STK"
    exchange: str = "SMART"
    primary_exchange: str = "NASDAQ"
    currency: str = "USD"
    min_tick: Decimal = Decimal("0.01")

    def fields11(self, exchange: str | None = None) -> list[object]:
        """conId .. tradingClass as openOrder, execDetails and position carry them (no primaryExchange)."""
        return [self.con_id, self.symbol, self.sec_type, "", 0, "", "", exchange or self.exchange,
                self.currency, self.symbol, "NMS"]


@dataclass(frozen=True, slots=True)
class WireOrder:
    """What the order messages say about one order (the gateway's view, IB vocabulary)."""

    order_id: int
    client_id: int
    perm_id: int
    action: str  # BUY / SELL
    quantity: Decimal
    order_type: str
    lmt_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    account: str
    order_ref: str
    status: str
    filled: Decimal = Decimal(0)
    parent_id: int = 0  # the client's order id of this order's parent (a bracket's exit)
    oca_group: str = ""
    oca_type: int = 0


def _price(p: Decimal | None) -> object:
    return p if p is not None else UNSET_DOUBLE


def open_order(version: int, c: SimContract, o: WireOrder) -> list[object]:
    f: list[object] = [OPEN_ORDER, o.order_id, *c.fields11()]
    f += [o.action, o.quantity, o.order_type, _price(o.lmt_price), _price(o.aux_price), o.tif, o.oca_group, o.account,
          "O", 0, o.order_ref, o.client_id, o.perm_id, 0, 0, 0, "", "", "", "", ""]
    if version < 177:
        f.append("")  # faProfile
    f += ["", "", "", UNSET_DOUBLE, "", 0, "", -1,  # modelCode .. exemptCode
          0, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE,  # auction .. rangeUpper
          0, 0, 0, 0, "", o.oca_type or UNSET_INTEGER, 0, 0, 0, o.parent_id, 0,  # displaySize .. triggerMethod
          UNSET_DOUBLE, UNSET_INTEGER, "", UNSET_DOUBLE,  # volatility, type, DN order type (none), DN aux
          0, 0, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_INTEGER, "",  # continuousUpdate .. legs descr
          0, 0, 0,  # combo legs, order combo legs, smart combo params
          UNSET_INTEGER, UNSET_INTEGER, "",  # scale init/subs level sizes, price increment (none)
          "",  # hedgeType (none)
          0, "", "", 0, 0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, no DN contract
          "",  # algoStrategy (none)
          0, 0, o.status,  # solicited, whatIf, status
          *([UNSET_DOUBLE] * 9), UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, "", "",  # margins, commissions, warn
          0, 0,  # randomizeSize, randomizePrice
          0,  # conditions
          "None", UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, 0,
          "", "", "", UNSET_DOUBLE, 0, 0, 0, 0]  # soft dollar tier .. usePriceMgmtAlgo
    if version >= 158:
        f.append(UNSET_INTEGER)  # duration
    if version >= 160:
        f.append(0)  # postToAts
    if version >= 162:
        f.append(0)  # autoCancelParent
    if version >= 170:
        f += [UNSET_INTEGER, UNSET_INTEGER, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE]
    return f


def completed_order(version: int, c: SimContract, o: WireOrder, completed: datetime, why: str) -> list[object]:
    f: list[object] = [COMPLETED_ORDER, *c.fields11()]
    f += [o.action, o.quantity, o.order_type, _price(o.lmt_price), _price(o.aux_price), o.tif, o.oca_group, o.account,
          "O", 0, o.order_ref, o.perm_id, 0, 0, 0, "", "", "", ""]
    if version < 177:
        f.append("")  # faProfile
    f += ["", "", "", UNSET_DOUBLE, "", 0, "", -1,  # modelCode .. exemptCode
          UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE,  # startingPrice .. rangeUpper
          0, 0, 0, "", o.oca_type, 0,  # displaySize, sweepToFill, allOrNone, minQty, ocaType, triggerMethod
          UNSET_DOUBLE, UNSET_INTEGER, "", UNSET_DOUBLE,  # volatility, type, DN order type, DN aux
          0, 0, UNSET_DOUBLE, UNSET_DOUBLE, "",  # continuousUpdate .. comboLegsDescrip
          0, 0, 0,
          UNSET_INTEGER, UNSET_INTEGER, "",
          "",
          "", "", 0, 0,  # clearingAccount, clearingIntent, notHeld, no DN contract
          "",
          0, o.status, 0, 0,  # solicited, status, randomizeSize, randomizePrice
          0,  # conditions
          UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, 0, 0, "", o.filled, 0, 0, "", 0, 0, UNSET_INTEGER,
          completed.strftime("%Y%m%d %H:%M:%S UTC"), why]
    if version >= 170:
        f += [UNSET_INTEGER, UNSET_INTEGER, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE]
    return f


def order_status(o: WireOrder, avg_price: Decimal, last_fill_price: Decimal) -> list[object]:
    return [ORDER_STATUS, o.order_id, o.status, o.filled, o.quantity - o.filled, avg_price, o.perm_id, 0,
            last_fill_price, o.client_id, "", 0]


@dataclass(frozen=True, slots=True)
class WireExecution:
    exec_id: str
    ts: datetime
    order: WireOrder
    shares: Decimal
    price: Decimal
    cum_qty: Decimal
    avg_price: Decimal
    commission: Decimal
    realized_pnl: Decimal | None


def exec_details(version: int, req_id: int, c: SimContract, e: WireExecution, account: str) -> list[object]:
    o = e.order
    side = "BOT" if o.action == "BUY" else "SLD"
    f: list[object] = [EXECUTION_DATA, req_id, o.order_id, *c.fields11(c.primary_exchange), e.exec_id, ib_time(e.ts),
                       account, c.primary_exchange, side, e.shares, e.price, o.perm_id, o.client_id, 0, e.cum_qty,
                       e.avg_price, o.order_ref, "", "", "", 1]
    if version >= 178:
        f.append(0)  # pendingPriceRevision
    return f


def commission_report(e: WireExecution) -> list[object]:
    pnl = e.realized_pnl if e.realized_pnl is not None else UNSET_DOUBLE
    return [COMMISSION_REPORT, 1, e.exec_id, e.commission, "USD", pnl, UNSET_DOUBLE, ""]


def position(account: str, c: SimContract, quantity: Decimal, avg_cost: Decimal) -> list[object]:
    return [POSITION_DATA, 3, account, *c.fields11(), quantity, avg_cost]


def portfolio(account: str, c: SimContract, quantity: Decimal, mark: Decimal, avg_cost: Decimal,
              realized: Decimal) -> list[object]:
    return [PORTFOLIO_VALUE, 8, c.con_id, c.symbol, c.sec_type, "", 0, "", "", c.primary_exchange, c.currency,
            c.symbol, "NMS", quantity, mark, quantity * mark, avg_cost, (mark - avg_cost) * quantity, realized,
            account]


def contract_details(version: int, req_id: int, c: SimContract) -> list[object]:
    f: list[object] = [CONTRACT_DATA]
    if version < 164:
        f.append(8)
    f += [req_id, c.symbol, c.sec_type, "", 0, "", c.exchange, c.currency, c.symbol, "NMS", "NMS", c.con_id,
          c.min_tick]
    if version < 164:
        f.append("")  # mdSizeMultiplier
    f += ["", "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,LMT,MKT,STP,STPLMT,TRAIL", "SMART,NASDAQ,NYSE,ARCA", 1, 0,
          f"{c.symbol} SIMULATED", c.primary_exchange, "", "Technology", "Computers", "Software", "US/Eastern",
          "", "", "", "", 0,  # trading/liquid hours, evRule, evMultiplier, no sec ids
          1, "", "", "26", "", "COMMON"]  # aggGroup, underSymbol, underSecType, marketRuleIds, realExp, stockType
    if version == 163:
        f.append("0.0001")
    if version >= 164:
        f += ["0.0001", "0.0001", "100"]  # minSize, sizeIncrement, suggestedSizeIncrement
    return f


def error(version: int, req_id: int, code: int, message: str) -> list[object]:
    fields: list[object] = [ERR_MSG, 2, req_id, code, message]
    if version >= 166:
        fields.append("")  # advancedOrderRejectJson
    return fields


def tick_price(req_id: int, tick_type: int, price: Decimal, size: Decimal) -> list[object]:
    return [TICK_PRICE, 6, req_id, tick_type, price, size, 0]


def tick_size(req_id: int, tick_type: int, size: Decimal) -> list[object]:
    return [TICK_SIZE, 6, req_id, tick_type, size]
