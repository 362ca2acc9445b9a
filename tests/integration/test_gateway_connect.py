"""The real ib_async client connects to the simulated gateway over TCP and is ready without timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest
from ib_async import IB

from paper.gateway import GatewaySim
from paper.wire import negotiate


def test_version_negotiation_answers_the_clients_max_within_what_is_implemented() -> None:
    assert negotiate("v157..178") == 178
    assert negotiate("v157..176 +PACEAPI") == 176
    assert negotiate("v100..213") == 178
    assert negotiate("v100..150") is None  # below the floor: refused
    assert negotiate("garbage") is None


@pytest.mark.timeout(30)
def test_ib_async_connects_and_sees_the_paper_account() -> None:
    async def scenario() -> tuple[list[str], float, list[str]]:
        gw = GatewaySim(port=0, account="DU0000001")
        await gw.start()
        ib = IB()
        t0 = time.perf_counter()
        await ib.connectAsync("127.0.0.1", gw.port, clientId=7, timeout=5)
        took = time.perf_counter() - t0
        accounts = ib.managedAccounts()
        values = sorted({v.tag for v in ib.accountValues()})
        ib.disconnect()
        await gw.stop()
        return accounts, took, values

    accounts, took, values = asyncio.run(scenario())
    assert accounts == ["DU0000001"]
    assert took < 2.0  # every startup request got its end marker: no 4 s timeouts
    assert "NetLiquidation" in values


@pytest.mark.timeout(30)
def test_a_second_client_with_the_same_id_is_refused_with_326() -> None:
    async def scenario() -> str:
        gw = GatewaySim(port=0)
        await gw.start()
        first = IB()
        await first.connectAsync("127.0.0.1", gw.port, clientId=1, timeout=5)
        second = IB()
        errors: list[int] = []
        second.errorEvent += lambda req_id, code, msg, contract: errors.append(code)
        outcome = "connected"
        try:
            await second.connectAsync("127.0.0.1", gw.port, clientId=1, timeout=3)
        except (ConnectionError, TimeoutError) as exc:
            outcome = type(exc).__name__
        first.disconnect()
        second.disconnect()
        await gw.stop()
        return f"{outcome} {errors}"

    result = asyncio.run(scenario())
    assert not result.startswith("connected") and "326" in result


@pytest.mark.timeout(30)
def test_the_adapter_fails_at_once_on_a_client_id_in_use_and_does_not_call_it_a_pending_login() -> None:
    """IB answers 326 and closes; ib_async would wait out its whole connect timeout, which read as a gateway
    waiting for a login (a false "login needed" alert after a restart)."""
    from datetime import UTC, datetime

    from broker.ib_codes import GatewayCondition
    from broker.ibkr import IbkrBroker, IbkrError

    async def scenario() -> tuple[str, float, tuple[bool, str] | None]:
        gw = GatewaySim(port=0)
        await gw.start()
        first = IB()
        await first.connectAsync("127.0.0.1", gw.port, clientId=4, timeout=5)
        broker = IbkrBroker("127.0.0.1", gw.port, 4, "DU0000001", lambda: datetime.now(UTC), connect_timeout_s=10)
        t0 = time.perf_counter()
        try:
            await broker.connect()
            error = "connected"
        except IbkrError as err:
            error = str(err)
        took = time.perf_counter() - t0
        login = broker.gateway.get(GatewayCondition.LOGIN)
        first.disconnect()
        await gw.stop()
        return error, took, login

    error, took, login = asyncio.run(scenario())
    assert "in use" in error and "326" in error
    assert took < 5.0  # not the 10 s connect timeout
    assert login is None or login[0] is not False
