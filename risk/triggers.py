"""Automatic kill-switch triggers: conditions that trip a kill switch instead of rejecting one order.

Pure and synchronous: the engine feeds observations (equity, broker rejects, throttle breaches,
connection changes, unknown fills, position breaks) with their timestamps, and gets back the trips to
apply. Each trigger names itself; the engine records it as the actor (``trigger:<name>``).

A trigger latches: once it has fired it stays quiet until its condition has cleared, so an operator
can resume without the same condition tripping again at once, and a loss that keeps growing does not
write a new audit record per fill. Nothing here ever resumes a scope: only an operator does.

Daily loss and drawdown are measured against the trading day's start equity and peak. The day is set by
a ``DayBoundary`` (a time zone and a rollover time), not by UTC midnight. The session restores the days
the database keeps (``restore``) and writes the current one back when ``day_dirty`` says it changed: a
restart during the day keeps both numbers. No I/O happens here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal

from engine.domain import ZERO, KillState
from risk.checks import Amount, Count, Seconds
from risk.killswitch import GLOBAL, strategy_scope, symbol_scope
from risk.windows import Maintenance, MaintenanceWindow

DAILY_LOSS = "daily_loss"
DRAWDOWN = "drawdown"
REJECT_BURST = "reject_burst"
ORDER_RATE = "order_rate"
DISCONNECT = "disconnect"
RECONCILIATION = "reconciliation_mismatch"
UNKNOWN_FILL = "unknown_fill"


@dataclass(frozen=True, slots=True)
class Trip:
    trigger: str
    scope: str
    state: KillState
    reason: str

    @property
    def actor(self) -> str:
        return f"trigger:{self.trigger}"


@dataclass(frozen=True, slots=True)
class TriggerLimits:
    """``None`` (or False) switches a trigger off."""

    daily_loss: Amount | None = Decimal(50_000)  # trip global REDUCE_ONLY when day P&L <= -this
    drawdown: Amount | None = Decimal(100_000)  # trip global HALTED when equity is this far below the day's peak
    reject_burst: Count | None = 5  # broker rejects within reject_window_s -> global HALTED
    reject_window_s: Seconds = 10.0
    rate_breach_burst: Count | None = 20  # order-rate rejects of one strategy within the window -> strategy HALTED
    rate_breach_window_s: Seconds = 5.0
    disconnect_timeout_s: Seconds | None = 30.0  # broker down longer than this -> global HALTED
    reconciliation_mismatch: bool = True  # our position != the broker's -> symbol HALTED
    unknown_fill: bool = True  # a fill for an order we never sent -> symbol HALTED


@dataclass(frozen=True, slots=True)
class DayBoundary:
    """When one trading day ends and the next begins: ``rollover`` on the wall clock of ``tz``.

    A day is named by the calendar date on which most of it falls: with a rollover at or after noon
    (17:00 New York, the default in the config) the day that starts Monday 17:00 is Tuesday's; with a
    rollover before noon (00:00, 03:00) the day that starts Monday at that time is Monday's. Wall-clock
    arithmetic, so the boundary stays at 17:00 local across daylight-saving changes.
    """

    tz: tzinfo = UTC
    rollover: time = time(0, 0)

    def day_of(self, now: datetime) -> date:
        local = now.astimezone(self.tz).replace(tzinfo=None)
        r = self.rollover
        day = (local - timedelta(hours=r.hour, minutes=r.minute, seconds=r.second)).date()
        return day + timedelta(days=1) if r >= time(12, 0) else day

    def bounds(self, day: date) -> tuple[datetime, datetime]:
        """When ``day`` begins and ends (aware): ``day_of(t) == day`` exactly for begin <= t < end."""
        first = day - timedelta(days=1) if self.rollover >= time(12, 0) else day
        return (datetime.combine(first, self.rollover, tzinfo=self.tz),
                datetime.combine(first + timedelta(days=1), self.rollover, tzinfo=self.tz))


@dataclass(frozen=True, slots=True)
class DayMarks:
    """A trading day's start equity and peak equity (what the database keeps per account and day)."""

    start_equity: Decimal
    peak_equity: Decimal


