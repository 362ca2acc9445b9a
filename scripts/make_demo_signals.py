"""Write the bundled demo signal file (seeded, so the committed file is reproducible).

Mostly valid signals over a handful of symbols, plus a few of each kind of bad input the engine must
record rather than drop: malformed JSON, unknown fields, out-of-range values, a repeated id.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "SPY", "QQQ"]
STRATEGIES = ["momentum", "meanrev", "breakout"]


def make(n: int, seed: int, start: datetime) -> list[str]:
    rng = random.Random(seed)
    lines: list[str] = []
    ts = start
    for i in range(n):
        ts += timedelta(milliseconds=rng.randint(50, 400))
        sid = f"demo-{i:05d}"
        sym = rng.choice(SYMBOLS)
        strat = rng.choice(STRATEGIES)
        r = rng.random()
        obj: dict[str, object] = {"id": sid, "ts": ts.isoformat(), "strategy": strat, "symbol": sym}
        if r < 0.12:
            obj["direction"] = "flat"
        else:
            obj["direction"] = rng.choice(["long", "short"])
            if rng.random() < 0.6:
                obj["win_prob"] = round(rng.uniform(0.45, 0.62), 3)
                obj["payoff"] = round(rng.uniform(0.8, 2.0), 2)
            else:
                obj["expected_return"] = round(rng.uniform(-0.001, 0.004), 5)
                obj["volatility"] = round(rng.uniform(0.1, 0.4), 3)
        if rng.random() < 0.1 and obj["direction"] != "flat":
            obj["ttl_s"] = rng.choice([1, 5, 30])
        lines.append(json.dumps(obj, separators=(",", ":")))
    bad = [
        '{"id": "demo-bad-1", "symbol": "AAPL", "direction": "long", "win_prob": 1.3, "payoff": 1.5}',
        '{"id": "demo-bad-2", "symbol": "AAPL", "direction": "sideways", "win_prob": 0.6, "payoff": 1.5}',
        '{"id": "demo-bad-3", "symbol": "MSFT", "direction": "long", "win_prob": 0.6, "payof": 1.5}',
        '{"symbol": "MSFT", "direction": "long", "win_prob": 0.6, "payoff": 1.5}',
        "this line is not json",
        lines[10],  # a repeated signal id
    ]
    for j, b in enumerate(bad):
        lines.insert(40 + j * 97, b)
    return lines


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("paper/data/demo_signals.jsonl")
    lines = make(2000, 7, datetime(2026, 1, 5, 14, 30, tzinfo=UTC))
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {out}")


if __name__ == "__main__":
    main()
