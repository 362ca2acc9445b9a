"""An engine on the in-process simulated broker with no database, and what its bus said."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from engine.bus import EventBus, SignalRejected
from engine.clock import SimClock
from engine.domain import KillSwitchChange, Order, OrderStatus, Quote
from engine.engine import Engine
from paper.broker import PaperBroker
from tests.conftest import T0


class Rig:
    def __init__(self, broker_cls: type[PaperBroker] = PaperBroker, **engine_kw: Any) -> None:
        self.clock = SimClock(T0)
        self.broker = broker_cls(self.clock)
        self.bus = EventBus()
        self.rejected: list[SignalRejected] = []
        self.statuses: list[tuple[str, OrderStatus]] = []
        self.bus.signal_rejected += self.rejected.append
        self.changes: list[KillSwitchChange] = []
        self.submitted: list[Order] = []
        self.bus.order_status += lambda o, c: self.statuses.append((o.client_order_id, c.to_status))
        self.bus.killswitch += self.changes.append
        self.bus.order_recorded += lambda o, s, r, n: self.submitted.append(o)
        self.engine = Engine(self.broker, self.bus, clock=self.clock, equity=D(1_000_000), **engine_kw)

    def quote(self, bid: str = "100.00", ask: str = "100.02", size: str = "10000", symbol: str = "AAPL") -> None:
        self.broker.on_quote(Quote(symbol, self.clock(), D(bid), D(ask), D(size), D(size), D(bid)))
