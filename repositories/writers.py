"""One writer at a time on SQLite, queued in this process rather than in SQLite's busy handler."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

_SQLITE_WRITER = threading.RLock()


@contextmanager
def one_writer(db: Engine) -> Iterator[None]:
    """SQLite takes one writer at a time. Writers of this process (the daemon's HTTP intake in a worker
    thread, the recorder on the loop) queue here, at once, instead of in SQLite's busy handler, which sleeps
    in steps of up to 100 ms. PostgreSQL needs no such queue."""
    if db.dialect.name != "sqlite":
        yield
        return
    with _SQLITE_WRITER:
        yield
