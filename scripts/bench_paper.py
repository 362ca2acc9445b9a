"""Benchmark the whole paper path: validation, dedupe, kill switches, Kelly, checks, simulated fills,
positions and batched persistence to SQLite (or --db URL).

Prints signals/s end to end, p50/p99 latency from a signal line in to the order handed to the broker,
and peak RSS. Usage: .venv/bin/python scripts/bench_paper.py [-n 10000 -n 1000000] [--db URL] [--metrics]
[--rss-every N]
(--metrics: with health and metrics wired as the daemon wires them, and one /metrics render at the end)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import resource
import tempfile
import time
from array import array
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from engine.clock import SimClock
from engine.config import load_settings
from engine.domain import Order
from engine.session import PaperSession
from paper.market import SIM_START

SYMBOLS = [f"SYM{i:02d}" for i in range(20)]


def make_lines(n: int) -> Iterator[str]:
    """Issue 15's workload: every signal an order. Signals 100 ms apart round-robin over the symbols, each
    symbol flipping long/short on every one of its signals. Made as read: a list of a million lines would be
    the benchmark's own 200 MB in the peak RSS it reports for the engine."""
    ts = SIM_START
    width = len(SYMBOLS)
    for i in range(n):
        ts += timedelta(milliseconds=100)
        d = ("long", "short")[(i // width) % 2]
        obj: dict[str, object] = {"id": f"b{i}", "ts": ts.isoformat(), "strategy": "bench",
                                  "symbol": SYMBOLS[i % width], "direction": d, "win_prob": 0.55, "payoff": 1.5}
        yield json.dumps(obj, separators=(",", ":"))


class Latencies:
    """Latencies in log buckets 1% wide (1 us to ~17 min), the largest exactly: fixed memory whatever the run's
    length, so the peak RSS the script reports is the engine's (an array of a million was 8 MB of it)."""

    STEP = math.log(1.01)

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * 2100))
        self.n = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        i = int(math.log(seconds * 1e6) / self.STEP) + 1 if seconds > 1e-6 else 0
        self.counts[min(i, len(self.counts) - 1)] += 1
        self.n += 1
        if seconds > self.max:
            self.max = seconds

    def percentile(self, p: float) -> float:
        """The p-th percentile in seconds, to within 1% (a bucket's upper bound)."""
        if not self.n:
            return float("nan")
        rank, seen = min(self.n - 1, int(p * self.n)), 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen > rank:
                return min(self.max, math.exp(i * self.STEP) * 1e-6)
        return self.max


def rss_mb() -> float:
    """This process's resident set now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / (1 << 20)


def run(n: int, db: str | None, metrics: bool = False, rss_every: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        url = db or f"sqlite:///{Path(d) / 'bench.db'}"
        # The synthetic stream sends 50 orders per simulated second and flips every position each second,
        # paying the spread each time: the throttles (40/s, under IB's pacing) and the daily loss limits
        # would rightly stop it within minutes. They are off here so the whole run exercises the path;
        # every other check runs. Their cost per signal is in the rejected signals' path all the same.
        settings = load_settings(
            database_url=url,
            # Every flip pays the spread: at a million signals a small account shrinks until its orders size
            # below one lot (zero_size). A large account with a fixed size cap keeps every signal an order.
            equity=1_000_000_000,
            kelly={"max_qty": 100},
            risk={"max_orders_per_s": None, "max_symbol_orders_per_s": None, "max_daily_loss": None,
                  "duplicate_window_s": 0.001},
            triggers={"rate_breach_burst": None, "daily_loss": None, "drawdown": None},
        )
        session = PaperSession(settings, seed=1)
        lines = make_lines(n)
        latencies = Latencies()
        clock = SimClock(SIM_START)
        session.prepare(clock, SIM_START)
        perf = time.perf_counter
        mark = 0.0

        def order_out(order: Order, signal: object, raw: object, line_no: object) -> None:  # just before broker.submit
            latencies.add(perf() - mark)

        session.bus.order_recorded += order_out
        observed = None
        if metrics:
            from engine.health import observe

            _, observed = observe(session)
        process = session.process_line
        t0 = perf()  # the lines are made inside the timed loop: ~4 us each, the same in every run compared
        most_in_flight = 0
        for i, line in enumerate(lines, 1):
            mark = perf()
            process(line, clock)
            if rss_every:
                writer = session.recorder.writer
                in_flight = writer.units_in_flight if writer is not None else 0
                most_in_flight = max(most_in_flight, in_flight)
                if i % rss_every == 0:
                    print(f"  at {i:>9,}: RSS {rss_mb():6.1f} MB, units in flight to the writer {in_flight:>5} "
                          f"(at most {most_in_flight} since the last line)", flush=True)
                    most_in_flight = 0
        session.recorder.flush()
        elapsed = perf() - t0
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        close = getattr(session.recorder, "close", None)  # an older commit (scripts/bench_beside) has none
        if close is not None:
            close()  # the writer process exits: its peak RSS is then the children's
        render_ms = 0.0
        if observed is not None:
            r0 = perf()
            observed.render()
            render_ms = (perf() - r0) * 1000
        reasons = sorted(session.engine.stats.reject_reasons.items(), key=lambda kv: -kv[1])[:4]
        # Ended as a session ends: without it the session's heap stayed frozen (gc.freeze at wiring) and the
        # next run of this process started ~35 MB higher (main collects between runs).
        session.close()
    return {
        "n": n,
        "signals_per_s": n / elapsed,
        "orders": latencies.n,
        "p50_us": latencies.percentile(0.50) * 1e6,
        "p99_us": latencies.percentile(0.99) * 1e6,
        "max_us": latencies.max * 1e6 if latencies.n else float("nan"),
        "max_rss_mb": peak_rss_mb,
        "writer_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # the writer process
        "rejects": ", ".join(f"{k} {v}" for k, v in reasons),
        "render_ms": render_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, action="append", help="signals per run (repeatable)")
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--metrics", action="store_true", help="wire health and metrics (engine.health.observe)")
    ap.add_argument("--rss-every", type=int, default=0, help="print the RSS every this many signals")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    for n in args.n or [10_000, 100_000]:
        r = run(n, args.db, args.metrics, args.rss_every)
        # A cycle of the run just ended, not yet collected when the next run's session freezes its start-up,
        # would stay for that run's whole life. (A command runs one session a process: the engine does not
        # pay a full collection at every start for this.)
        gc.collect()
        print(f"N={r['n']:>9,}  {r['signals_per_s']:>9,.0f} signals/s  orders {r['orders']:>8,}  "
              f"signal->broker p50 {r['p50_us']:6.1f} us  p99 {r['p99_us']:7.1f} us  max {r['max_us'] / 1000:6.1f} ms  "
              f"maxRSS {r['max_rss_mb']:.0f} MB (writer {r['writer_rss_mb']:.0f} MB)")
        print(f"             top rejects: {r['rejects']}")
        if args.metrics:
            print(f"             /metrics render: {r['render_ms']:.1f} ms")


if __name__ == "__main__":
    main()
