"""Maintenance windows: the times IB (or the gateway's own auto-restart) is expected to drop the link.

IB resets its servers every day and logs every session out once a week; IB Gateway restarts itself daily
at a time its operator sets (IBC's AutoRestartTime). Inside such a window a disconnect is ordinary: the
disconnect trigger waits for the window's end (plus its usual timeout) before it trips, and new signals
are held or refused with ``maintenance_window``. Pure: times in, answers out.

The defaults are IB's published North American schedule (interactivebrokers.com, System Status):
the daily reset Sunday to Friday 00:15-01:45 ET, and the weekend maintenance Friday 23:00 to Saturday
03:00 ET. Wall-clock arithmetic in the window's zone, so a window stays at its local time across
daylight-saving changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Starts at ``start`` local time on each of ``days`` (0 = Monday) and lasts ``minutes``."""

    name: str
    start: time
    minutes: float
    tz: tzinfo
    days: frozenset[int] = frozenset(range(7))

    def span_on(self, day: date) -> tuple[datetime, datetime] | None:
        """The window that starts on ``day`` (its local date), or None when it does not run that day."""
        if day.weekday() not in self.days:
            return None
        begins = datetime.combine(day, self.start, tzinfo=self.tz)
        return begins, begins + timedelta(minutes=self.minutes)

    def covering(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The span of this window that contains ``at`` (one that began the day before included)."""
        local = at.astimezone(self.tz).date()
        days_back = int(self.minutes // (24 * 60)) + 1
        for back in range(days_back + 1):
            span = self.span_on(local - timedelta(days=back))
            if span is not None and span[0] <= at < span[1]:
                return span
        return None


@dataclass(frozen=True, slots=True)
class Maintenance:
    """A set of windows; empty: no disconnect is expected."""

    windows: tuple[MaintenanceWindow, ...] = ()

    def covering(self, at: datetime) -> tuple[MaintenanceWindow, datetime] | None:
        """The window containing ``at`` that ends last, with its end; None outside every window."""
        best: tuple[MaintenanceWindow, datetime] | None = None
        for window in self.windows:
            span = window.covering(at)
            if span is not None and (best is None or span[1] > best[1]):
                best = (window, span[1])
        return best

    @classmethod
    def of(cls, windows: Iterable[MaintenanceWindow]) -> Maintenance:
        return cls(tuple(windows))


def ib_north_america(tz: tzinfo) -> Maintenance:
    """IB's published North American schedule, in ``tz`` (America/New_York)."""
    return Maintenance((
        MaintenanceWindow("ib-daily-reset", time(0, 15), 90, tz, frozenset({6, 0, 1, 2, 3, 4})),
        MaintenanceWindow("ib-weekend-maintenance", time(23, 0), 240, tz, frozenset({4})),
    ))
