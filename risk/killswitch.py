"""Kill-switch states at global, strategy and symbol scope, and the gate they put on new orders.

The board is in-memory and pure; the engine loads it from the database (where the CLI writes
changes) and applies changes as they arrive. The most restrictive state among the scopes an order
falls in wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from engine.domain import KillState, OrderIntent

GLOBAL = "global"


def strategy_scope(name: str) -> str:
    return f"strategy:{name}"


def symbol_scope(symbol: str) -> str:
    return f"symbol:{symbol}"


def parse_scope(text: str) -> str:
    """Normalise an operator's scope ('global', 'strategy:NAME', 'symbol:SYM'); raise on anything else."""
    text = text.strip()
    if text == GLOBAL:
        return GLOBAL
    kind, sep, name = text.partition(":")
    if not sep or not name or kind not in ("strategy", "symbol"):
        raise ValueError(f"scope must be 'global', 'strategy:NAME' or 'symbol:SYM', got {text!r}")
    return f"{kind}:{name.upper() if kind == 'symbol' else name}"


@dataclass(frozen=True, slots=True)
class GateDecision:
    allowed: bool
    state: KillState
    scope: str | None
    reason: str | None = None


_PASS = GateDecision(True, KillState.ACTIVE, None)


def reduces_exposure(position: Decimal, working: Decimal, order_qty: Decimal) -> bool:
    """True when the signed order only shrinks |position + working| and never crosses or opens from flat."""
    if order_qty == 0:
        return True
    exposure = position + working
    if exposure == 0:
        return False
    if (exposure > 0) == (order_qty > 0):
        return False
    return abs(order_qty) <= abs(exposure)


class KillSwitchBoard:
    def __init__(self, states: dict[str, KillState] | None = None) -> None:
        self._states: dict[str, KillState] = {}
        for scope, state in (states or {}).items():
            self.set(scope, state)

    def set(self, scope: str, state: KillState) -> KillState:
        """Set a scope's state; return the state it had."""
        previous = self._states.get(scope, KillState.ACTIVE)
        if state is KillState.ACTIVE:
            self._states.pop(scope, None)
        else:
            self._states[scope] = state
        return previous

    def get(self, scope: str) -> KillState:
        return self._states.get(scope, KillState.ACTIVE)

    def snapshot(self) -> dict[str, KillState]:
        return dict(self._states)

    def effective(self, strategy: str, symbol: str) -> tuple[KillState, str | None]:
        if not self._states:  # the common case: nothing tripped
            return KillState.ACTIVE, None
        worst, where = KillState.ACTIVE, None
        for scope in (GLOBAL, strategy_scope(strategy), symbol_scope(symbol)):
            state = self._states.get(scope)
            if state is not None and state.severity > worst.severity:
                worst, where = state, scope
        return worst, where

    def in_scope(self, scope: str, strategy: str, symbol: str) -> bool:
        return scope in (GLOBAL, strategy_scope(strategy), symbol_scope(symbol))

    def gate(self, intent: OrderIntent, position: Decimal, working: Decimal) -> GateDecision:
        state, scope = self.effective(intent.strategy, intent.instrument.symbol)
        if state is KillState.ACTIVE:
            return _PASS
        reducing = reduces_exposure(position, working, intent.signed_quantity)
        if state is KillState.HALTED:
            if intent.flatten and reducing:
                return GateDecision(True, state, scope)
            return GateDecision(False, state, scope, f"kill switch {scope} is HALTED")
        if reducing:
            return GateDecision(True, state, scope)
        return GateDecision(False, state, scope, f"kill switch {scope} is REDUCE_ONLY and the order adds exposure")
