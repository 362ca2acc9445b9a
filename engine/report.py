"""Tables for people (rich). Scripts use ``--json`` instead.

Numbers go through engine/formatting.py (money to the cent, prices to the tick); a table is fitted to the
terminal (80 columns when it is not one): the least useful columns of a listing go first, then identifiers
fold and words wrap inside their cells; numbers are never cut or wrapped (``fit_table``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from engine.formatting import ColumnKind, cell, kind_of, money, timestamp

if TYPE_CHECKING:  # the listing commands must not pay for importing the whole session
    from engine.session import SessionSummary

_CELL_FRAME = 3  # a cell's padding and its border
ID_FLOOR = 10  # an identifier is folded to no narrower than this before columns are left out
HEADER_FLOOR = 4  # nor a header over an empty or narrow column
STEPS = 5  # of squeezing (``_Measure.floors``)


def _console() -> Console:
    return Console()


def _frame(n_columns: int) -> int:
    """What a table of ``n_columns`` takes besides its cells' text: padding and borders."""
    return n_columns * _CELL_FRAME + 1


@dataclass(frozen=True, slots=True)
class _Measure:
    """One column's text widths: as it is (``natural``), its widest cell and its longest word."""

    kind: ColumnKind
    natural: int
    header: int
    widest: int
    word: int

    def floors(self) -> tuple[int, ...]:
        """How narrow the column may go at each step of squeezing a table (never wider than it is):
        1. words wrap inside their cells, a time between its date and its time (the header whole);
        2. an identifier folds onto further lines;
        3. a header folds over its numbers (the numbers whole);
        4. a header folds over its words (each word whole);
        5. a word longer than an identifier's fold (a path, a URL) folds like one.
        """
        n = self.natural
        header_floor = min(self.header, HEADER_FLOOR)
        if self.kind is ColumnKind.ID:
            folded = min(n, ID_FLOOR)
            return n, folded, folded, folded, folded
        if self.kind is ColumnKind.NUMBER:
            whole = min(n, max(self.widest, header_floor))
            return n, n, whole, whole, whole
        wrapped = min(n, max(self.word, self.header))
        words = min(n, max(self.word, header_floor))
        return wrapped, wrapped, wrapped, words, min(words, max(ID_FLOOR, header_floor))


def _measure(column: str, cells: list[str]) -> _Measure:
    widest = max((len(c) for c in cells), default=0)
    word = max((len(w) for c in cells for w in c.split()), default=0)
    return _Measure(kind_of(column), max(len(column), widest), len(column), widest, word)


def _squeeze(measures: dict[str, _Measure], room: int) -> dict[str, int] | None:
    """Each column's width so that together they take at most ``room``, squeezing step by step (``_Measure.floors``),
    the widest first at each step; None when even the last step leaves them too wide."""
    widths = {c: m.natural for c, m in measures.items()}
    excess = sum(widths.values()) - room
    for step in range(STEPS):
        floors = {c: m.floors()[step] for c, m in measures.items()}
        while excess > 0:
            over = [c for c in widths if widths[c] > floors[c]]
            if not over:
                break
            widest = max(over, key=lambda c: widths[c])
            widths[widest] -= 1
            excess -= 1
        if excess <= 0:
            return widths
    return None


@dataclass(frozen=True, slots=True)
class TableFit:
    """The columns a listing shows, in order, with their text width; and those it leaves out."""

    widths: dict[str, int]
    hidden: list[str]