class _Burst:
    """Timestamps in a sliding window; reports when the count reaches a threshold."""

    def __init__(self, threshold: int, window_s: float) -> None:
        self.threshold = threshold
        self.window = timedelta(seconds=window_s)
        self.times: deque[datetime] = deque()

    def add(self, now: datetime) -> int:
        times = self.times
        times.append(now)
        edge = now - self.window
        while times and times[0] <= edge:
            times.popleft()
        return len(times)


class TripWires:
    def __init__(self, limits: TriggerLimits | None = None, boundary: DayBoundary | None = None,
                 maintenance: Maintenance | None = None) -> None:
        self.limits = limits or TriggerLimits()
        self.boundary = boundary or DayBoundary()
        self.maintenance = maintenance or Maintenance()
        self._latched: set[tuple[str, str]] = set()
        self.day: date | None = None
        self._day_begins = self._day_ends = datetime.min.replace(tzinfo=UTC)  # the current day's span
        self.day_start_equity = ZERO
        self.day_peak = ZERO
        self.day_dirty = False  # the day rolled or its peak rose since the session last saved it
        self._known_days: dict[date, DayMarks] = {}
        self._rejects: _Burst | None = None
        if self.limits.reject_burst:
            self._rejects = _Burst(self.limits.reject_burst, self.limits.reject_window_s)
        self._rate_breaches: dict[str, _Burst] = {}
        self.disconnected_since: datetime | None = None

    def _fire(self, trigger: str, scope: str, state: KillState, reason: str) -> Trip | None:
        key = (trigger, scope)
        if key in self._latched:
            return None
        self._latched.add(key)
        return Trip(trigger, scope, state, reason)

    def _rearm(self, trigger: str, scope: str) -> None:
        self._latched.discard((trigger, scope))

    # -- P&L ---------------------------------------------------------------------------------------
    def restore(self, days: Mapping[date, DayMarks]) -> None:
        """Days kept in the database: entering one of them resumes its start equity and peak."""
        self._known_days.update(days)

    def on_equity(self, now: datetime, equity: Decimal) -> list[Trip]:
        """Daily loss and drawdown from the day's peak. A new trading day resets the baseline and re-arms.

        The new day's baseline is the one restored for it (an earlier session's), else ``equity``.
        """
        today = self.day
        if today is None or not self._day_begins <= now < self._day_ends:  # not per call: time zones are slow
            today = self.boundary.day_of(now)
            begins, ends = self.boundary.bounds(today)  # kept in UTC: comparing across zones calls zoneinfo
            self._day_begins, self._day_ends = begins.astimezone(UTC), ends.astimezone(UTC)
        if today != self.day:
            self.day = today
            marks = self._known_days.pop(today, None)
            if marks is None:
                self.day_start_equity = self.day_peak = equity
            else:
                self.day_start_equity, self.day_peak = marks.start_equity, marks.peak_equity
            self.day_dirty = True
            self._rearm(DAILY_LOSS, GLOBAL)
            self._rearm(DRAWDOWN, GLOBAL)
        if equity > self.day_peak:
            self.day_peak = equity
            self.day_dirty = True
        trips: list[Trip] = []
        lim = self.limits
        if lim.daily_loss is not None:
            pnl = equity - self.day_start_equity
            if pnl <= -lim.daily_loss:
                trip = self._fire(DAILY_LOSS, GLOBAL, KillState.REDUCE_ONLY,
                                  f"day P&L {pnl:.2f} reached the daily loss limit -{lim.daily_loss}")
                if trip:
                    trips.append(trip)
            else:
                self._rearm(DAILY_LOSS, GLOBAL)
        if lim.drawdown is not None:
            down = self.day_peak - equity
            if down >= lim.drawdown:
                trip = self._fire(DRAWDOWN, GLOBAL, KillState.HALTED,
                                  f"equity {equity:.2f} is {down:.2f} below the day's peak {self.day_peak:.2f}"
                                  f" (limit {lim.drawdown})")
                if trip:
                    trips.append(trip)
            else:
                self._rearm(DRAWDOWN, GLOBAL)
        return trips

    # -- order flow --------------------------------------------------------------------------------
    def on_broker_reject(self, now: datetime, reason: str | None) -> Trip | None:
        burst = self._rejects
        if burst is None:
            return None
        n = burst.add(now)
        if n < burst.threshold:
            self._rearm(REJECT_BURST, GLOBAL)
            return None
        return self._fire(REJECT_BURST, GLOBAL, KillState.HALTED,
                          f"{n} broker rejects within {self.limits.reject_window_s}s (last: {reason})")

    def on_rate_breach(self, now: datetime, strategy: str) -> Trip | None:
        lim = self.limits
        if not lim.rate_breach_burst:
            return None
        burst = self._rate_breaches.get(strategy)
        if burst is None:
            burst = self._rate_breaches[strategy] = _Burst(lim.rate_breach_burst, lim.rate_breach_window_s)
        n = burst.add(now)
        scope = strategy_scope(strategy)
        if n < burst.threshold:
            self._rearm(ORDER_RATE, scope)
            return None
        return self._fire(ORDER_RATE, scope, KillState.HALTED,
                          f"strategy {strategy} hit the order-rate limit {n} times within {lim.rate_breach_window_s}s")

    # -- connectivity ------------------------------------------------------------------------------
    def on_connection(self, now: datetime, connected: bool) -> None:
        if connected:
            self.disconnected_since = None
            self._rearm(DISCONNECT, GLOBAL)
        elif self.disconnected_since is None:
            self.disconnected_since = now

    def expected_outage(self) -> tuple[MaintenanceWindow, datetime] | None:
        """The maintenance window the current disconnect began in, with its end; None when it began outside
        one (or the link is up)."""
        since = self.disconnected_since
        return None if since is None else self.maintenance.covering(since)

    def check_disconnect(self, now: datetime) -> Trip | None:
        """Trip when the link has been down ``disconnect_timeout_s``; a disconnect that began inside a
        maintenance window is expected until the window ends, and trips that timeout after its end."""
        since = self.disconnected_since
        timeout = self.limits.disconnect_timeout_s
        if since is None or timeout is None:
            return None
        down = (now - since).total_seconds()
        window = self.expected_outage()
        if window is None:
            if down < timeout:
                return None
            return self._fire(DISCONNECT, GLOBAL, KillState.HALTED,
                              f"broker disconnected for {down:.1f}s (timeout {timeout}s)")
        name, ends = window[0].name, window[1]
        if (now - ends).total_seconds() < timeout:
            return None
        return self._fire(DISCONNECT, GLOBAL, KillState.HALTED,
                          f"broker disconnected for {down:.1f}s: it began in the maintenance window {name}, "
                          f"which ended at {ends.isoformat()}, and outlived it by {timeout}s")

    # -- books that disagree -----------------------------------------------------------------------
    def on_unknown_fill(self, symbol: str, exec_id: str, client_order_id: str) -> Trip | None:
        """Every unknown fill trips (an event, not a condition): after a resume, the next one trips again."""
        if not self.limits.unknown_fill:
            return None
        return Trip(UNKNOWN_FILL, symbol_scope(symbol), KillState.HALTED,
                    f"fill {exec_id} for order {client_order_id!r}, which this engine never sent")

    def on_position_break(self, symbol: str, ours: Decimal, theirs: Decimal) -> Trip | None:
        scope = symbol_scope(symbol)
        if not self.limits.reconciliation_mismatch:
            return None
        if ours == theirs:
            self._rearm(RECONCILIATION, scope)
            return None
        return self._fire(RECONCILIATION, scope, KillState.HALTED,
                          f"{symbol} position: ours {ours}, broker {theirs}, difference {theirs - ours}")
