from decimal import Decimal as D

import pytest

from engine.domain import Direction, OrderType, Signal
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
