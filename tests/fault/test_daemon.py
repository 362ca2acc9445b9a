"""The daemon as a user runs it: `tradectl run --inbox --http` as a real process against the simulated
gateway, fed by HTTP and by `tradectl submit`, stopped with SIGTERM; killed with SIGKILL while it consumes
the inbox and restarted. Seeded and bounded in time."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from repositories.db import make_engine, upgrade
from repositories.inbox import SignalInbox
from repositories.models import OrderRow, SignalInboxRow, SignalRow
from tests.conftest import signal_line
from tests.fault import engine_config
from tests.ibrig import gateway_in_thread
from tests.integration.test_kill_integration import _env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
SEED = int(os.environ.get("CRASH_SEED", "20261128"))
SECRET = "a-long-enough-shared-secret"
CONFIG = engine_config(client_id=9)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def now_line(sid: str, **extra: Any) -> str:
    return signal_line(sid, ts=datetime.now(UTC).isoformat(), **extra)


@contextmanager
def daemon(gw_port: int, db: str, config: Path, http_port: int | None = None) -> Iterator[subprocess.Popen[str]]:
    env = _env()
    args = [sys.executable, "-m", "engine.cli", "run", "--broker", "ibkr", "--port", str(gw_port), "--inbox",
            "--db", db, "--config", str(config), "--json"]
    if http_port is not None:
        args.append("--http")
        env.update(TRADECTL_HTTP__PORT=str(http_port), TRADECTL_HTTP__SECRET=SECRET)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_signal_posted_over_http_becomes_an_order_at_the_gateway_and_sigterm_stops_the_daemon(
        tmp_path: Path) -> None:
    config = tmp_path / "tradectl.toml"
    config.write_text(CONFIG)
    db = f"sqlite:///{tmp_path / 'daemon.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {SECRET}"}
    with gateway_in_thread(step_s=0.02) as gw, daemon(gw.port, db, config, port) as proc:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "the daemon's HTTP server")
        refused = httpx.post(f"{url}/signals", content=now_line("h1"), timeout=5)
        assert refused.status_code == 401
        answer = httpx.post(f"{url}/signals", content=now_line("h1", symbol="AAPL"), headers=auth, timeout=5)
        assert answer.status_code == 202, answer.text
        outcome = answer.json()["signals"][0]["outcome"] if "signals" in answer.json() else answer.json()["outcome"]
        wait_for(lambda: httpx.get(f"{url}{outcome}", headers=auth, timeout=5).json()["status"] == "accepted", 30,
                 "the posted signal to become an order")
        submitted = subprocess.run([sys.executable, "-m", "engine.cli", "submit", now_line("c1", symbol="MSFT"),
                                    "--db", db, "--config", str(config)], capture_output=True, text=True, env=_env(),
                                   timeout=30)
        assert submitted.returncode == 0, submitted.stderr
        wait_for(lambda: {"tc-h1", "tc-c1"} <= {o.ref for o in [*gw.live.values(), *gw.done.values()]}, 30,
                 "both orders at the gateway")
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'tradectl_http_refused_total{reason="no_secret"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out[out.index("{"):])
    assert summary["accepted"] == 2
    assert SignalInbox(make_engine(db), "DU0000001").pending() == []


def test_the_daemon_waits_for_a_gateway_that_is_not_up_yet(tmp_path: Path) -> None:
    config = tmp_path / "tradectl.toml"
    config.write_text(CONFIG)
    db = f"sqlite:///{tmp_path / 'wait.db'}"
    upgrade(db)
    SignalInbox(make_engine(db), "DU0000001").add([now_line("w1")], "cli")
    gw_port = free_port()
    with daemon(gw_port, db, config) as proc:
        time.sleep(1.5)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""  # still waiting, not exited
        with gateway_in_thread(step_s=0.02, port=gw_port) as gw:
            wait_for(lambda: any(o.ref == "tc-w1" for o in [*gw.live.values(), *gw.done.values()]), 40,
                     "the inbox signal at the gateway once it came up")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err[-2000:]


def test_sigkill_while_consuming_the_inbox_then_restart_consumes_each_signal_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    config = tmp_path / "tradectl.toml"
    config.write_text(CONFIG)
    db = f"sqlite:///{tmp_path / 'inbox-crash.db'}"
    upgrade(db)
    inbox = SignalInbox(make_engine(db), "DU0000001")
    symbols = ("AAPL", "MSFT", "NVDA", "AMZN")
    lines = [signal_line(f"i{i:03d}", symbol=symbols[i % 4], direction=("long", "short")[(i // 4) % 2])
             for i in range(300)]
    lines = [json.dumps({k: v for k, v in json.loads(line).items() if k != "ts"}) for line in lines]  # stamped now
    for start in range(0, len(lines), 50):  # several producers' batches
        inbox.add(lines[start:start + 50], "sql")
    kills: list[float] = []
    with gateway_in_thread(step_s=0.02) as gw:
        for _ in range(3):
            with daemon(gw.port, db, config) as proc:
                delay = rng.uniform(0.8, 2.0)
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                kills.append(round(delay, 2))
            wait_for(lambda: not gw._clients, 10, "the gateway to see the dead client go")
        with daemon(gw.port, db, config) as proc:
            wait_for(lambda: bool(gw._clients), 30, "the restarted daemon to connect")
            wait_for(lambda: not inbox.pending(), 60, f"seed {SEED}: the restarted daemon to drain the inbox")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, f"seed {SEED}: {err[-2000:]}"
        at_broker: dict[str, int] = {}
        for order in [*gw.live.values(), *gw.done.values()]:
            at_broker[order.ref] = at_broker.get(order.ref, 0) + 1
    context = f"seed {SEED}, killed after {kills}s"
    engine = create_engine(db)
    with engine.connect() as conn:
        signal_rows = conn.execute(select(func.count()).select_from(SignalRow)).scalar()
        consumed = conn.execute(select(func.count()).select_from(SignalInboxRow)
                                .where(SignalInboxRow.consumed_at.is_not(None))).scalar()
        orders = set(conn.execute(select(OrderRow.client_order_id)).scalars())
    engine.dispose()
    assert signal_rows == 300 and consumed == 300, f"{context}: {signal_rows} signal rows, {consumed} consumed"
    assert all(n == 1 for n in at_broker.values()), f"{context}: an order went to the broker twice"
    assert set(at_broker) <= orders, f"{context}: the broker has orders we never recorded"
