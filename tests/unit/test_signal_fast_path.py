"""The msgspec fast path of ``parse_signal`` gives exactly what the pydantic path gives (issue 15).

The fast path only ever accepts: for a valid line it must build the very Signal the pydantic path builds
(every field, Decimal digits and exponent, the ts and its zone, the defaults), and any line it cannot
vouch for goes to the pydantic path, so every error, reject code and recovered id stays pydantic's.
``parse_signal_pydantic`` is that path alone: the reference here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import string
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from engine.domain import Signal
from engine.signals import (
    _FAST_FIELDS,
    _SEEN_CURRENCIES,
    _SEEN_LIMIT,
    _SEEN_SYMBOLS,
    MAX_PAYOFF,
    MAX_PRICE,
    MAX_QTY,
    MAX_RETURN,
    MAX_TTL_S,
    MIN_POSITIVE,
    MIN_TTL_S,
    SignalError,
    SignalMessage,
    _fast_signal,
    parse_signal,
    parse_signal_pydantic,
)

STAMP = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


class _Stamps:
    """A ``missing_ts`` that counts its calls: a clock must move only for a line that makes a Signal."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        return STAMP + timedelta(milliseconds=self.calls)


def _same(line: str | bytes) -> Signal | SignalError:
    """parse_signal's answer, after checking it is the pydantic path's to the last digit."""
    fast_stamps, slow_stamps = _Stamps(), _Stamps()
    fast = parse_signal(line, fast_stamps)
    slow = parse_signal_pydantic(line, slow_stamps)
    assert type(fast) is type(slow)
    assert repr(fast) == repr(slow)  # Decimal('1.50') is not Decimal('1.5'), Decimal('-0') not Decimal('0')
    assert fast == slow
    if isinstance(fast, Signal) and isinstance(slow, Signal):
        assert fast.ts.tzinfo is slow.ts.tzinfo
        for name in ("win_prob", "payoff", "expected_return", "volatility", "stop_distance", "limit_price",
                     "stop_price", "max_qty"):
            a, b = getattr(fast, name), getattr(slow, name)
            assert (a is None and b is None) or (a.as_tuple() == b.as_tuple()), name
    assert fast_stamps.calls == slow_stamps.calls
    return fast


def _fast_takes(line: str) -> bool:
    return _fast_signal(line, None) is not None


# -- generated lines --------------------------------------------------------------------------------------
# Hypothesis picks from pools made once by a seeded generator: drawing each character and digit through
# hypothesis costs ~100 draws a line, and the whole file must stay within a few seconds on a loaded machine.
_RNG = random.Random(15)
_ALNUM = string.ascii_letters + string.digits


def _number_text(value: Decimal, style: int) -> str:
    """One JSON spelling of a number: as Decimal prints it, fixed, exponent forms, trailing zeros."""
    if style == 0:
        return str(value)
    if style == 1:
        return format(value, "f")
    if style == 2:
        return format(value, "e")
    if style == 3:
        return format(value, "E")
    if style == 4:
        fixed = format(value, "f")
        return fixed + "00" if "." in fixed else fixed + ".0"
    if style == 5:
        return format(value.scaleb(3), "f") + "e-3"
    return format(value.scaleb(-2), "f") + "E+2"


def _numbers(low: Decimal, high: Decimal, places: int = 6, *, open_: bool = False) -> list[str]:
    """Numbers in [low, high] (or (low, high)): the bounds, log-uniform magnitudes, integers, all spellings."""
    values = set() if open_ else {low, high}
    while len(values) < 60:
        top = max(abs(low), abs(high))
        magnitude = 10 ** _RNG.uniform(-places, math.log10(top))
        value = Decimal(repr(magnitude)).quantize(Decimal(1).scaleb(-_RNG.randint(0, places)))
        if low < 0 and _RNG.random() < 0.5:
            value = -value
        if _RNG.random() < 0.2:
            value = Decimal(_RNG.randint(1, max(1, int(top))))
        if (low < value < high) or (not open_ and value in (low, high)):
            values.add(value)
    return sorted({_number_text(v, style) for v in values for style in range(7)})


