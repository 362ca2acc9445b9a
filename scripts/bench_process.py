"""`tradectl paper` as a whole process on issue 15's workload (every signal an order), this tree beside an
older commit's code in the same run.

Each run is one `python -m engine.cli paper --signals FILE` on a fresh SQLite file (or a fresh PostgreSQL
database beside --db): start-up, migrations, reconciliation, every signal, the last write and the summary,
timed from the exec to the exit. Prints signals/s over the whole wall time and the child's peak RSS, and checks
that every signal made an order (the summary's JSON), so a faster run that trades less cannot pass for a
faster engine.

    .venv/bin/python scripts/bench_process.py [--rev c354ce5] [-n 20000 -n 200000] [--rounds 2] [--db URL]

--rev: an older commit, checked out in a temporary worktree and run from there (PYTHONPATH) with the same
signal file and config; rounds alternate old and new so a noisy machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_paper import make_lines
from benchdb import fresh_database, worktree

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
equity = 1000000000
[kelly]
max_qty = 100
[risk]
max_orders_per_s = 1000000000
max_symbol_orders_per_s = 1000000000
max_daily_loss = 1000000000000
duplicate_window_s = 0.001
[triggers]
rate_breach_burst = 1000000000
daily_loss = 1000000000000
drawdown = 1000000000000
"""


def run_once(code: Path, signals: Path, config: Path, db_url: str | None) -> dict[str, float]:
    """One whole paper session from the code at ``code``: wall seconds, orders, peak RSS of the child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_")}
    env["PYTHONPATH"] = str(code)
    with fresh_database(db_url, "tradectl_bench_process") as url:
        args = [sys.executable, "-m", "engine.cli", "paper", "--signals", str(signals), "--db", url, "--config",
                str(config), "--no-progress", "--json"]
        help_text = subprocess.run([*args[:4], "--help"], env=env, capture_output=True, text=True, cwd=code).stdout
        if "--no-report" in help_text:
            args.append("--no-report")
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            t0 = time.perf_counter()
            child = subprocess.Popen(args, env=env, stdout=out, stderr=err, cwd=code)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS, not the largest of all
            wall = time.perf_counter() - t0
            child.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"{code}: paper exited {child.returncode}: {stderr[-2000:]}")
    summary = json.loads(stdout)
    orders = summary["accepted"]  # a signal accepted is an order sent
    return {"wall": wall, "orders": float(orders), "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, action="append", help="signals per run (repeatable)")
    ap.add_argument("--rev", help="an older commit to run beside this tree")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file; PostgreSQL: a fresh database)")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}"
          f", load {os.getloadavg()[0]:.2f}")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as d:
        trees = [("this tree", ROOT)]
        if args.rev:
            trees.insert(0, (args.rev, stack.enter_context(worktree(args.rev))))
        config = Path(d) / "bench.toml"
        config.write_text(CONFIG)
        for n in args.n or [20_000]:
            signals = Path(d) / f"signals-{n}.jsonl"
            with signals.open("w") as f:
                for line in make_lines(n):
                    f.write(line + "\n")
            for rnd in range(1, args.rounds + 1):
                for name, code in trees:
                    r = run_once(code, signals, config, args.db)
                    rate = n / r["wall"]
                    print(f"N={n:>9,}  round {rnd}  {name:>12}  {rate:>8,.0f} signals/s  wall {r['wall']:6.2f} s"
                          f"  orders {r['orders']:>9,.0f}  peak RSS {r['rss_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
