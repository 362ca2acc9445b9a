"""An engine on the IBKR adapter, talking over real TCP to the simulated gateway, on simulated time.

Everything runs in one event loop: the test moves the gateway's market and waits for round trips
(``settle``), so what the engine sees is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from decimal import Decimal as D
from typing import Any, TypeVar

from broker.ibkr import IbkrBroker
from engine.bus import EventBus, SignalRejected
from engine.clock import SimClock
from engine.config import Settings
from engine.domain import Fill, Order, OrderStatus, Quote, Signal
from engine.engine import Engine
from engine.live import IbkrSession
from paper.gateway import GatewaySim, serve_in_thread
from paper.market import SIM_START
from tests.conftest import T0

T = TypeVar("T")


class IbRig:
    def __init__(self, account: str = "DU0000001", pacing_per_s: int | None = None, **engine_kw: Any) -> None:
        self.clock = SimClock(T0)
        self.gw = GatewaySim(port=0, account=account, step_s=None, clock=self.clock, pacing_limit=None)
        self.broker = IbkrBroker("127.0.0.1", 0, 1, account, self.clock, pacing_per_s=pacing_per_s,
                                 backoff_s=(0.05, 0.2), connect_timeout_s=5)
        self.bus = EventBus()
        self.rejected: list[SignalRejected] = []
        self.statuses: list[tuple[str, OrderStatus, str | None]] = []
        self.fills: list[Fill] = []
        self.bus.signal_rejected += self.rejected.append
        self.bus.order_status += lambda o, c: self.statuses.append((o.client_order_id, c.to_status, c.reason))
        self.bus.fill_booked += lambda f, o, p: self.fills.append(f)
        self.engine = Engine(self.broker, self.bus, clock=self.clock, equity=D(1_000_000), **engine_kw)

    async def start(self) -> IbRig:
        await self.gw.start()
        self.broker.port = self.gw.port
        await self.broker.connect()
        return self

    async def stop(self) -> None:
        await self.broker.close()
        await self.gw.stop()

    async def quote(self, bid: str, ask: str, size: str = "10000", symbol: str = "AAPL",
                    last: str | None = None) -> None:
        """Publish a quote at the gateway (it matches working orders) and wait until the engine has it."""
        if symbol not in self.broker._contracts:
            await self.broker.subscribe(symbol, wait_s=0)
        self.gw.on_quote(Quote(symbol, self.clock(), D(bid), D(ask), D(size), D(size), D(last or bid)))
        await self.settle()

    async def settle(self, rounds: int = 2) -> None:
        for _ in range(rounds):
            await self.broker.sync()
            await asyncio.sleep(0)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)

    def status_of(self, order: Order) -> list[OrderStatus]:
        return [s for coid, s, _ in self.statuses if coid == order.client_order_id]


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


gateway_in_thread = serve_in_thread  # the simulator on its own thread, for code with its own loop


async def lockstep_session(settings: Settings, client_id: int, seed: int = 1,
                           connect: bool = True) -> tuple[GatewaySim, IbkrSession, SimClock]:
    """A simulated gateway stepped like the paper session (one market step per signal, on the signal's time)
    and an IbkrSession on it that books each signal's fills before reading the next."""
    clock = SimClock(SIM_START)
    gw = GatewaySim(port=0, seed=seed, step_s=None, clock=clock, pacing_limit=None)
    await gw.start()

    async def step(signal: Signal) -> None:
        gw.step(signal.symbol, clock())

    session = IbkrSession(settings, host="127.0.0.1", port=gw.port, client_id=client_id, clock=clock,
                          lockstep=True, before_signal=step)
    if connect:
        await session.connect()
    return gw, session, clock


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait on the running loop until ``condition`` holds; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting until: {what}"
        await asyncio.sleep(0.01)
