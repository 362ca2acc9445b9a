"""Alerts through apprise to a local HTTP receiver: delivered, rate limited, switched off, and never an error
for the caller when the service fails."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.alerts import Alerts, AlertWatch, digest_message, read_urls
from engine.bus import EventBus
from engine.config import AlertsConfig, Settings, load_settings
from engine.domain import Blocked, BlockedCause, KillState, KillSwitchChange
from engine.session import PaperSession
from engine.session_report import DayReports
from engine.sources import DEMO_SIGNALS
from tests.conftest import T0


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def collect(into: list[Any], what: str = "title") -> Callable[[str, str, str, bool], bool]:
    """A sender that keeps one part of each notification (title, body or silent) instead of sending it."""

    def send(title: str, body: str, level: str, silent: bool) -> bool:
        into.append({"title": title, "body": body, "silent": silent}[what])
        return True

    return send


def alerts(urls: list[str], **cfg: Any) -> Alerts:
    return Alerts(AlertsConfig(urls=urls, timeout_s=2, **cfg))


def test_a_notification_reaches_the_webhook_with_its_title_and_body(receiver: Receiver) -> None:
    a = alerts([receiver.url])
    assert a.notify("blocked", "engine blocked", "database unavailable")
    assert a.drain()
    [body] = receiver.wait_for(1)
    assert body["title"] == "[tradectl] engine blocked" and body["message"] == "database unavailable"
    assert a.sent == 1
    a.close()


def test_a_failing_url_never_raises_into_the_caller_and_is_counted() -> None:
    a = alerts([f"json://127.0.0.1:{closed_port()}/hook"])
    assert a.notify("blocked", "engine blocked", "x") is True  # queued: the caller is done
    assert a.drain()
    assert a.failed == 1 and a.sent == 0
    a.close()


def test_a_sender_that_raises_is_counted_as_failed() -> None:
    def boom(title: str, body: str, level: str, silent: bool) -> bool:
        raise RuntimeError("service exploded")

    a = Alerts(AlertsConfig(), sender=boom)
    assert a.notify("blocked", "t", "b")
    assert a.drain() and a.failed == 1
    a.close()


def test_repeats_of_the_same_event_and_key_are_rate_limited(receiver: Receiver) -> None:
    now = [0.0]
    a = Alerts(AlertsConfig(urls=[receiver.url], repeat_interval_s=60), monotonic=lambda: now[0])
    assert a.notify("disconnect", "down", "1", key="broker")
    assert not a.notify("disconnect", "down", "2", key="broker")
    assert a.notify("disconnect", "down", "other key", key="other")
    now[0] = 61.0
    assert a.notify("disconnect", "down", "3", key="broker")
    assert a.drain()
    assert [b["message"] for b in receiver.wait_for(3)] == ["1", "other key", "3"] and a.suppressed == 1
    a.close()


def test_an_event_set_off_sends_nothing(receiver: Receiver) -> None:
    a = alerts([receiver.url], events={"blocked": "off"})
    assert not a.notify("blocked", "engine blocked", "x")
    assert a.queued == 0 and a.drain()
    time.sleep(0.1)
    assert receiver.bodies == []


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    release = threading.Event()

    def slow(title: str, body: str, level: str, silent: bool) -> bool:
        release.wait(5)
        return True

    a = Alerts(AlertsConfig(queue_size=1, repeat_interval_s=0), sender=slow)
    t0 = time.perf_counter()
    results = [a.notify("blocked", "t", str(i), key=str(i)) for i in range(5)]
    assert time.perf_counter() - t0 < 0.5
    assert results.count(False) >= 3 and a.dropped == results.count(False)
    release.set()
    assert a.drain()
    a.close()


def test_a_silent_event_goes_out_marked_silent() -> None:
    got: list[bool] = []
    a = Alerts(AlertsConfig(events={"daily_digest": "silent"}),
               sender=collect(got, "silent"))
    a.notify("daily_digest", "digest", "b")
    assert a.drain() and got == [True]
    a.close()


def test_kill_switch_changes_on_the_bus_become_alerts_by_kind() -> None:
    sent: list[str] = []
    a = Alerts(AlertsConfig(), sender=collect(sent))
    bus = EventBus()
    a.attach(bus)
    bus.killswitch.emit(KillSwitchChange(T0, "global", KillState.ACTIVE, KillState.HALTED, "drawdown",
                                         "trigger:drawdown"))
    bus.killswitch.emit(KillSwitchChange(T0, "symbol:AAPL", KillState.ACTIVE, KillState.HALTED, "ours 1 broker 2",
                                         "trigger:reconciliation_mismatch"))
    bus.killswitch.emit(KillSwitchChange(T0, "global", KillState.HALTED, KillState.ACTIVE, "fixed", "ops", id=7))
    assert a.drain()
    assert [t.split("] ", 1)[1].split(",")[0] for t in sent] == [
        "kill switch tripped", "position break", "kill switch global: HALTED -> ACTIVE"]
    a.close()


def fake_session() -> SimpleNamespace:
    from decimal import Decimal

    from engine.engine import EngineStats
    from risk.killswitch import KillSwitchBoard
    from risk.triggers import TripWires

    engine = SimpleNamespace(broker_connected=True, blocked=None, broker=SimpleNamespace(name="ibkr"),
                             stats=EngineStats(), trips=TripWires(), killswitches=KillSwitchBoard(),
                             realized_pnl=Decimal(0), commissions=Decimal(0), equity=lambda: Decimal(1000))
    return SimpleNamespace(engine=engine, recorder=SimpleNamespace(failing=None))


def link_watch() -> tuple[list[str], list[float], Alerts, SimpleNamespace, AlertWatch]:
    """An alert watch over a fake session on a hand-moved monotonic clock (``now[0]``): 30 s allowance for a
    disconnect, 600 s before a login is called for. Returns (titles sent, now, alerts, session, watch)."""
    sent: list[str] = []
    now = [0.0]
    a = Alerts(AlertsConfig(disconnect_after_s=30, login_after_s=600), sender=collect(sent))
    session = fake_session()
    return sent, now, a, session, AlertWatch(a, session, monotonic=lambda: now[0])


def test_the_watch_alerts_a_disconnect_past_its_allowance_once_and_then_the_reconnect() -> None:
    sent, now, a, session, watch = link_watch()
    session.engine.broker_connected = False
    watch.check()
    now[0] = 20.0
    watch.check()  # inside the allowance: nothing
    now[0] = 31.0
    watch.check()
    now[0] = 40.0
    watch.check()  # already said
    session.engine.broker_connected = True
    watch.check()
    assert a.drain()
    assert sent == ["[tradectl] broker disconnected", "[tradectl] broker reconnected"]
    a.close()


def test_a_disconnect_inside_a_maintenance_window_is_alerted_only_once_it_outlives_the_window() -> None:
    from datetime import timedelta

    from risk.triggers import TripWires
    from risk.windows import Maintenance, MaintenanceWindow

    sent, now, a, session, watch = link_watch()
    window_end = T0 + timedelta(minutes=10)
    session.engine.trips = TripWires(maintenance=Maintenance((MaintenanceWindow("reset", T0.time(), 10, UTC),)))
    wall = [T0 + timedelta(minutes=1)]
    session.engine.clock = lambda: wall[0]
    session.engine.broker_connected = False
    session.engine.trips.on_connection(wall[0], connected=False)
    for step in range(9):  # eight minutes down inside the window: quiet
        now[0], wall[0] = 60.0 * step, T0 + timedelta(minutes=1 + step)
        watch.check()
    now[0], wall[0] = 600.0, window_end + timedelta(seconds=1)
    watch.check()  # the window ended a second ago: the 30 s allowance runs from its end
    now[0] = 628.0
    watch.check()
    assert a.drain() and sent == []
    now[0] = 631.0
    watch.check()
    assert a.drain() and sent == ["[tradectl] broker disconnected"]
    a.close()


def test_the_watch_says_a_login_is_needed_when_the_gateway_stays_away() -> None:
    sent, now, a, session, watch = link_watch()
    session.engine.broker_connected = False
    for t in (0.0, 31.0, 601.0):
        now[0] = t
        watch.check()
    assert a.drain() and sent[-1] == "[tradectl] IB login or 2FA needed?"
    a.close()


def test_the_watch_alerts_a_database_outage_and_its_end() -> None:
    sent: list[str] = []
    a = Alerts(AlertsConfig(), sender=collect(sent))
    session = fake_session()
    watch = AlertWatch(a, session)
    session.recorder.failing = "connection refused"
    session.engine.blocked = Blocked(BlockedCause.DATABASE_UNAVAILABLE, "connection refused")
    watch.check()
    session.recorder.failing = None
    session.engine.blocked = None
    watch.check()
    assert a.drain()
    assert sent == ["[tradectl] database writes failing", "[tradectl] database writes succeed again"]
    a.close()


def test_the_watch_sends_the_digest_once_a_day_at_its_time() -> None:
    bodies: list[str] = []
    wall = [datetime(2026, 1, 5, 20, 0, tzinfo=UTC)]
    a = Alerts(AlertsConfig(digest_at_utc="21:00"), sender=collect(bodies, "body"))
    session = fake_session()
    watch = AlertWatch(a, session, wall=lambda: wall[0])
    watch.check()
    session.engine.stats.fills = 3
    wall[0] = datetime(2026, 1, 5, 21, 0, 1, tzinfo=UTC)
    watch.check()
    watch.check()
    assert a.drain() and len(bodies) == 1 and "fills: 3" in bodies[0]
    a.close()


def test_the_digest_names_pnl_fills_rejects_and_equity() -> None:
    title, body = digest_message({"equity": "1000500.5", "day_pnl": "500.5", "fills": 12, "rejected": 3,
                                  "reject_reasons": {"killswitch": 2, "no_edge": 1}}, "2026-01-05")
    assert title == "daily digest 2026-01-05"
    assert body.splitlines() == ["equity: 1,000,500.50", "day P&L: 500.50", "rejected: 3", "fills: 12",
                                 "top rejects: killswitch 2, no_edge 1"]


def test_urls_are_read_from_a_secret_file(tmp_path: Any) -> None:
    f = tmp_path / "urls"
    f.write_text("# comment\njson://127.0.0.1:1/a\n\n")
    assert read_urls(AlertsConfig(urls=["json://x/b"], urls_file=f)) == ["json://x/b", "json://127.0.0.1:1/a"]


def demo_day_settings(tmp_path: Path) -> Settings:
    """A database holding a paper session of the demo's first 120 signals, stamped on 2026-01-05."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'day.db'}")
    with DEMO_SIGNALS.open(encoding="utf-8") as fh:
        PaperSession(settings, seed=3).run_file([line.rstrip("\n") for line in islice(fh, 120)])
    return settings


