"""Benchmark the daemon's intake: `tradectl run --inbox --http` as its own process against the simulated
gateway (on a thread here, pacing off on both sides), timed from the producer to the order's arrival at
the gateway.

Prints p50/p99 of: POST /signals -> order at the gateway; an inbox INSERT (SQL) -> order at the gateway;
and the sustained rate of POST /signals answered (keep-alive, one signal a request).

    .venv/bin/python scripts/bench_intake.py [--n 300] [--db URL] [--rate-s 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from paper.gateway import serve_in_thread
from repositories.db import make_engine, upgrade
from repositories.inbox import SignalInbox

SECRET = "bench-secret-0123456789"
CONFIG = """
[risk]
max_orders_per_s = 100000
max_symbol_orders_per_s = 100000
duplicate_window_s = 0.000001
max_order_qty = 1000000
[triggers]
rate_breach_burst = 1000000
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
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300, help="signals per latency measure (one at a time)")
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--rate-s", type=float, default=5.0, help="seconds of sustained POSTs")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as d:
        db = args.db or f"sqlite:///{Path(d) / 'intake.db'}"
        upgrade(db)
        config = Path(d) / "tradectl.toml"
        config.write_text(CONFIG)
        arrived: dict[str, float] = {}
        seen = threading.Condition()

        def on_order(ref: str) -> None:
            with seen:
                arrived[ref] = time.perf_counter()
                seen.notify_all()

        def wait_arrival(ref: str) -> float:
            with seen:
                seen.wait_for(lambda: ref in arrived, timeout=10)
            return arrived.get(ref, float("nan"))

        port = free_port()
        with serve_in_thread(step_s=0.05, pacing_limit=None) as gw:
            gw.on_order = on_order
            env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_")}
            env.update(TRADECTL_HTTP__PORT=str(port), TRADECTL_HTTP__SECRET=SECRET, TRADECTL_LOG_LEVEL="error")
            proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--broker", "ibkr", "--port",
                                     str(gw.port), "--inbox", "--http", "--db", db, "--config", str(config)],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                url = f"http://127.0.0.1:{port}"
                auth = {"Authorization": f"Bearer {SECRET}"}
                # TCP_NODELAY, as a production client should: without it the body waits for the ACK of the
                # headers (Nagle) while the server delays that ACK (40 ms) - a client-side artefact.
                nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
                with httpx.Client(headers=auth, timeout=10, transport=nodelay) as client:
                    for _ in range(300):
                        try:
                            if client.get(f"{url}/healthz").status_code == 200:
                                break
                        except httpx.HTTPError:
                            time.sleep(0.1)
                    time.sleep(0.5)
                    http_lat = []
                    for i in range(args.n):
                        t0 = time.perf_counter()
                        client.post(f"{url}/signals", content=signal(f"h{i}", i)).raise_for_status()
                        http_lat.append(wait_arrival(f"tc-h{i}") - t0)
                    inbox = SignalInbox(make_engine(db), "DU0000001")
                    inbox_lat = []
                    for i in range(args.n):
                        t0 = time.perf_counter()
                        inbox.add([signal(f"q{i}", i)], "sql")
                        inbox_lat.append(wait_arrival(f"tc-q{i}") - t0)
                    # http.client sends headers and body in one write (httpx's two writes meet the server's
                    # delayed ACK: ~40 ms a request when they follow each other at once).
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    n, t0 = 0, time.perf_counter()
                    answer_lat = []
                    while time.perf_counter() - t0 < args.rate_s:
                        t1 = time.perf_counter()
                        conn.request("POST", "/signals", body=signal(f"r{n}", n).encode(), headers=auth)
                        response = conn.getresponse()
                        response.read()
                        if response.status != 202:
                            raise RuntimeError(f"POST /signals answered {response.status}")
                        answer_lat.append(time.perf_counter() - t1)
                        n += 1
                    rate = n / (time.perf_counter() - t0)
                    conn.close()
            finally:
                proc.terminate()
                proc.wait(30)
        print(f"POST /signals -> order at gateway  p50 {pct(http_lat, .5):7.2f} ms  p99 {pct(http_lat, .99):7.2f} ms"
              f"  (n={len(http_lat)}, {db.split(':')[0]})")
        print(f"inbox INSERT  -> order at gateway  p50 {pct(inbox_lat, .5):7.2f} ms  p99 {pct(inbox_lat, .99):7.2f}"
              f" ms  (n={len(inbox_lat)})")
        print(f"POST /signals sustained, keep-alive, one signal a request: {rate:,.0f} signals/s  (answer p50 "
              f"{pct(answer_lat, .5):.2f} ms, p99 {pct(answer_lat, .99):.2f} ms)")


if __name__ == "__main__":
    main()
