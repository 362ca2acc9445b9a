"""Fault tests with real processes: `tradectl run --broker ibkr` killed with SIGKILL at random moments
and restarted, and stopped with SIGTERM. The gateway is the simulator, on a thread of the test.

Seeded (the kill moments come from random.Random(SEED)) and bounded in time; a failure names the seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from paper.gateway import GatewaySim
from repositories.db import make_engine
from repositories.models import FillRow, OrderRow, PositionRow, SignalRow
from repositories.repos import Repositories
from tests.conftest import signal_line, write_lines
from tests.fault import engine_config
from tests.ibrig import gateway_in_thread
from tests.integration.test_kill_integration import _env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SEED = int(os.environ.get("CRASH_SEED", "20261123"))  # replay a failure: CRASH_SEED=<seed> pytest ...
CONFIG = engine_config(client_id=5)


def _signals(n: int) -> list[str]:
    lines = []
    for i in range(n):
        symbol = ("AAPL", "MSFT", "NVDA", "AMZN")[i % 4]
        direction = ("long", "short")[(i // 4) % 2]
        extra: dict[str, Any] = {"order_type": "LMT", "limit_price": 1.0} if i % 7 == 3 else {}
        lines.append(signal_line(f"k{i:03d}", symbol=symbol, direction=direction, seconds=i, **extra))
    return lines


def _run(port: int, db: str, signals: str, config: Path, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "--broker", "ibkr", "--port", str(port), "--signals", signals,
         "--db", db, "--config", str(config), "--json"],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _gone(gw: GatewaySim) -> None:
    wait_for(lambda: not gw._clients, 10, "the gateway to see the dead client's socket close")


def test_sigkill_at_random_moments_then_restart_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    signals = write_lines(tmp_path / "signals.jsonl", _signals(400))
    config = tmp_path / "tradectl.toml"
    config.write_text(CONFIG)
    db = f"sqlite:///{tmp_path / 'crash.db'}"
    with gateway_in_thread(step_s=0.02) as gw:
        kills: list[float] = []
        for _ in range(4):
            proc = _run(gw.port, db, str(signals), config)
            delay = rng.uniform(0.7, 1.9)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills.append(round(delay, 2))
            proc.wait(10)
            _gone(gw)
        final = _run(gw.port, db, str(signals), config)
        _, err = final.communicate(timeout=60)
        assert final.returncode == 0, f"seed {SEED}: {err[-2000:]}"
        _gone(gw)
        at_broker: dict[str, int] = {}
        for order in list(gw.live.values()) + list(gw.done.values()):
            at_broker[order.ref] = at_broker.get(order.ref, 0) + 1
        executions = {e.exec_id for e in gw.executions}
        theirs = {s: p.quantity for s, p in gw.matching.positions.items() if p.quantity}
        working_at_broker = len(gw.live)
    assert kills, f"seed {SEED}: no run was killed (all finished first)"
    engine = create_engine(db)
    with engine.connect() as conn:
        orders = dict(conn.execute(select(OrderRow.client_order_id, OrderRow.status)).all())
        fills = [r.exec_id for r in conn.execute(select(FillRow.exec_id, FillRow.source))]
        positions = {r.symbol: r.quantity for r in conn.execute(select(PositionRow.symbol, PositionRow.quantity))
                     if r.quantity}
        signal_states = dict(conn.execute(select(SignalRow.signal_id, SignalRow.status)).all())

    engine.dispose()
    context = f"seed {SEED}, killed after {kills}s"
    assert all(n == 1 for n in at_broker.values()), f"{context}: an order went to the broker twice: {at_broker}"
    assert set(at_broker) <= set(orders), f"{context}: the broker has orders we never recorded"
    never_sent = {c: s for c, s in orders.items() if c not in at_broker}  # cancelled in the pacing queue, or
    assert set(never_sent.values()) <= {"Cancelled", "Rejected"}, context  # lost in a crash before sending
    assert sorted(fills) == sorted(executions), f"{context}: fills in the database differ from the executions"
    ours = {s: D(q) for s, q in positions.items()}
    assert ours == theirs, f"{context}: positions differ from the broker's: ours {ours}, theirs {theirs}"
    totals = {s: q for s, q in Repositories(make_engine(db), "DU0000001").fills.totals().items() if q}
    assert totals == ours, f"{context}: positions {ours} are not the sum of the fills {totals}"
    assert len(signal_states) == 400 and set(signal_states.values()) <= {"accepted", "rejected"}, context
    assert all(s in ("Filled", "Cancelled", "Rejected") for s in orders.values()), f"{context}: {orders}"
    assert working_at_broker == 0


def test_sigterm_stops_taking_signals_leaves_working_orders_and_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "tradectl.toml"
    config.write_text(CONFIG)
    db = f"sqlite:///{tmp_path / 'term.db'}"
    with gateway_in_thread(step_s=0.02) as gw:
        proc = _run(gw.port, db, "-", config, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        for i in range(3):
            proc.stdin.write(signal_line(f"t{i}", symbol=("AAPL", "MSFT", "NVDA")[i], order_type="LMT",
                                         limit_price=1.0, ts=datetime.now(UTC).isoformat()) + "\n")  # stdin: now
        proc.stdin.flush()
        wait_for(lambda: len(gw.live) == 3, 30, "three resting orders at the gateway")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert len(gw.live) == 3  # left working, as configured by default
        summary = json.loads(out[out.index("{"):])
        assert any("3 order(s) left working at IB" in note for note in summary["notes"])
        _gone(gw)
        restart = _run(gw.port, db, "-", config, stdin=subprocess.PIPE)
        out, err = restart.communicate("", timeout=60)  # no input: reconcile, then the end of input drains
        assert restart.returncode == 0, err[-2000:]
        assert len(gw.live) == 0  # the restart found them by orderRef and cancelled them at the end
    engine = create_engine(db)
    with engine.connect() as conn:
        statuses = set(conn.execute(select(OrderRow.status)).scalars())
    engine.dispose()
    assert statuses == {"Cancelled"}