def test_the_digest_names_the_days_report_written_off_the_watchs_thread(tmp_path: Path) -> None:
    bodies: list[str] = []
    wall = [datetime(2026, 1, 5, 20, 0, tzinfo=UTC)]
    a = Alerts(AlertsConfig(digest_at_utc="21:00"), sender=collect(bodies, "body"))
    watch = AlertWatch(a, fake_session(), wall=lambda: wall[0])
    watch.day_report = DayReports(demo_day_settings(tmp_path))
    wall[0] = datetime(2026, 1, 5, 21, 0, 1, tzinfo=UTC)
    watch.check()
    assert watch.report_thread is not None
    watch.report_thread.join(30)
    assert a.drain() and len(bodies) == 1
    report = tmp_path / "reports" / "day-2026-01-05.html"
    assert f"report: {report.resolve().as_uri()}" in bodies[0]
    assert "tradectl report: trading day 2026-01-05" in report.read_text(encoding="utf-8")
    a.close()


def test_the_digest_of_a_day_with_nothing_to_report_goes_out_without_a_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bodies: list[str] = []
    wall = [datetime(2026, 1, 6, 20, 0, tzinfo=UTC)]  # the demo's signals are all of 2026-01-05
    a = Alerts(AlertsConfig(digest_at_utc="21:00"), sender=collect(bodies, "body"))
    watch = AlertWatch(a, fake_session(), wall=lambda: wall[0])
    watch.day_report = DayReports(demo_day_settings(tmp_path))
    wall[0] = datetime(2026, 1, 6, 21, 0, 1, tzinfo=UTC)
    watch.check()
    assert watch.report_thread is not None
    watch.report_thread.join(30)
    assert a.drain() and len(bodies) == 1 and "report:" not in bodies[0]
    assert not (tmp_path / "reports").exists()
    logged = capsys.readouterr()  # stdout, or stderr once a command has set logging up
    assert "report.nothing" in logged.out + logged.err and "day_report_failed" not in logged.out + logged.err
    a.close()


