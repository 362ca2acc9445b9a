"""A session report as one self-contained HTML file: plotly charts with plotly.js embedded (it opens offline, from
a mail attachment as well as from disk), the summary and the P&L tables.

Charts show at most ``MAX_POINTS`` points a trace (evenly spaced, keeping the first, the last and the extremes);
the CSV exports keep every row. Figures are plotly's JSON (plain dicts, drawn by plotly.js): building them
through plotly's validated figure objects took most of a report's second.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from plotly.io import to_html
from plotly.offline import get_plotlyjs

from engine.domain import Side
from engine.report_figures import FillPoint, PnlRow, PricePoint, ReportFigures

MAX_POINTS = 5_000  # per trace: a browser draws this many SVG points without stalling
MAX_SYMBOL_CHARTS = 24  # symbols with the most fills get a chart of their own; the CSVs have every one
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
T = TypeVar("T")
Figure = dict[str, Any]

GREEN, RED, BLUE, GREY = "#1a9850", "#d73027", "#4575b4", "#888888"


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart of the page: its element id (what the rendering test looks for), heading and figure."""

    id: str
    heading: str
    figure: Figure | None  # None: nothing to draw in this period (the page says so)
    note: str = ""


def thin(items: Sequence[T], limit: int = MAX_POINTS, key: Callable[[T], Any] | None = None) -> list[T]:
    """At most ``limit`` items, evenly spaced, always with the first and the last (and, given ``key``, the
    smallest and largest by it): a drawdown's trough survives the thinning."""
    n = len(items)
    if n <= limit:
        return list(items)
    steps = limit - 2 if key else limit
    keep = {round(i * (n - 1) / (steps - 1)) for i in range(steps)}
    if key is not None:
        values = [key(x) for x in items]
        keep.add(values.index(min(values)))
        keep.add(values.index(max(values)))
    return [items[i] for i in sorted(keep)]


def _f(x: Decimal) -> float:
    return float(x)