def fit_table(rows: list[dict[str, Any]], columns: Sequence[str], drop_first: Sequence[str], width: int,
              then_drop: Sequence[str] = ()) -> TableFit:
    """Fit a listing to ``width``. While it is wider as it is, the columns of ``drop_first`` leave, in that order.
    Then what is left is squeezed: words wrap, identifiers fold onto further lines, headers fold, and last a word
    longer than an identifier's fold; a number is never cut or wrapped, nor a time broken. When even that is too
    wide, more columns leave: those of ``then_drop``, then the rightmost, never the first."""
    cells = {c: [cell(c, row.get(c)) for row in rows] for c in columns}
    measures = {c: _measure(c, cells[c]) for c in columns}
    shown = list(columns)
    for column in drop_first:
        if _frame(len(shown)) + sum(measures[c].natural for c in shown) <= width:
            break
        if column in shown:
            shown.remove(column)
    while True:
        widths = _squeeze({c: measures[c] for c in shown}, width - _frame(len(shown)))
        if widths is not None:
            break
        if len(shown) == 1:  # one column wider than the terminal: shown whole all the same
            widths = {shown[0]: measures[shown[0]].floors()[-1]}
            break
        shown.remove(next((c for c in then_drop if c in shown), shown[-1]))
    return TableFit(widths, [c for c in columns if c not in widths])


def print_rows(title: str, rows: list[dict[str, Any]], columns: Sequence[str], drop_first: Sequence[str] = (),
               console: Console | None = None, then_drop: Sequence[str] = ()) -> None:
    """A listing: numbers formatted by their column, fitted to the console's width (``fit_table``)."""
    c = console or _console()
    fit = fit_table(rows, columns, drop_first, c.width, then_drop)
    t = Table(title=f"{title} ({len(rows)})", title_justify="left")
    for col, w in fit.widths.items():  # a fixed width each: rich would squeeze numbers too
        t.add_column(col, justify="right" if kind_of(col) is ColumnKind.NUMBER else "left", width=w,
                     overflow="fold")
    for row in rows:
        t.add_row(*(cell(col, row.get(col)) for col in fit.widths))
    c.print(t)
    if fit.hidden:
        c.print(f"[dim]not shown at {c.width} columns: {', '.join(fit.hidden)} (a wider terminal, or --json)[/dim]")


def _title(s: SessionSummary) -> str:
    account = f", account {s.account}" if s.account else ""
    return f"session {s.session_id}: {s.venue}{account}"


def print_summary(s: SessionSummary, console: Console | None = None) -> None:
    """A session's own counts and money first, then the account's totals (what earlier sessions left)."""
    c = console or _console()
    t = Table(title=_title(s), show_header=False, title_justify="left")
    t.add_column("", style="bold")
    t.add_column("", justify="right", overflow="fold")
    t.add_row("signals", str(s.signals))
    t.add_row("  accepted (made an order)", str(s.accepted))
    t.add_row("  rejected by sizing/risk", str(s.rejected))
    t.add_row("  invalid", str(s.invalid))
    t.add_row("  duplicate id", str(s.duplicates))
    t.add_row("orders", ", ".join(f"{k} {v}" for k, v in sorted(s.orders.items())) or "0")
    t.add_row("  cancelled at end of input", str(s.cancelled_at_end))
    t.add_row("fills", str(s.fills))
    t.add_row("kill switches", ", ".join(f"{k} {v}" for k, v in s.killswitches.items()) or "all ACTIVE")
    t.add_row("  automatic trips / operator changes", f"{s.trips} / {s.operator_changes}")
    t.add_row("realized P&L (this session)", money(s.realized_pnl))
    t.add_row("commissions (this session)", money(s.commissions))
    t.add_row("net (this session)", money(s.realized_pnl - s.commissions))
    t.add_row("account realized P&L", money(s.account_realized_pnl))
    t.add_row("account unrealized P&L", money(s.unrealized_pnl))
    t.add_row("account commissions", money(s.account_commissions))
    t.add_row("account net P&L", money(s.account_realized_pnl + s.unrealized_pnl - s.account_commissions))
    t.add_row("outcome", s.outcome)
    t.add_row("elapsed", f"{s.elapsed_s:.3f}s")
    c.print(t)
    if s.reject_reasons:
        r = Table(title="top reject reasons", title_justify="left")
        r.add_column("reason")
        r.add_column("signals", justify="right")
        for code, n in list(s.reject_reasons.items())[:8]:
            r.add_row(code, str(n))
        c.print(r)
    if s.positions:
        print_rows("account positions", s.positions,
                   ["symbol", "quantity", "avg_cost", "mark", "unrealized_pnl", "realized_pnl"], console=c)
    for note in s.notes:
        c.print(f"[dim]{note}[/dim]")
    if s.database_signals:
        totals = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in s.database_signals.items())
        c.print(f"[dim]signals in the database, every session: {totals}[/dim]")


