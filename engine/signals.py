"""The signal wire format: one JSON object per line, validated strictly.

A bad line never stops a session: ``parse_signal`` returns either a domain ``Signal`` or a
``SignalError`` whose reason names the offending field, so the engine can store the rejection.

Strict means: the line must be UTF-8 (never repaired), one JSON object without duplicate keys,
NaN or Infinity; every value has its JSON type (``"symbol": 123`` is refused, not traded as ``123``);
every number and date is bounded to what sizing, IB and both databases can hold. A line too long,
or one that is refused, is stored bounded (``MAX_RAW_CHARS``) and with its bytes escaped.

Two paths, one answer: msgspec takes a valid line in a few microseconds (``_fast_signal``); any line it
cannot vouch for is parsed by json + pydantic (``parse_signal_pydantic``), which gives every error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.domain import Direction, ExitLevel, OrderType, RejectCode, Signal
from engine.ids import SIGNAL_ID_MAX_LEN, SIGNAL_ID_PATTERN

MAX_LINE_BYTES = 65_536  # a longer line is refused whole (line_too_long); readers stop reading it there
MAX_RAW_CHARS = 4_096  # the copy of a line kept in signals.payload / signal_rejects.raw
MAX_REASON_CHARS = 1_000
TS_MIN_YEAR, TS_MAX_YEAR = 1970, 2100  # ts must fall in [1970-01-01, 2100-01-01)
MAX_TTL_S = 30 * 86_400
MAX_PRICE = Decimal(1_000_000_000)  # limit_price, stop_distance
MAX_QTY = Decimal(1_000_000_000)
MAX_PAYOFF = Decimal(1_000_000)
MAX_RETURN = Decimal(100)  # |expected_return| and volatility, as fractions (100 = 10,000%)
# The smallest positive value a divisor or a price may take: keeps Kelly's divisions and tick rounding
# far inside Decimal's range (a 1E-999999 volatility squared would underflow to a division by zero).
MIN_POSITIVE = Decimal("0.000001")
MIN_TTL_S = Decimal("0.001")  # a smaller ttl_s would become 0.0 seconds, which means no expiry
STRATEGY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-/ ]{0,23}$"
EXCHANGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,15}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"

_ID_RE = re.compile(SIGNAL_ID_PATTERN)
_BOM = "\ufeff"


def _num(gt: Decimal | None = None, ge: Decimal | None = None, lt: Decimal | None = None,
         le: Decimal | None = None) -> Any:
    return Field(gt=gt, ge=ge, lt=lt, le=le, allow_inf_nan=False)


_ZERO = Decimal(0)
_MAX_TTL = Decimal(MAX_TTL_S)
_MAX_TS_CHARS = 64
Price = Annotated[Decimal, _num(ge=MIN_POSITIVE, le=MAX_PRICE)]
Qty = Annotated[Decimal, _num(ge=MIN_POSITIVE, le=MAX_QTY)]
_DIRECTIONS = {"long": Direction.LONG, "short": Direction.SHORT, "flat": Direction.FLAT}
_ORDER_TYPES = {t.value: t for t in OrderType}


class ExitLevelMessage(BaseModel):
    """A bracket exit given as ``{"price": 95.5}`` or ``{"distance": 2.5}`` (from the entry price)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    price: Price | None = None
    distance: Price | None = None

    def to_domain(self) -> ExitLevel | str:
        return _exit_of(self.price, self.distance)


def _exit_of(price: Decimal | None, distance: Decimal | None) -> ExitLevel | str:
    """An exit given as an object, or why it is not one (shared by both paths)."""
    if price is not None:
        return "give exactly one of 'price' or 'distance'" if distance is not None else ExitLevel(price)
    if distance is None:
        return "give exactly one of 'price' or 'distance'"
    return ExitLevel(distance, is_distance=True)


def _exit_level(value: Decimal | ExitLevelMessage | None) -> ExitLevel | str | None:
    if value is None or isinstance(value, Decimal):
        return None if value is None else ExitLevel(value)
    return value.to_domain()


