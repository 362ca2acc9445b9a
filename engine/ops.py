"""Everything a long-running session needs beside trading, wired in one call: health, metrics, alerts,
systemd notify and watchdog. Self-contained, so a session runner adds a few lines::

    ops = Ops.wire(session)               # after connect()/prepare(): bus, engine, recorder exist
    routes = ops.routes()                 # /healthz /readyz /metrics: mount beside POST /signals
    ops.start()                           # loop heartbeat, watchdog, alert watch (tasks on this loop)
    ops.ready()                           # READY=1 once reconciled: systemd's `start` returns
    ...
    await ops.stop()                      # STOPPING=1, tasks cancelled, queued alerts sent (bounded)

Nothing here runs per signal except the metrics' bus handlers (a few integer increments).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from starlette.routing import Route

from engine.alerts import Alerts, AlertWatch
from engine.health import DEFAULT_LOOP_STALE_S, Health, health_routes, observe
from engine.metrics import SessionMetrics
from engine.session_report import DayReports
from engine.systemd import Notifier, watchdog_loop

log = structlog.get_logger("tradectl.ops")


class Ops:
    def __init__(self, session: Any, health: Health, metrics: SessionMetrics, alerts: Alerts, watch: AlertWatch,
                 notifier: Notifier, *, beat_s: float = 1.0, watch_s: float = 1.0) -> None:
        self.session = session
        self.health = health
        self.metrics = metrics
        self.alerts = alerts
        self.watch = watch
        self.notifier = notifier
        self.beat_s = beat_s
        self.watch_s = watch_s
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    def wire(cls, session: Any, *, notifier: Notifier | None = None, alerts: Alerts | None = None,
             loop_stale_s: float = DEFAULT_LOOP_STALE_S) -> Ops:
        """Health and metrics on the session's bus, alerts from ``settings.alerts`` (kill-switch changes from
        the bus, the rest from a watch), systemd from the environment (a no-op outside systemd)."""
        health, metrics = observe(session, loop_stale_s=loop_stale_s)
        alerts = alerts if alerts is not None else Alerts(session.settings.alerts)
        alerts.attach(session.bus)
        watch = AlertWatch(alerts, session)
        if session.settings.report.digest:  # the digest names and attaches the day's report
            watch.day_report = DayReports(session.settings)
        return cls(session, health, metrics, alerts, watch, notifier or Notifier())

    def routes(self) -> list[Route]:
        return health_routes(self.health, self.metrics)

    def start(self) -> list[asyncio.Task[None]]:
        """Start the heartbeat, the watchdog and the alert watch as tasks on the running loop."""
        self.tasks = [
            asyncio.create_task(self.health.keep_beating(self.beat_s), name="tradectl-heartbeat"),
            asyncio.create_task(watchdog_loop(self.notifier, self.health.alive), name="tradectl-watchdog"),
            asyncio.create_task(self._watch(), name="tradectl-alert-watch"),
        ]
        return self.tasks

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_s)
            self.watch.check()

    def ready(self, status: str = "reconciled; trading") -> None:
        self.notifier.ready(status)
        log.info("ops.ready", systemd=self.notifier.enabled)

    async def stop(self, alert_patience_s: float = 5.0) -> None:
        self.notifier.stopping()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        await asyncio.to_thread(self.alerts.close, alert_patience_s)
