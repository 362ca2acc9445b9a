"""A bracket outlives its engine: `tradectl run --broker ibkr` is killed with SIGKILL, the stop loss fills at
the (simulated) gateway while no engine runs, and the restart books that fill and the take profit's cancel.

Bounded in time; nothing random (the market moves only when the test says so).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from paper.gateway import GatewaySim
from repositories.models import FillRow, OrderRow, PositionRow
from tests.conftest import signal_line
from tests.fault import engine_config
from tests.fault.test_crash import _gone, _run
from tests.ibrig import gateway_in_thread
from tests.integration.test_kill_integration import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _ctl(gw: GatewaySim, cmd: str, **args: Any) -> dict[str, Any]:
    """What `tradectl gateway-ctl` sends, on the simulator's control port."""
    assert gw.control_port is not None
    with socket.create_connection(("127.0.0.1", gw.control_port), timeout=10) as sock:
        sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        reply: dict[str, Any] = json.loads(sock.makefile().readline())
    assert reply["ok"], reply
    return reply


def _by_ref(gw: GatewaySim) -> dict[str, dict[str, Any]]:
    return {row["order_ref"]: row for row in _ctl(gw, "orders")["orders"]}


def test_a_brackets_stop_fills_while_the_engine_is_dead_and_the_restart_reconciles_it(tmp_path: Path) -> None:
    config = tmp_path / "tradectl.toml"
    config.write_text(engine_config(client_id=7))
    db = f"sqlite:///{tmp_path / 'bracket.db'}"
    line = signal_line("br1", ts=datetime.now(UTC).isoformat(), stop_loss={"distance": 2},
                       take_profit={"distance": 3})
    with gateway_in_thread(step_s=None, control_port=0) as gw:
        _ctl(gw, "quote", symbol="AAPL", bid="100.00", ask="100.02")
        proc = _run(gw.port, db, "-", config, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        stop_ref, target_ref = "te-sl-br1-AAPL", "te-tp-br1-AAPL"
        wait_for(lambda: _by_ref(gw).get(target_ref, {}).get("status") == "Submitted", 30,
                 "the entry filled and its exits working at the gateway")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _gone(gw)
        assert _by_ref(gw)[stop_ref]["status"] == "PreSubmitted"  # the stop still works with no engine
        _ctl(gw, "quote", symbol="AAPL", bid="97.90", ask="97.92")
        at_gateway = _by_ref(gw)
        assert (at_gateway[stop_ref]["status"], at_gateway[target_ref]["status"]) == ("Filled", "Cancelled")
        assert gw.matching.positions["AAPL"].quantity == 0
        restart = _run(gw.port, db, "-", config, stdin=subprocess.PIPE)
        _, err = restart.communicate("", timeout=60)  # no input: reconcile, then the end of input
        assert restart.returncode == 0, err[-2000:]
        _gone(gw)
        executions = {e.exec_id for e in gw.executions}
    engine = create_engine(db)
    with engine.connect() as conn:
        orders = dict(conn.execute(select(OrderRow.client_order_id, OrderRow.status)).all())
        fills = {r.exec_id: r.client_order_id for r in conn.execute(select(FillRow.exec_id, FillRow.client_order_id))}
        positions = {r.symbol: D(r.quantity) for r in conn.execute(select(PositionRow.symbol, PositionRow.quantity))}
    engine.dispose()
    assert orders == {"tc-br1": "Filled", stop_ref: "Filled", target_ref: "Cancelled"}
    assert set(fills) == executions and stop_ref in fills.values()
    assert positions.get("AAPL", D(0)) == 0
