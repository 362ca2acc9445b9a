"""Where a short `tradectl paper` process spends its wall time, phase by phase, on a fresh database and on an
existing one (issue 15: at 20,000 signals the start-up is a large share of a whole run).

Each run is one `python -m engine.cli paper --signals FILE --db URL --no-progress --no-report --json` child,
started through a small driver that marks the time when the interpreter is up, when engine.cli is imported,
and on entry to and return from the start-up steps (the functions are wrapped as their modules load, so the
command imports what it imports by itself). The phases are the gaps between consecutive marks:

    python        exec to the first line of the driver (the interpreter and site)
    cli import    engine.cli and typer
    settings      engine.config (pydantic-settings) and the settings themselves
    logging       structlog and its configuration
    session init  the session's modules (engine, repositories, SQLAlchemy, ...) and its database engine
    schema        ensure_schema: the migrations on a fresh database, a revision check on an existing one
    account+lock  the account binding and the engine lock
    session row   the session's row
    wire          bus, recorder, engine, kill switches, the trading day
    reconcile     reconciliation at start
    trading       the signals themselves
    summary       the last flush, the summary and the session row's end
    print         the summary on stdout
    exit          from the command's return to the process's end (atexit, finalisation)

Each round makes a fresh database, runs a session on it (fresh), then a second session of as many new signals
on it (existing). Prints the median of each phase over the rounds (ms), and the whole wall time. --rev runs
an older commit's code beside this tree (alternating, in a temporary worktree), with this script's driver.
--imports prints the largest imports of one run (`python -X importtime`).

    .venv/bin/python scripts/bench_startup.py [--rounds 7] [--rev c71a684] [--db URL] [-n 10] [--imports]

Bytecode: PYTHONDONTWRITEBYTECODE is dropped for the children and one warm-up run per tree writes the
project's .pyc files, as any installed tradectl has them after its first run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench_paper import make_lines  # the workload of the other paper benchmarks
from bench_process import CONFIG  # every signal an order: throttles and loss triggers lifted
from benchdb import fresh_database, worktree

ROOT = Path(__file__).resolve().parent.parent

# The child's driver: marks (name, time.time()) appended to a list, written as JSON to $BENCH_MARKS at the end.
# Wrapped functions mark "<name>>" on entry and "<name><" on return; a wrapper is applied when its module has
# been executed (a meta path finder), so nothing is imported earlier than the command imports it.
DRIVER = r"""
import time
_T0 = time.time()
import json, os, sys
MARKS = [("python", _T0)]
def mark(name):
    MARKS.append((name, time.time()))

TARGETS = {
    "engine.cli": [("", "_settings", "settings"), ("", "_setup_logging", "logging"),
                   ("", "_report_session", "print")],
    "engine.session": [("", "ensure_schema", "schema"), ("Session", "__init__", "session init"),
                       ("Session", "_wire", "wire"), ("Session", "reconcile_at_start", "reconcile"),
                       ("Session", "_finish", "summary")],
    "repositories.accounts": [("AccountRepository", "claim", "account")],
    "repositories.engine_lock": [("EngineLockRepository", "claim", "lock")],
    "repositories.sessions": [("SessionRepository", "start", "session row")],
}

def wrap(fn, name):
    def wrapper(*args, **kwargs):
        mark(name + ">")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(name + "<")
    wrapper.__wrapped__ = fn
    return wrapper

def patch(module):
    for owner_name, attr, name in TARGETS.get(module.__name__, []):
        owner = getattr(module, owner_name) if owner_name else module
        fn = owner.__dict__.get(attr) if owner_name else getattr(owner, attr, None)
        if fn is not None:
            setattr(owner, attr, wrap(fn, name))

sys.path.append(os.environ["WRAP_ON_IMPORT_DIR"])  # this tree's scripts/, whichever tree runs
from wrap_on_import import install
install(TARGETS, patch)
code = 0
try:
    import engine.cli
    mark("cli import")
    sys.argv = ["tradectl", *sys.argv[1:]]
    engine.cli.main()
except SystemExit as exit:
    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
finally:
    mark("returned")
    with open(os.environ["BENCH_MARKS"], "w") as f:
        json.dump(MARKS, f)
