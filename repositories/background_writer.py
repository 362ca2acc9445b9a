"""The recorder's writes in a process of their own, so a paper session never waits on its database.

Written in the session's process, every flush stopped the signal path for as long as the database took
(0.4-1.5 s at 20,000 rows), and a writer thread would be starved by the GIL while the engine runs. So a
paper session's recorder hands its row batches, already made (plain values), to this worker over a socket
pair and goes on; the worker writes them with the recorder's own statements and rules:

- one transaction for every batch waiting when a write starts (a batch is whole units of work: an order
  with its signal, a fill with its position);
- a refused row (constraint, bad value) makes the worker write that transaction again row by row
  (``recorder.salvage``) and report the refused rows, which the session answers as before (halts);
- an unreachable database keeps the batches and retries every ``retry_s``, reporting once that it fails
  and once that it is back;
- when the session's end of the pair closes (its end, or its crash) the worker writes what it was sent,
  then exits: a batch handed over is written even if the session dies right after.

The session keeps every batch until the worker says it is committed, so a worker that dies loses nothing:
the recorder writes them itself (``Recorder`` falls back to writing in process). The session waits for the
worker only where it must know rows are on disk (``Recorder.flush``: an operator's acknowledgement, the
session's end) or when the worker falls more than ``Recorder.max_in_flight`` units behind (memory stays bounded).
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from repositories.direct import DriverDatabase
    from repositories.driver_batch import DriverBatch
    from repositories.recorder import RowDefect

# A write waits up to GATHER_S for more hand-offs (up to GATHER_MAX): SQLite rewrites the same index pages at
# every commit, so fewer, larger transactions write several times the rows a second. Off the signal path.
GATHER_S = 0.02
GATHER_MAX = 32
SOCKET_BUFFER_BYTES = 4 << 20  # ~100 hand-offs: the session does not block while the worker catches up


class WriterGone(Exception):
    """The worker exited (or the link broke): its unacknowledged batches are to be written in process."""


@dataclass(frozen=True, slots=True)
class WriterReply:
    """What the worker reports: a committed group (up to ``seq``), or that the database fails."""

    seq: int
    rows: int = 0
    seconds: float = 0.0
    defects: list[RowDefect] = field(default_factory=list)
    failing: str | None = None


@dataclass(slots=True)
class _Handed:
    batches: list[DriverBatch]
    now: datetime
    units: int


class BackgroundWriter:
    """The session's handle on the worker: hand batches over, read what it reports, wait for it."""

    def __init__(self, url: str, session_id: int, retry_s: float = 0.5) -> None:
        ours, theirs = socket.socketpair()
        for end, option in ((ours, socket.SO_SNDBUF), (theirs, socket.SO_RCVBUF)):  # room for a busy moment
            end.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)  # (capped by net.core.[wr]mem_max)
        self._link = Connection(ours.detach())
        child_fd = theirs.fileno()
        self._proc = subprocess.Popen([sys.executable, "-m", "repositories.background_writer", str(child_fd)],
                                      pass_fds=[child_fd], stdout=subprocess.DEVNULL)
        theirs.close()
        self._link.send({"url": url, "session_id": session_id, "retry_s": retry_s})
        self.sent = 0  # the last batch's number
        self.acked = 0  # every batch up to this one is committed
        self._handed: dict[int, _Handed] = {}
        self.units_in_flight = 0
        self.gone = False

    def send(self, batches: list[DriverBatch], now: datetime, units: int) -> None:
        """Hand a batch over (kept until the worker says it is committed). Raises WriterGone."""
        self.sent += 1
        self._handed[self.sent] = _Handed(batches, now, units)
        self.units_in_flight += units
        try:
            self._link.send((self.sent, now, batches))
        except (OSError, EOFError, ValueError) as err:
            self.gone = True
            raise WriterGone(str(err)) from err

    def replies(self) -> list[WriterReply]:
        """What the worker reported since the last call, without waiting. Raises WriterGone."""
        out: list[WriterReply] = []
        try:
            while self._link.poll():
                self._take(self._link.recv(), out)
        except (OSError, EOFError) as err:
            self.gone = True
            raise WriterGone(str(err) or "the writer process exited") from err
        return out

    def wait(self, seq: int, timeout_s: float) -> list[WriterReply]:
        """Replies until batch ``seq`` is committed, the worker says the database fails, or ``timeout_s``
        passed. Raises WriterGone."""
        out = self.replies()
        deadline = time.monotonic() + timeout_s
        while self.acked < seq and not any(r.failing for r in out):  # the database is down: say so now
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                if self._link.poll(left):
                    self._take(self._link.recv(), out)
            except (OSError, EOFError) as err:
                self.gone = True
                raise WriterGone(str(err) or "the writer process exited") from err
        return out

    def _take(self, message: tuple[Any, ...], out: list[WriterReply]) -> None:
        kind = message[0]
        if kind == "done":
            _, seq, rows, seconds, defects = message
            for s in [s for s in self._handed if s <= seq]:
                self.units_in_flight -= self._handed.pop(s).units
            self.acked = max(self.acked, seq)
            out.append(WriterReply(seq, rows, seconds, defects))
        elif kind == "failing":
            out.append(WriterReply(message[1], failing=message[2]))
        else:  # "error": a fault of ours (not the database's): the session cannot go on as if written
            raise RuntimeError(f"the writer process failed: {message[1]}")

    def take_back(self) -> list[_Handed]:
        """The batches not yet committed, oldest first (the worker is gone: the recorder writes them)."""
        handed = [self._handed[s] for s in sorted(self._handed)]
        self._handed.clear()
        self.units_in_flight = 0
        return handed

    def close(self, timeout_s: float = 30.0) -> None:
        """Close the link: the worker writes what it holds, then exits (killed after ``timeout_s``)."""
        self._link.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class _Refused(Exception):
    """A row of the group the database refuses (or a value that could not be converted): salvage it."""


