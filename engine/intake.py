"""The daemon's HTTP intake in a process of its own, so that neither slows the other.

At thousands of requests a second, parsing HTTP and writing the inbox would take most of the engine's
loop (one core: the GIL) and delay fills and signals; and a backlog the engine works through would delay
the answers. So ``tradectl run --http`` starts this worker (``python -m engine.intake``) beside the engine:

- it serves the public address: ``POST /signals`` and ``GET /signals/{id}`` itself (engine.http.build_app),
  and ``/healthz``, ``/readyz``, ``/metrics`` by asking the engine's own server on a loopback port (the
  worker's counters of refused requests are added to ``/metrics``);
- it writes the inbox by **group commit**: requests that arrive while a write is in flight go together in
  the next transaction, so a burst costs one commit, not one per request, and every answer still follows
  the commit of its own signals;
- after each commit it hands the new rows (id and line), with the id of the account's row before them,
  to the engine over a socket pair: an engine that has taken exactly up to that row trades them at once
  without reading them back. Otherwise (rows of other producers in between, a lost message) it reads the
  inbox, which has them all: the database is the truth, the hand-over only a shortcut.

The engine and the worker share a socket pair: the engine sends the worker's settings first (the secret
never appears on a command line); the worker answers ``("listening", port)`` or ``("failed", why)``, then
sends ``("rows", id of the row before, [(id, line), ...])`` after each commit. The worker exits when the
engine closes its end or dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.http import Answer, build_app, serve
from repositories.inbox import Receipt, SignalInbox

log = structlog.get_logger("tradectl.intake")

Rows = list[tuple[int, str]]
Handed = Callable[[int, Rows], None]  # (the account's row before these, the new rows) of one commit
START_TIMEOUT_S = 30.0
UPSTREAM_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class IntakeSpec:
    """What the worker needs: plain values, sent over the socket pair."""

    db_url: str
    account: str
    host: str
    port: int
    secret: str | None
    max_body_bytes: int
    query_token: bool
    upstream_port: int  # the engine's loopback server for /healthz, /readyz and /metrics
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"


class GroupCommit:
    """The inbox writer of the worker: one transaction for every request waiting when a write starts.

    Callers await their own receipts; a failed transaction fails each request in it (each answers 503, and
    the producer retries: ids are idempotent). ``on_rows`` is told the new rows of each commit, in id order,
    on the thread that wrote them (one write at a time, so never two calls at once).
    """

    def __init__(self, inbox: SignalInbox, on_rows: Handed | None = None) -> None:
        self.inbox = inbox
        self.on_rows = on_rows
        self._waiting: list[tuple[list[str], asyncio.Future[list[Answer]]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0  # transactions written (a burst of requests shares one)
        self.in_thread = inbox.db.dialect.name == "postgresql"  # see _write

    async def __call__(self, lines: list[str]) -> list[Answer]:
        self.inbox.check(lines)  # a line the inbox cannot hold fails its own request, not the group's
        done: asyncio.Future[list[Answer]] = asyncio.get_running_loop().create_future()
        self._waiting.append((lines, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="tradectl-inbox-writer")
        return await done

    async def _write(self) -> None:
        # SQLite: on the loop, not in a thread: the write is mostly CPU (the GIL), and the hop to a thread and
        # back cost more than it. PostgreSQL: in a thread, as the write is mostly waiting for the server (one
        # round trip, ``SignalInbox.append``), and the loop reads and parses the next requests meanwhile, which
        # then share the next transaction. A lone request too: on the loop it was 20-30% faster for one
        # producer, but an INSERT can wait (the account's arrival lock held by another producer's open
        # transaction, a new connection), and the loop must go on answering /healthz and the other requests.
        # Either way, requests read while a write is in flight wait for the next one.
        while self._waiting:
            group, self._waiting = self._waiting, []
            lines = [line for request, _ in group for line in request]
            try:
                if self.in_thread:
                    receipts = await asyncio.to_thread(self._commit, lines)
                else:
                    receipts = self._commit(lines)
            except Exception as err:  # each request answers 503 and is retried by its producer
                for _, done in group:
                    if not done.done():
                        done.set_exception(err)
                continue
            self.commits += 1
            at = 0
            for request, done in group:
                if not done.done():
                    done.set_result([r.to_json() for r in receipts[at:at + len(request)]])
                at += len(request)

    def _commit(self, lines: list[str]) -> list[Receipt]:
        """Append one group and hand its new rows over at once: on PostgreSQL from the write's thread, before
        its result wakes the loop (that wake-up, and the GIL, cost ~0.1-1 ms on the way to the order)."""
        receipts, before = self.inbox.append(lines, "http")
        new = [(r.inbox_id, line) for r, line in zip(receipts, lines, strict=True) if not r.duplicate]
        if self.on_rows is not None and new:
            self.on_rows(before, new)
        return receipts


async def _ask_upstream(port: int, path: str) -> tuple[int, str, bytes]:
    """GET ``path`` from the engine's loopback server: (status, content type, body). HTTP/1.0, one request
    a connection: the answers are small and the server is ours."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), UPSTREAM_TIMEOUT_S)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), UPSTREAM_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return status, headers.get("content-type", "application/json"), body