def _cross_field_error(direction: str, order_type: str, win_prob: Decimal | None, payoff: Decimal | None,
                       expected_return: Decimal | None, volatility: Decimal | None, limit_price: Decimal | None,
                       stop_price: Decimal | None, stop_loss: ExitLevel | str | None,
                       take_profit: ExitLevel | str | None) -> str | None:
    """The rules that span fields, shared by the pydantic path and the msgspec fast path.

    ``stop_loss`` / ``take_profit`` are the exits as ``_exit_level`` reads them (a string: why not).
    """
    binary = win_prob is not None or payoff is not None
    gaussian = expected_return is not None or volatility is not None
    if binary and gaussian:
        return "give the edge as win_prob+payoff or as expected_return+volatility, not both"
    if binary and (win_prob is None or payoff is None):
        missing = "payoff" if payoff is None else "win_prob"
        return f"field '{missing}': required with the win_prob/payoff edge"
    if gaussian and (expected_return is None or volatility is None):
        missing = "volatility" if volatility is None else "expected_return"
        return f"field '{missing}': required with the expected_return/volatility edge"
    if not binary and not gaussian and direction != "flat":
        return "an edge is required: win_prob+payoff or expected_return+volatility"
    limited = order_type in ("LMT", "STP LMT")
    stopped = order_type in ("STP", "STP LMT")
    if limited and limit_price is None:
        return f"field 'limit_price': required when order_type is {order_type}"
    if not limited and limit_price is not None:
        return "field 'limit_price': only allowed when order_type is LMT or STP LMT"
    if stopped and stop_price is None:
        return f"field 'stop_price': required when order_type is {order_type}"
    if not stopped and stop_price is not None:
        return "field 'stop_price': only allowed when order_type is STP or STP LMT"
    for name, level in (("stop_loss", stop_loss), ("take_profit", take_profit)):
        if isinstance(level, str):
            return f"field '{name}': {level}"
        if level is not None and direction == "flat":
            return f"field '{name}': a bracket needs a long or short signal, not flat"
    return None


