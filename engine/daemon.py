"""``tradectl run --inbox``: the live daemon. One session served as a service until SIGTERM or SIGINT.

Signals come from the account's database inbox (fed by SQL, ``tradectl submit``, the Python client and
``POST /signals``), in arrival order, exactly once. ``POST /signals`` is served by a process of its own
(engine.intake), which also answers ``/healthz``, ``/readyz`` and ``/metrics`` from the engine's loopback
server; alerts and the systemd watchdog run on the engine's loop. A gateway that is not
up yet is waited for with backoff (IB Gateway restarts every day; a daemon must not exit for it).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from starlette.applications import Starlette

from broker.ibkr import IbkrError
from engine.http import RunningServer, check_bind, serve
from engine.intake import IntakeProcess, spec_for
from engine.live import IbkrSession
from engine.ops import Ops
from engine.session import SessionSummary, _on_stop_signals
from engine.sources import InboxSource
from repositories.inbox import SignalInbox

log = structlog.get_logger("tradectl.daemon")

CONNECT_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # then every 30 s


class HttpUnavailable(Exception):
    """The HTTP server could not listen (the address is taken or cannot be bound)."""


async def connect_with_backoff(session: IbkrSession, stop: asyncio.Event) -> bool:
    """Connect, retrying while the gateway is not up (or still holds our client id); False if stopped first.

    Refusals that a retry cannot fix (the account guard, the engine lock, the account binding) are raised.
    """
    attempt = 0
    while not stop.is_set():
        try:
            await session.connect()
            return True
        except IbkrError as err:
            wait = CONNECT_BACKOFF_S[min(attempt, len(CONNECT_BACKOFF_S) - 1)]
            attempt += 1
            log.warning("broker.waiting", error=str(err), attempt=attempt, retry_in_s=wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
    return False


async def run_daemon(session: IbkrSession, *, http: bool) -> SessionSummary | None:
    """Connect (waiting for the gateway), serve the intake and health, trade the inbox until a stop signal.

    None when stopped before the gateway ever answered (nothing was opened or traded).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # one stop for the whole life: a SIGTERM while connecting or wiring is not lost
    handled = _on_stop_signals(loop, stop)
    try:
        if not await connect_with_backoff(session, stop):
            return None
    except BaseException:
        for sig in handled:
            loop.remove_signal_handler(sig)
        raise
    settings = session.settings
    inbox = SignalInbox(session.db, session.account)
    ops = Ops.wire(session)
    ops.start()
    health_server: RunningServer | None = None
    intake: IntakeProcess | None = None
    source = InboxSource(inbox, session.recorder.consume_inbox, poll_s=settings.killswitch.poll_ms / 1000)
    try:
        if http or settings.http.enabled:
            secret = settings.http.resolved_secret()
            check_bind(settings.http.host, secret)
            # health and metrics on a loopback port of our own; the public address is the intake process's
            health_server = await serve(Starlette(routes=ops.routes()), "127.0.0.1", 0, None)
            db_url = session.db.url.render_as_string(hide_password=False)
            intake = IntakeProcess(spec_for(settings, db_url, session.account, health_server.port, secret),
                                   source.offer)
            try:
                await intake.start()
            except OSError as err:
                raise HttpUnavailable(str(err)) from err
            intake.on_exit = lambda code: log.error("http.intake_exited", exit_code=code,
                                                    detail="POST /signals is down; the inbox is still read")
        ops.ready()
        return await session.run(source=source, stop=stop)
    finally:
        if intake is not None:
            await intake.stop()
        if health_server is not None:
            await health_server.stop()
        await ops.stop()
