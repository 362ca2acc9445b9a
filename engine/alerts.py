"""Notifications through apprise (Telegram, Slack, email, any webhook, by URL), off the hot path.

``Alerts.notify`` formats nothing heavy and never blocks: it checks the event's mode (``on``, ``silent``,
``off``), drops a repeat of the same (event, key) inside ``repeat_interval_s``, and puts the message on a
bounded queue (full: dropped and counted). A daemon thread sends; whatever a service does (slow, down,
refusing), the exception stays in that thread and is counted, and trading never hears of it.

Sources of events:

- ``attach(bus)``: kill-switch changes (a trigger's trip, an operator's change, a position break).
- ``AlertWatch.check()`` on a timer (every second or so, never per signal): the broker link down past its
  allowance and back, a gateway unreachable long enough that a login or 2FA must be waiting, database
  writes failing and recovered, the engine blocked and unblocked, and the daily digest.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import apprise
import structlog

from broker.ib_codes import GatewayCondition
from engine.bus import EventBus
from engine.config import AlertsConfig
from engine.domain import Blocked, BlockedCause, KillState, KillSwitchChange

log = structlog.get_logger("tradectl.alerts")

EVENTS = ("killswitch", "operator_change", "disconnect", "reconciliation_break", "database_outage", "blocked",
          "login_needed", "gateway", "daily_digest")
RECONCILIATION_ACTOR = "trigger:reconciliation_mismatch"
SILENT_PARAMS = {"tgram": "silent=yes"}  # services whose URLs take a no-sound flag

# (title, body, level, silent) -> delivered
Sender = Callable[[str, str, str, bool], bool]


@dataclass(frozen=True, slots=True)
class Note:
    event: str
    key: str
    title: str
    body: str
    level: str
    silent: bool
    attach: str | None = None  # a file sent with it where the service takes attachments (the day's report)


def read_urls(config: AlertsConfig) -> list[str]:
    """``urls`` and the lines of ``urls_file`` (blank lines and ``#`` comments skipped)."""
    urls = list(config.urls)
    if config.urls_file is not None:
        for line in Path(config.urls_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                urls.append(line)
    return urls


def _silenced(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    param = SILENT_PARAMS.get(scheme)
    if param is None:
        return url
    return f"{url}{'&' if '?' in url else '?'}{param}"


class AppriseSender:
    """Sends through apprise: one set of URLs as given, one with the no-sound flag where a service has one."""

    def __init__(self, urls: list[str], timeout_s: float) -> None:
        self.loud = apprise.Apprise()
        self.quiet = apprise.Apprise()
        for url in urls:
            if not self.loud.add(url):
                log.error("alerts.bad_url", scheme=url.split("://", 1)[0])  # never log the URL: it holds tokens
                continue
            self.quiet.add(_silenced(url))
        self.timeout_s = timeout_s

    def __call__(self, title: str, body: str, level: str, silent: bool, attach: str | None = None) -> bool:
        target = self.quiet if silent else self.loud
        if not len(target):
            return False
        return bool(target.notify(body=body, title=title, notify_type=apprise.NotifyType(level), attach=attach))


class Alerts:
    """Rate-limited, queued notifications; ``notify`` is safe to call from the engine's loop."""

    def __init__(self, config: AlertsConfig, *, sender: Sender | None = None,
                 monotonic: Callable[[], float] = time.monotonic, prefix: str = "tradectl") -> None:
        self.config = config
        self.prefix = prefix
        self.monotonic = monotonic
        if sender is None:
            urls = read_urls(config)
            sender = AppriseSender(urls, config.timeout_s) if urls else None
        self.sender = sender
        self.queue: queue.Queue[Note | None] = queue.Queue(maxsize=config.queue_size)
        self._last: dict[tuple[str, str], float] = {}
        self.queued = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0  # the queue was full
        self.suppressed = 0  # a repeat inside repeat_interval_s
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def mode(self, event: str) -> str:
        return str(getattr(self.config.events, event))

    # -- the caller's side (never raises, never blocks) -------------------------------------------------
    def notify(self, event: str, title: str, body: str, *, key: str = "", level: str = "warning",
               repeat: bool = False, attach: str | None = None) -> bool:
        """Queue a notification; False when it is off, a rate-limited repeat, dropped, or nowhere to send.

        ``repeat`` bypasses the rate limit (a "recovered" message right after the "lost" one).
        """
        try:
            mode = self.mode(event)
            if mode == "off" or self.sender is None:
                return False
            now = self.monotonic()
            k = (event, key)
            last = self._last.get(k)
            if not repeat and last is not None and now - last < self.config.repeat_interval_s:
                self.suppressed += 1
                return False
            self._last[k] = now
            note = Note(event, key, f"[{self.prefix}] {title}", body, level, mode == "silent", attach)
            self._ensure_thread()
            try:
                self.queue.put_nowait(note)
            except queue.Full:
                self.dropped += 1
                log.warning("alerts.dropped", alert_event=event, queued=self.queue.qsize())
                return False
            self.queued += 1
            return True
        except Exception:  # an alert must never reach the caller as an error
            log.exception("alerts.notify_failed", alert_event=event)
            return False

    # -- the sending thread ------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tradectl-alerts", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        sender = self.sender
        assert sender is not None
        while True:
            note = self.queue.get()
            try:
                if note is None:
                    return
                try:
                    if note.attach is not None and isinstance(sender, AppriseSender):
                        ok = sender(note.title, note.body, note.level, note.silent, attach=note.attach)
                    else:
                        ok = sender(note.title, note.body, note.level, note.silent)
                except Exception as err:
                    ok = False
                    log.error("alerts.send_error", alert_event=note.event, error=f"{type(err).__name__}: {err}")
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
                    log.warning("alerts.not_delivered", alert_event=note.event, key=note.key)
            finally:
                self.queue.task_done()

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued notification was tried (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (bounded by ``timeout_s``), then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        self.drain(timeout_s)
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            return
        thread.join(timeout_s)

    # -- bus ---------------------------------------------------------------------------------------------
    def attach(self, bus: EventBus) -> Alerts:
        bus.killswitch += self.on_killswitch
        return self

    def on_killswitch(self, change: KillSwitchChange) -> None:
        """A kill-switch change: an operator's (``operator_change``), a position break's, or a trigger's."""
        what = f"{change.scope}: {change.from_state} -> {change.to_state}"
        if change.id is not None:
            self.notify("operator_change", f"kill switch {what}", f"by {change.actor}: {change.reason}",
                        key=f"{change.id}", level="info" if change.to_state is KillState.ACTIVE else "warning",
                        repeat=True)
        elif change.actor == RECONCILIATION_ACTOR and change.to_state is not KillState.ACTIVE:
            self.notify("reconciliation_break", f"position break, {change.scope} {change.to_state}",
                        f"{change.reason}. Trading in {change.scope} stopped; compare with TWS, then "
                        f"`tradectl resume --scope {change.scope} --reason ...`", key=change.scope, level="failure")
        elif change.to_state.severity > change.from_state.severity:
            self.notify("killswitch", f"kill switch tripped, {what}",
                        f"{change.actor}: {change.reason}. Nothing resumes by itself: "
                        f"`tradectl resume --scope {change.scope} --reason ...`",
                        key=f"{change.scope}:{change.to_state}", level="failure")

    # -- digest ------------------------------------------------------------------------------------------
    def digest(self, summary: dict[str, Any], day: str = "", report: str | None = None) -> bool:
        """The daily digest; ``report``: the day's report file, named in the body and attached."""
        title, body = digest_message(summary, day, report)
        return self.notify("daily_digest", title, body, key=day or "digest", level="info", repeat=True,
                           attach=report)


def _money(x: Any) -> str:
    try:
        return f"{Decimal(str(x)):,.2f}"
    except Exception:
        return str(x)


def digest_message(summary: dict[str, Any], day: str = "", report: str | None = None) -> tuple[str, str]:
    """A daily digest from a summary dict: equity, day P&L, realized P&L, commissions, fills, orders, signals,
    rejects (with the top reasons), kill switches not ACTIVE, the day's report. Missing keys are left out."""
    title = f"daily digest {day}".strip()
    lines: list[str] = []
    labels = (("equity", "equity"), ("day_pnl", "day P&L"), ("realized_pnl", "realized P&L"),
              ("unrealized_pnl", "unrealized P&L"), ("commissions", "commissions"), ("drawdown", "drawdown"))
    for k, label in labels:
        if k in summary:
            lines.append(f"{label}: {_money(summary[k])}")
    counts = (("signals", "signals"), ("accepted", "accepted"), ("rejected", "rejected"), ("orders", "orders"),
              ("fills", "fills"))
    for k, label in counts:
        if k in summary:
            lines.append(f"{label}: {summary[k]}")
    reasons = summary.get("reject_reasons") or {}
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
        lines.append("top rejects: " + ", ".join(f"{code} {n}" for code, n in top))
    switches = summary.get("killswitches") or {}
    if switches:
        lines.append("kill switches: " + ", ".join(f"{scope} {state}" for scope, state in sorted(switches.items())))
    if report is not None:
        lines.append(f"report: {Path(report).resolve().as_uri()}")
    return title, "\n".join(lines) or "no activity"


def session_totals(session: Any) -> dict[str, Any]:
    """The session's running counts (what a digest subtracts the previous digest's from)."""
    st = session.engine.stats
    return {"signals": st.signals, "accepted": st.accepted, "rejected": st.rejected + st.invalid + st.duplicates,
            "orders": st.orders, "fills": st.fills,
            "reject_reasons": {str(k): v for k, v in st.reject_reasons.items()}}


def session_digest(session: Any, since: dict[str, Any] | None = None) -> dict[str, Any]:
    """A digest summary read from a running session; counts since ``since`` (``session_totals`` at the last
    digest), money as the engine marks it now."""
    engine = session.engine
    equity = engine.equity()
    trips = engine.trips
    totals = session_totals(session)
    base = since or {}
    summary: dict[str, Any] = {
        "equity": equity,
        "day_pnl": trips.day_pnl(equity) if trips.day is not None else Decimal(0),
        "realized_pnl": engine.realized_pnl,
        "commissions": engine.commissions,
    }
    for k in ("signals", "accepted", "rejected", "orders", "fills"):
        summary[k] = totals[k] - base.get(k, 0)
    before = base.get("reject_reasons", {})
    reasons = {k: v - before.get(k, 0) for k, v in totals["reject_reasons"].items()}
    summary["reject_reasons"] = {k: v for k, v in reasons.items() if v}
    summary["killswitches"] = {k: str(v) for k, v in engine.killswitches.snapshot().items()}
    return summary


class AlertWatch:
    """State-change alerts read from a session on a timer (``check``), never per signal."""

    def __init__(self, alerts: Alerts, session: Any, *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.alerts = alerts
        self.session = session
        self.monotonic = monotonic
        self.wall = wall
        self.down_since: float | None = None
        self.disconnect_sent = False
        self.login_sent = False
        self.db_failing: str | None = None
        self.blocked: Blocked | None = None
        self.gateway_bad: frozenset[GatewayCondition] = frozenset()  # conditions needed to trade, reported down
        hh, mm = alerts.config.digest_at_utc.split(":")
        self.digest_at = (int(hh), int(mm))
        self.last_digest_day: str | None = self._digest_day(wall())  # the first digest comes at the next time
        self.digest_base: dict[str, Any] | None = None
        # Writes the named day's report and returns its path (engine/session_report.py DayReports): called in a
        # thread of its own, never on the engine's loop; the digest goes out when it returns.
        self.day_report: Callable[[str], str | None] | None = None
        self.report_thread: threading.Thread | None = None

    def _digest_day(self, now: datetime) -> str | None:
        """The digest day that is due at ``now``: today once past digest_at_utc, else yesterday."""
        at = now.replace(hour=self.digest_at[0], minute=self.digest_at[1], second=0, microsecond=0)
        return (now if now >= at else now - timedelta(days=1)).date().isoformat()

    def check(self) -> None:
        """Compare the session's state with the last look; notify what changed. Never raises."""
        try:
            self._check()
        except Exception:
            log.exception("alerts.watch_failed")

    def _check(self) -> None:
        a, cfg = self.alerts, self.alerts.config
        engine = self.session.engine
        now = self.monotonic()
        # broker link
        expected = None if engine.broker_connected else engine.trips.expected_outage()
        if expected is not None and engine.clock() < expected[1]:
            self.down_since = None  # inside its maintenance window: the alerts' clock starts when the window ends
        elif not engine.broker_connected:
            if self.down_since is None:
                late = (engine.clock() - expected[1]).total_seconds() if expected is not None else 0.0
                self.down_since = now - late
            down = now - self.down_since
            if not self.disconnect_sent and down >= cfg.disconnect_after_s:
                self.disconnect_sent = True
                a.notify(
                    "disconnect", "broker disconnected",
                    f"{engine.broker.name} down for {down:.0f}s; new orders are refused until it is back "
                    f"(IB's daily restart is normal: see the runbook)", key="broker", level="failure")
            if not self.login_sent and down >= cfg.login_after_s:
                self.login_sent = True
                a.notify(
                    "login_needed", "IB login or 2FA needed?",
                    f"the gateway has been unreachable for {down / 60:.0f} min: it may be waiting for a login or a "
                    f"2FA approval (IB's weekly re-login). Check the IB Gateway/IBC container and approve on the "
                    f"IBKR Mobile app", key="broker", level="failure")
        elif self.down_since is not None:
            down = now - self.down_since
            if self.disconnect_sent:
                a.notify("disconnect", "broker reconnected", f"{engine.broker.name} back after {down:.0f}s; "
                         f"reconciliation runs before the next orders", key="broker", level="success", repeat=True)
            self.down_since = None
            self.disconnect_sent = self.login_sent = False
        # the gateway's own links (10197 competing session, 1100, a broken market data farm)
        gateway = getattr(engine.broker, "gateway", None) or {}
        bad = frozenset(c for c, (ok, _) in gateway.items() if not ok and c.needed_to_trade)
        if engine.broker_connected and bad != self.gateway_bad:
            for c in sorted(bad - self.gateway_bad):
                a.notify("gateway", f"IB Gateway: {c.value} down", f"{gateway[c][1]}; no quotes or orders depend "
                         f"on it until it is back (10197: log the phone or other TWS out)",
                         key=f"gateway:{c.value}", level="failure")
            for c in sorted(self.gateway_bad - bad):
                a.notify("gateway", f"IB Gateway: {c.value} back", gateway[c][1], key=f"gateway:{c.value}",
                         level="success", repeat=True)
            self.gateway_bad = bad
        # database
        failing = self.session.recorder.failing
        if failing != self.db_failing:
            if failing is not None and self.db_failing is None:
                a.notify("database_outage", "database writes failing",
                         f"{failing}; rows are kept in memory and new orders refused until writes succeed",
                         key="database", level="failure")
            elif failing is None:
                a.notify("database_outage", "database writes succeed again", "trading resumes",
                         key="database", level="success", repeat=True)
            self.db_failing = failing
        # blocked (other than the database, which has its own event)
        blocked = engine.blocked
        if blocked is not None and blocked.cause is BlockedCause.DATABASE_UNAVAILABLE:
            blocked = None
        if blocked != self.blocked:
            if blocked is not None:
                a.notify("blocked", "engine blocked", f"{blocked}; no new orders", key="blocked", level="failure")
            else:
                a.notify("blocked", "engine unblocked", "new orders allowed again", key="blocked", level="success",
                         repeat=True)
            self.blocked = blocked
        # daily digest
        day = self._digest_day(self.wall())
        if day != self.last_digest_day:
            summary = session_digest(self.session, self.digest_base)
            if self.day_report is not None and day:
                self.report_thread = threading.Thread(target=self._digest_with_report, args=(summary, day),
                                                      name="tradectl-day-report", daemon=True)
                self.report_thread.start()
            else:
                a.digest(summary, day or "")
            self.digest_base = session_totals(self.session)
            self.last_digest_day = day

    def _digest_with_report(self, summary: dict[str, Any], day: str) -> None:
        """The digest with the day's report; without it (named in the log) when the report cannot be written."""
        report = None
        try:
            assert self.day_report is not None
            report = self.day_report(day)
        except Exception:
            log.exception("alerts.day_report_failed", day=day)
        self.alerts.digest(summary, day, report)
