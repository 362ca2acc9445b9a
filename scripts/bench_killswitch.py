"""Benchmark the kill switch against a running paper session: from `tradectl kill` to orders cancelled.

A `tradectl paper --signals -` session runs in a subprocess, fed a steady stream of signals whose limit
orders rest. Each trip: wait for resting orders, run the kill (the same code path as the CLI command,
in process so Python's start-up is not counted), then resume. Prints, p50/p99 over the trips:

- ack: from the kill's commit to the CLI seeing the engine's acknowledgement (when `kill` returns);
- last cancel: from the kill's commit to the last open order's cancel, by the engine's timestamps;
- after return: last cancel minus the moment `kill` returned (<= 0 means every cancel was already done).

Also times a few full `tradectl kill` processes (start-up included).
Usage: .venv/bin/python scripts/bench_killswitch.py [--trips 30] [--db URL ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from benchdb import feed_resting, fresh_database
from sqlalchemy import func, select

from engine.domain import KillState
from engine.operator import ChangeOutcome, change_killswitch
from repositories.db import ensure_schema, make_engine
from repositories.models import OrderEventRow, OrderRow
from repositories.repos import Repositories
from risk.killswitch import GLOBAL

ROOT = Path(__file__).resolve().parent.parent
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def open_orders(repos: Repositories) -> int:
    with repos.db.connect() as conn:
        return int(conn.execute(
            select(func.count()).select_from(OrderRow).where(OrderRow.status.in_(("Submitted", "PendingNew")))
        ).scalar() or 0)


def run(url: str, trips: int, min_open: int, cli_trips: int) -> dict[str, object]:
    ensure_schema(url)
    repos = Repositories(make_engine(url), "DU0000001")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_")}
    env["TRADECTL_LOG_LEVEL"] = "error"
    session = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "paper", "--db", url, "--signals", "-", "--no-progress", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
    )
    assert session.stdin is not None
    stop = threading.Event()
    feeder = threading.Thread(target=feed_resting, args=(session.stdin, stop, "K", 2 * min_open, 0.01), daemon=True)
    ready = time.monotonic() + 30
    while repos.engine_lock.holder() is None:  # feed only once the engine runs: a backlog burst is throttled
        if time.monotonic() > ready:
            raise RuntimeError("the paper session did not start within 30s")
        time.sleep(0.02)
    feeder.start()
    ack_ms: list[float] = []
    cancel_ms: list[float] = []
    after_ms: list[float] = []
    cancelled: list[int] = []
    cli_ms: list[float] = []
    try:
        for trip in range(trips + cli_trips):
            deadline = time.monotonic() + 30
            while open_orders(repos) < min_open:
                if time.monotonic() > deadline or session.poll() is not None:
                    raise RuntimeError(f"no {min_open} resting orders within 30s: {repos.killswitches.states()}")
                time.sleep(0.02)
            committed = datetime.now(UTC)
            if trip < trips:
                reason = f"trip {trip} #"
                t0 = time.perf_counter()
                outcome = change_killswitch(repos, GLOBAL, KillState.HALTED, reason, actor="bench")
                returned = datetime.now(UTC)
                assert isinstance(outcome, ChangeOutcome)  # a halt is always recorded
                assert outcome.ack is not None, outcome.note
                ack_ms.append((time.perf_counter() - t0) * 1000)
            else:
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "engine.cli", "kill", "--db", url, "--reason", f"trip {trip} #", "--json"],
                    capture_output=True, text=True, env=env, cwd=ROOT, check=True,
                )
                cli_ms.append((time.perf_counter() - t0) * 1000)
                returned = datetime.now(UTC)
            # The cancel reason is "kill switch global HALTED: trip N #": find this trip's cancels by it.
            n, ts = _cancels_for(repos, f"trip {trip} #")
            if trip < trips and ts is not None:
                cancel_ms.append((ts - committed).total_seconds() * 1000)
                after_ms.append((ts - returned).total_seconds() * 1000)
                cancelled.append(n)
            change_killswitch(repos, GLOBAL, KillState.ACTIVE, f"resume after trip {trip}", actor="bench")
            time.sleep(1.2)  # let the order-rate window empty: re-placing at once is a real throttle breach
    finally:
        stop.set()
        feeder.join(timeout=5)
        session.communicate(timeout=60)
        repos.db.dispose()
    return {
        "trips": len(ack_ms), "orders_cancelled_per_trip": statistics.median(cancelled) if cancelled else 0,
        "ack_p50_ms": pct(ack_ms, 0.5), "ack_p99_ms": pct(ack_ms, 0.99),
        "last_cancel_p50_ms": pct(cancel_ms, 0.5), "last_cancel_p99_ms": pct(cancel_ms, 0.99),
        "after_return_max_ms": max(after_ms) if after_ms else None,
        "cli_process_ms": [round(x) for x in cli_ms],
    }


def _cancels_for(repos: Repositories, reason_tail: str) -> tuple[int, datetime | None]:
    with repos.db.connect() as conn:
        n, ts = conn.execute(
            select(func.count(), func.max(OrderEventRow.ts)).where(
                OrderEventRow.to_status == "Cancelled",
                OrderEventRow.reason == f"kill switch global HALTED: {reason_tail}",
            )
        ).one()
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return int(n), ts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trips", type=int, default=30)
    ap.add_argument("--cli-trips", type=int, default=3)
    ap.add_argument("--min-open", type=int, default=15)
    ap.add_argument("--db", action="append",
                    help="database URL (repeatable); default: temp SQLite and local PostgreSQL")
    args = ap.parse_args()
    urls = args.db
    tmp = None
    if not urls:
        tmp = tempfile.TemporaryDirectory()
        urls = [f"sqlite:///{tmp.name}/bench.db", PG_DEFAULT]
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    for url in urls:
        name = url.split(":", 1)[0]
        try:
            with fresh_database(url) as db:
                r = run(db, args.trips, args.min_open, args.cli_trips)
        except Exception as exc:  # one database down must not hide the other's figures
            print(f"{name}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})")
            continue
        print(f"{name}: {r['trips']} trips, {r['orders_cancelled_per_trip']} open orders cancelled per trip")
        print(f"  kill -> ack (kill returns)   p50 {r['ack_p50_ms']:7.1f} ms  p99 {r['ack_p99_ms']:7.1f} ms")
        print(f"  kill -> last order cancelled p50 {r['last_cancel_p50_ms']:7.1f} ms"
              f"  p99 {r['last_cancel_p99_ms']:7.1f} ms")
        print(f"  last cancel after kill returned: at most {r['after_return_max_ms']:.1f} ms (<= 0: all done before)")
        print(f"  full `tradectl kill` processes: {r['cli_process_ms']} ms (Python start-up included)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
