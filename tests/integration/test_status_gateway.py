"""`tradectl status` names the gateway's conditions: the engine writes its broker link with each heartbeat
(SQLite and PostgreSQL), and status reads it from another process as it reads everything, from the database."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from broker.ib_codes import GatewayCondition
from engine.cli import app
from engine.control import broker_state
from tests.ibrig import IbRig, run
from tests.integration.test_cli_truth import _lock, _this_process

runner = CliRunner()


def _competing_state() -> str:
    """The broker state of an engine whose gateway reports a competing live session (10197)."""
    async def scenario() -> str:
        rig = await IbRig().start()
        try:
            await rig.quote("100.00", "100.02")
            rig.gw.compete()
            await rig.until(lambda: rig.broker.gateway[GatewayCondition.MARKET_DATA_SESSION][0] is False)
            return broker_state(rig.engine)
        finally:
            await rig.stop()

    return run(scenario)


def test_status_names_a_gateway_condition_the_running_engine_reported(db_url: str) -> None:
    repos = _lock(db_url, _this_process(), heartbeat_age_s=0)
    repos.engine_lock.heartbeat(_this_process(), datetime.now(UTC), _competing_state())
    result = runner.invoke(app, ["status", "--json", "--db", db_url])
    assert result.exit_code == 0, result.output
    broker = json.loads(result.stdout)["engine"]["broker"]
    assert broker["connected"] is True
    session = broker["gateway"][GatewayCondition.MARKET_DATA_SESSION.value]
    assert session["ok"] is False and "10197" in session["detail"]
    table = runner.invoke(app, ["status", "--db", db_url], env={"COLUMNS": "160"})
    assert "market_data_session" in table.stdout and "10197" in table.stdout


def test_status_shows_no_broker_state_when_no_engine_runs(sqlite_url: str) -> None:
    # SQLite: on PostgreSQL this test's own connection would hold the account's lock (an engine alive: hung)
    repos = _lock(sqlite_url, "elsewhere.example:1", heartbeat_age_s=3600)
    repos.engine_lock.heartbeat("elsewhere.example:1", datetime(2020, 1, 1, tzinfo=UTC), _competing_state())
    result = runner.invoke(app, ["status", "--json", "--db", sqlite_url])
    assert json.loads(result.stdout)["engine"]["broker"] is None
