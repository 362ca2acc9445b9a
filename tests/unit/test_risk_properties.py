"""Properties of the whole risk path, for random signals, limits, quotes and kill-switch states.

Every pre-trade check is wrapped by a spy: an order any check rejected must never reach the broker,
and every order that reaches it must have passed the kill-switch gate at that instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal as D
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from broker.base import BrokerListener
from engine.domain import KillState, Order, OrderIntent
from engine.engine import Engine
from paper.broker import PaperBroker
from risk.checks import DEFAULT_CHECKS, CheckContext, Limits, PreTradeCheck, Reject, RiskLimits
from risk.kelly import KellyParams
from risk.killswitch import GLOBAL
from tests.conftest import signal_line
from tests.rig import Rig

SYMBOLS = ["AAPL", "MSFT", "KO"]


class GatedBroker(PaperBroker):
    """Checks, at the moment of submission, that the board would have let the order out."""

    engine: Engine

    def __init__(self, clock: Callable[[], datetime]) -> None:
        super().__init__(clock)
        self.violations: list[str] = []

    def set_listener(self, listener: BrokerListener) -> None:
        assert isinstance(listener, Engine)
        self.engine = listener
        super().set_listener(listener)

    def submit(self, order: Order) -> None:
        engine = self.engine
        intent = order.intent
        symbol = intent.instrument.symbol
        pos = engine.positions.get(symbol)
        working_before = engine.book.working_qty.get(symbol, D(0)) - intent.signed_quantity
        gate = engine.killswitches.gate(intent, pos.quantity if pos else D(0), working_before)
        if not gate.allowed:
            self.violations.append(f"{order.client_order_id}: {gate.reason}")
        super().submit(order)


def spied(checks: tuple[PreTradeCheck, ...], rejected: set[str]) -> list[PreTradeCheck]:
    def wrap(check: PreTradeCheck) -> PreTradeCheck:
        def spy(intent: OrderIntent, ctx: CheckContext) -> Reject | None:
            reject = check(intent, ctx)
            if reject is not None:
                rejected.add(intent.client_order_id)
            return reject

        return spy

    return [wrap(c) for c in checks]


limits = st.builds(
    Limits,
    max_order_qty=st.sampled_from([None, D(50), D(500), D(5000)]),
    max_order_notional=st.sampled_from([None, D(10_000), D(200_000)]),
    max_position_qty=st.sampled_from([None, D(100), D(2000)]),
    max_gross_exposure=st.sampled_from([None, D(50_000), D(500_000)]),
    max_net_exposure=st.sampled_from([None, D(30_000), D(300_000)]),
    max_leverage=st.sampled_from([None, D("0.05"), D(4)]),
    price_collar_pct=st.sampled_from([None, D("0.001"), D("0.05")]),
    price_collar_ticks=st.sampled_from([None, 2, 50]),
    max_orders_per_s=st.sampled_from([None, 2, 40]),
    max_symbol_orders_per_s=st.sampled_from([None, 1, 10]),
    duplicate_window_s=st.sampled_from([None, 1.0, 30.0]),
)
signal = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from(SYMBOLS),
        "direction": st.sampled_from(["long", "short", "flat"]),
        "win_prob": st.sampled_from([0.55, 0.7, 0.3]),
        "lmt_offset": st.none() | st.sampled_from([-2.0, -0.05, 0.0, 0.03, 1.5]),
        "gap_ms": st.sampled_from([0, 100, 1500]),
        "move": st.sampled_from([-1.0, 0.0, 0.5]),
    }
)
board = st.dictionaries(st.sampled_from([GLOBAL, "symbol:AAPL", "symbol:KO", "strategy:s"]),
                        st.sampled_from(list(KillState)), max_size=2)


@settings(max_examples=150)
@given(lim=limits, signals=st.lists(signal, min_size=5, max_size=25), states=board,
       switch_at=st.integers(0, 3))
def test_no_order_a_check_or_the_kill_switch_rejects_reaches_the_broker(
    lim: Limits, signals: list[dict[str, Any]], states: dict[str, KillState], switch_at: int
) -> None:
    rejected: set[str] = set()
    rig = Rig(GatedBroker, limits=RiskLimits(replace(lim, max_daily_loss=D(1000))),
              checks=spied(DEFAULT_CHECKS, rejected), kelly=KellyParams(max_fraction_of_equity=D("0.01")))
    prices = {s: 100.0 for s in SYMBOLS}
    for i, sig in enumerate(signals):
        if i == switch_at:
            for scope, state in states.items():
                rig.engine.set_killswitch(scope, state, "property", "hypothesis")
        rig.clock.advance(timedelta(milliseconds=sig["gap_ms"]))
        sym = sig["symbol"]
        prices[sym] = max(1.0, prices[sym] + sig["move"])
        p = prices[sym]
        rig.quote(f"{p:.2f}", f"{p + 0.02:.2f}", symbol=sym)
        extra: dict[str, Any] = {"strategy": "s"}
        if sig["direction"] != "flat":
            extra.update(win_prob=sig["win_prob"], payoff=1.5)
        if sig["lmt_offset"] is not None:
            extra.update(order_type="LMT", limit_price=round(p + sig["lmt_offset"], 2))
        rig.engine.on_signal_line(signal_line(f"x{i}", symbol=sym, direction=sig["direction"], **extra))
    sent = {o.client_order_id for o in rig.submitted}
    event(f"orders sent: {min(len(sent), 3)}+")
    event(f"rejected by a check: {min(len(rejected), 3)}+")
    assert not sent & rejected
    assert isinstance(rig.broker, GatedBroker) and rig.broker.violations == []