def _t(ts: datetime) -> str:
    """A UTC time as plotly.js reads it (made here: plotly's JSON encoder is ten times slower at it)."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _figure(data: list[dict[str, Any]], height: int = 360, **layout: Any) -> Figure:
    grid = {"gridcolor": "#eeeeee", "zerolinecolor": "#cccccc", "automargin": True}
    base: dict[str, Any] = {
        "height": height, "margin": {"l": 60, "r": 20, "t": 30, "b": 40}, "hovermode": "closest",
        "legend": {"orientation": "h", "y": 1.08}, "paper_bgcolor": "white", "plot_bgcolor": "white",
        "xaxis": dict(grid), "yaxis": dict(grid)}
    for key, value in layout.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return {"data": data, "layout": base}


def equity_chart(fig_data: ReportFigures) -> Chart:
    points = thin(fig_data.equity, key=lambda p: p.drawdown)
    if not points:
        return Chart("chart-equity", "Equity and drawdown", None)
    x = [_t(p.ts) for p in points]
    data = [
        {"type": "scatter", "x": x, "y": [_f(p.equity) for p in points], "mode": "lines", "name": "equity",
         "line": {"color": BLUE, "simplify": False}, "xaxis": "x", "yaxis": "y"},
        {"type": "scatter", "x": x, "y": [_f(p.drawdown) for p in points], "mode": "lines", "name": "drawdown",
         "fill": "tozeroy", "line": {"color": RED, "simplify": False}, "xaxis": "x", "yaxis": "y2"},
    ]
    return Chart("chart-equity", "Equity and drawdown", _figure(
        data, 460, xaxis={"anchor": "y2"}, yaxis={"domain": [0.38, 1], "title": {"text": "equity"}},
        yaxis2={"domain": [0, 0.32], "title": {"text": "drawdown"}, "gridcolor": "#eeeeee", "automargin": True}))


def pnl_chart(chart_id: str, heading: str, rows: list[PnlRow]) -> Chart:
    if not rows:
        return Chart(chart_id, heading, None)
    bar = {"type": "bar", "x": [r.name for r in rows], "y": [_f(r.net) for r in rows], "name": "net P&L",
           "marker": {"color": [GREEN if r.net >= 0 else RED for r in rows]},
           "customdata": [[_f(r.realized), _f(r.unrealized), _f(r.commissions)] for r in rows],
           "hovertemplate": "%{x}: net %{y:,.2f}<br>realized %{customdata[0]:,.2f}<br>unrealized "
                            "%{customdata[1]:,.2f}<br>commissions %{customdata[2]:,.2f}<extra></extra>"}
    return Chart(chart_id, heading, _figure([bar], 320, yaxis={"title": {"text": "net P&L"}}))


def symbol_charts(prices: list[PricePoint], fills: list[FillPoint]) -> list[Chart]:
    """One chart per symbol: its price path, buys and sells on it."""
    counts: dict[str, int] = {}
    for f in fills:
        counts[f.symbol] = counts.get(f.symbol, 0) + 1
    symbols = sorted(counts, key=lambda s: (-counts[s], s))[:MAX_SYMBOL_CHARTS]
    paths: dict[str, list[PricePoint]] = {s: [] for s in symbols}
    for p in prices:
        if p.symbol in paths:
            paths[p.symbol].append(p)
    charts = []
    for symbol in sorted(symbols):
        path = thin(paths[symbol], key=lambda p: p.price)
        data: list[dict[str, Any]] = [
            {"type": "scatter", "x": [_t(p.ts) for p in path], "y": [_f(p.price) for p in path], "mode": "lines",
             "name": "price", "line": {"color": GREY, "width": 1, "simplify": False}}]
        for side, color, marker in ((Side.BUY, GREEN, "triangle-up"), (Side.SELL, RED, "triangle-down")):
            mine = thin([f for f in fills if f.symbol == symbol and f.side is side])
            data.append({
                "type": "scatter", "x": [_t(f.ts) for f in mine], "y": [_f(f.price) for f in mine], "mode": "markers",
                "name": side.value.lower(), "marker": {"color": color, "symbol": marker, "size": 8},
                "customdata": [[_f(f.quantity), f.strategy] for f in mine],
                "hovertemplate": f"{side.value} %{{customdata[0]}} @ %{{y}}<br>%{{customdata[1]}}<extra></extra>"})
        charts.append(Chart(f"chart-fills-{_slug(symbol)}", f"{symbol}: fills over the price path",
                            _figure(data, 300, yaxis={"title": {"text": "price"}})))
    return charts


def _slug(symbol: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in symbol)


def rejects_chart(fig_data: ReportFigures) -> Chart:
    rows = fig_data.rejects
    if not rows:
        return Chart("chart-rejects", "Reject reasons", None)
    bar = {"type": "bar", "orientation": "h", "x": [r.count for r in rows][::-1],
           "y": [f"{r.code} ({r.source})" for r in rows][::-1], "name": "rejections", "marker": {"color": RED}}
    return Chart("chart-rejects", "Reject reasons",
                 _figure([bar], max(240, 28 * len(rows) + 80), xaxis={"title": {"text": "signals or lines"}}))


def latency_chart(fig_data: ReportFigures) -> Chart:
    rows = fig_data.latency
    broker = thin([r for r in rows if r.to_broker_ms is not None])
    fill = thin([r for r in rows if r.to_fill_ms is not None])
    if not broker and not fill:
        return Chart("chart-latency", "Order latency from the signal", None)
    data = [
        {"type": "scatter", "x": [_t(r.signal_ts) for r in broker], "y": [r.to_broker_ms for r in broker],
         "mode": "markers", "name": "signal to broker", "marker": {"color": BLUE, "size": 5}},
        {"type": "scatter", "x": [_t(r.signal_ts) for r in fill], "y": [r.to_fill_ms for r in fill], "mode": "markers",
         "name": "signal to first fill", "marker": {"color": GREEN, "size": 5, "symbol": "x"}},
    ]
    return Chart("chart-latency", "Order latency from the signal", _figure(data, yaxis={"title": {"text": "ms"}}),
                 "From the signal's own timestamp to the broker's first answer, and to the order's first fill.")


def slippage_chart(fig_data: ReportFigures) -> Chart:
    rows = thin(fig_data.slippage, key=lambda r: r.bps)
    if not rows:
        return Chart("chart-slippage", "Slippage against the reference price", None)
    dots = {"type": "scatter", "x": [_t(r.ts) for r in rows], "y": [_f(r.bps) for r in rows], "mode": "markers",
            "name": "slippage (bps)", "marker": {"color": [RED if r.bps > 0 else GREEN for r in rows], "size": 5},
            "customdata": [[r.symbol, r.side.value, _f(r.filled), _f(r.ref_price), _f(r.avg_price)] for r in rows],
            "hovertemplate": "%{customdata[0]} %{customdata[1]} %{customdata[2]}: %{customdata[4]} against "
                             "%{customdata[3]}<br>%{y:.2f} bps<extra></extra>"}
    return Chart("chart-slippage", "Slippage against the reference price",
                 _figure([dots], yaxis={"title": {"text": "bps (positive: a cost)"}}),
                 "Each filled order's average price against the quote its signal was sized on.")


def charts(fig_data: ReportFigures) -> list[Chart]:
    """Every chart of the page, in its order."""
    return [
        equity_chart(fig_data),
        pnl_chart("chart-pnl-symbol", "P&L by symbol", fig_data.by_symbol),
        pnl_chart("chart-pnl-strategy", "P&L by strategy", fig_data.by_strategy),
        *symbol_charts(fig_data.prices, fig_data.fills),
        rejects_chart(fig_data),
        latency_chart(fig_data),
        slippage_chart(fig_data),
    ]


def _money(x: Decimal | int) -> str:
    return f"{x:,.2f}" if isinstance(x, Decimal) else f"{x:,}"


def _table(rows: list[PnlRow]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("", "fills", "bought", "sold", "realized", "unrealized",
                                              "commissions", "net"))
    body = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.fills:,}</td><td>{r.bought:,}</td><td>{r.sold:,}</td>"
        f"<td>{_money(r.realized)}</td><td>{_money(r.unrealized)}</td><td>{_money(r.commissions)}</td>"
        f"<td class='{'pos' if r.net >= 0 else 'neg'}'>{_money(r.net)}</td></tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ddd}
.sub{color:#666;margin-bottom:16px}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:110px}
.card b{display:block;font-size:18px}.card span{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{padding:3px 10px;text-align:right;
border-bottom:1px solid #eee}td:first-child,th:first-child{text-align:left}.pos{color:#1a9850}.neg{color:#d73027}
.note{color:#666;font-size:12px}.empty{color:#888;font-style:italic}
"""