def _engine_line(engine: dict[str, Any]) -> str:
    state = engine["state"]
    if state == "not running":
        return f"not running ({engine['detail']})" if engine.get("holder") else "not running"
    age = engine.get("heartbeat_age_s")
    line = (f"{state.upper() if state == 'hung' else state}: pid {engine['pid']} on {engine['host']}, "
            f"{engine['venue']}, session {engine['session_id']}, heartbeat {age:.1f}s ago")
    return f"[bold red]{line}[/bold red]" if state == "hung" else line


def _session_line(last: dict[str, Any]) -> str:
    state = last["state"]
    line = f"#{last['id']} {last['venue']}: {state}, started {timestamp(last['started_at'])}"
    if last.get("ended_at"):
        line += f", ended {timestamp(last['ended_at'])}"
    if last.get("error"):
        line += f": {last['error']}"
    summary = last.get("summary") or {}
    if "fills" in summary and state != "failed":
        fills = summary.get("fills")
        count = f"{fills:,}" if isinstance(fills, int) else fills
        line += (f"; {count} fill(s), realized {money(summary.get('realized_pnl'))}, "
                 f"commissions {money(summary.get('commissions'))}")
    return f"[red]{line}[/red]" if state in ("failed", "hung") else line


def print_status(payload: dict[str, Any], console: Console | None = None) -> None:
    c = console or _console()
    counts = payload["counts"]
    t = Table(title=f"account {payload['account']}", show_header=False, title_justify="left")
    t.add_column("", style="bold", no_wrap=True)
    t.add_column("", overflow="fold")
    t.add_row("engine", _engine_line(payload["engine"]))
    broker = payload["engine"].get("broker")
    if broker:
        t.add_row("broker", _broker_line(broker))
    sig = counts["signals"]
    t.add_row("signals", f"accepted {sig['accepted']:,}, rejected {sig['rejected']:,}, "
                         f"invalid/duplicate {sig['invalid_or_duplicate']:,}")
    t.add_row("orders", ", ".join(f"{k} {v:,}" for k, v in sorted(counts["orders"].items())) or "0")
    t.add_row("open orders", f"{payload['open_orders']:,}")
    t.add_row("fills", f"{counts['fills']:,}")
    if counts.get("row_defects"):
        t.add_row("row defects", f"[red]{counts['row_defects']}[/red] refused row(s): `tradectl defects`")
    ks = payload["killswitches"]
    t.add_row("kill switches", ", ".join(f"{k}={v}" for k, v in sorted(ks.items())) or "all ACTIVE")
    last = payload.get("last_session")
    if last:
        t.add_row("last session", _session_line(last))
    c.print(t)


def _broker_line(state: dict[str, Any]) -> str:
    """The engine's broker link as its heartbeat last wrote it: connected, and each gateway condition that is
    not fine, named (IB servers, a data farm, a competing session, a login waiting)."""
    link = f"{state.get('broker', 'broker')} " + ("connected" if state.get("connected") else "[red]DISCONNECTED[/red]")
    gateway = state.get("gateway") or {}
    bad = [f"{name}: {c.get('detail') or 'down'}" for name, c in gateway.items() if not c.get("ok")]
    if bad:
        return f"{link}; gateway [red]{'; '.join(bad)}[/red]"
    return f"{link}; gateway: all {len(gateway)} conditions fine" if gateway else link


