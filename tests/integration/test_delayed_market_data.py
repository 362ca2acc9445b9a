"""An account without a live market data subscription, over TCP with ib_async: with market_data_type
"delayed" it trades on IB's delayed quotes (marked from them, said in /readyz) unless require_live_data
refuses; asking for live data only gets 354 and no quotes."""

from __future__ import annotations

from decimal import Decimal as D
from types import SimpleNamespace
from typing import Any

from engine.domain import RejectCode
from engine.health import readiness
from risk.checks import Limits, RiskLimits
from tests.ibrig import IbRig, run
from tests.integration.test_ibkr_adapter import _signal


async def delayed_rig(market_data_type: int, **engine_kw: Any) -> IbRig:
    rig = IbRig(**engine_kw)
    rig.gw.faults.delayed_only = True
    rig.broker.market_data_type = market_data_type
    return await rig.start()


def test_with_delayed_data_asked_for_the_engine_trades_on_delayed_quotes_and_says_so() -> None:
    async def scenario() -> tuple[bool, Any, str, str]:
        rig = await delayed_rig(3)
        await rig.quote("100.00", "100.02")
        delayed = rig.broker.quote_delayed("AAPL")
        quote = rig.broker.quote("AAPL")
        order = rig.engine.on_signal(_signal("d1"))
        await rig.settle()
        refs = ",".join(o.ref for o in [*rig.gw.live.values(), *rig.gw.done.values()])
        detail = readiness(SimpleNamespace(engine=rig.engine, recorder=SimpleNamespace(failing=None)))[1][
            "market_data"]["detail"]
        await rig.stop()
        return delayed, (quote.bid, quote.ask) if quote else None, refs if order else "", detail

    delayed, prices, refs, detail = run(scenario)
    assert delayed and prices == (D("100.00"), D("100.02"))
    assert refs == "tc-d1" and "delayed data" in detail and "AAPL" in detail


def test_require_live_data_refuses_orders_priced_on_delayed_quotes() -> None:
    async def scenario() -> list[RejectCode]:
        rig = await delayed_rig(3, limits=RiskLimits(Limits(require_live_data=True)))
        await rig.quote("100.00", "100.02")
        assert rig.engine.on_signal(_signal("d2")) is None
        codes = [r.code for r in rig.rejected]
        await rig.stop()
        return codes

    assert run(scenario) == [RejectCode.DELAYED_MARKET_DATA]


def test_asking_for_live_data_without_a_subscription_gets_354_and_no_quotes() -> None:
    async def scenario() -> tuple[bool, list[RejectCode]]:
        rig = await delayed_rig(1)
        await rig.quote("100.00", "100.02")
        has_quote = rig.broker.quote("AAPL") is not None
        assert rig.engine.on_signal(_signal("d3")) is None
        codes = [r.code for r in rig.rejected]
        await rig.stop()
        return has_quote, codes

    has_quote, codes = run(scenario)
    assert not has_quote and codes == [RejectCode.NO_MARKET_DATA]
