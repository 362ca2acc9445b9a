"""``tradectl run --inbox``: the live daemon. One session served as a service until SIGTERM or SIGINT.

Signals come from the account's database inbox (fed by SQL, ``tradectl submit``, the Python client and
``POST /signals``), in arrival order, exactly once. Beside the intake the HTTP server answers ``/healthz``,
``/readyz`` and ``/metrics``; alerts and the systemd watchdog run on the same loop. A gateway that is not
up yet is waited for with backoff (IB Gateway restarts every day; a daemon must not exit for it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from broker.ibkr import IbkrError
from engine.http import RunningServer, build_app, inbox_intake, serve
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
    server: RunningServer | None = None
    source = InboxSource(inbox, session.recorder.consume_inbox, poll_s=settings.killswitch.poll_ms / 1000)
    take = inbox_intake(inbox)

    def intake(lines: list[str]) -> list[dict[str, Any]]:
        answers = take(lines)
        source.wake()  # our own writes: no need to wait for NOTIFY or the poll
        return answers

    try:
        if http or settings.http.enabled:
            h = settings.http
            secret = h.resolved_secret()
            app = build_app(intake=intake, outcome=inbox.outcome, secret=secret,
                            max_body_bytes=h.max_body_bytes, query_token=h.query_token,
                            registry=ops.metrics.registry, routes=ops.routes())
            try:
                server = await serve(app, h.host, h.port, secret)
            except OSError as err:
                raise HttpUnavailable(f"cannot serve HTTP on {h.host}:{h.port}: {err.strerror or err}") from err
            log.info("http.listening", host=h.host, port=server.port, auth=secret is not None)
        ops.ready()
        return await session.run(source=source, stop=stop)
    finally:
        if server is not None:
            await server.stop()
        await ops.stop()
