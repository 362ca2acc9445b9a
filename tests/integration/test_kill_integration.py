"""An operator halts a running paper session from another process, and the halt holds across a restart.

A real `tradectl paper --signals -` runs in a subprocess, fed a steady stream of signals whose limit
orders rest; `tradectl kill` runs as a second process. Bounded in time; the signal stream is fixed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import select

from engine.domain import KillState
from repositories.db import make_engine, upgrade
from repositories.models import OrderRow, SignalRow
from repositories.repos import Repositories
from tests.conftest import write_lines


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADECTL_")}
    env["TRADECTL_LOG_LEVEL"] = "warning"
    return env


def tradectl(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def resting_signal(i: int) -> str:
    """A long in its own symbol with a limit far below any price the walk starts at: it rests."""
    return json.dumps({"id": f"drill-{i}", "symbol": f"S{i % 200:03d}", "direction": "long", "win_prob": 0.6,
                       "payoff": 1.5, "order_type": "LMT", "limit_price": 1.0})


class Feeder(threading.Thread):
    def __init__(self, pipe: IO[str], interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pipe, self.interval_s = pipe, interval_s
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.pipe.write(resting_signal(self.sent) + "\n")
                self.pipe.flush()
                self.sent += 1
                time.sleep(self.interval_s)
        except (BrokenPipeError, ValueError):
            return


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.timeout(90)
def test_kill_from_another_shell_cancels_stops_orders_is_audited_and_survives_restart(
    db_url: str, tmp_path: Path
) -> None:
    session = tradectl("paper", "--db", db_url, "--signals", "-", "--no-progress", "--json", stdin=subprocess.PIPE)
    assert session.stdin is not None
    feeder = Feeder(session.stdin)
    repos = Repositories(make_engine(db_url), "DU0000001")
    try:
        feeder.start()
        wait_for(lambda: session.poll() is None and _has_schema(repos) and repos.engine_lock.holder() is not None
                 and len(repos.orders.open()) >= 5, 30, "a running session with resting orders")

        kill = tradectl("kill", "--db", db_url, "--reason", "integration drill", "--json")
        out, err = kill.communicate(timeout=30)
        assert kill.returncode == 0, err
        result = json.loads(out)
        assert result["acknowledged"] is True and result["to_state"] == "HALTED"
        cancelled = result["ack"]["cancelled"]
        assert cancelled >= 5
        acked_at = datetime.fromisoformat(result["ack"]["ts"])

        sent_at_kill = feeder.sent
        wait_for(lambda: feeder.sent >= sent_at_kill + 20, 10, "signals after the kill")
    finally:
        feeder.stop.set()
        feeder.join(timeout=5)
    out, err = session.communicate(timeout=60)  # closes stdin: the session drains and exits
    assert session.returncode == 0, err
    summary = json.loads(out)
    assert summary["killswitches"] == {"global": "HALTED"}

    with repos.db.connect() as conn:
        orders = conn.execute(select(OrderRow.created_at, OrderRow.status, OrderRow.reason)).all()
        after = conn.execute(
            select(SignalRow.status, SignalRow.reason_code).where(SignalRow.received_at > acked_at)
        ).all()
    assert repos.orders.open() == []
    assert max(o.created_at for o in orders) <= acked_at  # nothing left the engine after the ack
    halted = [o for o in orders if o.reason and o.reason.startswith("kill switch global HALTED")]
    assert len(halted) == cancelled and all(o.status == "Cancelled" for o in halted)
    assert after and {(s, code) for s, code in after} == {("rejected", "killswitch")}

    audit = repos.audit.log()
    (halt,) = [a for a in audit if a["action"] == "killswitch.halted"]
    assert "@" in halt["actor"] and "integration drill" in halt["detail"] and halt["scope"] == "global"
    assert [a for a in audit if a["action"] == "killswitch.ack"]

    # A restarted session starts halted: every signal is refused by the kill switch.
    signals = write_lines(tmp_path / "after.jsonl", [resting_signal(10_000 + i) for i in range(5)])
    again = tradectl("paper", "--db", db_url, "--signals", str(signals), "--no-progress", "--json")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    rerun = json.loads(out)
    assert rerun["accepted"] == 0 and rerun["reject_reasons"] == {"killswitch": 5}
    assert rerun["killswitches"] == {"global": "HALTED"}
    repos.db.dispose()


def _has_schema(repos: Repositories) -> bool:
    from sqlalchemy import inspect

    return "engine_locks" in inspect(repos.db).get_table_names()


def test_kill_without_a_running_engine_says_so_and_records_the_state(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    kill = tradectl("kill", "--db", sqlite_url, "--scope", "symbol:aapl", "--reason", "pre-open halt")
    out, err = kill.communicate(timeout=30)
    assert kill.returncode == 0, err
    assert "no engine is running" in out and "symbol:AAPL is HALTED" in out
    assert Repositories(make_engine(sqlite_url), "DU0000001").killswitches.states() == {"symbol:AAPL": KillState.HALTED}
