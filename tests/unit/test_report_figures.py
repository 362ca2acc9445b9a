"""A session report's figures, computed from stored records: P&L, equity and drawdown, rejects, latency, slippage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal as D

from engine.domain import Fill, Side
from engine.report_figures import (
    CARRIED_IN,
    RejectRow,
    RejectSource,
    build_figures,
    equity_curve,
    latency_table,
    pnl_tables,
    price_path,
    reject_table,
    slippage_table,
)
from engine.report_html import thin
from repositories.report_data import LineReject, OrderRecord, ReportRecords, SignalRecord
from tests.conftest import T0

EQUITY = D(1_000_000)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signal(sid: str, seconds: float, ref: str | None, symbol: str = "AAPL", strategy: str = "momo",
           reason: str | None = None) -> SignalRecord:
    return SignalRecord(sid, at(seconds), strategy, symbol, "rejected" if reason else "accepted", reason,
                        None if ref is None else D(ref), None if reason else f"tc-{sid}")


def order(sid: str, seconds: float, side: Side = Side.BUY, symbol: str = "AAPL", strategy: str = "momo",
          acked: float | None = None) -> OrderRecord:
    return OrderRecord(f"tc-{sid}", sid, strategy, symbol, side, D(10), "Filled", at(seconds),
                       None if acked is None else at(acked))


def fill(sid: str, seconds: float, side: Side, qty: str, price: str, symbol: str = "AAPL",
         commission: str = "1") -> Fill:
    return Fill(f"x-{sid}-{seconds}", f"tc-{sid}", symbol, side, D(qty), D(price), D(commission), at(seconds))


def records(signals: Sequence[SignalRecord] = (), orders: Sequence[OrderRecord] = (), fills: Sequence[Fill] = (),
            opening: Sequence[Fill] = (), rejects: Sequence[LineReject] = ()) -> ReportRecords:
    return ReportRecords("test", [], list(signals), list(rejects), list(orders), list(fills), list(opening))


def round_trip() -> ReportRecords:
    """Buy 10 at 100, the market goes to 104, sell 10 at 110 (strategy momo), then an open buy of meanrev."""
    return records(
        [signal("a", 0, "100"), signal("m", 1, "104"), signal("b", 2, "110"),
         signal("c", 3, "90", symbol="MSFT", strategy="meanrev")],
        [order("a", 0), order("b", 2, Side.SELL), order("c", 3, symbol="MSFT", strategy="meanrev")],
        [fill("a", 0, Side.BUY, "10", "100"), fill("b", 2, Side.SELL, "10", "110"),
         fill("c", 3, Side.BUY, "5", "90", symbol="MSFT")],
    )


def test_realized_pnl_and_commissions_follow_average_cost_per_symbol() -> None:
    figures = build_figures(round_trip(), EQUITY)
    aapl = next(r for r in figures.by_symbol if r.name == "AAPL")
    assert (aapl.realized, aapl.commissions, aapl.net, aapl.fills) == (D("100.00"), D("2.00"), D("98.00"), 2)
    assert (aapl.bought, aapl.sold) == (D(10), D(10))
    assert figures.totals["realized_pnl"] == D("100.00") and figures.totals["commissions"] == D("3.00")


def test_open_positions_count_at_the_last_price_seen() -> None:
    recs = round_trip()
    recs.signals.append(signal("d", 4, "92", symbol="MSFT", strategy="meanrev", reason="at_target"))
    msft = next(r for r in build_figures(recs, EQUITY).by_symbol if r.name == "MSFT")
    assert msft.unrealized == D("10.00")  # 5 shares bought at 90, last seen at 92


def test_the_equity_curve_has_one_point_per_instant_with_marks_before_fills() -> None:
    recs = round_trip()
    curve = equity_curve(recs, EQUITY, price_path(recs))
    assert [p.ts for p in curve] == [at(0), at(1), at(2), at(3)]
    # 0: bought at 100, commission 1; 1: marked at 104; 2: sold at 110, commission 1; 3: MSFT bought, commission 1
    assert [p.equity for p in curve] == [D("999999.00"), D("1000039.00"), D("1000098.00"), D("1000097.00")]


def test_drawdown_is_equity_below_its_running_peak() -> None:
    recs = records([signal("a", 0, "100"), signal("m", 1, "120"), signal("n", 2, "90"), signal("o", 3, "130")],
                   [order("a", 0)], [fill("a", 0, Side.BUY, "10", "100", commission="0")])
    curve = equity_curve(recs, EQUITY, price_path(recs))
    assert [p.drawdown for p in curve] == [D(0), D(0), D("-300.00"), D(0)]
    assert curve[2].drawdown_pct == D("-0.0300")  # 300 below a peak of 1,000,200


def test_positions_carried_into_the_period_count_only_what_moved_inside_it() -> None:
    opening = [fill("old", -100, Side.BUY, "10", "50", commission="2")]
    recs = records([signal("m", 0, "60"), signal("n", 1, "65")], [], [], opening)
    figures = build_figures(recs, EQUITY)
    aapl = figures.by_symbol[0]
    assert (aapl.realized, aapl.unrealized, aapl.commissions) == (D("0.00"), D("50.00"), D("0.00"))
    assert [p.equity for p in figures.equity] == [D("999998.00") + 100, D("999998.00") + 150]
    assert [r.name for r in figures.by_strategy] == [CARRIED_IN]


def test_strategy_pnl_adds_up_to_symbol_pnl_when_strategies_share_a_symbol() -> None:
    recs = records(
        [signal("a", 0, "100"), signal("b", 1, "104", strategy="rev"), signal("c", 2, "108"),
         signal("m", 3, "101")],
        [order("a", 0), order("b", 1, Side.SELL, strategy="rev"), order("c", 2)],
        [fill("a", 0, Side.BUY, "10", "100"), fill("b", 1, Side.SELL, "4", "104"), fill("c", 2, Side.BUY, "6", "108")],
        [fill("old", -5, Side.BUY, "3", "95")])
    by_symbol, by_strategy = pnl_tables(recs, price_path(recs))
    assert {r.name for r in by_strategy} == {"momo", "rev", CARRIED_IN}
    strategies, symbols = sum((r.net for r in by_strategy), D(0)), sum((r.net for r in by_symbol), D(0))
    assert strategies.quantize(D("0.01")) == symbols.quantize(D("0.01"))
    assert sum(r.fills for r in by_strategy) == 3


def test_slippage_is_a_cost_when_buying_above_or_selling_below_the_reference() -> None:
    recs = records([signal("a", 0, "100"), signal("b", 1, "100")], [order("a", 0), order("b", 1, Side.SELL)],
                   [fill("a", 0, Side.BUY, "4", "100.10"), fill("a", 0.5, Side.BUY, "6", "100.20"),
                    fill("b", 1, Side.SELL, "10", "100.05")])
    buy, sell = slippage_table(recs)
    assert (buy.filled, buy.avg_price, buy.per_share, buy.bps, buy.cost) == (
        D(10), D("100.1600"), D("0.1600"), D("16.00"), D("1.60"))
    assert (sell.per_share, sell.bps, sell.cost) == (D("-0.0500"), D("-5.00"), D("-0.50"))  # sold above: a gain


def test_orders_without_a_reference_price_or_a_fill_have_no_slippage() -> None:
    recs = records([signal("a", 0, None), signal("b", 1, "100")], [order("a", 0), order("b", 1)],
                   [fill("a", 0, Side.BUY, "10", "100")])
    assert slippage_table(recs) == []


def test_latency_runs_from_the_signal_time_to_the_broker_and_to_the_first_fill() -> None:
    recs = records([signal("a", 0, "100"), signal("b", 1, "100")],
                   [order("a", 0.002, acked=0.030), order("b", 1.001)],
                   [fill("a", 0.250, Side.BUY, "4", "100"), fill("a", 0.120, Side.BUY, "6", "100")])
    a, b = latency_table(recs)
    assert (a.to_order_ms, a.to_broker_ms, a.to_fill_ms) == (2.0, 30.0, 120.0)
    assert (b.to_order_ms, b.to_broker_ms, b.to_fill_ms) == (1.0, None, None)


def test_rejects_are_counted_by_code_and_where_they_were_recorded_most_frequent_first() -> None:
    recs = records([signal("a", 0, "1", reason="no_edge"), signal("b", 1, "1", reason="no_edge"),
                    signal("c", 2, None, reason="killswitch"), signal("d", 3, "1")],
                   rejects=[LineReject(at(4), "malformed_json")])
    assert reject_table(recs) == [RejectRow("no_edge", RejectSource.SIGNAL, 2),
                                  RejectRow("killswitch", RejectSource.SIGNAL, 1),
                                  RejectRow("malformed_json", RejectSource.LINE, 1)]
    totals = build_figures(recs, EQUITY).totals
    assert (totals["signals"], totals["accepted"], totals["rejected"]) == (5, 1, 4)


def test_thinning_keeps_at_most_the_limit_with_the_ends_and_the_extremes() -> None:
    values = [(i * 7919) % 1000 for i in range(10_000)]
    kept = thin(values, 100, key=lambda v: v)
    assert len(kept) <= 100 and kept[0] == values[0] and kept[-1] == values[-1]
    assert min(kept) == 0 and max(kept) == 999
    assert thin(values[:50], 100) == values[:50]


def test_a_brackets_exit_is_neither_slippage_nor_latency_of_its_signal() -> None:
    stop = OrderRecord("te-sl-a-AAPL", "a", "momo", "AAPL", Side.SELL, D(10), "Filled", at(5), at(5), "tc-a")
    recs = records([signal("a", 0, "100")], [order("a", 0), stop],
                   [fill("a", 0, Side.BUY, "10", "100"),
                    Fill("x-stop", "te-sl-a-AAPL", "AAPL", Side.SELL, D(10), D("97.90"), D(1), at(5))])
    assert [r.client_order_id for r in slippage_table(recs)] == ["tc-a"]
    assert [r.client_order_id for r in latency_table(recs)] == ["tc-a"]
