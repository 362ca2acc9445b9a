"""No input line stops a session: every line, whatever its bytes, ends as exactly one row (issue: order
safety under real use, item 3)."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

from engine.cli import app
from engine.config import load_settings
from engine.domain import Signal
from engine.ids import SIGNAL_ID_MAX_LEN, SIGNAL_ID_PATTERN
from engine.session import PaperSession, SessionSummary
from engine.signals import MAX_LINE_BYTES, MAX_RAW_CHARS, SignalError, parse_signal
from engine.sources import read_lines
from repositories.db import make_engine
from repositories.models import OrderRow, SignalRejectRow, SignalRow
from tests.conftest import signal_line

PARSE_CODES = {"malformed_json", "invalid_signal", "invalid_encoding", "line_too_long"}


def _err(line: str | bytes) -> SignalError:
    parsed = parse_signal(line)
    assert isinstance(parsed, SignalError), parsed
    return parsed


def _base(**fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": "x1", "ts": "2026-01-05T14:30:00Z", "symbol": "AAPL", "direction": "long",
                           "win_prob": 0.6, "payoff": 1.5}
    obj.update(fields)
    return obj


# -- the parser --------------------------------------------------------------------------------------
def test_a_ts_in_year_9999_with_a_negative_offset_is_rejected_naming_ts() -> None:
    err = _err(json.dumps(_base(ts="9999-12-31T23:59:59-05:00")))
    assert "'ts'" in err.reason and err.signal_id == "x1"


@pytest.mark.parametrize("ts", ["1969-12-31T23:59:59Z", "2100-01-01T00:00:00", "0001-01-01T00:00:00+01:00"])
def test_a_ts_outside_1970_to_2099_is_rejected_naming_ts(ts: str) -> None:
    assert "'ts'" in _err(json.dumps(_base(ts=ts))).reason


@pytest.mark.parametrize("ts", [1767623400, 1767623400.5])
def test_a_ts_that_is_not_an_iso_8601_string_is_rejected_naming_ts(ts: Any) -> None:
    assert "'ts'" in _err(json.dumps(_base(ts=ts))).reason


def test_a_ts_with_an_offset_is_converted_to_utc() -> None:
    s = parse_signal(json.dumps(_base(ts="2026-01-05T09:30:00-05:00")))
    assert isinstance(s, Signal) and s.ts.isoformat() == "2026-01-05T14:30:00+00:00"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("limit_price", "1e308"), ("limit_price", "1000000000.01"), ("limit_price", "1e-7"),
        ("ttl_s", "1e308"), ("ttl_s", "1e12"), ("ttl_s", "2592001"), ("ttl_s", "1e-9"),
        ("max_qty", "1e10"), ("max_qty", "1e-7"), ("payoff", "1e-7"), ("payoff", "1e7"),
        ("stop_distance", "1e308"),
    ],
)
def test_a_number_beyond_its_bound_is_rejected_naming_the_field(field: str, value: str) -> None:
    obj = _base(order_type="LMT", limit_price=100) if field != "limit_price" else _base(order_type="LMT")
    line = json.dumps(obj)[:-1] + f', "{field}": {value}' + "}"
    assert f"'{field}'" in _err(line).reason


@pytest.mark.parametrize(("field", "value"), [("volatility", "1e-7"), ("expected_return", "1e5")])
def test_a_gaussian_edge_beyond_its_bound_is_rejected_naming_the_field(field: str, value: str) -> None:
    obj = {"id": "g", "symbol": "AAPL", "direction": "long", "expected_return": 0.01, "volatility": 0.2}
    obj.pop(field)
    line = json.dumps(obj)[:-1] + f', "{field}": {value}' + "}"
    assert f"'{field}'" in _err(line).reason


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_numbers(token: str) -> None:
    line = json.dumps(_base())[:-1] + f', "max_qty": {token}' + "}"
    assert _err(line).code == "malformed_json"


@pytest.mark.parametrize(
    ("field", "value"),
    [("symbol", 123), ("id", 123), ("win_prob", "0.6"), ("strategy", 7), ("ttl_s", "5"), ("max_qty", "5")],
)
def test_a_value_of_the_wrong_json_type_is_rejected_not_coerced(field: str, value: Any) -> None:
    assert f"'{field}'" in _err(json.dumps(_base(**{field: value}))).reason


def test_duplicate_keys_are_rejected_naming_the_key() -> None:
    line = '{"id": "d1", "symbol": "AAPL", "symbol": "MSFT", "direction": "flat"}'
    err = _err(line)
    assert err.code == "malformed_json" and "'symbol'" in err.reason and "duplicate" in err.reason


def test_invalid_utf8_is_rejected_not_replaced() -> None:
    line = json.dumps(_base(strategy="caf")).encode()[:-2] + b'\xe9"}'
    err = _err(line)
    assert err.code == "invalid_encoding"
    assert "\\xe9" in err.raw and "\ufffd" not in err.raw
    err = _err(line.decode("utf-8", "surrogateescape"))  # the same bytes read by a text stream
    assert err.code == "invalid_encoding" and "\udce9" not in err.raw
    err.raw.encode("utf-8")  # storable


@pytest.mark.parametrize("sid", ["a\u0000", "9" * (SIGNAL_ID_MAX_LEN + 1), "-a", "a b", "a/b", "ä", "a\n"])
def test_a_signal_id_outside_the_documented_charset_is_rejected(sid: str) -> None:
    err = _err(json.dumps(_base(id=sid)))
    assert "'id'" in err.reason and err.signal_id is None
    ok = parse_signal(json.dumps(_base(id="A-1.b_c:" + "9" * (SIGNAL_ID_MAX_LEN - 8))))  # the charset, at most
    assert isinstance(ok, Signal)


def test_the_id_pattern_is_what_engine_ids_documents() -> None:
    assert SIGNAL_ID_PATTERN == r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$" and SIGNAL_ID_MAX_LEN == 64


@pytest.mark.parametrize(("field", "value"), [("strategy", "mo\u0000m"), ("strategy", "a\tb"),
                                              ("exchange", "SM\u0000ART"),
                                              ("symbol", "\ud800")])
def test_strings_with_control_characters_are_refused(field: str, value: str) -> None:
    err = _err(json.dumps(_base(**{field: value})))
    assert f"'{field}'" in err.reason
    assert "\x00" not in err.raw
    err.raw.encode("utf-8")


def test_an_unknown_key_of_nul_gives_a_storable_reason() -> None:
    err = _err(json.dumps(_base(**{"\u0000": 1})))
    assert "\x00" not in err.reason and "\x00" not in err.raw
    err.reason.encode("utf-8")
    err.raw.encode("utf-8")


def test_a_refused_line_is_stored_bounded_with_a_marker() -> None:
    line = json.dumps(_base(strategy="x" * 10_000))
    err = _err(line)
    assert len(err.raw) < MAX_RAW_CHARS + 100 and err.raw.startswith(line[:100]) and "cut" in err.raw[MAX_RAW_CHARS:]


def test_a_line_longer_than_the_limit_is_rejected_as_line_too_long() -> None:
    assert _err(b"{" + b" " * MAX_LINE_BYTES + b"}").code == "line_too_long"


# -- whole sessions ----------------------------------------------------------------------------------
HOSTILE: list[bytes] = [
    json.dumps(_base(id="h1", ts="9999-12-31T23:59:59-05:00")).encode(),
    json.dumps(_base(id="h2", order_type="LMT", limit_price=1e308)).encode(),
    json.dumps(_base(id="h3", ttl_s=1e308)).encode(),
    json.dumps(_base(id="h4", ttl_s=1e12)).encode(),
    b'{"id": "h5", "symbol": "AAPL", "direction": "long", "strategy": "\xff\xfe", "win_prob": 0.6, "payoff": 1}',
    b'{"id": "h6", "id": "h7", "symbol": "AAPL", "direction": "flat"}',
    json.dumps(_base(id="h8", symbol=123)).encode(),
    json.dumps(_base(id="h\u0000")).encode(),
    b"\x00\x01\x02",
]


def _rows(url: str, session_id: int) -> tuple[list[Any], list[Any], list[Any]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        signals = conn.execute(select(SignalRow).where(SignalRow.session_id == session_id)).all()
        rejects = conn.execute(select(SignalRejectRow).where(SignalRejectRow.session_id == session_id)).all()
        orders = conn.execute(select(OrderRow).where(OrderRow.session_id == session_id)).all()
    engine.dispose()
    return list(signals), list(rejects), list(orders)


def _run_file(url: str, content: bytes, tmp_path: Path, **cfg: Any) -> SessionSummary:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(content)
    return PaperSession(load_settings(database_url=url, **cfg), seed=1).run_file(read_lines(path))


def test_hostile_lines_each_make_one_rejected_row_with_its_line_number_and_the_session_goes_on(
        db_url: str, tmp_path: Path) -> None:
    lines = [*HOSTILE, b"", signal_line("ok1").encode()]
    summary = _run_file(db_url, b"\n".join(lines) + b"\n", tmp_path)
    signals, rejects, orders = _rows(db_url, summary.session_id)
    assert len(signals) + len(rejects) == len(lines) - 1
    assert sorted(r.line_no for r in rejects) == list(range(1, len(HOSTILE) + 1))
    assert all(r.reason_code in PARSE_CODES for r in rejects)
    assert [(s.signal_id, s.status, s.line_no) for s in signals] == [("ok1", "accepted", len(lines))]
    assert [o.signal_id for o in orders] == ["ok1"]
    by_line = {r.line_no: r for r in rejects}
    assert "'ts'" in by_line[1].reason and "'limit_price'" in by_line[2].reason and "'ttl_s'" in by_line[4].reason
    assert by_line[5].reason_code == "invalid_encoding" and by_line[6].reason_code == "malformed_json"
    assert by_line[8].signal_id is None and "\\x00" in by_line[9].raw


def test_a_utf8_bom_at_the_start_of_a_file_is_accepted(sqlite_url: str, tmp_path: Path) -> None:
    content = b"\xef\xbb\xbf" + signal_line("b1").encode() + b"\n" + signal_line("b2", seconds=1).encode() + b"\n"
    summary = _run_file(sqlite_url, content, tmp_path)
    signals, rejects, _ = _rows(sqlite_url, summary.session_id)
    assert not rejects and [(s.signal_id, s.line_no) for s in signals] == [("b1", 1), ("b2", 2)]


def test_an_overlong_line_is_rejected_and_the_lines_after_it_are_read(sqlite_url: str, tmp_path: Path) -> None:
    long_line = b'{"id": "long", ' + b" " * (3 * MAX_LINE_BYTES) + b'"x": 1}'
    content = b"\n".join([long_line, signal_line("after").encode()]) + b"\n"
    summary = _run_file(sqlite_url, content, tmp_path)
    signals, rejects, _ = _rows(sqlite_url, summary.session_id)
    assert [(r.reason_code, r.line_no) for r in rejects] == [("line_too_long", 1)]
    assert len(rejects[0].raw) < MAX_RAW_CHARS + 100
    assert [(s.signal_id, s.line_no) for s in signals] == [("after", 2)]


def test_a_stored_valid_line_is_bounded(sqlite_url: str, tmp_path: Path) -> None:
    line = json.dumps(_base(id="pad")).replace(", ", "," + " " * 2000)
    summary = _run_file(sqlite_url, line.encode() + b"\n", tmp_path)
    signals, _, _ = _rows(sqlite_url, summary.session_id)
    assert signals[0].status == "accepted" and len(signals[0].payload) < MAX_RAW_CHARS + 100


def test_invalid_utf8_on_stdin_is_rejected_and_the_stream_goes_on(sqlite_url: str) -> None:
    now = datetime.now(UTC).isoformat()  # stdin runs on the wall clock
    data = b"\xef\xbb\xbf" + signal_line("s1", ts=now).encode() + b"\n\xff\xfe garbage\n\n" + \
        signal_line("s2", symbol="MSFT", ts=now).encode() + b"\n"
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
    session = PaperSession(load_settings(database_url=sqlite_url), seed=1)
    summary = asyncio.run(session.run_stream(stream))
    signals, rejects, _ = _rows(sqlite_url, summary.session_id)
    assert [(r.reason_code, r.line_no) for r in rejects] == [("invalid_encoding", 2)]
    assert sorted((s.signal_id, s.line_no) for s in signals) == [("s1", 1), ("s2", 4)]


def test_tradectl_paper_exits_0_on_a_file_of_hostile_lines(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join([*HOSTILE, signal_line("ok").encode()]) + b"\n")
    result = CliRunner().invoke(app, ["paper", "--signals", str(path), "--db", sqlite_url, "--json",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        n = len(conn.execute(select(SignalRow.signal_id)).all()) + len(conn.execute(select(SignalRejectRow.id)).all())
    assert n == len(HOSTILE) + 1


# -- property: arbitrary bytes and JSON through the whole path ----------------------------------------
EXTREME_NUMBERS = st.sampled_from([0, -1, 1, 1e308, -1e308, 1e-308, 5e-324, 1e12, 2**63, 10**30, 0.5, 100, 1e9,
                                   1e9 + 1, 2592000, 2592001, 123.456789012345678, 1e-7])
EXTREME_STRINGS = st.sampled_from(["", "\u0000", "\ud800", "a\u0000b", "9999-12-31T23:59:59-05:00",
                                   "0001-01-01T00:00:00+14:00", "2026-01-05T14:30:00", "2099-01-01T00:00:00Z",
                                   "1999-01-01T00:00:00Z", "AAPL", "long", "short", "flat", "LMT", "MKT", "STK",
                                   "USD", "x" * 200, "\u202e", "é", "NaN"])
ANY_VALUE = st.one_of(st.none(), st.booleans(), EXTREME_NUMBERS, EXTREME_STRINGS,
                      st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
                      st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                           max_size=2))
EXTREME_FOR: dict[str, Any] = {
    "ts": st.sampled_from(["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+14:00", "2099-01-01T00:00:00Z",
                           "1999-01-01T00:00:00Z", "2026-01-05T14:30:00\u0000", 1e308]),
    "id": st.sampled_from(["a\u0000", "\ud800", "x" * 65, "ok:1", 7]),
    "symbol": st.sampled_from([123, "A\u0000", "\ud800", "a" * 25, "brk.b"]),
}
for _name in ("limit_price", "ttl_s", "max_qty", "stop_distance", "payoff", "volatility", "expected_return",
              "win_prob"):
    EXTREME_FOR[_name] = EXTREME_NUMBERS
FIELDS = ["id", "ts", "strategy", "symbol", "direction", "win_prob", "payoff", "expected_return", "volatility",
          "stop_distance", "order_type", "limit_price", "sec_type", "currency", "exchange", "ttl_s", "max_qty"]


@st.composite
def json_line(draw: st.DrawFn) -> bytes:
    """A mostly valid signal with some fields replaced by extreme or wrong values (some lines stay valid)."""
    obj: dict[str, Any] = {"id": draw(st.sampled_from(["p1", "p2", "p3", "q" * 64])),
                           "ts": draw(st.sampled_from(["2026-01-05T14:30:01Z", "2026-01-05T14:30:02Z"])),
                           "symbol": draw(st.sampled_from(["AAPL", "MSFT"])),
                           "direction": draw(st.sampled_from(["long", "short", "flat"])),
                           "win_prob": 0.6, "payoff": 1.5}
    if draw(st.booleans()):
        obj.update(order_type="LMT", limit_price=draw(EXTREME_NUMBERS))
    for key in draw(st.lists(st.sampled_from([*FIELDS, "extra", "ts", "ts", "ttl_s", "limit_price"]), max_size=3)):
        if draw(st.booleans()):
            obj.pop(key, None)
        elif key in EXTREME_FOR and draw(st.integers(0, 2)):
            obj[key] = draw(EXTREME_FOR[key])
        else:
            obj[key] = draw(ANY_VALUE)
    text = json.dumps(obj, allow_nan=True, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


LINE = st.one_of(json_line(), st.binary(max_size=80), st.text(max_size=40).map(lambda t: t.encode("utf-8",
                                                                                                  "surrogatepass")))


def _non_blank(content: bytes) -> int:
    lines = content.split(b"\n")
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    return sum(1 for line in lines if line.strip())


@pytest.mark.timeout(120)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(lines=st.lists(LINE, min_size=1, max_size=8))
def test_arbitrary_bytes_and_json_make_one_row_per_line_and_no_order_from_an_invalid_line(
        db_url: str, tmp_path: Path, lines: list[bytes]) -> None:
    content = b"\n".join(lines)
    # Written in process: a hundred sessions would each start a writer process (~0.5 s), and what is written
    # is the same (tests/integration/test_background_writer.py).
    summary = _run_file(db_url, content, tmp_path, paper={"writer_process": False})
    signals, rejects, orders = _rows(db_url, summary.session_id)
    assert len(signals) + len(rejects) == _non_blank(content)
    assert not [r for r in rejects if r.reason_code == "internal_error"]
    assert not [s for s in signals if s.reason_code == "internal_error"]
    accepted = {s.signal_id for s in signals if s.status == "accepted"}
    assert {o.signal_id for o in orders} == accepted and len(orders) == len(accepted)