def print_sessions(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    """``tradectl sessions``: one line per session, with its own fills and money."""
    c = console or _console()
    flat = []
    for r in rows:
        s = r.get("summary") or r.get("so_far") or {}  # a running session: its numbers so far
        flat.append({"id": r["id"], "venue": r["venue"], "account": r["account"], "started_at": r["started_at"],
                     "state": r["state"] + (f": {r['error']}" if r.get("error") else ""),
                     "signals": s.get("signals"), "fills": s.get("fills"),
                     "realized": s.get("realized_pnl"), "commissions": s.get("commissions")})
    print_rows("sessions", flat, ["id", "started_at", "venue", "account", "state", "signals", "fills", "realized",
                                  "commissions"], drop_first=["account", "signals", "commissions"], console=c,
               then_drop=["venue", "started_at"])  # narrower: which session, its state, fills and P&L


def print_settings(rows: list[dict[str, Any]], heading: str, console: Console | None = None) -> None:
    """``tradectl config show``: key, value and where it came from (what differs from the default in bold)."""
    import json

    c = console or _console()
    c.print(heading)
    t = Table(title=f"settings ({len(rows)})", title_justify="left")
    t.add_column("key", no_wrap=True)
    t.add_column("value", overflow="fold", ratio=1)
    t.add_column("from", overflow="fold", max_width=24)
    for row in rows:
        value = row["value"] if isinstance(row["value"], str) else json.dumps(row["value"])
        origin = row["origin"] + (f" ({row['where']})" if row.get("where") else "")
        style = "" if row["origin"] == "default" else "bold"
        t.add_row(row["key"], value, origin, style=style)
    c.print(t)


def audit_summary(row: dict[str, Any]) -> str:
    """One line per audit record, in an operator's words."""
    import json

    detail = row.get("detail")
    try:
        d = json.loads(detail) if isinstance(detail, str) else (detail or {})
    except ValueError:
        return str(detail)
    if not isinstance(d, dict):
        return str(d)
    if row["action"] == "killswitch.ack":
        text = f"event #{d.get('event_id')}: {d.get('cancelled')} cancelled, {d.get('flatten_orders')} closing sent"
        return text + (f" ({d['detail']})" if d.get("detail") else "")
    if row["action"].startswith("killswitch."):
        flat = " +flatten" if d.get("flatten") else ""
        return f"#{d.get('event_id')} {d.get('from')} -> {d.get('to')}{flat}: {d.get('reason')}"
    return json.dumps(d)


def print_audit(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    t = Table(title=f"audit log ({len(rows)})", title_justify="left")
    for col in ("ts", "actor", "action", "scope", "what"):
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(timestamp(row["ts"]), str(row["actor"]), str(row["action"]), str(row.get("scope") or ""),
                  audit_summary(row))
    (console or _console()).print(t)


def print_reconcile(report: dict[str, Any], console: Console | None = None) -> None:
    """The reconciliation report: what differs between our records and the broker's, and what it means."""
    c = console or _console()
    verb = "applied" if report["applied"] else "found (nothing changed: --apply writes it)"
    if report["clean"]:
        c.print(f"[green]reconciled: the database and the broker agree[/green] ({report['foreign_orders']} "
                f"order(s) at the broker not placed by tradectl, left alone)")
        return
    c.print(f"[bold yellow]differences {verb}[/bold yellow]")
    for title, key, cols in (
        ("orders at the broker, missing here (adopt)", "adopt_orders",
         ["client_order_id", "symbol", "side", "quantity", "filled", "status"]),
        ("open orders here the broker has finished or never saw (close)", "close_orders",
         ["client_order_id", "status", "reason"]),
        ("executions missing here (recorded as inferred)", "adopt_fills",
         ["exec_id", "client_order_id", "symbol", "side", "quantity", "price"]),
        ("position breaks after those fills (the symbol halts)", "position_breaks",
         ["symbol", "ours", "theirs", "difference"]),
    ):
        if report[key]:
            print_rows(title, report[key], cols, console=c)