class SignalMessage(BaseModel):
    """The JSON object of one line, after ``json.loads`` (numbers already ``Decimal``): no coercion."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Annotated[str, Field(min_length=1, max_length=SIGNAL_ID_MAX_LEN, pattern=SIGNAL_ID_PATTERN)]
    ts: Annotated[str, Field(min_length=1, max_length=_MAX_TS_CHARS)] | None = None  # ISO 8601; parsed by _parse_ts
    strategy: Annotated[str, Field(min_length=1, max_length=64, pattern=STRATEGY_PATTERN)] = "default"
    symbol: Annotated[str, Field(min_length=1, max_length=24, pattern=SYMBOL_PATTERN)]
    direction: Literal["long", "short", "flat"]
    win_prob: Annotated[Decimal, _num(gt=_ZERO, lt=Decimal(1))] | None = None
    payoff: Annotated[Decimal, _num(ge=MIN_POSITIVE, le=MAX_PAYOFF)] | None = None
    expected_return: Annotated[Decimal, _num(ge=-MAX_RETURN, le=MAX_RETURN)] | None = None
    volatility: Annotated[Decimal, _num(ge=MIN_POSITIVE, le=MAX_RETURN)] | None = None
    stop_distance: Price | None = None
    order_type: Literal["MKT", "LMT", "STP", "STP LMT"] = "MKT"
    limit_price: Price | None = None
    stop_price: Price | None = None  # the trigger of a STP / STP LMT entry
    # A bracket: a number is a price; {"price": p} or {"distance": d} (from the entry price) say which.
    stop_loss: Price | ExitLevelMessage | None = None
    take_profit: Price | ExitLevelMessage | None = None
    sec_type: Literal["STK"] = "STK"
    currency: Annotated[str, Field(pattern=CURRENCY_PATTERN)] = "USD"
    exchange: Annotated[str, Field(min_length=1, max_length=16, pattern=EXCHANGE_PATTERN)] = "SMART"
    ttl_s: Annotated[Decimal, _num(ge=MIN_TTL_S, le=_MAX_TTL)] | None = None
    max_qty: Qty | None = None

    def cross_field_error(self) -> str | None:
        """The rules that span fields (kept out of pydantic validators: they cost 3 us a signal there)."""
        return _cross_field_error(self.direction, self.order_type, self.win_prob, self.payoff, self.expected_return,
                                  self.volatility, self.limit_price, self.stop_price,
                                  _exit_level(self.stop_loss), _exit_level(self.take_profit))

    def to_domain(self, ts: datetime) -> Signal:
        return Signal(
            id=self.id,
            ts=ts,
            strategy=self.strategy,
            symbol=self.symbol.upper(),
            direction=_DIRECTIONS[self.direction],
            win_prob=self.win_prob,
            payoff=self.payoff,
            expected_return=self.expected_return,
            volatility=self.volatility,
            stop_distance=self.stop_distance,
            order_type=_ORDER_TYPES[self.order_type],
            limit_price=self.limit_price,
            sec_type=self.sec_type,
            currency=self.currency,
            exchange=self.exchange,
            ttl_s=float(self.ttl_s) if self.ttl_s is not None else None,
            max_qty=self.max_qty,
            stop_price=self.stop_price,
            stop_loss=_level(self.stop_loss),
            take_profit=_level(self.take_profit),
        )


def _level(value: Decimal | ExitLevelMessage | None) -> ExitLevel | None:
    """A level ``cross_field_error`` has accepted already."""
    level = _exit_level(value)
    assert not isinstance(level, str)
    return level


_TOO_LONG = f"line longer than {MAX_LINE_BYTES} bytes"

@dataclass(frozen=True, slots=True)
class SignalError:
    """A line that is not a valid signal. ``signal_id`` is recovered when the line had a valid one.

    ``raw`` is what is stored: bounded to ``MAX_RAW_CHARS`` and safe for both databases.
    """

    raw: str
    reason: str
    signal_id: str | None = None
    code: RejectCode = RejectCode.INVALID_SIGNAL


def _now() -> datetime:
    return datetime.now(UTC)


def strip_bom(line: str | bytes) -> str | bytes:
    """The first line of a file or stream may start with a UTF-8 byte order mark: it is not part of it."""
    if isinstance(line, bytes):
        return line[3:] if line.startswith(b"\xef\xbb\xbf") else line
    return line[1:] if line.startswith(_BOM) else line


def bound_raw(text: str) -> str:
    """A valid line as stored with its signal: at most ``MAX_RAW_CHARS`` characters, cut with a marker."""
    n = len(text)
    if n <= MAX_RAW_CHARS:
        return text
    return f"{text[:MAX_RAW_CHARS]}...[cut: the line has {n} characters]"


def safe_raw(line: str | bytes) -> str:
    """A refused line as stored: bounded, invalid UTF-8 and surrogates as backslash escapes, NUL as \\x00."""
    size = len(line)
    head = line[: MAX_RAW_CHARS * 2]
    if isinstance(head, bytes):
        text = head.decode("utf-8", "backslashreplace")
    else:
        text = head
        if not text.isascii():
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:  # PostgreSQL text cannot hold NUL
        text = text.replace("\x00", "\\x00")
    if len(text) > MAX_RAW_CHARS or size > len(head):
        unit = "bytes" if isinstance(line, bytes) else "characters"
        text = f"{text[:MAX_RAW_CHARS]}...[cut: the line has {size} {unit}]"
    return text


def _safe_text(text: str, limit: int = 64) -> str:
    """A name or message from the line, fit for a reason: printable, bounded."""
    if len(text) <= limit and text.isprintable() and text.isascii():
        return text
    return repr(text[:limit])[1:-1]


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


_NOT_FINITE = Decimal("NaN")


def _json_decimal(text: str) -> Decimal:
    """A JSON number with a fraction or exponent. One whose exponent Decimal cannot hold (1e99999999999999999999)
    would raise InvalidOperation out of the decoder: it is NaN instead, which the model refuses as not finite,
    naming its field."""
    try:
        return Decimal(text)
    except ArithmeticError:
        return _NOT_FINITE


# One decoder (json.loads with arguments builds a new one per call): numbers as Decimal, no NaN/Infinity,
# no duplicate keys.
_decode = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=_json_decimal, parse_int=Decimal,
                           parse_constant=_no_constant).decode


def _parse_ts(text: str) -> datetime | str:
    """An ISO 8601 date-time in [1970, 2100), as UTC (naive = UTC), or the reason it is not one."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return "field 'ts': not an ISO 8601 date-time"
    if not TS_MIN_YEAR <= ts.year < TS_MAX_YEAR:
        return f"field 'ts': year {ts.year} is outside {TS_MIN_YEAR}-{TS_MAX_YEAR - 1}"
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)  # no overflow: the year is at least a day inside datetime's range