sys.exit(code)
"""

# Phases: (label, the mark that ends it). A phase runs from the previous phase's end mark to its own.
PHASES = [
    ("python", "python"),
    ("cli import", "cli import"),
    ("settings", "settings<"),
    ("logging", "logging<"),
    ("session init", "session init<"),
    ("schema", "schema<"),
    ("account+lock", "lock<"),
    ("session row", "session row<"),
    ("wire", "reconcile>"),
    ("reconcile", "reconcile<"),
    ("trading", "summary>"),
    ("summary", "summary<"),
    ("print", "print<"),
    ("exit", "end"),
]


def child_env(code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TRADECTL_") and k not in ("PYTHONDONTWRITEBYTECODE", "DATABASE_URL")}
    env["PYTHONPATH"] = str(code)
    env["WRAP_ON_IMPORT_DIR"] = str(ROOT / "scripts")  # the driver's import hook (scripts/wrap_on_import.py)
    return env


def run_once(code: Path, signals: Path, config: Path, url: str, work: Path) -> dict[str, float]:
    """One paper session through the driver: each phase's wall ms, and the whole."""
    marks_path = work / "marks.json"
    env = child_env(code) | {"BENCH_MARKS": str(marks_path)}
    args = [sys.executable, "-c", DRIVER, "paper", "--signals", str(signals), "--db", url, "--config", str(config),
            "--no-progress", "--no-report", "--json"]
    t0 = time.time()
    done = subprocess.run(args, env=env, cwd=work, capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{code}: paper exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    if summary["signals"] != summary["accepted"]:
        raise RuntimeError(f"{code}: not every signal was accepted: {summary['reject_reasons']}")
    marks: dict[str, float] = {"start": t0, "end": end}
    for name, t in json.loads(marks_path.read_text()):
        marks.setdefault(name, t)  # the first time a mark is reached
    marks["end"] = end
    out: dict[str, float] = {}
    prev = t0
    for label, name in PHASES:
        t = marks.get(name, prev)  # a step an older tree lacks is folded into the next phase
        out[label] = (t - prev) * 1000
        prev = t
    out["whole"] = (end - t0) * 1000
    return out


def write_signals(path: Path, n: int, prefix: str, flip: bool) -> None:
    """The benchmark's signals with ids under ``prefix``; ``flip``: every direction turned (a second session on
    the first one's positions then trades every signal too)."""
    turned = {"long": "short", "short": "long"}
    with path.open("w") as f:
        for line in make_lines(n):
            obj = json.loads(line)
            obj["id"] = f"{prefix}{obj['id']}"
            if flip:
                obj["direction"] = turned.get(obj["direction"], obj["direction"])
            f.write(json.dumps(obj) + "\n")


def importtime(code: Path, signals: Path, work: Path, top: int = 25) -> None:
    """The largest imports of one paper run on a fresh SQLite file (cumulative ms, and their depth)."""
    url = f"sqlite:///{work}/imports.db"
    args = [sys.executable, "-X", "importtime", "-m", "engine.cli", "paper", "--signals", str(signals), "--db", url,
            "--no-progress", "--no-report", "--json"]
    done = subprocess.run(args, env=child_env(code), cwd=work, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m[2]), len(m[3]) // 2, m[4]))
    total = sum(cum for cum, depth, _ in rows if depth == 0)
    tops: dict[str, int] = {}
    for cum, depth, name in rows:
        top_name = name.split(".")[0]
        if depth == 0 or name == top_name:
            tops[top_name] = max(tops.get(top_name, 0), cum)
    print(f"  imports, top level under -X importtime: {total / 1000:.0f} ms in all;"
          f" {len(rows)} modules")
    for name, cum in sorted(tops.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {cum / 1000:7.1f} ms  {name}")
    for mod in ("alembic", "ib_async", "plotly", "apprise", "prometheus_client", "uvicorn", "starlette",
                "rich.progress", "pydantic_settings", "sqlalchemy.orm", "psycopg"):
        loaded = any(name == mod or name.startswith(mod + ".") for _, _, name in rows)
        print(f"    {mod:<20} {'imported' if loaded else '-'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10, help="signals per session (default 10)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rev", help="an older commit to run beside this tree")
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file; PostgreSQL: a fresh database)")
    ap.add_argument("--imports", action="store_true", help="also print the largest imports of one run")
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, python "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}; {args.n} signals a session, "
          f"{args.rounds} rounds, {'PostgreSQL' if args.db and args.db.startswith('postgres') else 'SQLite'}")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as d:
        work = Path(d)
        trees = [("this tree", ROOT)]
        if args.rev:
            trees.insert(0, (args.rev, stack.enter_context(worktree(args.rev))))
        first, second = work / "first.jsonl", work / "second.jsonl"
        write_signals(first, args.n, "a", flip=False)
        write_signals(second, args.n, "z", flip=True)
        config = work / "bench.toml"
        config.write_text(CONFIG)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for rnd in range(args.rounds + 1):  # round 0 warms up: .pyc files, the OS's caches
            for name, code in trees:
                with fresh_database(args.db, "tradectl_bench_startup") as url:
                    fresh = run_once(code, first, config, url, work)
                    existing = run_once(code, second, config, url, work)
                if rnd:
                    results.setdefault((name, "fresh"), []).append(fresh)
                    results.setdefault((name, "existing"), []).append(existing)
        labels = [label for label, _ in PHASES] + ["whole"]
        width = max(len(f"{n} {k}") for n, k in results) + 2
        print(f"median ms over {args.rounds} rounds".ljust(width) + "".join(f"{lb:>13}" for lb in labels))
        for (name, kind), runs in sorted(results.items(), key=lambda kv: (kv[0][1], [t[0] for t in trees].index(
                kv[0][0]))):
            cells = "".join(f"{statistics.median(r[lb] for r in runs):>13.1f}" for lb in labels)
            print(f"{name} {kind}".ljust(width) + cells)
        if args.imports:
            for name, code in trees:
                print(f"{name}:")
                importtime(code, first, work)


if __name__ == "__main__":
    main()
