import json
from decimal import Decimal as D

import pytest

from engine.domain import Direction, ExitLevel, OrderType, Signal
from engine.signals import SignalError, parse_signal


def test_valid_signal_parses_with_defaults() -> None:
    s = parse_signal('{"id": "a1", "symbol": "aapl", "direction": "long", "win_prob": 0.55, "payoff": 1.2}')
    assert isinstance(s, Signal)
    assert s.symbol == "AAPL" and s.direction is Direction.LONG and s.win_prob == D("0.55")
    assert s.strategy == "default" and s.order_type is OrderType.MKT and s.currency == "USD"
    assert s.ts.tzinfo is not None


def test_naive_timestamp_is_taken_as_utc() -> None:
    s = parse_signal('{"id": "a", "ts": "2026-01-05T14:30:00", "symbol": "X", "direction": "flat"}')
    assert isinstance(s, Signal)
    offset = s.ts.utcoffset()
    assert offset is not None and offset.total_seconds() == 0


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ('{"id": "a", "symbol": "X", "direction": "long", "win_prob": 1.5, "payoff": 1}', "win_prob"),
        ('{"id": "a", "symbol": "X", "direction": "long", "win_prob": 0.5, "payoff": 0}', "payoff"),
        ('{"id": "a", "symbol": "X", "direction": "up", "win_prob": 0.5, "payoff": 1}', "direction"),
        ('{"symbol": "X", "direction": "long", "win_prob": 0.5, "payoff": 1}', "id"),
        ('{"id": "a", "symbol": "X", "direction": "long", "win_prob": 0.6}', "payoff"),
        ('{"id": "a", "symbol": "X", "direction": "long", "expected_return": 0.01}', "volatility"),
        ('{"id": "a", "symbol": "X", "direction": "long", "win_prob": 0.6, "payoff": 1, "colour": 1}', "colour"),
        ('{"id": "a", "symbol": "X", "direction": "flat", "order_type": "LMT"}', "limit_price"),
        ('{"id": "a", "symbol": "X", "direction": "flat", "limit_price": 10}', "limit_price"),
        ('{"id": "a", "symbol": "X", "direction": "flat", "ts": "yesterday"}', "ts"),
    ],
)
def test_invalid_signal_reason_names_the_field(line: str, named: str) -> None:
    err = parse_signal(line)
    assert isinstance(err, SignalError)
    assert f"'{named}'" in err.reason
    assert err.raw == line


def test_signal_without_any_edge_is_rejected_unless_flat() -> None:
    err = parse_signal('{"id": "a", "symbol": "X", "direction": "long"}')
    assert isinstance(err, SignalError) and "edge is required" in err.reason
    assert isinstance(parse_signal('{"id": "a", "symbol": "X", "direction": "flat"}'), Signal)


def test_both_edge_forms_at_once_are_rejected() -> None:
    err = parse_signal('{"id": "a", "symbol": "X", "direction": "long", "win_prob": 0.6, "payoff": 1,'
                       ' "expected_return": 0.1, "volatility": 0.2}')
    assert isinstance(err, SignalError) and "not both" in err.reason


def test_invalid_signal_keeps_its_id_for_the_record() -> None:
    err = parse_signal('{"id": "keep-me", "symbol": "X", "direction": "long", "win_prob": 2, "payoff": 1}')
    assert isinstance(err, SignalError) and err.signal_id == "keep-me"


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '"a string"', "{"])
def test_malformed_line_is_an_error_not_an_exception(line: str) -> None:
    err = parse_signal(line)
    assert isinstance(err, SignalError) and err.code == "malformed_json" and err.signal_id is None


def _line(**extra: object) -> str:
    obj: dict[str, object] = {"id": "s1", "symbol": "AAPL", "direction": "long", "win_prob": 0.6, "payoff": 1.5}
    obj.update(extra)
    return json.dumps(obj)


def test_a_bracket_takes_a_stop_loss_price_and_a_take_profit_distance() -> None:
    s = parse_signal(_line(stop_loss=95, take_profit={"distance": 4}))
    assert isinstance(s, Signal)
    assert s.stop_loss == ExitLevel(D(95)) and s.take_profit == ExitLevel(D(4), is_distance=True)


def test_an_exit_level_with_both_price_and_distance_is_refused_naming_the_field() -> None:
    e = parse_signal(_line(stop_loss={"price": 95, "distance": 2}))
    assert isinstance(e, SignalError) and e.reason == "field 'stop_loss': give exactly one of 'price' or 'distance'"


def test_an_exit_level_of_the_wrong_type_says_what_it_may_be() -> None:
    e = parse_signal(_line(take_profit="105"))
    assert isinstance(e, SignalError)
    assert e.reason == 'field \'take_profit\': must be a price (a JSON number), {"price": p} or {"distance": d}'


def test_a_flat_signal_cannot_carry_a_bracket() -> None:
    e = parse_signal(_line(direction="flat", stop_loss=95))
    assert isinstance(e, SignalError) and "a bracket needs a long or short signal" in e.reason


def test_a_stop_entry_needs_its_trigger_and_a_stop_limit_its_limit() -> None:
    missing_stop = parse_signal(_line(order_type="STP"))
    missing_limit = parse_signal(_line(order_type="STP LMT", stop_price=101))
    ok = parse_signal(_line(order_type="STP LMT", stop_price=101, limit_price=101.5))
    assert isinstance(missing_stop, SignalError) and "'stop_price': required" in missing_stop.reason
    assert isinstance(missing_limit, SignalError) and "'limit_price': required" in missing_limit.reason
    assert isinstance(ok, Signal) and ok.order_type is OrderType.STP_LMT and ok.stop_price == D("101")


def test_a_stop_price_on_a_market_order_is_refused() -> None:
    e = parse_signal(_line(stop_price=101))
    assert isinstance(e, SignalError) and "only allowed when order_type is STP or STP LMT" in e.reason
