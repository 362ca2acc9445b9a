"""A session report rendered by headless Chromium: every chart is drawn with all its data points.

The page is loaded from disk (no network), its scripts run, and the DOM Chromium dumps is read: each chart's
SVG must hold one marker per fill, slippage or latency row, one bar per symbol, strategy and reject reason,
and one line vertex per equity and price point. Chromium is Debian's package; `scripts/test` installs it.
Outside CI a machine without it skips these tests; under CI=true that fails them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from itertools import islice

import pytest

from engine.config import load_settings
from engine.report_figures import ReportFigures
from engine.report_html import thin
from engine.session import PaperSession
from engine.session_report import write_report
from engine.sources import DEMO_SIGNALS
from repositories.db import make_engine
from repositories.report_data import ReportData

pytestmark = pytest.mark.slow
RENDER_TIMEOUT_S = 90


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Debian's chromium is not installed (scripts/test installs it: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " and CI=true: the report's rendering must be tested")
        pytest.skip(message)
    return found


@dataclass
class Trace:
    kind: str  # "scatter" or "bars"
    line_vertices: int = 0
    markers: int = 0
    bars: int = 0


@dataclass
class Drawn:
    traces: list[Trace] = field(default_factory=list)


class ChartReader(HTMLParser):
    """Each chart div's traces (by the div's element id) with what plotly drew inside each trace's group: line
    vertices, marker paths, bars (legend swatches are outside those groups and not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, Drawn] = {}
        self._stack: list[tuple[str, str | None, Trace | None]] = []  # (tag, chart opened here, trace opened here)
        self._chart: Drawn | None = None
        self._trace: Trace | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        chart_id = a.get("id") or ""
        opened_chart = opened_trace = None
        if tag == "div" and chart_id.startswith("chart-") and "plotly-graph-div" in classes:
            opened_chart = chart_id
            self._chart = self.charts[chart_id] = Drawn()
        elif self._chart is not None and tag == "g" and "trace" in classes and (
                "scatter" in classes or "bars" in classes):
            opened_trace = self._trace = Trace("bars" if "bars" in classes else "scatter")
            self._chart.traces.append(opened_trace)
        elif self._trace is not None:
            if tag == "path" and "js-line" in classes:
                self._trace.line_vertices += len(re.findall(r"[ML]", a.get("d") or ""))
            elif tag == "path" and "point" in classes:
                self._trace.markers += 1
            elif tag == "g" and "point" in classes:
                self._trace.bars += 1
        self._stack.append((tag, opened_chart, opened_trace))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            open_tag, opened_chart, opened_trace = self._stack.pop()
            if opened_chart is not None:
                self._chart = None
            if opened_trace is not None:
                self._trace = None
            if open_tag == tag:
                break


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReportFigures, dict[str, Drawn]]]:
    browser = chromium()
    d = tmp_path_factory.mktemp("render")
    settings = load_settings(database_url=f"sqlite:///{d / 'r.db'}", paper={"latency_ms": 3, "slippage_ticks": 1})
    with DEMO_SIGNALS.open(encoding="utf-8") as fh:
        PaperSession(settings, seed=5).run_file([line.rstrip("\n") for line in islice(fh, 500)])
    db = make_engine(settings.database_url, create=False)
    written = write_report(ReportData(db), settings, html=d / "report.html")
    db.dispose()
    assert written.html is not None
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={d / 'profile'}", "--virtual-time-budget=15000", "--dump-dom",
         written.html.resolve().as_uri()],
        capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    reader = ChartReader()
    reader.feed(done.stdout)
    yield written.figures, reader.charts


def test_every_chart_on_the_page_is_drawn(rendered: tuple[ReportFigures, dict[str, Drawn]]) -> None:
    figures, charts = rendered
    symbols = sorted({f.symbol for f in figures.fills})
    expected = {"chart-equity", "chart-pnl-symbol", "chart-pnl-strategy", "chart-rejects", "chart-latency",
                "chart-slippage", *(f"chart-fills-{s}" for s in symbols)}
    assert set(charts) == expected
    assert all(c.traces for c in charts.values())


def test_the_equity_and_drawdown_lines_have_a_vertex_per_point(
        rendered: tuple[ReportFigures, dict[str, Drawn]]) -> None:
    figures, charts = rendered
    equity, drawdown = charts["chart-equity"].traces
    n = len(thin(figures.equity, key=lambda p: p.drawdown))
    assert n > 100 and equity.line_vertices == n and drawdown.line_vertices == n


def test_pnl_charts_have_a_bar_per_symbol_and_per_strategy(rendered: tuple[ReportFigures, dict[str, Drawn]]) -> None:
    figures, charts = rendered
    assert [t.bars for t in charts["chart-pnl-symbol"].traces] == [len(figures.by_symbol)]
    assert [t.bars for t in charts["chart-pnl-strategy"].traces] == [len(figures.by_strategy)]


def test_each_symbols_chart_has_its_price_path_and_every_fill(rendered: tuple[ReportFigures, dict[str, Drawn]]) -> None:
    figures, charts = rendered
    for symbol in sorted({f.symbol for f in figures.fills}):
        price, buys, sells = charts[f"chart-fills-{symbol}"].traces
        path = [p for p in figures.prices if p.symbol == symbol]
        mine = [f for f in figures.fills if f.symbol == symbol]
        assert price.line_vertices == len(path), symbol
        assert buys.markers == sum(f.side.value == "BUY" for f in mine), symbol
        assert sells.markers == sum(f.side.value == "SELL" for f in mine), symbol


def test_the_reject_chart_has_a_bar_per_reason(rendered: tuple[ReportFigures, dict[str, Drawn]]) -> None:
    figures, charts = rendered
    assert [t.bars for t in charts["chart-rejects"].traces] == [len(figures.rejects)]
    assert len(figures.rejects) >= 3


def test_latency_and_slippage_have_a_marker_per_order(rendered: tuple[ReportFigures, dict[str, Drawn]]) -> None:
    figures, charts = rendered
    to_broker, to_fill = charts["chart-latency"].traces
    assert to_broker.markers == sum(r.to_broker_ms is not None for r in figures.latency)
    assert to_fill.markers == sum(r.to_fill_ms is not None for r in figures.latency) > 0
    assert [t.markers for t in charts["chart-slippage"].traces] == [len(figures.slippage)]
    assert any(r.bps > 0 for r in figures.slippage)  # one tick of slippage: a cost is drawn
