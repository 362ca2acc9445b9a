"""The clocks a session runs on, and the rules for believing a signal's time.

A file runs on its own simulated clock (it follows the signals' ``ts``); stdin, the inbox and HTTP run
on the wall clock. Every timestamp a session writes comes from its clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from engine.config import Settings
from engine.domain import RejectCode, Signal


def wall_clock() -> datetime:
    return datetime.now(UTC)


def perf() -> float:
    """Monotonic seconds, for elapsed times and latencies."""
    return time.perf_counter()


class SimClock:
    """Simulated time: moves only forward, to the latest timestamp it is shown.

    ``anchored`` is False until something (a quotes file, or the first ``ts`` of a signal file) has set
    it; until then it reads ``start``.
    """

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.anchored = False

    def __call__(self) -> datetime:
        return self.now

    def advance_to(self, ts: datetime) -> None:
        if ts > self.now:
            self.now = ts

    def advance(self, delta: timedelta) -> None:
        self.now = self.now + delta


class SignalTimes:
    """A session's rules for signal time: which ``ts`` to believe, and the time of a line without one.

    On the wall clock (``clock`` None) a signal older than ``max_age_s`` is ``stale_signal`` and one
    later than now + ``max_future_s`` is ``future_signal``; a line without ``ts`` is stamped now.
    On a file's clock the first ``ts`` sets the clock and later ones move it forward, except one more
    than ``max_clock_jump_s`` ahead: that one is ``future_signal`` and the clock stays. A ``ts`` more than
    ``max_age_s`` behind the clock is ``stale_signal``. A line without ``ts`` is stamped the clock plus
    one market step (``paper.step_ms``), and the clock moves there.
    """

    def __init__(self, settings: Settings, clock: SimClock | None) -> None:
        cfg = settings.signal_time
        self.clock = clock
        self.step = timedelta(milliseconds=settings.paper.step_ms)
        self.max_age = timedelta(seconds=cfg.max_age_s)
        self.max_ahead = timedelta(seconds=cfg.max_future_s if clock is None else cfg.max_clock_jump_s)
        self._stamped = False

    def stamp(self) -> datetime:
        """The ``ts`` of a valid line that has none (called by the parser)."""
        clock = self.clock
        if clock is None:
            return wall_clock()
        self._stamped = True
        clock.advance(self.step)
        return clock.now

    def arrive(self, signal: Signal) -> None:
        """A valid signal is about to be handled: bring a file's clock to its ``ts``, unless that is a jump."""
        clock = self.clock
        if clock is None:
            return
        if self._stamped:  # stamped from the clock: it is there already
            self._stamped = False
            return
        if not clock.anchored:
            clock.now = signal.ts
            clock.anchored = True
        elif signal.ts - clock.now <= self.max_ahead:
            clock.advance_to(signal.ts)

    def verdict(self, signal: Signal) -> tuple[RejectCode, str] | None:
        """(code, reason) when the signal's time is not believed; the engine's hook, checked after dedupe."""
        now = self.clock.now if self.clock is not None else wall_clock()
        ahead = signal.ts - now
        if ahead > self.max_ahead:
            what = "now" if self.clock is None else "the file's clock"
            return RejectCode.FUTURE_SIGNAL, (f"field 'ts': {signal.ts.isoformat()} is {_span(ahead)} ahead of {what} "
                                     f"{now.isoformat()} (max {_span(self.max_ahead)})")
        if -ahead > self.max_age:
            return RejectCode.STALE_SIGNAL, (f"field 'ts': {signal.ts.isoformat()} is {_span(-ahead)} older than "
                                    f"{now.isoformat()} (max {_span(self.max_age)})")
        return None


def _span(d: timedelta) -> str:
    s = d.total_seconds()
    return f"{s:.3f}s" if s < 120 else f"{s / 86_400:.2f}d" if s >= 86_400 else f"{s / 3600:.2f}h"
