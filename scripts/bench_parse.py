"""Microseconds per ``parse_signal`` on the paper benchmark's lines: the msgspec fast path beside the pydantic
path alone (``parse_signal_pydantic``), in the same process and run (issue 15).

The lines are ``bench_paper.make_lines``'s (id, ts, strategy, symbol, direction, win_prob, payoff), parsed
as the in-process benchmark hands them (str) and as a signal file is read (bytes). Rounds alternate the two
paths so a loaded machine weighs on both alike; the best round is the floor, the median what a busy machine
gives. Before timing, both paths must give the same Signal for every line.

    .venv/bin/python scripts/bench_parse.py [-n 20000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_paper import make_lines  # the same workload as the in-process benchmark

from engine.domain import Signal
from engine.signals import SignalError, parse_signal, parse_signal_pydantic

Parse = Callable[[str | bytes], Signal | SignalError]
PATHS: dict[str, Parse] = {"fast path": parse_signal, "pydantic only": parse_signal_pydantic}


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}; "
            f"load average {load}")


def us_per_line(parse: Parse, lines: Sequence[str | bytes]) -> float:
    gc.collect()
    t0 = time.perf_counter_ns()
    for line in lines:
        parse(line)
    return (time.perf_counter_ns() - t0) / len(lines) / 1000


def check_same(lines: Sequence[str | bytes]) -> None:
    for line in lines:
        fast, slow = parse_signal(line), parse_signal_pydantic(line)
        if not isinstance(fast, Signal) or repr(fast) != repr(slow):
            raise SystemExit(f"the paths differ on {line!r}: {fast!r} / {slow!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20_000, help="lines per round")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    texts = list(make_lines(args.n))
    kinds: dict[str, Sequence[str | bytes]] = {"str": texts, "bytes": [t.encode() for t in texts]}
    for lines in kinds.values():
        check_same(lines)
    print(f"{datetime.now():%Y-%m-%d %H:%M}  {machine()}")
    print(f"{args.n:,} lines like {texts[0]}")
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for kind, lines in kinds.items():
            for name, parse in PATHS.items():
                results.setdefault((kind, name), []).append(us_per_line(parse, lines))
    print(f"{'input':<6} {'path':<14} {'best us':>8} {'median us':>10}  speed-up (median)")
    for kind in kinds:
        base = statistics.median(results[(kind, "pydantic only")])
        for name in PATHS:
            runs = results[(kind, name)]
            median = statistics.median(runs)
            print(f"{kind:<6} {name:<14} {min(runs):>8.2f} {median:>10.2f}  {base / median:.1f}x")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
