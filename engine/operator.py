"""What `tradectl kill / reduce-only / resume` do, apart from printing: record, then wait for the engine.

The change is written straight to the database (append-only, audited), so it holds whether or not an
engine runs; a running engine acknowledges it, and the acknowledgement says what the engine did.
"""

from __future__ import annotations

import getpass
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.domain import KillState, KillSwitchChange
from repositories.store import Store


def operator_actor() -> str:
    """Who is at the keyboard: OS user and host, as the audit record names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): still say something true
        user = "unknown-user"
    return f"{user}@{socket.gethostname()}"


@dataclass(slots=True)
class ChangeOutcome:
    change: KillSwitchChange
    engine: str | None  # the engine expected to acknowledge, if one was running
    ack: dict[str, Any] | None
    waited_s: float
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        c = self.change
        ack = None
        if self.ack is not None:
            ack = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.ack.items()}
        return {
            "event_id": c.id, "scope": c.scope, "from_state": c.from_state.value, "to_state": c.to_state.value,
            "reason": c.reason, "actor": c.actor, "flatten": c.flatten, "ts": c.ts.isoformat(),
            "engine": self.engine, "acknowledged": ack is not None, "ack": ack,
            "waited_ms": round(self.waited_s * 1000, 1), "note": self.note,
        }


def live_engine(store: Store, stale_after_s: float, now: datetime) -> tuple[str | None, str]:
    """The engine holding the account if its heartbeat is fresh; and a sentence saying what was found."""
    lock = store.engine_lock()
    if lock is None:
        return None, f"no engine is running for account {store.account}"
    age = (now - lock["heartbeat_at"]).total_seconds()
    if age > stale_after_s:
        return None, (f"no engine is running for account {store.account} (the last one, {lock['holder']},"
                      f" was last heard from {age:.0f}s ago)")
    return str(lock["holder"]), f"engine {lock['holder']} is running ({lock['mode']}, session {lock['session_id']})"


def change_killswitch(
    store: Store,
    scope: str,
    state: KillState,
    reason: str,
    *,
    actor: str,
    flatten: bool = False,
    timeout_s: float = 10.0,
    stale_after_s: float = 5.0,
    poll_s: float = 0.005,
) -> ChangeOutcome:
    now = datetime.now(UTC)
    holder, found = live_engine(store, stale_after_s, now)
    change = store.record_killswitch(scope, state, reason, actor, now, flatten)
    assert change.id is not None
    if holder is None:
        return ChangeOutcome(change, None, None, 0.0, found)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    next_alive_check = t0 + 1.0
    while True:
        ack = store.killswitch_ack(change.id)
        if ack is not None:
            return ChangeOutcome(change, holder, ack, time.monotonic() - t0)
        t = time.monotonic()
        if t >= deadline:
            return ChangeOutcome(change, holder, None, t - t0,
                                 f"engine {holder} did not acknowledge within {timeout_s:.0f}s")
        if t >= next_alive_check:
            next_alive_check = t + 1.0
            still, found = live_engine(store, stale_after_s, datetime.now(UTC))
            if still != holder:
                return ChangeOutcome(change, holder, None, t - t0,
                                     f"engine {holder} stopped before acknowledging ({found})")
        time.sleep(poll_s)


def parse_since(text: str, now: datetime) -> datetime:
    """'15m', '2h', '1d', '30s' ago, or an ISO 8601 date/time (UTC when no offset is given)."""
    text = text.strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(**{units[text[-1]]: float(text[:-1])})
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since must be like 15m, 2h, 1d or an ISO date/time, got {text!r}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
