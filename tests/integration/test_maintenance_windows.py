"""IB Gateway's daily restart over TCP with the real ib_async client: inside a maintenance window it is
ordinary (no trip, the signal that arrives meanwhile is held and trades once the link is back, 326 on a
too-early reconnect is retried); outside one it trips the disconnect trigger as before."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_settings
from engine.domain import KillState
from engine.live import IbkrSession
from paper.gateway import GatewaySim
from risk.killswitch import GLOBAL
from tests.ibrig import run, until

pytestmark = pytest.mark.timeout(60)
DOWN_S = 1.0  # the gateway's restart
LINGER_S = 2.0  # then IB still holds the old session's client id: 326 until this has passed
TIMEOUT_S = 0.5  # the disconnect trigger's timeout, far below the restart


class OneLineWhen:
    """A signal source that yields one line once ``go`` is set, then waits for the stop."""

    wall_clock = True

    def __init__(self, line: str) -> None:
        self.line, self.go, self.taken = line, asyncio.Event(), asyncio.Event()

    async def lines(self, stop: asyncio.Event) -> AsyncIterator[tuple[int, str | bytes]]:
        await self.go.wait()
        self.taken.set()
        yield 1, self.line
        await stop.wait()


def window_around_now() -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(minutes=1)
    return [{"name": "gateway-restart", "start": start.strftime("%H:%M"), "minutes": 10, "timezone": "UTC"}]


def restart_scenario(tmp_path: Path, windows: list[dict[str, Any]], signals: str = "hold") -> dict[str, Any]:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'mw.db'}",
                             triggers={"disconnect_timeout_s": TIMEOUT_S},
                             maintenance={"windows": windows, "signals": signals},
                             ibkr={"drain_s": 0.2})
    line = json.dumps({"id": "during-restart", "ts": datetime.now(UTC).isoformat(), "symbol": "AAPL",
                       "direction": "long", "win_prob": 0.6, "payoff": 1.5})

    async def scenario() -> dict[str, Any]:
        gw = GatewaySim(port=0, step_s=0.05, pacing_limit=None)
        await gw.start()
        gw.faults.client_id_linger_s = LINGER_S
        session = IbkrSession(settings, host="127.0.0.1", port=gw.port, client_id=5)
        await session.connect()
        await session._subscribe("AAPL")
        source, stop = OneLineWhen(line), asyncio.Event()
        runner = asyncio.create_task(session.run(source=source, stop=stop))
        restart = asyncio.create_task(gw.restart(DOWN_S))
        await until(lambda: not session.engine.broker_connected, "the link to drop")
        source.go.set()  # a signal arrives while the gateway restarts
        await until(lambda: source.taken.is_set(), "the signal to be read")
        await asyncio.sleep(DOWN_S + TIMEOUT_S)  # past the trigger's timeout, the gateway back, 326 meanwhile
        state_during = session.engine.killswitches.get(GLOBAL)
        await until(lambda: session.engine.broker_connected
                    or session.engine.killswitches.get(GLOBAL) is KillState.HALTED, "reconnected or tripped", 20)
        await until(lambda: "tc-during-restart" in {o.ref for o in [*gw.live.values(), *gw.done.values()]}
                    or session.engine.stats.rejected > 0, "the signal's outcome", 20)
        await restart
        refs = [o.ref for o in [*gw.live.values(), *gw.done.values()]]
        stop.set()
        summary = await runner
        await gw.stop()
        return {"state_during": state_during, "state_after": session.engine.killswitches.get(GLOBAL),
                "orders_for_signal": refs.count("tc-during-restart"), "refused_326": gw.refused_in_use,
                "reject_reasons": {str(k): v for k, v in session.engine.stats.reject_reasons.items()},
                "accepted": summary.accepted}

    return run(scenario)


def test_a_restart_inside_the_window_does_not_trip_and_the_held_signal_trades_once_after_it(tmp_path: Path) -> None:
    out = restart_scenario(tmp_path, window_around_now())
    assert out["refused_326"] >= 1  # the first reconnect came too soon and was retried
    assert out["state_during"] is KillState.ACTIVE and out["state_after"] is KillState.ACTIVE
    assert out["orders_for_signal"] == 1 and out["accepted"] == 1


def test_the_same_restart_outside_any_window_trips_the_disconnect_trigger(tmp_path: Path) -> None:
    out = restart_scenario(tmp_path, [])
    assert out["state_after"] is KillState.HALTED
    assert out["orders_for_signal"] == 0 and out["accepted"] == 0


def test_with_signals_reject_a_signal_during_the_window_is_refused_naming_it(tmp_path: Path) -> None:
    out = restart_scenario(tmp_path, window_around_now(), signals="reject")
    assert out["state_after"] is KillState.ACTIVE
    assert out["orders_for_signal"] == 0 and out["reject_reasons"] == {"maintenance_window": 1}
