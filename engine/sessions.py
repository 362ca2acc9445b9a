"""What the CLI says of a session row: its state (running, completed, failed...), venue and own numbers.

A session row is opened at the start and closed with a summary (or with why it failed); one left open is
running only if the engine holding the account says so, otherwise it ended without a word (crashed or
killed). Kept apart from the commands so ``status`` and ``sessions`` read the same.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from engine.domain import venue_of
from engine.operator import EngineCondition, EngineSeen


class SessionState(StrEnum):
    RUNNING = "running"
    HUNG = "hung"  # running, by its lock, but its engine's heartbeat is stale
    COMPLETED = "completed"  # its input ended and it wound down
    STOPPED = "stopped"  # stopped by SIGINT/SIGTERM, wound down in order
    FAILED = "failed"  # raised at start or while running: the row says why
    VANISHED = "ended without a summary"  # killed or crashed: no engine holds it, nothing was written at the end


_OUTCOMES = {"completed": SessionState.COMPLETED, "stopped": SessionState.STOPPED, "failed": SessionState.FAILED}

# the summary's numbers a listing shows: (key in the summary, column)
LISTED_NUMBERS = (("signals", "signals"), ("fills", "fills"), ("realized_pnl", "realized"),
                  ("commissions", "commissions"))


def state_of(row: dict[str, Any], seen: EngineSeen | None) -> SessionState:
    summary = row.get("summary") or {}
    if row.get("ended_at") is not None:
        return _OUTCOMES.get(str(summary.get("outcome", "completed")), SessionState.COMPLETED)
    lock = seen.lock if seen is not None else None
    if seen is not None and lock is not None and lock.get("session_id") == row["id"]:
        if seen.condition is EngineCondition.RUNNING:
            return SessionState.RUNNING
        if seen.condition is EngineCondition.HUNG:
            return SessionState.HUNG
    return SessionState.VANISHED


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def session_state(row: dict[str, Any], seen: EngineSeen | None) -> dict[str, Any]:
    """A session row as JSON: its state and venue named, its summary an object (numbers exact, as text)."""
    summary = row.get("summary")
    state = state_of(row, seen)
    return {
        "id": row["id"], "state": state.value, "venue": venue_of(row["mode"], row["account"]).value,
        "mode": row["mode"], "account": row["account"], "started_at": _iso(row["started_at"]),
        "ended_at": _iso(row.get("ended_at")), "seed": row.get("seed"),
        "error": summary.get("error") if isinstance(summary, dict) and state is SessionState.FAILED else None,
        "summary": summary,
        "so_far": None,  # `tradectl sessions`: the numbers of a session without a summary, from its rows
    }
