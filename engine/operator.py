"""What `tradectl kill / reduce-only / resume` do, apart from printing: record, then wait for the engine.

The change is written straight to the database (append-only, audited), so it holds whether or not an
engine runs; a running engine acknowledges it, and the acknowledgement says what the engine did.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from engine.acks import skipped_by_symbol
from engine.domain import OPEN_STATUSES, KillState, KillSwitchChange, venue_of
from engine.ids import engine_order_id
from repositories.rows import process_alive

if TYPE_CHECKING:  # kill runs on the plain driver (repositories/direct.py): SQLAlchemy is not imported for it
    from typing import TypeAlias

    from repositories.direct import DirectRepositories
    from repositories.repos import Repositories

    AnyRepositories: TypeAlias = Repositories | DirectRepositories


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
    not_closed: dict[str, str] | None = None  # after a flatten: each position in scope still open, and why
    seen: EngineSeen | None = None  # what was found of the engine (running, hung, not running)

    def to_json(self) -> dict[str, Any]:
        c = self.change
        ack = None
        if self.ack is not None:
            ack = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.ack.items()}
        return {
            "recorded": True, "event_id": c.id, "scope": c.scope, "from_state": c.from_state.value,
            "to_state": c.to_state.value, "reason": c.reason, "actor": c.actor, "flatten": c.flatten,
            "ts": c.ts.isoformat(), "engine": self.engine, "acknowledged": ack is not None, "ack": ack,
            "waited_ms": round(self.waited_s * 1000, 1), "note": self.note,
            "engine_state": self.seen.condition.value if self.seen is not None else None,
            **({"not_closed": self.not_closed} if self.not_closed is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class NotHalted:
    """A resume of a scope that is ACTIVE already: nothing was written, and no engine was asked anything."""

    scope: str
    restricted: dict[str, KillState]  # every scope that is HALTED or REDUCE_ONLY (what a resume is for)

    @property
    def sentence(self) -> str:
        others = ", ".join(f"{scope} {state}" for scope, state in sorted(self.restricted.items()))
        return (f"{self.scope} was not halted (it is {KillState.ACTIVE}): nothing was recorded; "
                + (f"halted or reduce-only now: {others}" if others else "every scope is ACTIVE"))

    def to_json(self) -> dict[str, Any]:
        return {"recorded": False, "event_id": None, "scope": self.scope, "state": KillState.ACTIVE.value,
                "acknowledged": False, "note": self.sentence,
                "restricted": {scope: state.value for scope, state in sorted(self.restricted.items())}}


class EngineCondition(StrEnum):
    """What the CLI can tell of the engine trading an account, from its lock row and its process."""

    RUNNING = "running"  # heartbeat fresh
    HUNG = "hung"  # heartbeat stale, process alive (this host's pid, or PostgreSQL's advisory lock still held)
    NOT_RUNNING = "not running"  # no lock row, its process is gone, or it is silent on another host


@dataclass(slots=True)
class EngineSeen:
    condition: EngineCondition
    sentence: str  # what was found, in an operator's words
    lock: dict[str, Any] | None = None
    heartbeat_age_s: float | None = None

    @property
    def holder(self) -> str | None:
        """The engine expected to acknowledge a change: a running one, or a hung one that may yet recover."""
        return None if self.lock is None or self.condition is EngineCondition.NOT_RUNNING else str(self.lock["holder"])

    def to_json(self, account: str) -> dict[str, Any]:
        lock = self.lock or {}
        host, _, pid = str(lock.get("holder", "")).rpartition(":")
        return {
            "state": self.condition.value, "account": account, "holder": lock.get("holder"),
            "host": host or None, "pid": int(pid) if pid.isdigit() else None, "mode": lock.get("mode"),
            "venue": venue_of(lock["mode"], account).value if lock else None,
            "session_id": lock.get("session_id"),
            "started_at": lock["started_at"].isoformat() if lock else None,
            "heartbeat_age_s": None if self.heartbeat_age_s is None else round(self.heartbeat_age_s, 1),
            "detail": self.sentence,
            "broker": self.broker_state,
        }

    @property
    def broker_state(self) -> dict[str, Any] | None:
        """The broker link as the engine last wrote it with its heartbeat (None when no engine runs)."""
        text = (self.lock or {}).get("broker_state")
        if not text or self.condition is EngineCondition.NOT_RUNNING:
            return None
        try:
            state: dict[str, Any] = json.loads(text)
        except ValueError:
            return None
        return state


def engine_seen(repos: AnyRepositories, stale_after_s: float, now: datetime) -> EngineSeen:
    """Whether an engine trades the account: running (fresh heartbeat), hung (stale heartbeat but its process is
    alive: on this host by its pid, anywhere by PostgreSQL's advisory lock) or not running."""
    account = repos.account
    lock = repos.engine_lock.holder()
    if lock is None:
        return EngineSeen(EngineCondition.NOT_RUNNING, f"no engine is running for account {account}")
    holder = str(lock["holder"])
    age = (now - lock["heartbeat_at"]).total_seconds()
    alive = process_alive(holder)
    if alive is False:
        return EngineSeen(EngineCondition.NOT_RUNNING,
                          f"no engine is running for account {account} (the last one, {holder}, exited without "
                          f"releasing it: crashed or killed; the next start takes over)", lock, age)
    venue = venue_of(lock["mode"], account)
    if age <= stale_after_s:
        return EngineSeen(EngineCondition.RUNNING,
                          f"engine {holder} is running ({venue}, session {lock['session_id']}, "
                          f"heartbeat {age:.1f}s ago)", lock, age)
    if alive is None:
        alive = repos.engine_lock.held_by_a_connection()
    if alive:
        return EngineSeen(EngineCondition.HUNG,
                          f"engine {holder} is HUNG: its process is alive but its last heartbeat was {age:.0f}s ago "
                          f"(more than {stale_after_s:g}s); it is not applying changes: look at it, or stop it "
                          f"(kill {holder.rpartition(':')[2]} on {holder.rpartition(':')[0]})", lock, age)
    return EngineSeen(EngineCondition.NOT_RUNNING,
                      f"no engine is running for account {account} (the last one, {holder}, was last heard from "
                      f"{age:.0f}s ago)", lock, age)


def change_killswitch(
    repos: AnyRepositories,
    scope: str,
    state: KillState,
    reason: str,
    *,
    actor: str,
    flatten: bool = False,
    timeout_s: float = 10.0,
    stale_after_s: float = 5.0,
    poll_s: float = 0.005,
) -> ChangeOutcome | NotHalted:
    """Record the change and wait for the engine trading the account (if one is) to acknowledge it. A resume
    (``state`` ACTIVE) of a scope that is ACTIVE already records nothing: ``NotHalted`` says so."""
    now = datetime.now(UTC)
    seen = engine_seen(repos, stale_after_s, now)
    holder = seen.holder
    if state is KillState.ACTIVE:
        resumed = repos.killswitches.resume(scope, reason=reason, actor=actor, now=now)
        if resumed is None:
            return NotHalted(scope, {s: k for s, k in repos.killswitches.states().items()
                                     if k is not KillState.ACTIVE})
        change = resumed
    else:
        change = repos.killswitches.record(scope, state, reason=reason, actor=actor, now=now, flatten=flatten)
    assert change.id is not None
    if holder is None:
        return ChangeOutcome(change, None, None, 0.0, seen.sentence, seen=seen)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    next_alive_check = t0 + 1.0
    while True:
        ack = repos.killswitches.ack_of(change.id)
        if ack is not None:
            return ChangeOutcome(change, holder, ack, time.monotonic() - t0, seen=seen)
        t = time.monotonic()
        if t >= deadline:
            why = (seen.sentence if seen.condition is EngineCondition.HUNG
                   else f"engine {holder} did not acknowledge within {timeout_s:g}s")
            return ChangeOutcome(change, holder, None, t - t0, why, seen=seen)
        if t >= next_alive_check:
            next_alive_check = t + 1.0
            now_seen = engine_seen(repos, stale_after_s, datetime.now(UTC))
            if now_seen.holder != holder:
                return ChangeOutcome(change, holder, None, t - t0,
                                     f"engine {holder} stopped before acknowledging ({now_seen.sentence})",
                                     seen=now_seen)
        time.sleep(poll_s)


def flatten_outcome(repos: AnyRepositories, change: KillSwitchChange, ack: dict[str, Any] | None, wait_s: float,
                    poll_s: float = 0.05) -> dict[str, str]:
    """Each position in the change's scope still open after the flatten, and why; empty when all are closed.

    Waits up to ``wait_s`` while closing orders still work. Why, per symbol: no engine acknowledged; the
    engine sent nothing (refused by a check, no quote: its reason from the acknowledgement); the closing
    order ended without filling (its state and reason); or it was not filled within ``wait_s``.
    """
    only = change.scope.split(":", 1)[1] if change.scope.startswith("symbol:") else None

    def coid(symbol: str) -> str:  # the closing order's id, as Engine.flatten derives it from the event
        return engine_order_id("flat", str(change.id), symbol)

    deadline = time.monotonic() + wait_s
    while True:
        held = {p.symbol for p in repos.positions.all() if p.quantity and only in (None, p.symbol)}
        closing = {o.symbol: o for o in repos.orders.find([coid(s) for s in held])} if held else {}
        # the positions again, after the orders: an order read Filled had its fill's position committed with
        # it, so this read sees it (read before, it could be the position of just before that commit)
        still = {p.symbol: p.quantity for p in repos.positions.all() if p.quantity and p.symbol in held}
        working = any(o.status in OPEN_STATUSES for o in closing.values())
        if not working or time.monotonic() >= deadline or ack is None:
            break
        time.sleep(poll_s)
    skipped = skipped_by_symbol(ack.get("detail") if ack else None)
    reasons: dict[str, str] = {}
    for symbol, qty in sorted(still.items()):
        order = closing.get(symbol)
        if ack is None:
            why = "no engine acknowledged the flatten: no closing order was sent"
        elif order is None:
            why = skipped.get(symbol) or skipped.get("*") or "no closing order was sent"
            why = f"not sent: {why}"
        elif order.status in OPEN_STATUSES:
            why = (f"closing order {order.client_order_id} not filled within {wait_s:g}s "
                   f"({order.filled_qty} of {order.intent.quantity} filled)")
        else:
            why = f"closing order {order.client_order_id} {order.status}" + (
                f": {order.reason}" if order.reason else "")
        reasons[symbol] = f"position {qty} still open: {why}"
    return reasons


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
