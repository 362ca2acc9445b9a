"""Numbers in tables: money to the cent, prices to the tick, no exponents, no -0.00; tables fit the terminal, and
a narrow one squeezes identifiers and words, never numbers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
from rich.console import Console

from engine.formatting import average, cell, money, price, quantity, timestamp
from engine.report import print_rows, print_sessions, print_status


def test_money_is_to_the_cent_with_separators() -> None:
    assert money(D("-2155.789999999999999999999891")) == "-2,155.79"


def test_money_never_shows_negative_zero() -> None:
    assert money(D("-0.001")) == "0.00" and money(D("-0")) == "0.00"


def test_money_accepts_the_exact_text_json_carries() -> None:
    assert money("1234567.891") == "1,234,567.89"


def test_price_is_rounded_to_the_tick() -> None:
    assert price(D("404.5650000001")) == "404.57" and price(D("67.6")) == "67.60"


def test_price_keeps_the_places_of_a_finer_tick() -> None:
    assert price(D("1.087461"), tick=D("0.00005")) == "1.08745"


def test_quantity_is_never_in_exponent_form() -> None:
    assert quantity(D("1.6E+2")) == "160" and quantity(D("10.500")) == "10.5" and quantity(D("-0")) == "0"


def test_an_average_price_keeps_four_places_at_most() -> None:
    assert average(D("404.490819672131147540983607")) == "404.4908" and average(D("481.2100")) == "481.21"


def test_times_are_to_the_second_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert timestamp(datetime(2026, 1, 5, 15, 37, 26, 898000, tzinfo=paris)) == "2026-01-05 14:37:26"
    assert timestamp("2026-01-05T14:37:26.223000+00:00") == "2026-01-05 14:37:26"


def test_a_cell_is_printed_by_what_its_column_holds() -> None:
    assert cell("commission", D("2.3900")) == "2.39"
    assert cell("avg_cost", D("67.613174061433447098976109")) == "67.6132"
    assert cell("limit_price", None) == ""
    assert cell("symbol", "AAPL") == "AAPL"


def _render(draw: Callable[[Console], object], width: int = 80) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False)
    draw(console)
    return console.export_text().splitlines()


ORDER = {"client_order_id": "tc-demo-strategy-with-a-long-name-01998", "symbol": "MSFT", "side": "BUY",
         "quantity": "478", "order_type": "LMT", "limit_price": "289.9200000", "status": "PartiallyFilled",
         "filled_qty": "300", "avg_fill_price": "289.9133333333333333", "commission": "2.3900",
         "reason": "a long reason the broker gave for something that happened to this order"}
COLUMNS = ["client_order_id", "symbol", "side", "quantity", "order_type", "limit_price", "status", "filled_qty",
           "avg_fill_price", "commission", "reason"]


def test_a_wide_listing_fits_80_columns_by_leaving_out_the_least_useful_columns() -> None:
    lines = _render(lambda c: print_rows("orders", [ORDER] * 3, COLUMNS, ["order_type", "commission", "reason"],
                                         console=c))
    assert max(len(line) for line in lines) <= 80
    assert "order_type" not in lines[1] and "not shown at 80 columns: order_type" in "\n".join(lines)


def test_a_listing_cuts_no_number_or_id_short() -> None:
    text = "\n".join(_render(lambda c: print_rows("orders", [ORDER], COLUMNS,
                                                  ["order_type", "commission", "reason", "filled_qty"], console=c)))
    assert "289.9133" in text and "289.92" in text and "…" not in text


def test_status_fits_80_columns_with_a_hung_engine_and_a_failed_session() -> None:
    payload = {
        "account": "DU0000001",
        "engine": {"state": "hung", "pid": 4242, "host": "trading-host-01.example.internal",
                   "venue": "IB paper account", "session_id": 7, "heartbeat_age_s": 61.2,
                   "holder": "trading-host-01.example.internal:4242",
                   "detail": "engine is HUNG"},
        "counts": {"signals": {"accepted": 1, "rejected": 2, "invalid_or_duplicate": 3}, "orders": {"Filled": 1},
                   "fills": 1},
        "killswitches": {"global": "HALTED", "symbol:AAPL": "REDUCE_ONLY"},
        "open_orders": 0,
        "last_session": {"id": 7, "venue": "IB paper account", "state": "failed",
                         "started_at": datetime(2026, 1, 5, tzinfo=UTC).isoformat(), "ended_at": None,
                         "error": "QuotesFileError: q.csv:2: bad value in column 'bid': a very long explanation",
                         "summary": None},
    }
    lines = _render(lambda c: print_status(payload, console=c))
    assert max(len(line) for line in lines) <= 80
    assert "HUNG: pid 4242" in "\n".join(lines)


def test_status_counts_have_thousands_separators_as_the_summary_does() -> None:
    payload = {
        "account": "DU0000001", "engine": {"state": "not running"},
        "counts": {"signals": {"accepted": 1574, "rejected": 12034, "invalid_or_duplicate": 0},
                   "orders": {"Filled": 1574}, "fills": 2000},
        "killswitches": {}, "open_orders": 1200,
        "last_session": {"id": 3, "venue": "simulated", "state": "completed",
                         "started_at": datetime(2026, 1, 5, tzinfo=UTC).isoformat(), "ended_at": None,
                         "summary": {"fills": 2000, "realized_pnl": "1.00", "commissions": "2.00"}},
    }
    text = " ".join(" ".join(_render(lambda c: print_status(payload, console=c), width=120)).split())
    assert "accepted 1,574, rejected 12,034" in text and "Filled 1,574" in text
    assert "fills │ 2,000" in text and "open orders │ 1,200" in text and "2,000 fill(s)" in text


def test_json_rows_keep_full_precision_without_exponents() -> None:
    from repositories.listings import plain

    (row,) = plain([{"quantity": D("1.6E+2"), "avg_cost": D("404.490819672131147540983607")}])
    assert row == {"quantity": "160", "avg_cost": "404.490819672131147540983607"}


# -- narrow terminals ----------------------------------------------------------------------------------
FILL = {"exec_id": "0001f4e6.6575a2b1.01.01", "ts": "2026-01-05T14:37:26.223000+00:00",
        "client_order_id": "tc-demo-strategy-with-a-long-name-01998", "symbol": "MSFT", "side": "BUY",
        "quantity": "1234567", "price": "289.92", "commission": "2.39"}
FILL_COLUMNS = ["exec_id", "ts", "client_order_id", "symbol", "side", "quantity", "price", "commission"]
POSITION = {"symbol": "AAPL", "quantity": "-244", "avg_cost": "404.490819672131147540983607",
            "realized_pnl": "-2155.789999999999999999999891", "commissions": "308.35",
            "updated_at": "2026-01-05T14:37:26+00:00"}
POSITION_COLUMNS = ["symbol", "quantity", "avg_cost", "realized_pnl", "commissions", "updated_at"]
SESSION = {"id": 12, "venue": "IB paper account", "account": "DU0000001", "started_at": "2026-01-05T14:37:26+00:00",
           "state": "completed", "error": None,
           "summary": {"signals": 2000, "fills": 1999, "realized_pnl": "-1234567.891", "commissions": "2639.26"}}

LISTINGS: dict[str, Callable[[Console], object]] = {
    "orders": lambda c: print_rows("orders", [ORDER] * 2, COLUMNS,
                                   ["order_type", "commission", "filled_qty", "limit_price", "reason"],
                                   console=c, then_drop=["avg_fill_price", "side"]),
    "fills": lambda c: print_rows("fills", [FILL] * 2, FILL_COLUMNS, ["exec_id", "commission"], console=c,
                                  then_drop=["ts", "side"]),
    "positions": lambda c: print_rows("positions", [POSITION] * 2, POSITION_COLUMNS, ["updated_at"], console=c),
    "sessions": lambda c: print_sessions([SESSION] * 2, console=c),
}
NUMBERS = {  # each listing's numbers, by column, as a table prints them
    "orders": {"quantity": "478", "limit_price": "289.92", "filled_qty": "300", "avg_fill_price": "289.9133",
               "commission": "2.39"},
    "fills": {"quantity": "1234567", "price": "289.92", "commission": "2.39"},
    "positions": {"quantity": "-244", "avg_cost": "404.4908", "realized_pnl": "-2,155.79", "commissions": "308.35"},
    "sessions": {"id": "12", "signals": "2000", "fills": "1999", "realized": "-1,234,567.89",
                 "commissions": "2,639.26"},
}


def _cells(lines: list[str]) -> list[list[str]]:
    """The table's body as text, line by line and column by column (a cell folded onto further lines is in
    several)."""
    return [[part.strip() for part in line.split("│")[1:-1]] for line in lines if line.startswith("│")]


def _hidden(lines: list[str]) -> list[str]:
    """The columns the listing says it leaves out."""
    text = " ".join(line.strip() for line in lines)
    if "not shown at" not in text:
        return []
    names = text.split("not shown at", 1)[1].split(":", 1)[1].split("(", 1)[0]
    return [name.strip() for name in names.split(",")]


@pytest.mark.parametrize("width", [40, 60])
@pytest.mark.parametrize("listing", sorted(LISTINGS))
def test_a_squeezed_listing_fits_the_terminal(listing: str, width: int) -> None:
    lines = _render(LISTINGS[listing], width)
    assert max(len(line) for line in lines) <= width


@pytest.mark.parametrize("width", [40, 60])
@pytest.mark.parametrize("listing", sorted(LISTINGS))
def test_a_squeezed_listing_shows_each_number_whole_on_one_line_or_names_its_column_as_not_shown(
        listing: str, width: int) -> None:
    lines = _render(LISTINGS[listing], width)
    cells = {cell for row in _cells(lines) for cell in row}
    hidden = _hidden(lines)
    shown = {column: number for column, number in NUMBERS[listing].items() if column not in hidden}
    assert shown, "\n".join(lines)  # squeezed, a listing still shows numbers
    for column, number in shown.items():
        assert number in cells, f"{column} {number} is not whole on one line:\n" + "\n".join(lines)


def test_a_squeezed_listing_folds_a_long_id_onto_further_lines_whole() -> None:
    lines = _render(lambda c: print_rows("fills", [FILL], FILL_COLUMNS, ["exec_id", "commission"], console=c), 60)
    column = [row[1] for row in _cells(lines)]  # ts, client_order_id, ...
    assert len(column) > 1 and "".join(column) == FILL["client_order_id"]
    assert "…" not in "\n".join(lines)


def test_a_squeezed_listing_wraps_a_time_between_its_date_and_its_time() -> None:
    lines = _render(lambda c: print_rows("fills", [FILL], FILL_COLUMNS, ["exec_id", "commission"], console=c), 60)
    assert [row[0] for row in _cells(lines)][:2] == ["2026-01-05", "14:37:26"]


def test_a_listing_too_wide_even_squeezed_leaves_out_its_then_drop_columns_then_the_rightmost() -> None:
    lines = _render(LISTINGS["orders"], 40)  # PartiallyFilled is one word of 15: no room for it at 40
    assert {"avg_fill_price", "side", "status"} <= set(_hidden(lines))
    assert _cells(lines)[0][1:] == ["MSFT", "478"]


def test_a_listing_keeps_its_first_column_however_narrow_the_terminal() -> None:
    lines = _render(LISTINGS["positions"], 12)
    assert _cells(lines)[0] == ["AAPL"] and "quantity" in _hidden(lines)


def test_a_squeezed_listing_folds_a_word_too_long_for_the_terminal_rather_than_leave_its_column_out() -> None:
    halt = {"scope": "global", "state": "HALTED", "reason": "see https://wiki.example.internal/incidents/2026-01-05-a"}
    lines = _render(lambda c: print_rows("kill switches", [halt], ["scope", "state", "reason"], console=c), 40)
    assert _hidden(lines) == [] and "".join(row[2] for row in _cells(lines)) == halt["reason"].replace(" ", "")
