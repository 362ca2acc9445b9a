"""Where signals come from: one interface for a file, a stream (stdin) and the database inbox.

A source yields ``(line_no, raw line)`` pairs: the physical line number (or the inbox row id) is kept on
the row the line ends as. Lines are bytes where the source has them, so invalid UTF-8 is refused by the
parser instead of being repaired here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

import structlog

from engine.signals import MAX_LINE_BYTES, bound_raw, strip_bom
from repositories.inbox import SignalInbox

log = structlog.get_logger("tradectl.sources")

HAND_OVER_GRACE_S = 0.002  # a notified row not handed over within this is read from the inbox
DEMO_SIGNALS = Path(__file__).resolve().parent.parent / "paper" / "data" / "demo_signals.jsonl"


class SignalSource(Protocol):
    """Lines until the source ends or ``stop`` is set. ``wall_clock``: its signals are judged against now."""

    wall_clock: bool

    def lines(self, stop: asyncio.Event) -> AsyncIterator[tuple[int, str | bytes]]: ...


class FileSource:
    """The lines of a file (or any iterable of lines), as fast as they are taken."""

    wall_clock = False

    def __init__(self, lines: Iterable[str | bytes]) -> None:
        self._lines = lines

    async def lines(self, stop: asyncio.Event) -> AsyncIterator[tuple[int, str | bytes]]:
        for line_no, raw in enumerate(self._lines, 1):
            if stop.is_set():
                return
            yield line_no, raw


class StreamSource:
    """A stream read line by line off the event loop (stdin), until EOF or ``stop``."""

    wall_clock = True

    def __init__(self, stream: TextIO) -> None:
        self._readline = line_reader(stream)

    async def lines(self, stop: asyncio.Event) -> AsyncIterator[tuple[int, str | bytes]]:
        loop = asyncio.get_running_loop()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        line_no = 0
        try:
            while not stop.is_set():
                read: asyncio.Future[str | bytes] = asyncio.ensure_future(loop.run_in_executor(None, self._readline))
                await asyncio.wait([read, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not read.done():  # a stop request while waiting for input
                    read.cancel()
                    return
                raw = read.result()
                if not raw:
                    return
                line_no += 1
                yield line_no, raw
        finally:
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopping


class InboxSource:
    """The account's database inbox, in arrival order, exactly once: until ``stop`` (it never ends by itself).

    Before a line is handed over its row is marked consumed in the recorder's buffer, so the flush that
    writes the line's outcome also writes the mark, in one transaction: a crash between the two
    re-reads the line, a crash after them never does. Wakes on PostgreSQL NOTIFY (with a read every
    ``fallback_s`` in case a notification is lost); on SQLite it reads every ``poll_s``. Reads run in a
    worker thread, so a slow database never blocks the loop; a failed read is logged and tried again.

    Rows the daemon's own intake just committed are ``offer``-ed with their lines and the id of the account's
    row before them: taken without reading them back when that is the last id taken (rows commit in id
    order); otherwise a row of another producer, or a lost hand-over, lies between, and the inbox is read.
    """

    wall_clock = True

    def __init__(self, inbox: SignalInbox, consume: Callable[[int], None], *, poll_s: float = 0.05,
                 fallback_s: float = 1.0, batch: int = 500) -> None:
        self.inbox, self.consume = inbox, consume
        self.poll_s, self.fallback_s, self.batch = poll_s, fallback_s, batch
        self._wake = asyncio.Event()
        self._chunks: dict[int, list[tuple[int, str]]] = {}  # handed-over rows by the id of the row before them
        self._offered: set[int] = set()  # their ids
        self._read_due = True
        self.reads = 0  # inbox reads made (the offered rows need none)

    def offer(self, before: int, rows: Sequence[tuple[int, str]]) -> None:
        """Rows just committed to this account's inbox, with their lines, and the id of the account's row
        just before them (engine.intake's hand-over; on the loop's thread)."""
        if rows:
            self._chunks[before] = list(rows)
            self._offered.update(i for i, _ in rows)
            self._wake.set()

    def _due(self) -> None:
        self._read_due = True
        self._wake.set()

    def _take_offered(self, after: int) -> list[tuple[int, str]] | None:
        """The handed-over rows that follow ``after``, the last id taken; None when some were handed over
        but not those (a gap: rows of another producer, or a lost hand-over), so the inbox must be read."""
        taken: list[tuple[int, str]] = []
        while (chunk := self._chunks.pop(after, None)) is not None:
            taken += chunk
            after = chunk[-1][0]
        for before in [b for b, chunk in self._chunks.items() if chunk[-1][0] <= after]:  # read already
            taken_by_read = self._chunks.pop(before)
            self._offered.difference_update(i for i, _ in taken_by_read)
        self._offered.difference_update(i for i, _ in taken)
        if not taken and self._chunks:
            return None
        return taken

    async def _read(self, after: int) -> list[tuple[int, str]]:
        self.reads += 1
        try:
            items = await asyncio.to_thread(self.inbox.pending, after, self.batch)
        except Exception as err:  # the database is down: the rows wait in the inbox
            log.error("intake.read_failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
            return []
        self._read_due = len(items) == self.batch  # more are waiting
        return [(item.id, item.raw) for item in items]

    async def lines(self, stop: asyncio.Event) -> AsyncIterator[tuple[int, str | bytes]]:
        loop = asyncio.get_running_loop()
        listener = await asyncio.to_thread(self.inbox.listen)
        wake = self._wake
        fd = listener.fileno() if listener is not None else None
        after = 0
        awaited: set[int] = set()  # notified rows not taken yet: handed over in a moment, or to be read

        def unclaimed() -> None:
            awaited.difference_update([i for i in awaited if i <= after or i in self._offered])
            if awaited:
                awaited.clear()
                self._due()  # rows nobody handed over (another producer's): read the inbox

        def notified() -> None:  # on the loop: draining a LISTEN connection reads what its socket holds
            assert listener is not None and fd is not None
            try:
                ids = listener.arrivals()
            except Exception as err:  # the connection broke: the timer reads on
                log.warning("intake.listen_failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
                loop.remove_reader(fd)
                return
            if ids is None:
                self._due()
                return
            awaited.update(i for i in ids if i > after and i not in self._offered)
            if awaited:  # the intake's hand-over of its own rows races its NOTIFY: give it a moment
                loop.call_later(HAND_OVER_GRACE_S, unclaimed)

        if fd is not None:
            loop.add_reader(fd, notified)
        wait_s = self.fallback_s if listener is not None else self.poll_s
        self._read_due = True
        try:
            while not stop.is_set():
                rows = None if self._read_due else self._take_offered(after)
                if rows is None:
                    rows = await self._read(after)
                for inbox_id, raw in rows:
                    if inbox_id <= after:
                        continue
                    self.consume(inbox_id)
                    after = inbox_id
                    yield inbox_id, raw
                    if stop.is_set():
                        return
                if self._read_due or after in self._chunks:
                    continue  # more are waiting
                wake.clear()
                stopping = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait([stopping, woken], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                woken.cancel()
                if not done:
                    self._read_due = True  # the poll (SQLite) or the fallback for a lost NOTIFY
        finally:
            if fd is not None:
                loop.remove_reader(fd)
            if listener is not None:
                listener.close()


class LongLine(bytes):
    """The head of a line longer than ``MAX_LINE_BYTES`` whose rest was skipped: refused as ``line_too_long``."""


def read_bounded_line(fh: BinaryIO) -> bytes:
    """One physical line (b"" at the end); a line longer than ``MAX_LINE_BYTES`` is skipped to its end."""
    line = fh.readline(MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while True:
            rest = fh.readline(1 << 16)
            if not rest or rest.endswith(b"\n"):
                break
        return LongLine(line)
    return line


def clean_line(line: str | bytes, line_no: int) -> str | bytes:
    """A physical line as the parser takes it: a file's byte order mark and the surrounding whitespace off."""
    if isinstance(line, LongLine):
        return line
    if line_no == 1:
        line = strip_bom(line)
    return line.strip()


def text_of(line: str | bytes) -> str:
    """The stored copy of a line that parsed (so it is valid UTF-8), bounded."""
    return bound_raw(line if isinstance(line, str) else line.decode("utf-8"))


def read_lines(path: Path | None) -> Iterator[bytes]:
    """The physical lines of a signal file, as bytes: decoding (strict UTF-8) is the parser's job."""
    if path is None:
        path = DEMO_SIGNALS
    with path.open("rb") as fh:
        while line := read_bounded_line(fh):
            yield line


def line_reader(stream: TextIO) -> Callable[[], str | bytes]:
    """``readline`` for a stream: its bytes when it has them (stdin), so invalid UTF-8 is refused, not repaired."""
    buffer: BinaryIO | None = getattr(stream, "buffer", None)
    if buffer is None:
        return stream.readline
    return lambda: read_bounded_line(buffer)


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())