_EXIT_FIELDS = ("stop_loss", "take_profit")
_EXIT_BRANCHES = ("decimal", "ExitLevelMessage")
_EXIT_FORMS = 'must be a price (a JSON number), {"price": p} or {"distance": d}'
_MESSAGES = {
    "is_instance_of": "must be a JSON number",
}


def _describe(err: ValidationError) -> str:
    parts: list[str] = []
    errors = err.errors(include_url=False, include_input=False)
    # an exit given as an object with a bad field: name that field, not the union's other branch
    inside = {e["loc"][0] for e in errors if len(e["loc"]) > 2 and e["loc"][0] in _EXIT_FIELDS}
    for e in errors[:8]:
        path = list(e["loc"])
        if len(path) >= 2 and path[0] in _EXIT_FIELDS and path[1] in _EXIT_BRANCHES:
            if path[0] in inside and len(path) == 2:
                continue
            if len(path) == 2:  # neither a number nor an object: one message for the union, once
                text = f"field '{path[0]}': {_EXIT_FORMS}"
                if text not in parts:
                    parts.append(text)
                continue
            del path[1]  # inside the object: name the field as the user wrote it (stop_loss.distance)
        loc = ".".join(_safe_text(str(p)) for p in path)
        msg = _MESSAGES.get(e["type"]) or e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parts.append(f"field '{loc}': unknown field")
        elif loc:
            parts.append(f"field '{loc}': {msg}")
        else:
            parts.append(msg)
    if len(errors) > 8:
        parts.append(f"and {len(errors) - 8} more")
    return "; ".join(parts)[:MAX_REASON_CHARS]


def _recover_id(obj: dict[str, Any]) -> str | None:
    sid = obj.get("id")
    if isinstance(sid, str) and _ID_RE.fullmatch(sid):
        return sid
    return None


# -- the msgspec fast path -------------------------------------------------------------------------------
# msgspec decodes a usual line in about a microsecond, and the checks below take a few more, where pydantic
# takes ~13 (issue 15; figures in docs/performance.md). The fast path only ever accepts: a line it cannot show
# valid in every respect the pydantic path checks goes to that path, which parses it again and says why it is
# refused. So both give the same Signal for a valid line (tests/unit/test_signal_fast_path.py compares them
# on generated lines), and every error, reject code and recovered id is the pydantic path's.
#
# msgspec decodes untyped (a Struct would check the types in C, but counting the keys present and its
# pattern checks cost more than they save), and what its decode does not give is checked here:
# - Duplicate keys: msgspec keeps the last. Each key in the text ends in `"`, JSON whitespace, `:`, and a
#   match of `"[ \t\n\r]*:` holds one `"`, so the text has at least as many matches as keys; when it has
#   exactly as many as the keys decoded (the object's and its exit objects'), no key can be repeated. A text
#   with no `"` followed by whitespace has a `":` for each key, so the count needs no regex then. Anything
#   else (a repeat, or `":` inside a string) goes to the pydantic path.
# - Numbers as the pydantic path reads them (json with parse_float=parse_int=Decimal, then strict Decimal):
#   a JSON float reaches ``float_hook`` as its own text, so Decimal(text) as json's parse_float: 1.50 stays
#   Decimal('1.50'), 1e5 is Decimal('1E+5'). An int becomes Decimal(int), equal to Decimal of its digits but
#   for -0 (an int 0 is left to the pydantic path). NaN and Infinity are not JSON to msgspec; an integer
#   longer than it reads fails its decode. Strings, booleans, arrays and objects are not numbers.
# - Strings: exactly ``str`` (not null where pydantic has a default), patterns with ``fullmatch`` (pydantic's
#   Rust regex `$` is the end of the text; Python's `$` would also match before a final newline).


