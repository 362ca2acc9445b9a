"""Benchmark a restart: process start -> ready to trade, with a large history in the database.

Fills a database with N fills and M orders (and as many signals), then starts `tradectl run --broker ibkr`
against the simulated gateway (on a thread here) and times, from the moment the process is spawned, the
`session.ready` event: migrated, locked, reconciled against the gateway, kill switches read, dedupe
memory loaded. Python start-up and imports are included.

    .venv/bin/python scripts/bench_restart.py [--fills 1000000] [--orders 100000] [--db URL ...] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert

from paper.gateway import serve_in_thread
from repositories.db import ensure_schema, make_engine
from repositories.models import FillRow, OrderRow, PositionRow, SignalRow

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
CHUNK = 50_000


def fill_database(url: str, n_fills: int, n_orders: int) -> None:
    """Orders, their signals and fills (buys and sells balanced per symbol: every position flat)."""
    ensure_schema(url)
    engine = make_engine(url)
    symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "SPY", "QQQ"]
    per_order = max(1, n_fills // n_orders)
    with engine.begin() as conn:
        for start in range(0, n_orders, CHUNK):
            orders, signals = [], []
            for i in range(start, min(start + CHUNK, n_orders)):
                ts = T0 + timedelta(milliseconds=i)
                sym = symbols[i % len(symbols)]
                side = "BUY" if (i // len(symbols)) % 2 == 0 else "SELL"
                orders.append({"client_order_id": f"tc-h{i}", "signal_id": f"h{i}", "session_id": 1,
                               "strategy": "hist", "symbol": sym, "sec_type": "STK", "currency": "USD",
                               "exchange": "SMART", "side": side, "quantity": Decimal(per_order * 100),
                               "order_type": "MKT", "limit_price": None, "stop_price": None, "tif": "DAY",
                               "status": "Filled", "filled_qty": Decimal(per_order * 100),
                               "avg_fill_price": Decimal("100.01"), "commission": Decimal(1),
                               "broker_order_id": i + 1, "perm_id": i + 1, "reason": None, "created_at": ts,
                               "updated_at": ts})
                signals.append({"signal_id": f"h{i}", "session_id": 1, "ts": ts, "received_at": ts,
                                "strategy": "hist", "symbol": sym, "direction": "long", "status": "accepted",
                                "reason_code": None, "reason": None, "client_order_id": f"tc-h{i}", "payload": None})
            conn.execute(insert(OrderRow), orders)
            conn.execute(insert(SignalRow), signals)
        for start in range(0, n_fills, CHUNK):
            fills = []
            for j in range(start, min(start + CHUNK, n_fills)):
                i = min(j // per_order, n_orders - 1)
                fills.append({"exec_id": f"0000h001.{j:08x}.01.01", "client_order_id": f"tc-h{i}", "session_id": 1,
                              "symbol": symbols[i % len(symbols)],
                              "side": "BUY" if (i // len(symbols)) % 2 == 0 else "SELL", "quantity": Decimal(100),
                              "price": Decimal("100.01"), "commission": Decimal("0.5"),
                              "ts": T0 + timedelta(microseconds=j), "source": "broker"})
            conn.execute(insert(FillRow), fills)
        conn.execute(insert(PositionRow), [{"account": "DU0000001", "symbol": s, "quantity": Decimal(0),
                                             "avg_cost": Decimal(0), "realized_pnl": Decimal(0),
                                             "commissions": Decimal(0), "updated_at": T0} for s in symbols])
    engine.dispose()


def scratch_database(url: str) -> str:
    """PostgreSQL: a throwaway database on the given server, never the one named (SQLite: the file as given)."""
    if not url.startswith("postgresql"):
        return url
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_restart_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def time_to_ready(url: str, port: int, signals: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_")}
    env.update(TRADECTL_LOG_FORMAT="json", TRADECTL_IBKR__DRAIN_S="0")
    spawned = time.time()
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--broker", "ibkr", "--port", str(port),
                           "--client-id", "11", "--db", url, "--signals", str(signals), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    for line in proc.stderr.splitlines():
        if '"session.ready"' in line:
            ts = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
            return ts.timestamp() - spawned
    raise SystemExit(f"no session.ready (exit {proc.returncode}): {proc.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--db", action="append", help="database URL (default: a SQLite file); repeatable")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_restart_"))
    urls = args.db or [f"sqlite:///{tmp / 'restart.db'}"]
    signals = tmp / "one.jsonl"
    signals.write_text('{"id": "after-restart", "symbol": "AAPL", "direction": "flat"}\n')
    with serve_in_thread(step_s=0.05) as gw:
        for given in urls:
            url = scratch_database(given)
            t0 = time.perf_counter()
            fill_database(url, args.fills, args.orders)
            built = time.perf_counter() - t0
            times = [time_to_ready(url, gw.port, signals) for _ in range(args.runs)]
            print(f"{url.split('://')[0]:<20} {args.fills:,} fills, {args.orders:,} orders (built in {built:.0f}s): "
                  f"process start -> ready to trade " + ", ".join(f"{t:.2f}s" for t in times))
            if url != given:
                drop_database(given, url)


if __name__ == "__main__":
    main()
