"""Benchmark the IBKR path over TCP against the simulated gateway (pacing off on both sides).

Prints, for market orders that fill at once:
- raw socket: placeOrder frame -> orderStatus Filled frame, a hand-rolled client (p50/p99, one at a time);
- ib_async: ``IB.placeOrder`` -> ``Trade`` filled (p50/p99 one at a time, and orders/s with many in flight);
- the engine on ``IbkrBroker``: signal in -> fill booked on the bus (p50/p99), and what it adds over raw.

    .venv/bin/python scripts/bench_gateway.py [--orders 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import struct
import time
from decimal import Decimal as D
from typing import Any

from ib_async import IB, Contract, MarketOrder, Stock

from broker.ibkr import IbkrBroker
from engine.bus import EventBus
from engine.clock import SimClock
from engine.domain import Direction, Quote, Signal
from engine.engine import Engine
from engine.logging import configure_logging
from paper.gateway import GatewaySim
from paper.market import SIM_START
from paper.wire import frame, read_frame
from risk.checks import Limits, RiskLimits
from risk.kelly import KellyParams


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e6


def line(name: str, samples: list[float]) -> None:
    print(f"{name:<44} p50 {pct(samples, 50):8.0f} us   p99 {pct(samples, 99):8.0f} us   (n={len(samples)})")


def deep_quote(gw: GatewaySim) -> None:
    gw.on_quote(Quote("AAPL", SIM_START, D("100.00"), D("100.02"), D(10**9), D(10**9), D("100.01")))


async def captured_place_order(port: int) -> list[str]:
    """The fields ib_async sends for a 100-share market buy (so the raw client sends the same bytes)."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=90, timeout=5)
    [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    assert isinstance(contract, Contract)
    sent: list[str] = []
    client: Any = ib.client  # its sendMsg is swapped for a recorder while one order is placed
    original = client.sendMsg
    client.sendMsg = sent.append
    ib.placeOrder(contract, MarketOrder("BUY", 100, account="DU0000001"))
    client.sendMsg = original
    ib.disconnect()
    return sent[0].split("\0")[:-1]


async def raw(port: int, fields: list[str], n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"API\0" + struct.pack(">I", 9) + b"v157..178")
    await read_frame(reader)
    writer.write(frame([71, 2, 91, ""]))
    next_id = 0
    while not next_id:
        f = await read_frame(reader)
        if f[0] == "9":
            next_id = int(f[2])
    samples = []
    for i in range(n):
        oid = next_id + i
        fields[1] = str(oid)
        t0 = time.perf_counter()
        writer.write(frame(fields))
        while True:
            f = await read_frame(reader)
            if f[0] == "3" and f[1] == str(oid) and f[2] == "Filled":
                break
        samples.append(time.perf_counter() - t0)
    writer.close()
    return samples


async def via_ib_async(port: int, n: int) -> tuple[list[float], float]:
    ib = IB()
    ib.client.MaxRequests = 0
    await ib.connectAsync("127.0.0.1", port, clientId=92, timeout=5)
    [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    assert isinstance(contract, Contract)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        trade = ib.placeOrder(contract, MarketOrder("BUY", 100, account="DU0000001"))
        while not trade.isDone():
            await asyncio.sleep(0)
        samples.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    trades = [ib.placeOrder(contract, MarketOrder("BUY", 100, account="DU0000001")) for _ in range(n)]
    while not all(t.isDone() for t in trades[-10:]):
        await asyncio.sleep(0.001)
    rate = n / (time.perf_counter() - t0)
    ib.disconnect()
    return samples, rate


async def via_engine(port: int, n: int) -> list[float]:
    clock = SimClock(SIM_START)
    broker = IbkrBroker("127.0.0.1", port, 93, "DU0000001", clock, pacing_per_s=None)
    bus = EventBus()
    booked: list[float] = []
    bus.fill_booked += lambda f, o, p: booked.append(time.perf_counter())
    rejected: list[str] = []
    bus.signal_rejected += lambda r: rejected.append(f"{r.code}: {r.reason}")
    off = Limits(max_orders_per_s=None, max_symbol_orders_per_s=None, duplicate_window_s=None,
                 max_position_qty=None, max_position_notional=None, max_gross_exposure=None,
                 max_net_exposure=None, max_leverage=None, max_quote_age_s=None)
    engine = Engine(broker, bus, clock=clock, equity=D(1_000_000), limits=RiskLimits(off),
                    kelly=KellyParams(max_qty=D(100)))
    await broker.connect()
    await broker.subscribe("AAPL")
    samples = []
    for i in range(n):
        direction = Direction.LONG if i % 2 == 0 else Direction.SHORT
        signal = Signal(f"b{i}", clock(), "bench", "AAPL", direction, D("0.55"), D("1.2"))
        before = len(booked)
        t0 = time.perf_counter()
        if engine.on_signal(signal) is None:
            raise SystemExit(f"bench signal {i} was rejected: {rejected[-1]}")
        while len(booked) == before:
            await asyncio.sleep(0)
        samples.append(booked[-1] - t0)
    await broker.close()
    return samples


async def main(n: int) -> None:
    configure_logging("console", "error")
    gw = GatewaySim(port=0, step_s=None, pacing_limit=None)
    await gw.start()
    deep_quote(gw)
    fields = await captured_place_order(gw.port)
    raw_samples = await raw(gw.port, fields, n)
    ib_samples, rate = await via_ib_async(gw.port, n)
    engine_samples = await via_engine(gw.port, n)
    await gw.stop()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, orders per measure: {n}")
    line("raw socket placeOrder -> Filled", raw_samples)
    line("ib_async placeOrder -> Trade filled", ib_samples)
    line("engine signal -> fill booked (IbkrBroker)", engine_samples)
    print(f"{'ib_async orders/s, all in flight':<44} {rate:8.0f} orders/s round trip")
    print(f"{'adapter + engine added over raw':<44} p50 {pct(engine_samples, 50) - pct(raw_samples, 50):8.0f} us"
          f"   p99 {pct(engine_samples, 99) - pct(raw_samples, 99):8.0f} us")
    print(f"median of raw: {statistics.median(raw_samples) * 1e6:.0f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    asyncio.run(main(parser.parse_args().orders))