def _full(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(pattern).fullmatch


_FAST_FIELDS = frozenset((
    "id", "ts", "strategy", "symbol", "direction", "win_prob", "payoff", "expected_return", "volatility",
    "stop_distance", "order_type", "limit_price", "stop_price", "stop_loss", "take_profit", "sec_type",
    "currency", "exchange", "ttl_s", "max_qty",
))  # SignalMessage's fields (a test holds them equal): a field only pydantic knows is left to it
_FAST_DECODE = msgspec.json.Decoder(float_hook=Decimal).decode
# RecursionError: msgspec's own past its depth; ArithmeticError: Decimal(text) of an exponent it cannot hold
_FAST_ERRORS = (msgspec.DecodeError, RecursionError, ArithmeticError)
_ID_FULL = _full(SIGNAL_ID_PATTERN)
_STRATEGY_FULL = _full(STRATEGY_PATTERN)
_SYMBOL_FULL = _full(SYMBOL_PATTERN)
_CURRENCY_FULL = _full(CURRENCY_PATTERN)
_EXCHANGE_FULL = _full(EXCHANGE_PATTERN)
_MESSAGE_FIELDS = SignalMessage.model_fields
# SignalMessage's own Literals and defaults, so the two paths cannot drift apart on them
_FAST_DIRECTIONS = frozenset(get_args(_MESSAGE_FIELDS["direction"].annotation))
_FAST_ORDER_TYPES = frozenset(get_args(_MESSAGE_FIELDS["order_type"].annotation))
_FAST_SEC_TYPES = frozenset(get_args(_MESSAGE_FIELDS["sec_type"].annotation))
_DEFAULT_STRATEGY: str = _MESSAGE_FIELDS["strategy"].default
_DEFAULT_ORDER_TYPE: str = _MESSAGE_FIELDS["order_type"].default
_DEFAULT_SEC_TYPE: str = _MESSAGE_FIELDS["sec_type"].default
_DEFAULT_CURRENCY: str = _MESSAGE_FIELDS["currency"].default
_DEFAULT_EXCHANGE: str = _MESSAGE_FIELDS["exchange"].default
_KEY_END = re.compile(r'"[ \t\n\r]*:')
_EXIT_KEYS = frozenset(("price", "distance"))
_ONE = Decimal(1)


_NO_EXIT: tuple[ExitLevel | None, int] = (None, 0)


class _NotFast(Exception):
    """The line is left to the pydantic path."""


def _fast_number(value: Any, low: Decimal, high: Decimal) -> Decimal | None:
    """A number field in [low, high] as the pydantic path reads it; absent or null is None."""
    if value is None:
        return None
    kind = type(value)
    if kind is Decimal:
        number: Decimal = value
    elif kind is int and value:  # not bool (a type of its own), not 0 (it may have been written -0)
        number = Decimal(value)
    else:
        raise _NotFast
    if low <= number <= high:
        return number
    raise _NotFast


def _fast_exit(value: Any) -> tuple[ExitLevel | None, int]:
    """A bracket exit (a price, or an object with one of price / distance) and the keys its object holds."""
    if type(value) is dict:
        if not value.keys() <= _EXIT_KEYS:
            raise _NotFast
        level = _exit_of(_fast_number(value.get("price"), MIN_POSITIVE, MAX_PRICE),
                         _fast_number(value.get("distance"), MIN_POSITIVE, MAX_PRICE))
        if isinstance(level, str):
            raise _NotFast
        return level, len(value)
    price = _fast_number(value, MIN_POSITIVE, MAX_PRICE)
    return (None if price is None else ExitLevel(price)), 0


def _keys_in(text: str) -> int:
    """At least the number of keys written in the text, counting repeats (see above)."""
    if '" ' in text or "\t" in text or "\n" in text or "\r" in text:  # one-character tests are the fastest
        return len(_KEY_END.findall(text))
    return text.count('":')


_SEEN_LIMIT = 1024  # distinct values remembered per field: a symbol or strategy repeats line after line


def _matches(seen: set[str], fullmatch: Callable[[str], re.Match[str] | None], text: str) -> bool:
    """``fullmatch(text)``, remembered: the set holds only texts that matched, so a hit needs no regex."""
    if fullmatch(text) is None:
        return False
    if len(seen) >= _SEEN_LIMIT:
        seen.clear()
    seen.add(text)
    return True


_SEEN_SYMBOLS: set[str] = set()
_SEEN_STRATEGIES: set[str] = set()
_SEEN_CURRENCIES: set[str] = set()
_SEEN_EXCHANGES: set[str] = set()


def _fast_signal(text: str, missing_ts: Callable[[], datetime] | None) -> Signal | None:
    """The Signal of a line the fast path can vouch for, else None (then the pydantic path decides)."""
    try:
        obj = _FAST_DECODE(text)
    except _FAST_ERRORS:
        return None
    if type(obj) is not dict or not obj.keys() <= _FAST_FIELDS:
        return None
    sid = obj.get("id")
    symbol = obj.get("symbol")
    direction = obj.get("direction")
    strategy = obj.get("strategy", _DEFAULT_STRATEGY)
    order_type = obj.get("order_type", _DEFAULT_ORDER_TYPE)
    sec_type = obj.get("sec_type", _DEFAULT_SEC_TYPE)
    currency = obj.get("currency", _DEFAULT_CURRENCY)
    exchange = obj.get("exchange", _DEFAULT_EXCHANGE)
    ts_text = obj.get("ts")
    # A default is the object .get returned (valid); a string is checked before it is hashed.
    if not (type(sid) is str and _ID_FULL(sid)
            and type(symbol) is str and (symbol in _SEEN_SYMBOLS or _matches(_SEEN_SYMBOLS, _SYMBOL_FULL, symbol))
            and type(direction) is str and direction in _FAST_DIRECTIONS
            and (strategy is _DEFAULT_STRATEGY or (type(strategy) is str and (
                strategy in _SEEN_STRATEGIES or _matches(_SEEN_STRATEGIES, _STRATEGY_FULL, strategy))))
            and type(order_type) is str and order_type in _FAST_ORDER_TYPES
            and type(sec_type) is str and sec_type in _FAST_SEC_TYPES
            and (currency is _DEFAULT_CURRENCY or (type(currency) is str and (
                currency in _SEEN_CURRENCIES or _matches(_SEEN_CURRENCIES, _CURRENCY_FULL, currency))))
            and (exchange is _DEFAULT_EXCHANGE or (type(exchange) is str and (
                exchange in _SEEN_EXCHANGES or _matches(_SEEN_EXCHANGES, _EXCHANGE_FULL, exchange))))
            and (ts_text is None or (type(ts_text) is str and 0 < len(ts_text) <= _MAX_TS_CHARS))):
        return None
    get = obj.get
    try:  # most fields are absent: None without a call
        win_prob = None if (v := get("win_prob")) is None else _fast_number(v, _ZERO, _ONE)
        payoff = None if (v := get("payoff")) is None else _fast_number(v, MIN_POSITIVE, MAX_PAYOFF)
        expected_return = None if (v := get("expected_return")) is None else _fast_number(v, -MAX_RETURN,
                                                                                          MAX_RETURN)
        volatility = None if (v := get("volatility")) is None else _fast_number(v, MIN_POSITIVE, MAX_RETURN)
        stop_distance = None if (v := get("stop_distance")) is None else _fast_number(v, MIN_POSITIVE, MAX_PRICE)
        limit_price = None if (v := get("limit_price")) is None else _fast_number(v, MIN_POSITIVE, MAX_PRICE)
        stop_price = None if (v := get("stop_price")) is None else _fast_number(v, MIN_POSITIVE, MAX_PRICE)
        ttl_s = None if (v := get("ttl_s")) is None else _fast_number(v, MIN_TTL_S, _MAX_TTL)
        max_qty = None if (v := get("max_qty")) is None else _fast_number(v, MIN_POSITIVE, MAX_QTY)
        stop_loss, stop_loss_keys = _NO_EXIT if (v := get("stop_loss")) is None else _fast_exit(v)
        take_profit, take_profit_keys = _NO_EXIT if (v := get("take_profit")) is None else _fast_exit(v)
    except _NotFast:
        return None
    if win_prob is not None and not _ZERO < win_prob < _ONE:
        return None
    if _keys_in(text) != len(obj) + stop_loss_keys + take_profit_keys:
        return None
    ts: datetime | None = None
    if ts_text is not None:
        parsed = _parse_ts(ts_text)
        if isinstance(parsed, str):
            return None
        ts = parsed
    if _cross_field_error(direction, order_type, win_prob, payoff, expected_return, volatility, limit_price,
                          stop_price, stop_loss, take_profit) is not None:
        return None
    # Positional, in Signal's field order: a third of the cost of 21 keywords (the test checks the order).
    return Signal(sid, ts if ts is not None else (missing_ts or _now)(), strategy, symbol.upper(),
                  _DIRECTIONS[direction], win_prob, payoff, expected_return, volatility, stop_distance,
                  _ORDER_TYPES[order_type], limit_price, sec_type, currency, exchange,
                  float(ttl_s) if ttl_s is not None else None, max_qty, None, stop_price, stop_loss, take_profit)


def _checked_text(raw: str | bytes) -> str | SignalError:
    """The line as text, or why it cannot be one: too long, or not UTF-8 (never repaired)."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_LINE_BYTES:
            return SignalError(safe_raw(raw), _TOO_LONG, None, RejectCode.LINE_TOO_LONG)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return SignalError(safe_raw(raw), f"not valid UTF-8: byte 0x{raw[err.start]:02x} at offset {err.start}",
                               None, RejectCode.INVALID_ENCODING)
    text = raw
    if not text.isascii():
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as err:
            return SignalError(safe_raw(text), f"not valid UTF-8: a lone surrogate at offset {err.start}",
                               None, RejectCode.INVALID_ENCODING)
        if size > MAX_LINE_BYTES:
            return SignalError(safe_raw(text), _TOO_LONG, None, RejectCode.LINE_TOO_LONG)
    elif len(text) > MAX_LINE_BYTES:
        return SignalError(safe_raw(text), _TOO_LONG, None, RejectCode.LINE_TOO_LONG)
    return text


def parse_signal(raw: str | bytes, missing_ts: Callable[[], datetime] | None = None) -> Signal | SignalError:
    """One line (without its newline) -> a Signal or the reason it is not one.

    ``missing_ts`` stamps a valid signal that has no ``ts`` (default: the wall clock); it is called
    only for a line that is otherwise valid, so a session may advance its clock in it.

    A line the msgspec fast path accepts (``_fast_signal``) is built from it; any other line, and every
    error, is the pydantic path's (``parse_signal_pydantic``): both give the same Signal for a valid line.
    """
    text = _checked_text(raw)
    if isinstance(text, SignalError):
        return text
    signal = _fast_signal(text, missing_ts)
    if signal is not None:
        return signal
    return _parse_text(text, missing_ts)


def parse_signal_pydantic(raw: str | bytes,
                          missing_ts: Callable[[], datetime] | None = None) -> Signal | SignalError:
    """``parse_signal`` without the fast path: the reference the fast path is tested and measured against."""
    text = _checked_text(raw)
    if isinstance(text, SignalError):
        return text
    return _parse_text(text, missing_ts)


def _parse_text(text: str, missing_ts: Callable[[], datetime] | None) -> Signal | SignalError:
    """The pydantic path: every error message, reject code and recovered id comes from here."""
    try:
        obj = _decode(text)
    except _DuplicateKey as err:
        return SignalError(safe_raw(text), f"field '{_safe_text(err.key)}': duplicate key", None,
                           RejectCode.MALFORMED_JSON)
    except RecursionError:
        return SignalError(safe_raw(text), "not JSON: nested too deeply", None, RejectCode.MALFORMED_JSON)
    except ValueError as err:
        return SignalError(safe_raw(text), f"not JSON: {_safe_text(str(err), 200)}", None, RejectCode.MALFORMED_JSON)
    if not isinstance(obj, dict):
        return SignalError(safe_raw(text), "not a JSON object", None, RejectCode.MALFORMED_JSON)
    try:
        msg = SignalMessage.model_validate(obj)
    except ValidationError as err:
        return SignalError(safe_raw(text), _describe(err), _recover_id(obj))
    ts: datetime | None = None
    if msg.ts is not None:
        parsed = _parse_ts(msg.ts)
        if isinstance(parsed, str):
            return SignalError(safe_raw(text), parsed, msg.id)
        ts = parsed
    problem = msg.cross_field_error()
    if problem is not None:
        return SignalError(safe_raw(text), problem, msg.id)
    return msg.to_domain(ts if ts is not None else (missing_ts or _now)())
