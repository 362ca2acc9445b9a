"""Benchmark the operator's commands as whole processes, beside `python -c pass` in the same run.

Each round runs every command once, in turn, so a busy moment of the machine falls on all of them alike;
prints median and p90 over the rounds (DESIGN.md's budgets: kill typed -> acknowledged <= 250 ms, status
and killswitch list <= 200 ms, --help and --version <= 100 ms). A paper session (`tradectl paper --signals
-`, fed a few resting orders a second) runs meanwhile on the same database, so `kill` waits for a real
engine's acknowledgement and `resume` after it for the next; each kill's output is checked for it.

With --importtime, also prints what each command imports, largest first (`python -X importtime`).
Usage: .venv/bin/python scripts/bench_cli.py [--rounds 10] [--db URL] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchdb import feed_resting, fresh_database

from repositories.db import ensure_schema, make_engine
from repositories.repos import Repositories

ROOT = Path(__file__).resolve().parent.parent
TRADECTL = str(Path(sys.executable).parent / "tradectl")  # the console script an operator types
ACCOUNT = "DU0000001"


def commands(url: str) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tradectl --help": [TRADECTL, "--help"],
        "tradectl --version": [TRADECTL, "--version"],
        "tradectl status": [TRADECTL, "status", "--db", url],
        "tradectl killswitch list": [TRADECTL, "killswitch", "list", "--db", url],
        "tradectl kill (acknowledged)": [TRADECTL, "kill", "--db", url, "--reason", "bench"],
        "tradectl resume (acknowledged)": [TRADECTL, "resume", "--db", url, "--reason", "bench"],
    }


@contextmanager
def running_engine(url: str, env: dict[str, str]) -> Iterator[None]:
    session = subprocess.Popen([TRADECTL, "paper", "--db", url, "--signals", "-", "--no-progress", "--json"],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               text=True, env=env, cwd=ROOT)
    assert session.stdin is not None
    repos = Repositories(make_engine(url), ACCOUNT)  # SQLAlchemy's: the script also runs on older code
    deadline = time.monotonic() + 30
    while repos.engine_lock.holder() is None:
        if time.monotonic() > deadline or session.poll() is not None:
            raise RuntimeError("the paper session did not start within 30s")
        time.sleep(0.05)
    repos.dispose()
    stop = threading.Event()
    feeder = threading.Thread(target=feed_resting, args=(session.stdin, stop, "B", 20, 0.2), daemon=True)
    feeder.start()
    try:
        yield
    finally:
        stop.set()
        feeder.join(timeout=5)
        session.stdin.close()
        try:
            session.wait(timeout=60)
        except subprocess.TimeoutExpired:
            session.terminate()
            session.wait(timeout=10)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    return (time.perf_counter() - t0) * 1000, proc


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def bench(url: str, rounds: int, env: dict[str, str]) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Times per command, and each command that failed (dropped from later rounds) with why."""
    cmds = commands(url)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    failed: dict[str, str] = {}
    with running_engine(url, env):
        for _ in range(rounds):
            for name, argv in cmds.items():
                if name in failed:
                    continue
                ms, proc = timed(argv, env)
                if proc.returncode != 0:
                    failed[name] = f"exit {proc.returncode}: {(proc.stderr.strip() or proc.stdout.strip())[-200:]}"
                elif "acknowledged" in name and "acknowledged by" not in proc.stdout:
                    failed[name] = f"not acknowledged: {proc.stdout.strip()[-200:]}"
                else:
                    times[name].append(ms)
    return times, failed


_IMPORT = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime(argv: list[str], env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """The modules a command imports at the top level, by cumulative ms, largest first."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    roots = [(m.group(4), int(m.group(2)) / 1000) for m in map(_IMPORT.match, proc.stderr.splitlines())
             if m and len(m.group(3)) == 1]
    return sorted(roots, key=lambda r: -r[1])[:top]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--db", help="database URL (default: a temp SQLite file); PostgreSQL: a throwaway database "
                                 "beside the one named")
    ap.add_argument("--importtime", action="store_true", help="also print what each command imports")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_") and k != "DATABASE_URL"}
    env["TRADECTL_LOG_LEVEL"] = "warning"
    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, load {load[0]:.2f}, "
          f"Python {platform.python_version()}")
    with fresh_database(args.db, "tradectl_bench_cli") as url:
        ensure_schema(url)
        print(f"database: {url.split(':', 1)[0]}, {args.rounds} rounds, a paper session running on it")
        times, failed = bench(url, args.rounds, env)
        print(f"{'command':34} {'median':>9} {'p90':>9} {'min':>9} {'max':>9}")
        for name, values in times.items():
            if name in failed:
                print(f"{name:34} FAILED ({failed[name]})")
                continue
            print(f"{name:34} {statistics.median(values):7.0f}ms {p90(values):7.0f}ms {min(values):7.0f}ms "
                  f"{max(values):7.0f}ms")
        if args.importtime:
            print("\nimports at the top level, cumulative ms (python -X importtime, one run each):")
            for name, argv in commands(url).items():
                if name.startswith("python") or "resume" in name:
                    continue  # kill runs here with the engine stopped: the imports are the same
                roots = importtime(argv, env)  # the console script run by `python -X importtime`
                print(f"  {name}: " + ", ".join(f"{mod} {ms:.0f}" for mod, ms in roots))


if __name__ == "__main__":
    main()