def upstream_routes(port: int, registry: CollectorRegistry) -> list[BaseRoute]:
    """``/healthz``, ``/readyz`` and ``/metrics`` answered by the engine; ``/metrics`` with the worker's own
    series appended. An engine that does not answer is not alive: 503."""

    def route(path: str) -> Route:
        async def forward(request: Request) -> Response:
            try:
                status, media, body = await _ask_upstream(port, path)
            except (OSError, TimeoutError, ValueError, IndexError) as err:
                return Response(f'{{"ok": false, "detail": "the engine does not answer: {type(err).__name__}"}}',
                                503, media_type="application/json")
            if path == "/metrics":
                body += generate_latest(registry)
            return Response(body, status, media_type=media)

        return Route(path, forward, methods=["GET"])

    return [route("/healthz"), route("/readyz"), route("/metrics")]


async def _serve_intake(spec: IntakeSpec, link: Connection) -> None:
    from repositories.db import make_engine

    loop = asyncio.get_running_loop()
    # No ping before each checkout (a round trip a commit): a connection the server dropped fails one group,
    # answered 503 and retried by its producers, and the pool replaces it.
    inbox = SignalInbox(make_engine(spec.db_url, pool_pre_ping=False), spec.account)

    def hand_over(before: int, rows: Rows) -> None:
        with contextlib.suppress(OSError):  # the engine is gone: it reads them from the inbox when back
            link.send(("rows", before, rows))

    registry = CollectorRegistry()
    app = build_app(intake=GroupCommit(inbox, hand_over), outcome=inbox.outcome, secret=spec.secret,
                    max_body_bytes=spec.max_body_bytes, query_token=spec.query_token, registry=registry,
                    routes=upstream_routes(spec.upstream_port, registry))
    try:
        server = await serve(app, spec.host, spec.port, spec.secret)
    except (OSError, ValueError) as err:
        link.send(("failed", f"cannot serve HTTP on {spec.host}:{spec.port}: "
                             f"{getattr(err, 'strerror', None) or err}"))
        return
    link.send(("listening", server.port))
    stop = asyncio.Event()
    loop.add_reader(link.fileno(), stop.set)  # the engine closed its end, or died: nothing else is sent here
    for sig in (signal.SIGTERM, signal.SIGINT):  # the engine stops us: a group stop (systemd, ^C) is ignored
        loop.add_signal_handler(sig, lambda: None)
    await stop.wait()
    await server.stop()


def main() -> None:
    """``python -m engine.intake FD``: the worker, on the socket pair end ``FD`` given by the engine."""
    link = Connection(int(sys.argv[1]))
    spec = IntakeSpec(**link.recv())
    from engine.logging import configure_logging

    configure_logging(spec.log_format, spec.log_level)
    # The inbox write's thread, back from the server, waits for the GIL while the loop parses requests: up to
    # the switch interval (5 ms by default). Handed back within 0.5 ms, a POST's order comes ~0.35 ms sooner
    # at the median and its p99 drops from 10-15 to ~9 ms (docs/performance.md).
    sys.setswitchinterval(0.0005)
    asyncio.run(_serve_intake(spec, link))


class IntakeProcess:
    """The engine's handle on the worker: start it, take the rows it hands over, stop it."""

    def __init__(self, spec: IntakeSpec, on_rows: Handed) -> None:
        self.spec, self.on_rows = spec, on_rows
        self.proc: subprocess.Popen[bytes] | None = None
        self.link: Connection | None = None
        self.port: int | None = None
        self.on_exit: Callable[[int | None], None] | None = None  # told when the worker dies on its own

    async def start(self) -> int:
        """Start the worker and wait until it listens; its port. OSError when it cannot listen."""
        ours, theirs = socket.socketpair()
        self.link = Connection(ours.detach())
        child_fd = theirs.fileno()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.intake", str(child_fd)], pass_fds=[child_fd],
                                     env=env, start_new_session=False)
        theirs.close()
        self.link.send(asdict(self.spec))
        loop = asyncio.get_running_loop()
        first: asyncio.Future[tuple[str, Any]] = loop.create_future()
        link = self.link

        def readable() -> None:
            try:
                while link.poll():
                    message = link.recv()
                    if not first.done():
                        first.set_result(message)
                    elif message[0] == "rows":
                        self.on_rows(message[1], message[2])
            except (EOFError, OSError):
                loop.remove_reader(link.fileno())
                if not first.done():
                    first.set_result(("failed", "the intake process exited while starting"))
                elif self.on_exit is not None:
                    self.on_exit(self.proc.poll() if self.proc else None)

        loop.add_reader(link.fileno(), readable)
        kind, detail = await asyncio.wait_for(first, START_TIMEOUT_S)
        if kind != "listening":
            await self.stop()
            raise OSError(str(detail))
        self.port = int(detail)
        log.info("http.intake_started", pid=self.proc.pid, host=self.spec.host, port=self.port)
        return self.port

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close the link (the worker finishes its requests and exits); kill it if it does not."""
        link, self.link = self.link, None
        if link is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(link.fileno())
            link.close()
        proc = self.proc
        if proc is None:
            return
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)


def spec_for(settings: Any, db_url: str, account: str, upstream_port: int,
             secret: str | None) -> IntakeSpec:
    h = settings.http
    return IntakeSpec(db_url=db_url, account=account, host=h.host, port=h.port, secret=secret,
                      max_body_bytes=h.max_body_bytes, query_token=h.query_token, upstream_port=upstream_port,
                      log_format=settings.log_format, log_level=settings.log_level)


__all__: Sequence[str] = ("GroupCommit", "IntakeProcess", "IntakeSpec", "spec_for", "upstream_routes")

if __name__ == "__main__":
    main()