def test_the_digest_still_goes_out_when_the_days_report_cannot_be_written(tmp_path: Path) -> None:
    bodies: list[str] = []
    wall = [datetime(2026, 1, 5, 20, 0, tzinfo=UTC)]
    a = Alerts(AlertsConfig(digest_at_utc="21:00"), sender=collect(bodies, "body"))
    watch = AlertWatch(a, fake_session(), wall=lambda: wall[0])
    watch.day_report = DayReports(load_settings(database_url=f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    wall[0] = datetime(2026, 1, 5, 21, 0, 1, tzinfo=UTC)
    watch.check()
    assert watch.report_thread is not None
    watch.report_thread.join(30)
    assert a.drain() and len(bodies) == 1 and "report:" not in bodies[0] and "fills: 0" in bodies[0]
    a.close()


def test_the_digest_attaches_the_days_report_where_the_service_takes_files(receiver: Receiver,
                                                                           tmp_path: Path) -> None:
    report = tmp_path / "day-2026-01-05.html"
    report.write_text("<html>the day</html>", encoding="utf-8")
    a = alerts([receiver.url])
    assert a.digest({"fills": 3}, "2026-01-05", str(report))
    assert a.drain()
    [body] = receiver.wait_for(1)
    assert [x["filename"] for x in body["attachments"]] == ["day-2026-01-05.html"]
    assert f"report: {report.resolve().as_uri()}" in body["message"]
    a.close()
