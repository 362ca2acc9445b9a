"""The daemon's HTTP surface: ``POST /signals`` into the inbox, ``GET /signals/{id}``, health and metrics.

``POST /signals`` takes one JSON object, a JSON array of them, or JSON lines, shaped so a TradingView
alert (or any webhook) can call it:

- **auth** when a secret is configured: ``Authorization: Bearer <secret>``, or ``X-Signature:
  sha256=<hex HMAC-SHA256 of the body>``, or (only with ``query_token``, for senders that cannot set a
  header) ``?token=<secret>``; compared in constant time. Missing or wrong: 401. A refused request is
  counted (``tradectl_http_refused_total{reason}``) and logged (``http.refused``), never stored.
- **size**: a body over ``max_body_bytes`` is answered 413 without being read (Content-Length), or as
  soon as it grows past the limit (chunked).
- **validation**: each signal through ``engine.signals.parse_signal``; any invalid one refuses the whole
  request with 422 naming each signal and its field (the producer's error, answered at once: nothing is
  written).
- **durability**: valid signals go to ``intake`` (the inbox) before the answer, so a crash after the
  answer loses nothing. 202 with, per signal, its id, inbox id, ``duplicate`` (an id already submitted:
  idempotent) and ``outcome``, the URL to read what became of it.

The app is built by ``build_app`` from callables, so it knows nothing of sessions; ``serve`` runs it with
uvicorn on the caller's event loop (signals stay the session's) and refuses a non-loopback address
without a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import json
import re
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from engine.client import validate
from engine.config import is_loopback
from engine.domain import RejectCode
from repositories.inbox import InboxError

log = structlog.get_logger("tradectl.http")

Answer = dict[str, Any]
# The validated lines of one request -> one answer per line, in order; each with at least "id", "inbox_id" and
# "duplicate". Sync callables run in a worker thread (they write to the database).
Intake = Callable[[list[str]], list[Answer]] | Callable[[list[str]], Awaitable[list[Answer]]]
Outcome = Callable[[str], Answer | None]


class _TooLarge(Exception):
    pass


@dataclass(slots=True)
class _Refusals:
    counts: Counter[str]
    prom: Any

    def count(self, request: Request, status: int, reason: str, **detail: Any) -> None:
        self.counts[reason] += 1
        self.prom.labels(reason=reason).inc()
        client = request.client.host if request.client else None
        log.warning("http.refused", reason=reason, status=status, path=request.url.path, client=client, **detail)


_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"
_SKIP_SPACE = re.compile(r"[ \t\n\r]*")


def _one_line(text: str) -> str:
    """A JSON text on one line, as written: a raw CR or LF can only be whitespace between its tokens. (Not
    ``splitlines``: it also breaks at U+2028, U+2029 and U+0085, which JSON allows inside a string.)"""
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text


def _items(array: str) -> list[str]:
    """Each item of a JSON array (valid: ``json.loads`` took it) as its own text, as written, so that the signal
    parser judges what the producer sent: re-encoded, an object's repeated key had quietly lost a value.
    Linear in the body: every step moves an index (slicing the rest per item was quadratic: 31 s for 1 MiB)."""
    items: list[str] = []
    i = _past_space(array, 1)  # past "[" and the whitespace after it
    while array[i] != "]":
        _, end = _DECODER.raw_decode(array, i)
        items.append(_one_line(array[i:end]))
        i = _past_space(array, end)
        if array[i] == ",":
            i = _past_space(array, i + 1)
    return items


def _past_space(text: str, i: int) -> int:
    match = _SKIP_SPACE.match(text, i)
    return match.end() if match is not None else i


def _split(text: str) -> list[str]:
    """A body as signal lines: one JSON object, a JSON array (each item a line), or JSON lines. Each line is the
    producer's own text (never re-encoded): a repeated key is refused here as it is in a file."""
    stripped = text.strip(_JSON_SPACE)
    if not stripped:
        return []
    try:
        whole = json.loads(stripped)
    except ValueError:  # JSON lines: split at LF only (splitlines() also breaks at U+2028 inside a string)
        return [line.strip(_JSON_SPACE) for line in stripped.split("\n") if line.strip(_JSON_SPACE)]
    if isinstance(whole, list):
        return _items(stripped)
    return [_one_line(stripped)]  # a pretty-printed object: one line, as it would be in a JSONL file


