"""New kill-switch events for one account, as soon as the CLI (or anyone) writes them.

PostgreSQL: LISTEN on a dedicated autocommit connection; a notification wakes the read at once, and a
read every ``fallback_s`` covers a notification lost with a dropped connection. SQLite: a read every
``poll_s``. Reads are by id greater than the last one seen, so no event is applied twice or skipped.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import make_url

from engine.domain import KillSwitchChange
from repositories.killswitches import KILLSWITCH_CHANNEL, KillSwitchRepository


class KillSwitchFeed:
    def __init__(self, killswitches: KillSwitchRepository, *, after_id: int, poll_s: float = 0.05,
                 fallback_s: float = 1.0) -> None:
        self.killswitches = killswitches
        self.after_id = after_id
        self.poll_s = poll_s
        self.fallback_s = fallback_s
        self.own: set[int] = set()  # events this engine wrote itself (trips): already applied
        self._listen: Any = None
        self._last_read = 0.0
        url = killswitches.db.url
        if url.get_backend_name() == "postgresql":
            import psycopg

            conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            self._listen = psycopg.connect(conninfo, autocommit=True)
            self._listen.execute(f"LISTEN {KILLSWITCH_CHANNEL}")

    @property
    def listening(self) -> bool:
        return self._listen is not None

    def fileno(self) -> int | None:
        """The LISTEN socket, for an event loop to wake on (None on SQLite)."""
        return None if self._listen is None else int(self._listen.fileno())

    def poll(self, force: bool = False) -> list[KillSwitchChange]:
        """Events written since the last call, oldest first; cheap to call often (reads are paced).

        Raises DatabaseUnavailable when the events cannot be read."""
        now = time.monotonic()
        if self._listen is not None:
            account = self.killswitches.account
            notified = any(n.payload == account for n in self._listen.notifies(timeout=0))
            due = notified or now - self._last_read >= self.fallback_s
        else:
            due = now - self._last_read >= self.poll_s
        if not (due or force):
            return []
        self._last_read = now
        events = self.killswitches.events(self.after_id)
        if not events:
            return []
        last = events[-1].id
        assert last is not None
        self.after_id = last
        return [e for e in events if e.id not in self.own]

    def close(self) -> None:
        if self._listen is not None:
            self._listen.close()
            self._listen = None