def _strings(first: str, rest: str, max_rest: int, n: int = 40) -> st.SearchStrategy[str]:
    """JSON strings matching ``[first][rest]{0,max_rest}``, the longest and every character among them."""
    pool = {_RNG.choice(first) + "".join(_RNG.choices(rest, k=_RNG.randint(0, max_rest))) for _ in range(n)}
    pool.add(first[0] + rest[-1] * max_rest)
    pool.add(first[-1] + rest)
    return st.sampled_from(sorted(json.dumps(text[: max_rest + 1]) for text in pool))


def _ts_texts(n: int = 60) -> st.SearchStrategy[str]:
    zones = [None, UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
    start, span = datetime(1970, 1, 2), (datetime(2099, 12, 30) - datetime(1970, 1, 2)).total_seconds()
    texts = set()
    for i in range(n):
        at = (start + timedelta(seconds=_RNG.uniform(0, span))).replace(tzinfo=_RNG.choice(zones))
        style = i % 4
        if style == 0:
            texts.add(at.isoformat())
        elif style == 1:
            texts.add(at.isoformat(timespec="seconds"))
        elif style == 2:
            texts.add(at.isoformat(sep=" ", timespec="milliseconds"))
        else:
            texts.add(at.replace(tzinfo=None).isoformat(timespec="seconds") + "Z")
    return st.sampled_from(sorted(json.dumps(t) for t in texts))


_JSON = json.dumps
_PRICE = st.sampled_from(_numbers(MIN_POSITIVE, MAX_PRICE))
_WIN_PROB = st.sampled_from(_numbers(Decimal(0), Decimal(1), open_=True))
_PAYOFF = st.sampled_from(_numbers(MIN_POSITIVE, MAX_PAYOFF))
# the int 0 is left to the pydantic path (it may have been -0): not in a pool of lines the fast path must take
_RETURN = st.sampled_from([t for t in _numbers(-MAX_RETURN, MAX_RETURN) if t not in ("0", "-0")])
_VOLATILITY = st.sampled_from(_numbers(MIN_POSITIVE, MAX_RETURN))
# the patterns of engine/ids.py and engine/signals.py, spelled as character sets
_ID = _strings(_ALNUM, _ALNUM + "._:-", 63)
_SYMBOL = _strings(_ALNUM, _ALNUM + ".-/ ", 23)
_STRATEGY = _strings(_ALNUM, _ALNUM + "._-", 63)
_TS = _ts_texts()
_OPTIONAL = (
    ("stop_distance", _PRICE),
    ("sec_type", st.just('"STK"')),
    ("currency", st.sampled_from(['"USD"', '"EUR"', '"JPY"', '"XYZ"'])),
    ("exchange", _strings(_ALNUM, _ALNUM + ".-", 15)),
    ("ttl_s", st.sampled_from(_numbers(MIN_TTL_S, Decimal(MAX_TTL_S), places=3))),
    ("max_qty", st.sampled_from(_numbers(MIN_POSITIVE, MAX_QTY))),
)


@st.composite
def valid_pairs(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A valid signal as (key, JSON text) pairs: every field and option, numbers in every spelling."""
    pairs: list[tuple[str, str]] = [
        ("id", draw(_ID)),
        ("symbol", draw(_SYMBOL)),
    ]
    direction = draw(st.sampled_from(["long", "short", "flat"]))
    pairs.append(("direction", _JSON(direction)))
    if draw(st.booleans()):
        pairs.append(("ts", draw(_TS)))
    elif draw(st.booleans()):
        pairs.append(("ts", "null"))
    if draw(st.booleans()):
        pairs.append(("strategy", draw(_STRATEGY)))
    edge = draw(st.sampled_from(["binary", "gaussian", "none"] if direction == "flat" else ["binary", "gaussian"]))
    if edge == "binary":
        pairs += [("win_prob", draw(_WIN_PROB)), ("payoff", draw(_PAYOFF))]
    elif edge == "gaussian":
        pairs += [("expected_return", draw(_RETURN)), ("volatility", draw(_VOLATILITY))]
    order_type = draw(st.sampled_from([None, "MKT", "LMT", "STP", "STP LMT"]))
    if order_type is not None:
        pairs.append(("order_type", _JSON(order_type)))
    if order_type in ("LMT", "STP LMT"):
        pairs.append(("limit_price", draw(_PRICE)))
    if order_type in ("STP", "STP LMT"):
        pairs.append(("stop_price", draw(_PRICE)))
    if direction != "flat":
        for name in ("stop_loss", "take_profit"):
            form = draw(st.sampled_from(["none", "null", "number", "price", "distance", "price+null"]))
            if form == "null":
                pairs.append((name, "null"))
            elif form == "number":
                pairs.append((name, draw(_PRICE)))
            elif form in ("price", "distance"):
                pairs.append((name, f'{{"{form}": {draw(_PRICE)}}}'))
            elif form == "price+null":
                pairs.append((name, f'{{"distance": null, "price": {draw(_PRICE)}}}'))
    for name, values in _OPTIONAL:
        if draw(st.booleans()):
            pairs.append((name, draw(values)))
    return draw(st.permutations(pairs))


_COLONS = st.sampled_from([":", ": ", " :", " : ", "\t:\n", "\r\n:"])
_COMMAS = st.sampled_from([",", ", ", " ,", "\n,\t"])


@st.composite
def render(draw: st.DrawFn, pairs: list[tuple[str, str]]) -> str:
    """The pairs as one line, with JSON whitespace where JSON allows it (and, rarely, around the object)."""
    plain = draw(st.booleans())
    parts = [f"{json.dumps(k)}{':' if plain else draw(_COLONS)}{v}" for k, v in pairs]
    comma = ", " if plain else draw(_COMMAS)
    pad = st.sampled_from(["", " ", "\t", "\r\n", " \n "])
    return f"{'' if plain else draw(pad)}{{{comma.join(parts)}}}{'' if plain else draw(pad)}"


@given(st.data())
@settings(max_examples=200, derandomize=True, deadline=None)
def test_a_valid_line_makes_the_same_signal_on_both_paths_and_takes_the_fast_one(data: st.DataObject) -> None:
    line = data.draw(render(data.draw(valid_pairs())))
    signal = _same(line)
    assert isinstance(signal, Signal), (line, signal)
    assert _fast_takes(line), line  # a valid line of the usual kinds never needs pydantic
    assert isinstance(_same(line.encode()), Signal)


# Mutations of a valid line: each keeps JSON or breaks it in one way the strict parser must notice.
_WRONG_VALUES = [
    '"0.6"', '"AAPL"', "123", "0", "-0", "-0.0", "0.0", "1", "1.0", "true", "false", "null", "[]", "[0.5]", "{}",
    '{"price": 5}', '{"distance": 5, "price": 5}', '{"price": 5, "price": 6}', '{"price": "5"}', '{"price": -1}',
    '{"distance": 0}', '{"size": 5}', "1e400", "1e-400", "1e999999999", "-1e999999999", "10" * 20, "9" * 5000,
    "1e99999999999999999999", "-1e-99999999999999999999",
    "1E+2", "100", "1000000000", "1000000000.000001", "0.0000009", "0.000001", "2592000", "2592000.001",
    "-100", "-100.0000001", "NaN", "Infinity", "-Infinity", '"long"', '"LONG"', '"flat"', '"MKT"', '"STP LMT"',
    '"stk"', '"STK"', '"usd"', '"EUR"', '"SMART"', '"a b"', '"AAPL\\n"', '"AAPL "', '" AAPL"', '"\\u0041APL"',
    '"ÄPL"', '"a\\u0000"', '"\\ud800"', '"x\\":1"', '"2026-01-05T14:30:00Z"', '"2100-01-01T00:00:00"',
    '"1969-12-31T23:59:59+00:00"', '"yesterday"', '""', '"' + "2" * 65 + '"', "1767623400",
    "[" * 3000 + "]" * 3000, '"é"',
]
_KEYS = [*sorted(_FAST_FIELDS), "colour", "Id", "id ", "\\u0069d", "price", "distance", ""]


@st.composite
def mutated_line(draw: st.DrawFn) -> str | bytes:
    pairs = list(draw(valid_pairs()))
    for _ in range(draw(st.sampled_from([1, 2, 0, 1, 3]))):
        kind = draw(st.sampled_from(["set", "drop", "duplicate", "extra", "escape_key", "nested_dup", "dup_ws"]))
        if kind == "set" and pairs:
            i = draw(st.integers(0, len(pairs) - 1))
            pairs[i] = (pairs[i][0], draw(st.sampled_from(_WRONG_VALUES)))
        elif kind == "drop" and pairs:
            pairs.pop(draw(st.integers(0, len(pairs) - 1)))
        elif kind == "duplicate" and pairs:
            key, value = pairs[draw(st.integers(0, len(pairs) - 1))]
            other = draw(st.sampled_from([value, *_WRONG_VALUES[:12]]))
            pairs.insert(draw(st.integers(0, len(pairs))), (key, other))
        elif kind == "extra":
            pairs.insert(draw(st.integers(0, len(pairs))), (draw(st.sampled_from(_KEYS)),
                                                         draw(st.sampled_from(_WRONG_VALUES))))
        elif kind == "escape_key" and pairs:  # "\u0069d" is the key "id" as JSON reads it
            i = draw(st.integers(0, len(pairs) - 1))
            key = pairs[i][0]
            pairs[i] = (f"\\u{ord(key[0]):04x}{key[1:]}", pairs[i][1])
        elif kind in ("nested_dup", "dup_ws"):
            pairs.append((draw(st.sampled_from(["stop_loss", "take_profit"])),
                          draw(st.sampled_from(['{"price": 5, "price": 6}', '{"distance": 1 ,"distance" :2}',
                                                '{"price" : 5}', '{"price": 5, "distance": null}']))))
    parts = []
    for key, value in pairs:
        raw_key = f'"{key}"' if "\\u" in key else json.dumps(key)
        parts.append(f"{raw_key}{draw(_COLONS)}{value}")
    line = "{" + draw(_COMMAS).join(parts) + "}"
    edit = draw(st.sampled_from(["none"] * 6 + ["truncate", "bom", "nbsp", "vtab", "trailing", "array", "unicode"]))
    if edit == "truncate":
        line = line[: draw(st.integers(0, max(0, len(line) - 1)))]
    elif edit == "bom":
        line = "\ufeff" + line
    elif edit == "nbsp":
        line = line.replace(" ", "\u00a0", 1)
    elif edit == "vtab":
        line = line + "\x0b"
    elif edit == "trailing":
        line = line + draw(st.sampled_from(["{}", "x", ",", "]", " 1"]))
    elif edit == "array":
        line = f"[{line}]"
    elif edit == "unicode":
        line = line.replace('"', '"\u00e9', 1)
    return line.encode("utf-8", "surrogatepass") if draw(st.booleans()) else line


@given(mutated_line())
@settings(max_examples=700, derandomize=True, deadline=None)
def test_a_mutated_line_has_the_same_outcome_on_both_paths(line: str | bytes) -> None:
    outcome = _same(line)
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    fast = isinstance(outcome, Signal) and _fast_takes(text)
    kind = outcome.code if isinstance(outcome, SignalError) else "signal, fast path" if fast else "signal"
    event(kind)  # pytest --hypothesis-show-statistics: how the mutations land


# -- the tricky cases, by name -------------------------------------------------------------------------

def _line(**fields: str) -> str:
    """A valid long signal with fields replaced or added, each value given as its JSON text."""
    pairs = {"id": '"s1"', "symbol": '"AAPL"', "direction": '"long"', "win_prob": "0.6", "payoff": "1.5"}
    pairs.update(fields)
    return "{" + ", ".join(f'"{key}": {value}' for key, value in pairs.items()) + "}"


def _with(extra: str) -> str:
    """A valid long signal with more text before its closing brace."""
    return _line()[:-1] + extra + "}"


def _refused(line: str) -> SignalError:
    assert not _fast_takes(line)
    err = _same(line)
    assert isinstance(err, SignalError)
    return err


def test_the_benchmark_line_and_a_bracket_take_the_fast_path() -> None:
    for line in (
        '{"id":"b0","ts":"2026-01-05T14:30:00.100000+00:00","strategy":"bench","symbol":"SYM00",'
        '"direction":"long","win_prob":0.55,"payoff":1.5}',
        _with(', "stop_loss": {"distance": 2.50}, "take_profit": 190, "order_type": "LMT", "limit_price": 187.25'),
    ):
        assert _fast_takes(line)
        assert isinstance(_same(line), Signal)


@pytest.mark.parametrize("line", [
    '{"id": "d1", "symbol": "AAPL", "symbol": "MSFT", "direction": "flat"}',
    '{"id": "d1", "symbol": "AAPL", "symbol": "AAPL", "direction": "flat"}',
    '{"id": "d1", "symbol" :"AAPL", "symbol"\t: "AAPL", "direction": "flat"}',
    '{"id": "d1", "\\u0069d": "d2", "symbol": "AAPL", "direction": "flat"}',
    _with(', "stop_loss": {"distance": 2, "distance": 3}'),
    _with(', "stop_loss": {"price": 90 , "price" : 95}'),
])
def test_a_duplicate_key_is_refused_even_where_msgspec_keeps_the_last(line: str) -> None:
    err = _refused(line)
    assert err.code == "malformed_json" and "duplicate key" in err.reason


@pytest.mark.parametrize(("field", "value"), [
    ("symbol", "123"), ("id", "7"), ("strategy", "7"), ("win_prob", '"0.6"'), ("payoff", "true"),
    ("ttl_s", '"5"'), ("max_qty", "[5]"), ("stop_loss", '"95"'), ("direction", "null"), ("strategy", "null"),
    ("currency", '"usd"'), ("exchange", "null"), ("sec_type", '"OPT"'), ("order_type", '"mkt"'),
])
def test_a_value_of_the_wrong_json_type_or_form_is_refused_naming_the_field(field: str, value: str) -> None:
    err = _refused(_line(**{field: value}))
    assert f"'{field}'" in err.reason
    assert err.code == "invalid_signal"


@pytest.mark.parametrize("line", [
    '{"id": "s1", "symbol": 123, "direction": "flat"}',
    _with(', "max_qty": NaN'), _with(', "max_qty": Infinity'), _with(', "colour": 1'),
    _with(', "ttl_s": 1e999999999'), _with(', "ttl_s": 0.0009'), _with(', "limit_price": 1'),
    _with(', "expected_return": 0.1, "volatility": 0.2'), _with(', "stop_loss": {"price": 95, "distance": 2}'),
    _with(', "stop_loss": {}'), _with(', "ts": "2100-01-01T00:00:00"'), _with(', "ts": "tomorrow"'),
    _with(', "ts": ""'), '{"id": "s1", "symbol": "AAPL\\n", "direction": "flat"}',
    '{"id": "s1\\n", "symbol": "AAPL", "direction": "flat"}', '{"id": "s1", "symbol": "X", "direction": "flat",'
    ' "max_qty": ' + "9" * 5000 + "}", '{"id": "s1", "symbol": "X", "direction": "flat", "max_qty": '
    + "[" * 5000 + "]" * 5000 + "}", '\ufeff{"id": "s1", "symbol": "X", "direction": "flat"}',
    '{"id": "s1", "symbol": "X", "direction": "flat"}\u00a0', '[{"id": "s1", "symbol": "X", "direction": "flat"}]',
    '{"id": "s1", "symbol": "X", "direction": "flat", "stop_loss": 95}',
    '{"id": "s1", "symbol": "X", "direction": "long", "win_prob": 1, "payoff": 1}',
    '{"id": "s1", "symbol": "X", "direction": "long", "win_prob": 0, "payoff": 1}',
])
def test_a_line_the_pydantic_path_refuses_is_refused_with_its_words(line: str) -> None:
    _refused(line)


@pytest.mark.parametrize("value", ["1e99999999999999999999", "-1E+99999999999999999999", "1e-99999999999999999999"])
def test_an_exponent_beyond_decimal_is_refused_naming_the_field_not_raised(value: str) -> None:
    err = _refused(_with(f', "max_qty": {value}'))  # Decimal(text) raises InvalidOperation on these
    assert err.code == "invalid_signal" and err.reason == "field 'max_qty': Input should be a finite number"
    assert err.signal_id == "s1"
    err = _refused(_with(f', "stop_loss": {{"distance": {value}}}'))
    assert err.reason == "field 'stop_loss.distance': Input should be a finite number"


def test_minus_zero_keeps_its_sign_through_the_pydantic_path() -> None:
    line = '{"id": "s1", "symbol": "X", "direction": "long", "expected_return": -0, "volatility": 0.2}'
    assert not _fast_takes(line)  # msgspec reads -0 as the int 0: the fast path cannot tell
    s = _same(line)
    assert isinstance(s, Signal) and s.expected_return is not None and s.expected_return.is_signed()


def test_numbers_keep_their_digits_and_exponent() -> None:
    s = _same(_with(', "max_qty": 1.50, "ttl_s": 1e3, "stop_distance": 2.5E-1'))
    assert isinstance(s, Signal)
    assert str(s.max_qty) == "1.50" and s.ttl_s == 1000.0 and str(s.stop_distance) == "0.25"


def test_a_quote_colon_inside_a_string_only_costs_the_fast_path() -> None:
    line = _with(', "ts": "2026-01-05T14:30:00\\":"')
    assert not _fast_takes(line)
    assert isinstance(_same(line), SignalError)
    fine = '{"id": "s1", "symbol": "X", "direction": "flat", "strategy": "a"}'
    assert _fast_takes(fine)


def test_an_escaped_key_reads_as_the_key() -> None:
    line = '{"\\u0069d": "s1", "symbol": "\\u0041APL", "direction": "flat"}'
    s = _same(line)
    assert isinstance(s, Signal) and s.id == "s1" and s.symbol == "AAPL"


def test_missing_ts_is_called_once_for_a_valid_line_and_never_for_a_refused_one() -> None:
    stamps = _Stamps()
    assert isinstance(parse_signal('{"id": "s1", "symbol": "X", "direction": "flat", "ts": null}', stamps), Signal)
    assert stamps.calls == 1
    assert isinstance(parse_signal('{"id": "s1", "symbol": "X", "direction": "flat", "id": "s2"}', stamps),
                      SignalError)
    assert stamps.calls == 1


def test_remembered_matches_hold_only_valid_texts_and_stay_bounded() -> None:
    for _ in range(2):  # the second time a remembered text would be taken without its regex
        assert isinstance(_same('{"id": "s1", "symbol": "AAPL", "direction": "flat", "exchange": "ARCA"}'), Signal)
        _refused('{"id": "s1", "symbol": "AAPL\\n", "direction": "flat"}')
        _refused('{"id": "s1", "symbol": "AAPL", "direction": "flat", "strategy": "a b"}')
        _refused('{"id": "s1", "symbol": "AAPL", "direction": "flat", "currency": "usd"}')
    assert "AAPL" in _SEEN_SYMBOLS and "AAPL\n" not in _SEEN_SYMBOLS and "usd" not in _SEEN_CURRENCIES
    for i in range(_SEEN_LIMIT + 10):
        assert _fast_takes(f'{{"id": "s1", "symbol": "S{i}", "direction": "flat"}}')
    assert 0 < len(_SEEN_SYMBOLS) <= _SEEN_LIMIT


def test_the_fast_path_knows_exactly_the_message_fields() -> None:
    assert set(SignalMessage.model_fields) == _FAST_FIELDS


def test_the_fast_path_builds_signal_in_its_field_order() -> None:
    names = [f.name for f in dataclasses.fields(Signal)]
    assert names == ["id", "ts", "strategy", "symbol", "direction", "win_prob", "payoff", "expected_return",
                     "volatility", "stop_distance", "order_type", "limit_price", "sec_type", "currency",
                     "exchange", "ttl_s", "max_qty", "reference_price", "stop_price", "stop_loss", "take_profit"]
