"""What rows mean, shared by the SQLAlchemy repositories and the plain driver (``repositories/direct.py``):
the same domain objects from the same row, the same audit record for the same kill-switch change."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.domain import Instrument, KillState, Order, OrderIntent, OrderStatus, OrderType, Position, Side, TimeInForce

KILLSWITCH_CHANNEL = "tradectl_killswitch"  # PostgreSQL NOTIFY channel; the payload is the account


def killswitch_audit(event_id: int, from_state: KillState, to_state: KillState, reason: str,
                     flatten: bool) -> tuple[str, str]:
    """The audit record's action and detail for kill-switch event ``event_id``."""
    return f"killswitch.{to_state.value.lower()}", json.dumps(
        {"event_id": event_id, "from": from_state.value, "to": to_state.value, "reason": reason, "flatten": flatten})


def order_from_row(r: Any) -> Order:
    """A domain order from an ``orders`` row (a mapping)."""
    intent = OrderIntent(
        r["client_order_id"], r["signal_id"], r["strategy"],
        Instrument(r["symbol"], r["sec_type"], r["currency"], r["exchange"]), Side(r["side"]), r["quantity"],
        OrderType(r["order_type"]), r["limit_price"], r["stop_price"], TimeInForce(r["tif"]), r["created_at"],
        parent_id=r["parent_order_id"], oca_group=r["oca_group"],
    )
    return Order(intent, r["created_at"], OrderStatus(r["status"]), r["filled_qty"], r["avg_fill_price"],
                 r["commission"], r["broker_order_id"], r["perm_id"], r["reason"])


def position_from_row(r: Any) -> Position:
    """A domain position from a ``positions`` row (a mapping)."""
    return Position(r["symbol"], r["quantity"], r["avg_cost"], r["realized_pnl"], r["commissions"])


def database_totals(signals: dict[str, int], invalid: int, orders: dict[str, int], fills: int, defects: int,
                    reasons: list[Any]) -> dict[str, Any]:
    """``status``'s totals from its counting queries: signals by outcome, orders by status, fills, defects, and
    the reject reasons of signals and invalid lines together, most frequent first."""
    top: dict[str, int] = {}
    for code, n in reasons:
        key = code or "unknown"
        top[key] = top.get(key, 0) + n
    return {
        "signals": {"accepted": signals.get("accepted", 0), "rejected": signals.get("rejected", 0),
                    "invalid_or_duplicate": invalid},
        "orders": orders,
        "fills": fills,
        "row_defects": defects,
        "reject_reasons": dict(sorted(top.items(), key=lambda kv: -kv[1])),
    }


_JSON_TEXT = ("payload", "row")  # columns holding a JSON document as text: objects in a listing, not strings


def _document(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:  # a line that was never JSON (kept as it came)
        return text


def plain(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: Decimals as strings (exact, never ``1.6E+2``), datetimes as ISO 8601, stored
    JSON documents (a signal's payload, a refused row) as objects."""
    out = []
    for row in rows:
        item = {k: (f"{v:f}" if isinstance(v, Decimal) else v.isoformat() if isinstance(v, datetime) else v)
                for k, v in row.items()}
        for key in _JSON_TEXT:
            if key in item:
                item[key] = _document(item[key])
        out.append(item)
    return out


def lock_key(account: str) -> int:
    """A stable 63-bit advisory-lock key per account."""
    return int.from_bytes(hashlib.blake2b(f"tradectl:{account}".encode(), digest_size=8).digest()) >> 1


# Whether a connection holds the account's advisory lock in this database (advisory locks are per database: a
# rehearsal database on the same server, trading the same account, does not hold this one). The key's two
# halves bind as (hi, lo) in each driver's paramstyle: ``ADVISORY_LOCK_HELD.format(hi=":hi", lo=":lo")``.
ADVISORY_LOCK_HELD = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                      "AND classid::bigint = {hi} AND objid::bigint = {lo} AND objsubid = 1 "
                      "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def lock_key_halves(account: str) -> tuple[int, int]:
    """The account's lock key as pg_locks shows it: (classid, objid)."""
    key = lock_key(account)
    return key >> 32, key & 0xFFFFFFFF


def process_alive(holder: str) -> bool | None:
    """Whether the process named by a ``host:pid`` holder still exists; None when it is on another host."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def session_row(row: Any) -> dict[str, Any]:
    """A session row with its summary as a JSON object (stored as text), not a string of JSON."""
    out = dict(row)
    text = out.get("summary")
    try:
        out["summary"] = json.loads(text) if text else None
    except ValueError:  # written by hand or cut short: shown as it is
        out["summary"] = {"unreadable": text}
    return out
