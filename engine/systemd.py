"""systemd's notify protocol by hand: ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``, ``STOPPING=1``.

A datagram to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace). Without ``NOTIFY_SOCKET`` (not started by systemd with ``Type=notify``) every call is a no-op.
A failed send is logged and ignored: systemd's watchdog, not an exception here, decides what happens.

With ``Type=notify`` and ``WatchdogSec``, the daemon says ``READY=1`` once reconciliation is done (it can
trade), and ``watchdog_loop`` pings every half period only while the loop-health predicate holds, so
systemd restarts a stuck daemon, not only a crashed one.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("tradectl.systemd")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        wanted = usec is not None and usec.isdigit() and int(usec) > 0 and (pid is None or pid == str(os.getpid()))
        self.watchdog_s: float | None = int(usec) / 1e6 if wanted and usec is not None else None
        self.sent = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when disabled or the send failed."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError as err:
            self.failures += 1
            log.warning("systemd.notify_failed", error=str(err), message=message.decode()[:80])
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


async def watchdog_loop(notifier: Notifier, healthy: Callable[[], bool], interval_s: float | None = None,
                        on_unhealthy: Callable[[], None] | None = None) -> None:
    """Ping ``WATCHDOG=1`` every ``interval_s`` (default: half of ``WatchdogSec``) while ``healthy()``.

    Runs as a task on the engine's loop: if the loop is stuck nothing is sent, and if the predicate says
    unhealthy (a stale heartbeat, say) the pings stop and systemd restarts the service after WatchdogSec.
    Returns at once when systemd asked for no watchdog and no interval is given.
    """
    period = interval_s if interval_s is not None else (notifier.watchdog_s / 2 if notifier.watchdog_s else None)
    if period is None or not notifier.enabled:
        return
    warned = False
    while True:
        ok = False
        try:
            ok = healthy()
        except Exception:
            log.exception("systemd.health_check_failed")
        if ok:
            notifier.watchdog()
            warned = False
        elif not warned:
            warned = True
            log.error("systemd.watchdog_withheld", detail="the loop is unhealthy: systemd restarts the service "
                                                         "if it stays so for WatchdogSec")
            if on_unhealthy is not None:
                on_unhealthy()
        await asyncio.sleep(period)
