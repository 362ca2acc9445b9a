"""Benchmark the daemon's intake: `tradectl run --inbox --http` as its own process against the simulated
gateway (in a third process, pacing off on both sides), timed from the producer to the order's arrival at
the gateway (CLOCK_MONOTONIC, shared by the processes of one host).

Prints p50/p99 of: POST /signals -> order at the gateway; an inbox INSERT (SQL) -> order at the gateway
(one signal at a time; a signal the engine turns down, e.g. ``at_target`` while the fill of the symbol's
previous order is still on its way, is counted apart, not timed). Then the sustained rate of POST
/signals answered, one signal a request, on 1 and on ``--clients`` kept-alive connections, with the rate
at which the engine turned them into orders meanwhile.

    .venv/bin/python scripts/bench_intake.py [--n 300] [--db URL] [--rate-s 5] [--clients 16] [--gap-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from benchdb import fresh_database
from sqlalchemy import select

from paper.gateway import serve_in_thread
from repositories.db import make_engine, upgrade
from repositories.inbox import SignalInbox
from repositories.models import SignalRow

SECRET = "bench-secret-0123456789"
ACCOUNT = "DU0000001"
CONFIG = """
[risk]
max_orders_per_s = 100000
max_symbol_orders_per_s = 100000
duplicate_window_s = 0.000001
max_order_qty = 1000000
max_order_notional = 1000000000
max_position_notional = 1000000000
max_gross_exposure = 1000000000
max_net_exposure = 1000000000
max_leverage = 1000
max_daily_loss = 1000000000
[triggers]
rate_breach_burst = 1000000
daily_loss = 1000000000
drawdown = 1000000000
[ibkr]
pacing_per_s = 1000000
drain_s = 0.5
"""
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "SPY", "QQQ", "TSLA", "IBM")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signal(sid: str, i: int) -> str:
    return json.dumps({"id": sid, "ts": datetime.now(UTC).isoformat(), "strategy": "bench",
                       "symbol": SYMBOLS[i % len(SYMBOLS)], "direction": ("long", "short")[(i // 8) % 2],
                       "win_prob": 0.55, "payoff": 1.5}, separators=(",", ":"))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def run_gateway(conn: Connection) -> None:
    """The simulated gateway in a process of its own (in the bench's, its thread would compete with the
    client for the GIL): sends its port, then each order's (orderRef, arrival perf_counter)."""
    with serve_in_thread(step_s=0.05, pacing_limit=None) as gw:
        gw.on_order = lambda ref: conn.send((ref, time.perf_counter()))
        conn.send(gw.port)
        with contextlib.suppress(EOFError):
            conn.recv()  # until the bench closes its end


class Arrivals:
    """Orders seen at the gateway, by orderRef, with their arrival time."""

    def __init__(self, conn: Connection, db: str) -> None:
        self.at: dict[str, float] = {}
        self.seen = threading.Condition()
        self.conn = conn
        self.db = make_engine(db)
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        while True:
            try:
                ref, at = self.conn.recv()
            except (EOFError, OSError):
                return
            with self.seen:
                self.at[ref] = at
                self.seen.notify_all()

    def _status(self, sid: str) -> str | None:
        with self.db.connect() as c:
            return c.execute(select(SignalRow.status).where(SignalRow.signal_id == sid)).scalar()

    def wait(self, sid: str, timeout_s: float = 10.0) -> float | None:
        """When the order of signal ``sid`` reached the gateway; None when the engine turned the signal down."""
        ref, deadline = f"tc-{sid}", time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.seen:
                if self.seen.wait_for(lambda: ref in self.at, timeout=0.05):
                    return self.at[ref]
            if self._status(sid) == "rejected":
                return None
        raise TimeoutError(f"signal {sid}: no order and no rejection in {timeout_s} s")


