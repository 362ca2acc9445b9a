"""What IB Gateway says of its own links, over TCP with ib_async: a competing live session (10197), a lost
data request (10182), farm notices; each named in /readyz, in metrics and alerted."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from broker.ib_codes import GatewayCondition
from engine.alerts import Alerts, AlertWatch
from engine.config import AlertsConfig
from engine.health import readiness
from tests.ibrig import IbRig, run

SESSION = GatewayCondition.MARKET_DATA_SESSION


def session_of(rig: IbRig) -> SimpleNamespace:
    return SimpleNamespace(engine=rig.engine, recorder=SimpleNamespace(failing=None))


def test_a_competing_live_session_makes_the_engine_not_ready_naming_it_until_the_data_is_back() -> None:
    async def scenario() -> tuple[Any, ...]:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        before = readiness(session_of(rig))[1]["gateway"]
        rig.gw.compete()
        await rig.until(lambda: rig.broker.gateway[SESSION][0] is False)
        during = readiness(session_of(rig))[1]["gateway"]
        rig.gw.compete(False)
        await rig.until(lambda: rig.broker.gateway[SESSION][0] is True)
        after = readiness(session_of(rig))[1]["gateway"]
        await rig.stop()
        return before, during, after

    before, during, after = run(scenario)
    assert before["ok"] and after["ok"]
    assert not during["ok"] and "market_data_session" in during["detail"] and "10197" in during["detail"]


def test_a_data_farm_notice_is_kept_per_condition_and_a_reconnect_starts_clean() -> None:
    async def scenario() -> tuple[bool, bool]:
        rig = await IbRig().start()
        rig.gw._broadcast(2157, "Sec-def data farm connection is broken:secdefnj")
        await rig.until(lambda: rig.broker.gateway[GatewayCondition.SECDEF_FARM][0] is False)
        not_needed = readiness(session_of(rig))[1]["gateway"]["ok"]  # contract details only: still ready
        await rig.gw.restart(down_s=0.1)
        await rig.until(lambda: not rig.engine.broker_connected)
        await rig.until(lambda: rig.engine.broker_connected)
        clean = rig.broker.gateway[GatewayCondition.SECDEF_FARM][0]
        await rig.stop()
        return not_needed, clean

    assert run(scenario) == (True, True)


def test_a_lost_live_data_request_is_made_again() -> None:
    async def scenario() -> tuple[set[int], set[int]]:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        client = next(iter(rig.gw._clients.values()))
        before = set(client.market)
        rig.gw._broadcast(10182, "Failed to request live updates (disconnected).")
        await rig.until(lambda: set(client.market) - before != set())
        after = set(client.market)
        await rig.stop()
        return before, after

    before, after = run(scenario)
    assert after - before  # a new request id for the symbol


def test_the_watch_alerts_a_condition_needed_to_trade_once_and_its_return() -> None:
    sent: list[str] = []

    def sender(title: str, body: str, level: str, silent: bool) -> bool:
        sent.append(title)
        return True

    a = Alerts(AlertsConfig(), sender=sender)
    gateway = {c: (True, "fine") for c in GatewayCondition}
    engine = SimpleNamespace(broker_connected=True, blocked=None, broker=SimpleNamespace(name="ibkr", gateway=gateway),
                             trips=SimpleNamespace(expected_outage=lambda: None))
    watch = AlertWatch(a, SimpleNamespace(engine=engine, recorder=SimpleNamespace(failing=None)))
    gateway[SESSION] = (False, "IB 10197: No market data during competing live session")
    gateway[GatewayCondition.HISTORICAL_DATA_FARM] = (False, "IB 2105: broken")  # not needed to trade: quiet
    watch.check()
    watch.check()
    gateway[SESSION] = (True, "IB 2104: Market data farm connection is OK")
    watch.check()
    assert a.drain()
    assert sent == ["[tradectl] IB Gateway: market_data_session down",
                    "[tradectl] IB Gateway: market_data_session back"]
    a.close()


def test_a_gateway_waiting_for_a_login_is_named_as_such_until_the_handshake_completes() -> None:
    from broker.ibkr import IbkrError

    async def scenario() -> tuple[tuple[bool, str], str, tuple[bool, str]]:
        rig = IbRig()
        rig.gw.faults.login_pending = True
        rig.broker.connect_timeout_s = 0.5
        await rig.gw.start()
        rig.broker.port = rig.gw.port
        try:
            await rig.broker.connect()
            raise AssertionError("connected to a gateway that never answers the handshake")
        except IbkrError:
            pass
        pending = rig.broker.gateway[GatewayCondition.LOGIN]
        rig.engine.broker_connected = False
        detail = readiness(session_of(rig))[1]["broker"]["detail"]
        rig.gw.faults.login_pending = False  # the person approved the login
        await rig.broker.connect()
        done = rig.broker.gateway[GatewayCondition.LOGIN]
        await rig.stop()
        return pending, detail, done

    pending, detail, done = run(scenario)
    assert pending[0] is False and "login or a 2FA approval" in pending[1]
    assert "login or a 2FA approval" in detail and done[0] is True