def build_app(*, intake: Intake, secret: str | None, max_body_bytes: int, outcome: Outcome | None = None,
              query_token: bool = False, registry: CollectorRegistry | None = None,
              routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The Starlette app: ``POST /signals`` and ``GET /signals/{id}`` (behind ``secret``; None: no auth, which
    ``serve`` allows only on a loopback address), beside ``routes`` (health and metrics: engine.health), open.
    Refused requests are counted in ``registry`` (the session's metrics)."""
    registry = registry if registry is not None else CollectorRegistry()
    refusals = _Refusals(Counter(), PromCounter("tradectl_http_refused_total", "HTTP requests refused, by reason",
                                                ["reason"], registry=registry))
    queued = PromCounter("tradectl_http_signals_total", "Signals taken by POST /signals, by result", ["result"],
                         registry=registry)
    key = secret.encode() if secret else None
    async_intake: Callable[[list[str]], Awaitable[list[Answer]]] | None = None
    sync_intake: Callable[[list[str]], list[Answer]] | None = None
    call = getattr(intake, "__call__", None)  # noqa: B004 - an object whose __call__ is async (GroupCommit)
    if inspect.iscoroutinefunction(intake) or inspect.iscoroutinefunction(call):
        # an ``async def``, or an object with one; anything else runs in a worker thread
        async_intake = cast(Callable[[list[str]], Awaitable[list[Answer]]], intake)
    else:
        sync_intake = cast(Callable[[list[str]], list[Answer]], intake)

    def credential(request: Request) -> tuple[str | None, str | None]:
        """(refusal reason, signature to check against the body): both None means authorised."""
        if key is None:
            return None, None
        auth = request.headers.get("authorization", "")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
                return "wrong_secret", None
            return None, None
        sig = request.headers.get("x-signature")
        if sig is not None:
            return None, sig
        token_q = request.query_params.get("token") if query_token else None
        if token_q is not None:
            return (None if hmac.compare_digest(token_q.encode(), key) else "wrong_secret"), None
        return "no_secret", None

    def signature_ok(sig: str, body: bytes) -> bool:
        assert key is not None
        algo, _, given = sig.strip().partition("=")
        expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        return algo.lower() == "sha256" and hmac.compare_digest(given.strip().lower().encode(), expected.encode())

    def unauthorised(request: Request, reason: str) -> Response:
        refusals.count(request, 401, reason)
        return JSONResponse({"error": "unauthorised: send Authorization: Bearer <secret> or X-Signature: "
                                      "sha256=<HMAC-SHA256 of the body>"}, 401,
                            headers={"WWW-Authenticate": 'Bearer realm="tradectl"'})

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise _TooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def post_signals(request: Request) -> Response:
        refused, sig = credential(request)
        if refused is not None:
            return unauthorised(request, refused)
        try:
            body = await read_body(request)
        except _TooLarge:
            refusals.count(request, 413, "too_large", limit=max_body_bytes)
            return JSONResponse({"error": f"body over {max_body_bytes} bytes"}, 413, headers={"Connection": "close"})
        if sig is not None and not signature_ok(sig, body):
            return unauthorised(request, "bad_signature")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:  # never repaired: refused as a file's line would be
            refusals.count(request, 422, "invalid_encoding")
            why = f"the body is not valid UTF-8: byte 0x{body[err.start]:02x} at offset {err.start}: nothing was queued"
            return JSONResponse({"error": why, "code": RejectCode.INVALID_ENCODING.value}, 422)
        lines = _split(text)
        if not lines:
            refusals.count(request, 422, "empty")
            return JSONResponse({"error": "no signal in the body: send a JSON object, an array of them, or JSON "
                                          "lines"}, 422)
        invalid = validate(lines)
        if invalid:
            refusals.count(request, 422, "invalid", signals=len(lines), invalid=len(invalid))
            return JSONResponse({"error": f"{len(invalid)} invalid signal(s) of {len(lines)}: nothing was queued",
                                 "invalid": [b.to_json() for b in invalid]}, 422)
        try:
            if async_intake is not None:
                answers = await async_intake(lines)
            else:
                assert sync_intake is not None
                answers = await run_in_threadpool(sync_intake, lines)
        except InboxError as err:  # a line the inbox cannot hold: the producer's error, nothing was written
            refusals.count(request, 422, "unstorable", error=str(err))
            return JSONResponse({"error": f"nothing was queued: {err}"}, 422)
        except Exception as err:  # the inbox is unreachable: the producer must retry (idempotent by id)
            log.error("http.intake_failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
            return JSONResponse({"error": "the inbox could not be written: retry (a signal id is taken once)"}, 503,
                                headers={"Retry-After": "1"})
        out = []
        for a in answers:
            a = dict(a)
            if a.get("id") is not None:
                a["outcome"] = f"/signals/{quote(str(a['id']), safe='')}"
            out.append(a)
            queued.labels(result="duplicate" if a.get("duplicate") else "queued").inc()
        headers = {"Location": out[0]["outcome"]} if len(out) == 1 and "outcome" in out[0] else None
        return JSONResponse({"queued": sum(not a.get("duplicate") for a in out),
                             "duplicates": sum(bool(a.get("duplicate")) for a in out), "signals": out},
                            202, headers=headers)

    async def get_signal(request: Request) -> Response:
        refused, sig = credential(request)
        if refused is None and sig is not None and not signature_ok(sig, b""):
            refused = "bad_signature"
        if refused is not None:
            return unauthorised(request, refused)
        if outcome is None:
            return JSONResponse({"error": "outcomes are not served here"}, 404)
        signal_id = request.path_params["signal_id"]
        found = await run_in_threadpool(outcome, signal_id)
        if found is None:
            return JSONResponse({"id": signal_id, "status": "unknown"}, 404)
        return JSONResponse(found, 200)

    app_routes: list[BaseRoute] = [
        Route("/signals", post_signals, methods=["POST"]),
        Route("/signals/{signal_id:path}", get_signal, methods=["GET"]),
        *routes,
    ]
    app = Starlette(routes=app_routes)
    app.state.refused = refusals.counts
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn on a loop it does not own: SIGINT/SIGTERM stay the session's (``stop_handler``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(slots=True)
class RunningServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int  # the bound port (the one asked for, or the free one picked for 0)

    async def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        if not self.task.done():
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def check_bind(host: str, secret: str | None) -> None:
    """ValueError unless ``host`` is loopback or a secret is set."""
    if not secret and not is_loopback(host):
        raise ValueError(f"refusing to serve POST /signals on {host}: it is not a loopback address and no secret "
                         f"is set (set http.secret or http.secret_file, or bind 127.0.0.1)")


async def serve(app: Starlette, host: str, port: int, secret: str | None) -> RunningServer:
    """Listen on ``host:port`` and serve ``app`` on the running loop; returns once it accepts connections.

    Raises ValueError for a non-loopback host without a secret, OSError when the address cannot be bound.
    """
    check_bind(host, secret)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP said explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without
    # it every keep-alive answer waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", http="httptools",
                            server_header=False, timeout_graceful_shutdown=5)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="tradectl-http")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # its error, if it had one
            raise OSError(f"the HTTP server on {host}:{port} stopped while starting")
        await asyncio.sleep(0.005)
    bound = int(sock.getsockname()[1])
    log.info("http.listening", host=host, port=bound, auth=secret is not None)
    return RunningServer(server, task, host, bound)
