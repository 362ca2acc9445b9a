"""The log events an operator follows, from the session's bus: order.submitted, order.status, fill.received
(info in an IB session; debug in a simulated one, where a file of 100,000 signals would drown the terminal)
and signal.rejected (debug: rejections are in the database and the summary).

Attached only at a level the configured log writes, so a paper run at info (or a benchmark that configured
no logging) pays nothing per signal.
"""

from __future__ import annotations

import logging
from decimal import Decimal

import structlog

from engine.bus import EventBus, SignalRejected
from engine.domain import Fill, Order, Position, Signal, StatusChange
from engine.logging import writes

log = structlog.get_logger("tradectl.trades")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class TradeLog:
    def __init__(self, trades_level: str = "info") -> None:
        self.trades_level = _LEVELS[trades_level]
        self._trades = getattr(log, trades_level)

    def attach(self, bus: EventBus) -> TradeLog:
        if writes(self.trades_level):
            bus.order_recorded += self.on_order
            bus.order_status += self.on_status
            bus.fill_booked += self.on_fill
        if writes(logging.DEBUG):
            bus.signal_rejected += self.on_rejected
        return self

    def on_order(self, order: Order, signal: Signal | None, raw: str | None, line_no: int | None) -> None:
        intent = order.intent
        self._trades("order.submitted", client_order_id=order.client_order_id, symbol=order.symbol,
                     side=str(intent.side), quantity=str(intent.quantity), order_type=str(intent.order_type),
                     limit_price=_text(intent.limit_price), strategy=intent.strategy, signal_id=intent.signal_id)

    def on_status(self, order: Order, change: StatusChange) -> None:
        self._trades("order.status", client_order_id=order.client_order_id, symbol=order.symbol,
                     from_status=None if change.from_status is None else str(change.from_status),
                     to_status=str(change.to_status), filled=str(order.filled_qty), reason=change.reason)

    def on_fill(self, fill: Fill, order: Order | None, position: Position) -> None:
        self._trades("fill.received", exec_id=fill.exec_id, client_order_id=fill.client_order_id,
                     symbol=fill.symbol, side=str(fill.side), quantity=str(fill.quantity), price=str(fill.price),
                     commission=str(fill.commission), position=str(position.quantity), source=fill.source)

    def on_rejected(self, rejected: SignalRejected) -> None:
        log.debug("signal.rejected", signal_id=rejected.signal_id, code=str(rejected.code), reason=rejected.reason,
                  line_no=rejected.line_no)