async def sustained(port: int, clients: int, seconds: float, prefix: str) -> tuple[int, float, list[float]]:
    """POST one signal a request on ``clients`` kept-alive connections for ``seconds``: (answered, elapsed,
    answer latencies). A raw asyncio client: one write a request, TCP_NODELAY, so the figure is the server's."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    end = time.perf_counter() + seconds

    async def client() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = 0
        while time.perf_counter() < end:
            i = next(counter)
            body = signal(f"{prefix}{i}", i).encode()
            t0 = time.perf_counter()
            writer.write(b"POST /signals HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " + SECRET.encode()
                         + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            if status != 202:
                raise RuntimeError(f"POST /signals answered {status}")
            latencies.append(time.perf_counter() - t0)
            done += 1
        writer.close()
        return done

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(client() for _ in range(clients)))
    return sum(counts), time.perf_counter() - t0, latencies


def handled_of(db: str, prefix: str) -> tuple[int, int, Counter[str]]:
    """(signals with this id prefix the engine has recorded, how many became orders, the others' reasons);
    the prefix "": every signal."""
    with make_engine(db).connect() as c:
        rows = c.execute(select(SignalRow.status, SignalRow.reason_code).where(
            SignalRow.signal_id.like(f"{prefix}%"))).all()
    return len(rows), sum(r.status == "accepted" for r in rows), Counter(r.reason_code for r in rows if r.reason_code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300, help="signals per latency measure (one at a time)")
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file; PostgreSQL: a fresh database beside it)")
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="pause after each timed order's arrival: 0 sends the next signal while the engine still "
                         "books the last one's fill; ~30 times an engine that is idle when the signal comes")
    ap.add_argument("--rate-s", type=float, default=5.0, help="seconds of each sustained measure")
    ap.add_argument("--clients", type=int, default=16, help="kept-alive connections of the concurrent measure")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as d, fresh_database(args.db, "tradectl_bench_intake") as db:
        upgrade(db)
        config = Path(d) / "tradectl.toml"
        config.write_text(CONFIG)
        gw_end, child_end = multiprocessing.Pipe()
        gateway = multiprocessing.get_context("spawn").Process(target=run_gateway, args=(child_end,), daemon=True)
        gateway.start()
        gw_port = gw_end.recv()
        arrivals = Arrivals(gw_end, db)
        port = free_port()
        log_path = Path(d) / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_")}
        env.update(TRADECTL_HTTP__PORT=str(port), TRADECTL_HTTP__SECRET=SECRET, TRADECTL_LOG_LEVEL="error")
        prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        with log_path.open("w") as errlog:
            proc = subprocess.Popen([sys.executable, *prof, "-m", "engine.cli", "run", "--broker", "ibkr", "--port",
                                     str(gw_port), "--inbox", "--http", "--db", db, "--config", str(config)],
                                    env=env, stdout=subprocess.DEVNULL, stderr=errlog)
            try:
                import http.client

                def post(body: str) -> None:
                    conn.request("POST", "/signals", body=body.encode(), headers={"Authorization": f"Bearer {SECRET}"})
                    r = conn.getresponse()
                    r.read()
                    if r.status != 202:
                        raise RuntimeError(f"POST /signals answered {r.status}")

                for _ in range(300):
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                        conn.request("GET", "/readyz")
                        if conn.getresponse().status == 200:
                            break
                    except OSError:
                        pass
                    time.sleep(0.1)
                time.sleep(0.5)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                for i in range(len(SYMBOLS)):  # warm-up, not timed: each symbol's market data subscribed
                    post(signal(f"warm{i}", i))
                    arrivals.wait(f"warm{i}")
                http_lat: list[float] = []
                answer_lat: list[float] = []  # POST -> its answer: the intake's share (parse, inbox commit)
                turned_down = 0
                for i in range(args.n):
                    t0 = time.perf_counter()
                    post(signal(f"h{i}", i))
                    answered = time.perf_counter()
                    at = arrivals.wait(f"h{i}")
                    time.sleep(args.gap_ms / 1000)
                    if at is None:
                        turned_down += 1
                    else:
                        http_lat.append(at - t0)
                        answer_lat.append(answered - t0)
                inbox = SignalInbox(make_engine(db), ACCOUNT)
                inbox_lat: list[float] = []
                for i in range(args.n):
                    t0 = time.perf_counter()
                    inbox.add([signal(f"q{i}", i)], "sql")
                    at = arrivals.wait(f"q{i}")
                    time.sleep(args.gap_ms / 1000)
                    if at is None:
                        turned_down += 1
                    else:
                        inbox_lat.append(at - t0)
                conn.close()
                rates: list[tuple[int, float, float, float, list[float]]] = []
                for clients, prefix in ((1, "r"), (args.clients, "c")):
                    # Every signal the engine records meanwhile, this phase's or a backlog of the one before.
                    handled0, ordered0, _ = handled_of(db, "")
                    answered, elapsed, lat = asyncio.run(sustained(port, clients, args.rate_s, prefix))
                    handled1, ordered1, _ = handled_of(db, "")  # by the engine when the last answer came
                    mine, _, reasons = handled_of(db, prefix)
                    print(f"  {clients} connection(s): turned down {dict(reasons.most_common(3))}; "
                          f"{answered - mine:,} of this phase's signals still waiting at its end")
                    rates.append((clients, answered / elapsed, (handled1 - handled0) / elapsed,
                                  (ordered1 - ordered0) / elapsed, lat))
            finally:
                proc.terminate()
                proc.wait(60)
                gw_end.close()
                gateway.join(10)
        errors = [line for line in log_path.read_text().splitlines() if line.strip()]
        kind = db.split(":")[0]
        print(f"daemon stderr at level error: {len(errors)} lines" + "".join(f"\n  {x[:160]}" for x in errors[:3]))
        print(f"POST /signals -> order at gateway  p50 {pct(http_lat, .5):7.2f} ms  p99 {pct(http_lat, .99):7.2f} ms"
              f"  (n={len(http_lat)}, {kind}; answered p50 {pct(answer_lat, .5):.2f} ms)")
        print(f"inbox INSERT  -> order at gateway  p50 {pct(inbox_lat, .5):7.2f} ms  p99 {pct(inbox_lat, .99):7.2f}"
              f" ms  (n={len(inbox_lat)}; {turned_down} of {2 * args.n} signals turned down, not timed)")
        for conns, rate, handled_rate, order_rate, lat in rates:
            print(f"POST /signals sustained, {conns:2d} kept-alive connection(s), one signal a request: {rate:7,.0f}"
                  f" signals/s answered (p50 {pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms); meanwhile the "
                  f"engine handled {handled_rate:,.0f}/s, {order_rate:,.0f} orders/s")


if __name__ == "__main__":
    main()
