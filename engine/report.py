"""Tables for people (rich). Scripts use ``--json`` instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the listing commands must not pay for importing the whole session
    from engine.session import SessionSummary


def _console() -> Console:
    return Console()


def print_summary(s: SessionSummary) -> None:
    c = _console()
    t = Table(title=f"paper session {s.session_id}", show_header=False, title_justify="left")
    t.add_column("", style="bold")
    t.add_column("", justify="right")
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
    t.add_row("realized P&L", f"{s.realized_pnl:,.2f}")
    t.add_row("unrealized P&L", f"{s.unrealized_pnl:,.2f}")
    t.add_row("commissions", f"{s.commissions:,.2f}")
    t.add_row("net P&L", f"{s.realized_pnl + s.unrealized_pnl - s.commissions:,.2f}")
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
        p = Table(title="positions", title_justify="left")
        for col in ("symbol", "quantity", "avg_cost", "mark", "unrealized_pnl", "realized_pnl"):
            p.add_column(col, justify="left" if col == "symbol" else "right")
        for row in s.positions:
            p.add_row(*(str(row[k]) for k in ("symbol", "quantity", "avg_cost", "mark", "unrealized_pnl",
                                                "realized_pnl")))
        c.print(p)
    for note in s.notes:
        c.print(f"[dim]{note}[/dim]")


def print_rows(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    t = Table(title=f"{title} ({len(rows)})", title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*("" if row.get(col) is None else str(row.get(col)) for col in columns))
    _console().print(t)


def print_status(payload: dict[str, Any]) -> None:
    c = _console()
    counts = payload["counts"]
    t = Table(title=f"account {payload['account']}", show_header=False, title_justify="left")
    t.add_column("", style="bold")
    t.add_column("")
    sig = counts["signals"]
    t.add_row("signals", f"accepted {sig['accepted']}, rejected {sig['rejected']}, "
                         f"invalid/duplicate {sig['invalid_or_duplicate']}")
    t.add_row("orders", ", ".join(f"{k} {v}" for k, v in sorted(counts["orders"].items())) or "0")
    t.add_row("open orders", str(payload["open_orders"]))
    t.add_row("fills", str(counts["fills"]))
    if counts.get("row_defects"):
        t.add_row("row defects", f"[red]{counts['row_defects']}[/red] refused row(s): `tradectl defects`")
    ks = payload["killswitches"]
    t.add_row("kill switches", ", ".join(f"{k}={v}" for k, v in sorted(ks.items())) or "all ACTIVE")
    last = payload.get("last_session")
    if last:
        t.add_row("last session", f"#{last['id']} {last['mode']} started {last['started_at']} "
                                  f"ended {last['ended_at'] or '(running or crashed)'}")
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


def print_audit(rows: list[dict[str, Any]]) -> None:
    t = Table(title=f"audit log ({len(rows)})", title_justify="left")
    for col in ("ts", "actor", "action", "scope", "what"):
        t.add_column(col, overflow="fold")
    for row in rows:
        ts = str(row["ts"])[:19].replace("T", " ")
        t.add_row(ts, str(row["actor"]), str(row["action"]), str(row.get("scope") or ""), audit_summary(row))
    _console().print(t)


def print_reconcile(report: dict[str, Any]) -> None:
    """The reconciliation report: what differs between our records and the broker's, and what it means."""
    console = Console()
    verb = "applied" if report["applied"] else "found (nothing changed: --apply writes it)"
    if report["clean"]:
        console.print(f"[green]reconciled: the database and the broker agree[/green] ({report['foreign_orders']} "
                      f"order(s) at the broker not placed by tradectl, left alone)")
        return
    console.print(f"[bold yellow]differences {verb}[/bold yellow]")
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
            print_rows(title, report[key], cols)