class _Unreachable(Exception):
    """The database cannot be written at all: the group is kept and written again."""


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None)  # SQLAlchemy's wrapper: the driver's own error says it
    text = str(orig if orig is not None else err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _Sink:
    """Where the worker writes. Through the plain driver (``repositories.direct``) for a SQLite file or
    PostgreSQL, so the worker starts without importing SQLAlchemy (~0.5 s of a short session's end); through
    SQLAlchemy for any other URL, and to salvage a group with a refused row (rare: it imports it then)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._direct: DriverDatabase | None = None
        self._engine: Engine | None = None
        self._direct_unsupported = False

    def write(self, batches: list[DriverBatch]) -> int:
        """The rows written, in one transaction. Raises _Refused or _Unreachable."""
        if any(b.refused for b in batches):
            raise _Refused
        if not self._direct_unsupported:
            from repositories.direct import DirectUnsupported

            try:
                return self._write_direct(batches)
            except DirectUnsupported:
                self._direct_unsupported = True
        return self._write_engine(batches)

    def _write_direct(self, batches: list[DriverBatch]) -> int:
        from repositories.direct import NoDatabase, open_database
        from repositories.unavailable import DatabaseUnavailable

        if self._direct is None:
            try:
                self._direct = open_database(self.url)
            except (DatabaseUnavailable, NoDatabase) as err:
                raise _Unreachable(_first_line(err)) from err
        db = self._direct
        try:
            db.write_many([(b.sql, b.params) for b in batches if b.params])
        except db.refused_errors as err:
            raise _Refused from err
        except db.driver_errors as err:  # a connection lost or a file locked: open a new one for the retry
            self._direct = None
            with contextlib.suppress(Exception):
                db.close()
            raise _Unreachable(_first_line(err)) from err
        return sum(len(b.params) for b in batches)

    def _write_engine(self, batches: list[DriverBatch]) -> int:
        from sqlalchemy.exc import DBAPIError

        from repositories.recorder import is_row_defect, write_batches
        from repositories.writers import one_writer

        db = self._sqlalchemy()
        try:
            with one_writer(db), db.begin() as conn:
                return write_batches(conn, batches)
        except Exception as err:
            if is_row_defect(err):
                raise _Refused from err
            if isinstance(err, DBAPIError):
                raise _Unreachable(_first_line(err)) from err
            raise

    def salvage(self, batches: list[DriverBatch], session_id: int, now: datetime) -> tuple[int, list[RowDefect]]:
        """``recorder.salvage``: row by row, the refused ones reported. Raises _Unreachable."""
        from sqlalchemy.exc import DBAPIError

        from repositories.recorder import salvage

        try:
            return salvage(self._sqlalchemy(), batches, session_id, now)
        except DBAPIError as err:
            raise _Unreachable(_first_line(err)) from err

    def _sqlalchemy(self) -> Engine:
        if self._engine is None:
            from repositories.db import make_engine

            self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._engine is not None:
            self._engine.dispose()


def _serve(link: Connection) -> None:
    """The worker: write every batch it is sent, in order, until the session closes the link."""
    spec = link.recv()
    sink = _Sink(spec["url"])
    session_id, retry_s = int(spec["session_id"]), float(spec["retry_s"])
    inbox: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:  # drains the link at once (bytes only), so the session never blocks on a full socket
        try:
            while True:
                inbox.put(link.recv_bytes())
        except (EOFError, OSError):
            inbox.put(None)

    def report(message: tuple[Any, ...]) -> None:  # a session gone away hears nothing: the writes go on
        with contextlib.suppress(OSError, EOFError):
            link.send(message)

    threading.Thread(target=read, daemon=True).start()
    closing = False
    while not closing:
        first = inbox.get()
        if first is None:
            break
        group: list[tuple[int, datetime, list[DriverBatch]]] = [pickle.loads(first)]
        deadline = time.monotonic() + GATHER_S
        while len(group) < GATHER_MAX:  # a few more: one commit for several hand-offs costs less than several
            try:
                more = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if more is None:
                closing = True
                break
            group.append(pickle.loads(more))
        seq, now = group[-1][0], group[-1][1]
        batches = [b for _, _, bs in group for b in bs]
        reported = False
        while True:
            t0 = time.perf_counter()
            defects: list[RowDefect] = []
            try:
                try:
                    rows = sink.write(batches)
                except _Refused:
                    rows, defects = sink.salvage(batches, session_id, now)
                break
            except _Unreachable as err:  # keep the group, say so once, try again
                if not reported:
                    reported = True
                    report(("failing", seq, str(err)))
                time.sleep(retry_s)
            except Exception as err:
                report(("error", f"{type(err).__name__}: {err}"))
                raise
        report(("done", seq, rows, time.perf_counter() - t0, defects))
    sink.close()


def main() -> None:
    _serve(Connection(int(sys.argv[1])))


__all__: Sequence[str] = ("BackgroundWriter", "WriterGone", "WriterReply")

if __name__ == "__main__":
    main()