def render(fig_data: ReportFigures, subtitle: str, generated: datetime | None = None) -> str:
    """The whole page."""
    t = fig_data.totals
    drawdown = min((p.drawdown for p in fig_data.equity), default=Decimal(0))
    cards = [("net P&L", t["net_pnl"]), ("realized", t["realized_pnl"]), ("unrealized", t["unrealized_pnl"]),
             ("commissions", t["commissions"]), ("max drawdown", drawdown), ("slippage cost", t["slippage_cost"]),
             ("signals", t["signals"]), ("accepted", t["accepted"]), ("rejected", t["rejected"]),
             ("orders", t["orders"]), ("fills", t["fills"])]
    parts = [f"<div class='card'><b>{_money(v)}</b><span>{k}</span></div>" for k, v in cards]
    body = [f"<h1>tradectl report: {html.escape(fig_data.title)}</h1>",
            f"<div class='sub'>{html.escape(subtitle)}; generated "
            f"{(generated or datetime.now(UTC)).strftime('%Y-%m-%d %H:%M:%S UTC')}</div>",
            f"<div class='cards'>{''.join(parts)}</div>"]
    for chart in charts(fig_data):
        body.append(f"<h2>{html.escape(chart.heading)}</h2>")
        if chart.figure is None:
            body.append(f"<p class='empty' id='{chart.id}'>nothing to show in this period</p>")
        else:
            body.append(to_html(chart.figure, full_html=False, include_plotlyjs=False, div_id=chart.id,
                                config=PLOT_CONFIG, validate=False))
        if chart.note:
            body.append(f"<p class='note'>{html.escape(chart.note)}</p>")
        if chart.id == "chart-pnl-symbol":
            body.append(_table(fig_data.by_symbol))
        elif chart.id == "chart-pnl-strategy":
            body.append(_table(fig_data.by_strategy))
            body.append("<p class='note'>Each strategy's own positions, replayed from its fills alone; the net "
                        "adds up to the symbols' net.</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>tradectl report: {html.escape(fig_data.title)}</title><style>{_CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(body) + "</body></html>")
