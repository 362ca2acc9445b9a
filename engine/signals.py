"""The signal wire format: one JSON object per line, validated with pydantic.

A bad line never stops a session: ``parse_signal`` returns either a domain ``Signal`` or a
``SignalError`` whose reason names the offending field, so the engine can store the rejection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.domain import Direction, OrderType, Signal

PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


def _now() -> datetime:
    return datetime.now(UTC)


class SignalMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    id: Annotated[str, Field(min_length=1, max_length=128)]
    ts: datetime = Field(default_factory=_now)
    strategy: Annotated[str, Field(min_length=1, max_length=64)] = "default"
    symbol: Annotated[str, Field(min_length=1, max_length=24, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-/ ]*$")]
    direction: Direction
    win_prob: Annotated[Decimal, Field(gt=0, lt=1, allow_inf_nan=False)] | None = None
    payoff: PositiveDecimal | None = None
    expected_return: Annotated[Decimal, Field(allow_inf_nan=False)] | None = None
    volatility: PositiveDecimal | None = None
    stop_distance: PositiveDecimal | None = None
    order_type: Literal["MKT", "LMT"] = "MKT"
    limit_price: PositiveDecimal | None = None
    sec_type: Literal["STK"] = "STK"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    exchange: Annotated[str, Field(min_length=1, max_length=16)] = "SMART"
    ttl_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    max_qty: PositiveDecimal | None = None

    def cross_field_error(self) -> str | None:
        """The rules that span fields (kept out of pydantic validators: they cost 3 us a signal there)."""
        binary = self.win_prob is not None or self.payoff is not None
        gaussian = self.expected_return is not None or self.volatility is not None
        if binary and gaussian:
            return "give the edge as win_prob+payoff or as expected_return+volatility, not both"
        if binary and (self.win_prob is None or self.payoff is None):
            missing = "payoff" if self.payoff is None else "win_prob"
            return f"field '{missing}': required with the win_prob/payoff edge"
        if gaussian and (self.expected_return is None or self.volatility is None):
            missing = "volatility" if self.volatility is None else "expected_return"
            return f"field '{missing}': required with the expected_return/volatility edge"
        if not binary and not gaussian and self.direction is not Direction.FLAT:
            return "an edge is required: win_prob+payoff or expected_return+volatility"
        if self.order_type == "LMT" and self.limit_price is None:
            return "field 'limit_price': required when order_type is LMT"
        if self.order_type == "MKT" and self.limit_price is not None:
            return "field 'limit_price': only allowed when order_type is LMT"
        return None

    def to_domain(self) -> Signal:
        ts = self.ts
        return Signal(
            id=self.id,
            ts=ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC),
            strategy=self.strategy,
            symbol=self.symbol.upper(),
            direction=self.direction,
            win_prob=self.win_prob,
            payoff=self.payoff,
            expected_return=self.expected_return,
            volatility=self.volatility,
            stop_distance=self.stop_distance,
            order_type=OrderType.MKT if self.order_type == "MKT" else OrderType.LMT,
            limit_price=self.limit_price,
            sec_type=self.sec_type,
            currency=self.currency,
            exchange=self.exchange,
            ttl_s=self.ttl_s,
            max_qty=self.max_qty,
        )


@dataclass(frozen=True, slots=True)
class SignalError:
    """A line that is not a valid signal. ``signal_id`` is recovered when the line had one."""

    raw: str
    reason: str
    signal_id: str | None = None
    code: str = "invalid_signal"


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parts.append(f"field '{loc}': unknown field")
        elif loc:
            parts.append(f"field '{loc}': {msg}")
        else:
            parts.append(msg)
    return "; ".join(parts)


def _recover_id(raw: str) -> str | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if isinstance(obj, dict):
        sid = obj.get("id")
        if isinstance(sid, str | int) and not isinstance(sid, bool) and 0 < len(str(sid)) <= 128:
            return str(sid)
    return None


def parse_signal(raw: str | bytes) -> Signal | SignalError:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        msg = SignalMessage.model_validate_json(text)
    except ValidationError as err:
        if any(e["type"] == "json_invalid" for e in err.errors()):
            return SignalError(text, f"not a JSON object: {err.errors()[0]['msg']}", None, "malformed_json")
        if any(e["type"] == "model_type" for e in err.errors()):
            return SignalError(text, "not a JSON object", None, "malformed_json")
        return SignalError(text, _describe(err), _recover_id(text))
    problem = msg.cross_field_error()
    if problem is not None:
        return SignalError(text, problem, msg.id)
    return msg.to_domain()
