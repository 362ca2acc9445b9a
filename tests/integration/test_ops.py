"""The ops bundle on a prepared paper session: one call wires health, metrics, alerts and systemd; its tasks
keep the loop healthy, ping the watchdog, and stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.alerts import Alerts
from engine.clock import SimClock
from engine.config import AlertsConfig, load_settings
from engine.domain import KillState
from engine.ops import Ops
from engine.session import PaperSession
from engine.systemd import Notifier
from paper.market import SIM_START


@pytest.fixture
def session(sqlite_url: str) -> Iterator[PaperSession]:
    s = PaperSession(load_settings(database_url=sqlite_url))
    s.prepare(SimClock(SIM_START), SIM_START)
    yield s
    s.control.close()
    s.db.dispose()


@pytest.mark.timeout(30)
def test_ops_reports_ready_pings_the_watchdog_alerts_a_trip_and_stops(session: PaperSession, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(path)
    systemd.settimeout(2)
    titles: list[str] = []

    def keep(title: str, body: str, level: str, silent: bool) -> bool:
        titles.append(title)
        return True

    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})  # 40 ms: a ping every 20 ms
    ops = Ops.wire(session, notifier=notifier, alerts=Alerts(AlertsConfig(), sender=keep))

    async def go() -> list[str]:
        ops.ready()
        ops.start()
        await asyncio.sleep(0.1)
        session.engine.set_killswitch("global", KillState.HALTED, "drawdown", "trigger:drawdown")
        await ops.stop()
        got = []
        systemd.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(systemd.recv(4096).decode())
        return got

    got = asyncio.run(asyncio.wait_for(go(), 10))
    systemd.close()
    assert got[0].startswith("READY=1") and got[-1] == "STOPPING=1"
    assert got.count("WATCHDOG=1") >= 2
    assert titles == ["[tradectl] kill switch tripped, global: ACTIVE -> HALTED"]
    assert ops.tasks == [] and [r.path for r in ops.routes()] == ["/healthz", "/readyz", "/metrics"]
