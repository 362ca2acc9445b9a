"""A small Python client for producers: put signals in an account's inbox, read what became of them.

    from engine.client import submit, outcome
    receipts = submit([{"id": "s1", "symbol": "AAPL", "direction": "long", "win_prob": 0.6, "payoff": 1.5}],
                      db_url="postgresql://...", account="DU0000001")
    outcome("s1", db_url=..., account=...)   # None, then {"status": "pending"}, then accepted / rejected

Every signal is validated first (``engine.signals.parse_signal``): one invalid signal refuses the whole
call with ``InvalidSignals`` naming each one, and nothing is written. A signal id already in the inbox is
not written again: its receipt says ``duplicate`` and carries the existing row's id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.signals import SignalError, parse_signal
from repositories.db import default_url, ensure_schema, make_engine
from repositories.inbox import Receipt, SignalInbox, Source

__all__ = ["Invalid", "InvalidSignals", "Receipt", "outcome", "submit", "to_lines"]


@dataclass(frozen=True, slots=True)
class Invalid:
    index: int  # 0-based position in the call
    signal_id: str | None
    reason: str  # names the field, as a reject row would
    code: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.signal_id, "reason": self.reason, "code": self.code}


class InvalidSignals(ValueError):
    """Signals that are not valid: nothing of the call was written."""

    def __init__(self, invalid: list[Invalid]) -> None:
        self.invalid = invalid
        first = invalid[0]
        more = f" (and {len(invalid) - 1} more)" if len(invalid) > 1 else ""
        super().__init__(f"signal {first.index + 1}{f' ({first.signal_id})' if first.signal_id else ''}: "
                         f"{first.reason}{more}; nothing was submitted")


def to_lines(signals: Iterable[str | Mapping[str, Any]]) -> list[str]:
    """Signals as JSON lines: a string is taken as it is (stripped), a mapping is serialised."""
    lines = []
    for s in signals:
        lines.append(s.strip() if isinstance(s, str) else json.dumps(dict(s), separators=(",", ":"), default=str))
    return lines


def validate(lines: list[str]) -> list[Invalid]:
    """The lines ``parse_signal`` refuses, each with its field-naming reason."""
    bad = []
    for i, line in enumerate(lines):
        parsed = parse_signal(line)
        if isinstance(parsed, SignalError):
            bad.append(Invalid(i, parsed.signal_id, parsed.reason, parsed.code))
    return bad


def submit(signals: Iterable[str | Mapping[str, Any]], *, db_url: str | None = None, account: str,
           source: Source = "client") -> list[Receipt]:
    """Validate, then add every signal to ``account``'s inbox in one transaction; one receipt each, in order."""
    lines = to_lines(signals)
    bad = validate(lines)
    if bad:
        raise InvalidSignals(bad)
    url = db_url or default_url()
    ensure_schema(url)
    db = make_engine(url)
    try:
        return SignalInbox(db, account).add(lines, source)
    finally:
        db.dispose()


def outcome(signal_id: str, *, db_url: str | None = None, account: str) -> dict[str, Any] | None:
    """What became of a signal id (see ``SignalInbox.outcome``); None when nobody has seen it."""
    db = make_engine(db_url or default_url())
    try:
        return SignalInbox(db, account).outcome(signal_id)
    finally:
        db.dispose()
