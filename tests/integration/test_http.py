"""POST /signals and GET /signals/{id}: real requests (httpx) against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.http import Answer, build_app, serve
from repositories.db import make_engine, upgrade
from repositories.inbox import SignalInbox
from tests.conftest import signal_line
from tests.integration.test_inbox import ACCOUNT, consume_all

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cret-for-tests-0123456789"
LIMIT = 4096


@contextmanager
def running(app: Starlette, secret: str | None) -> Iterator[str]:
    """The app served by ``engine.http.serve`` on its own loop in a thread; yields the base URL."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        async def go() -> None:
            try:
                srv = await serve(app, "127.0.0.1", 0, secret)
            except BaseException as err:
                box["error"] = err
                ready.set()
                raise
            stop = asyncio.Event()
            box.update(port=srv.port, loop=asyncio.get_running_loop(), stop=stop)
            ready.set()
            await stop.wait()
            await srv.stop()

        asyncio.run(go())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10) and "error" not in box, box.get("error")
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        assert not thread.is_alive()


@dataclass
class Daemon:
    url: str
    inbox: SignalInbox
    app: Starlette
    registry: CollectorRegistry

    def post(self, body: str | bytes, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/signals", content=body, headers=headers, timeout=10, **kw)

    def bearer(self, body: str | bytes) -> httpx.Response:
        return self.post(body, {"Authorization": f"Bearer {SECRET}"})


def make_daemon(db_url: str, secret: str | None = SECRET,
                **kw: Any) -> tuple[SignalInbox, Starlette, CollectorRegistry]:
    upgrade(db_url)
    inbox = SignalInbox(make_engine(db_url), ACCOUNT)
    registry = CollectorRegistry()

    def inbox_intake(lines: list[str]) -> list[Answer]:  # the HTTP layer alone: no engine to hand rows to
        return [r.to_json() for r in inbox.add(lines, "http")]

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    app = build_app(intake=inbox_intake, registry=registry, secret=secret, max_body_bytes=LIMIT,
                    outcome=inbox.outcome, routes=[Route("/metrics", metrics), Route("/readyz", ready)], **kw)
    return inbox, app, registry


@pytest.fixture
def daemon(sqlite_url: str) -> Iterator[Daemon]:
    inbox, app, registry = make_daemon(sqlite_url)
    with running(app, SECRET) as url:
        yield Daemon(url, inbox, app, registry)


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_a_request_without_the_secret_is_refused_counted_and_not_stored(daemon: Daemon) -> None:
    r = daemon.post(signal_line("s1"))
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    assert daemon.app.state.refused["no_secret"] == 1
    assert daemon.inbox.pending() == []
    metrics = httpx.get(f"{daemon.url}/metrics").text
    assert 'tradectl_http_refused_total{reason="no_secret"} 1.0' in metrics


def test_a_wrong_bearer_token_is_refused(daemon: Daemon) -> None:
    r = daemon.post(signal_line("s1"), {"Authorization": "Bearer not-the-secret"})
    assert r.status_code == 401 and daemon.app.state.refused["wrong_secret"] == 1
    assert daemon.inbox.pending() == []


def test_an_hmac_of_the_body_is_accepted_and_a_wrong_one_refused(daemon: Daemon) -> None:
    body = signal_line("s1").encode()
    assert daemon.post(body, {"X-Signature": sign(body)}).status_code == 202
    other = signal_line("s2").encode()
    refused = daemon.post(other, {"X-Signature": sign(body)})  # a signature of another body
    assert refused.status_code == 401 and daemon.app.state.refused["bad_signature"] == 1
    assert [i.signal_id for i in daemon.inbox.pending()] == ["s1"]


def test_a_valid_signal_is_queued_and_answered_202_with_where_to_read_its_outcome(daemon: Daemon) -> None:
    r = daemon.bearer(signal_line("s:1"))
    assert r.status_code == 202
    [answer] = r.json()["signals"]
    assert answer["id"] == "s:1" and answer["duplicate"] is False and answer["inbox_id"] >= 1
    assert answer["outcome"] == "/signals/s%3A1" and r.headers["location"] == answer["outcome"]
    assert [i.id for i in daemon.inbox.pending()] == [answer["inbox_id"]]
    assert [i.source for i in daemon.inbox.pending()] == ["http"]


def test_a_body_over_the_limit_is_refused_413_and_not_stored(daemon: Daemon) -> None:
    big = signal_line("s1", strategy="x" * LIMIT)
    r = daemon.bearer(big)
    assert r.status_code == 413 and daemon.app.state.refused["too_large"] == 1
    assert daemon.inbox.pending() == []


def test_a_chunked_body_is_cut_off_at_the_limit(daemon: Daemon) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b" " * 1024

    r = httpx.post(f"{daemon.url}/signals", content=chunks(), headers={"Authorization": f"Bearer {SECRET}"},
                   timeout=10)
    assert r.status_code == 413 and daemon.app.state.refused["too_large"] == 1


def test_an_invalid_signal_is_answered_422_naming_the_field_and_nothing_is_written(daemon: Daemon) -> None:
    r = daemon.bearer(json.dumps([json.loads(signal_line("ok")), json.loads(signal_line("bad", win_prob=7))]))
    assert r.status_code == 422
    [invalid] = r.json()["invalid"]
    assert invalid["index"] == 1 and invalid["id"] == "bad" and "field 'win_prob'" in invalid["reason"]
    assert daemon.inbox.pending() == [] and daemon.app.state.refused["invalid"] == 1


def test_a_body_that_is_not_json_is_answered_422(daemon: Daemon) -> None:
    r = daemon.bearer("buy AAPL now")
    assert r.status_code == 422 and r.json()["invalid"][0]["code"] == "malformed_json"
    assert daemon.bearer("").status_code == 422


def test_a_repeated_key_in_an_array_item_or_a_pretty_printed_body_is_refused_as_in_a_file(daemon: Daemon) -> None:
    """Each item was re-encoded after json.loads: a repeated "symbol" quietly kept its last value (a trial)."""
    doubled = '{"id": "dk1", "symbol": "IBM", "symbol": "AAPL", "direction": "flat"}'
    for body in (f"[{doubled}]", doubled.replace(", ", ",\n  "), f"[\n  {json.dumps(json.loads(signal_line('ok')))},\n"
                 f"  {doubled}\n]"):
        r = daemon.bearer(body)
        assert r.status_code == 422, body
        assert any("field 'symbol': duplicate key" in i["reason"] for i in r.json()["invalid"]), r.json()
    assert daemon.inbox.pending() == []


def test_a_body_is_split_into_its_items_exactly_as_json_reads_them() -> None:
    """Each item as written, its line breaks (CR, LF) joined; a U+2028 inside a string is the string's own: the
    first cut turned it into a space, and "BRK\u2028B" into the symbol "BRK B" (a review)."""
    from engine.http import _split

    items = [{"id": "u1", "symbol": "BRK\u2028B"}, [1, "]", {"k": ",\\\""}], "x\u0085y", None]
    lines = "\r\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n"  # JSON lines: LF (or CRLF) only
    assert [json.loads(line) for line in _split(lines)] == items
    for body in (json.dumps(items, ensure_ascii=False, indent=2), json.dumps(items, ensure_ascii=False),
                 json.dumps(items).replace("\n", "\r\n"), "[ \t\r\n" + ",\n".join(json.dumps(i) for i in items) + " ]"):
        assert [json.loads(line) for line in _split(body)] == items, body


def test_a_pretty_printed_array_is_queued_item_by_item_as_written(daemon: Daemon) -> None:
    body = json.dumps([json.loads(signal_line(f"p{i}")) for i in range(2)], indent=2)
    r = daemon.bearer(body)
    assert r.status_code == 202 and [a["id"] for a in r.json()["signals"]] == ["p0", "p1"]
    assert [json.loads(i.raw) for i in daemon.inbox.pending()] == json.loads(body)


def test_a_body_that_is_not_utf8_is_refused_as_invalid_encoding_never_repaired(daemon: Daemon) -> None:
    r = httpx.post(f"{daemon.url}/signals", content=signal_line("enc").encode().replace(b"AAPL", b"AA\xffL"),
                   headers={"Authorization": f"Bearer {SECRET}"}, timeout=10)
    assert r.status_code == 422 and r.json()["code"] == "invalid_encoding" and "0xff" in r.json()["error"]
    assert daemon.inbox.pending() == [] and daemon.app.state.refused["invalid_encoding"] == 1


def test_a_batch_as_an_array_or_as_json_lines_is_queued_in_order(daemon: Daemon) -> None:
    array = daemon.bearer(json.dumps([json.loads(signal_line(f"a{i}")) for i in range(3)]))
    lines = daemon.bearer("\n".join(signal_line(f"l{i}") for i in range(3)) + "\n")
    assert array.status_code == lines.status_code == 202
    assert [a["id"] for a in array.json()["signals"] + lines.json()["signals"]] == ["a0", "a1", "a2",
                                                                                     "l0", "l1", "l2"]
    assert [i.signal_id for i in daemon.inbox.pending()] == ["a0", "a1", "a2", "l0", "l1", "l2"]


def test_a_duplicate_is_answered_idempotently_with_the_same_inbox_row(daemon: Daemon) -> None:
    first = daemon.bearer(signal_line("s1")).json()["signals"][0]
    again = daemon.bearer(signal_line("s1"))
    assert again.status_code == 202 and again.json()["duplicates"] == 1
    assert again.json()["signals"][0] == {**first, "duplicate": True}
    assert len(daemon.inbox.pending()) == 1


def test_the_outcome_url_says_pending_then_what_became_of_the_signal(daemon: Daemon, sqlite_url: str) -> None:
    auth = {"Authorization": f"Bearer {SECRET}"}
    where = daemon.bearer(signal_line("s1")).json()["signals"][0]["outcome"]
    assert httpx.get(f"{daemon.url}{where}").status_code == 401  # outcomes are the account's business
    assert httpx.get(f"{daemon.url}{where}", headers=auth).json()["status"] == "pending"
    consume_all(make_engine(sqlite_url), daemon.inbox)
    done = httpx.get(f"{daemon.url}{where}", headers=auth).json()
    assert done["status"] == "accepted" and done["client_order_id"] and done["order_status"]
    assert httpx.get(f"{daemon.url}/signals/nobody", headers=auth).status_code == 404


def test_the_health_and_metrics_routes_mounted_beside_the_intake_answer_without_the_secret(daemon: Daemon) -> None:
    assert httpx.get(f"{daemon.url}/readyz").json() == {"ready": True}
    assert httpx.get(f"{daemon.url}/metrics").status_code == 200


def test_a_token_in_the_url_is_accepted_only_when_configured(sqlite_url: str) -> None:
    inbox, app, _ = make_daemon(sqlite_url, query_token=True)
    with running(app, SECRET) as url:
        assert httpx.post(f"{url}/signals?token={SECRET}", content=signal_line("tv1")).status_code == 202
        assert httpx.post(f"{url}/signals?token=wrong", content=signal_line("tv2")).status_code == 401
    _, closed, _ = make_daemon(sqlite_url)
    with running(closed, SECRET) as url:
        assert httpx.post(f"{url}/signals?token={SECRET}", content=signal_line("tv3")).status_code == 401
    assert [i.signal_id for i in inbox.pending()] == ["tv1"]


def test_on_loopback_without_a_secret_no_credential_is_asked(sqlite_url: str) -> None:
    inbox, app, _ = make_daemon(sqlite_url, secret=None)
    with running(app, None) as url:
        assert httpx.post(f"{url}/signals", content=signal_line("s1")).status_code == 202
    assert len(inbox.pending()) == 1


def test_serving_on_a_non_loopback_address_without_a_secret_is_refused(sqlite_url: str) -> None:
    _, app, _ = make_daemon(sqlite_url, secret=None)
    for host in ("0.0.0.0", "192.168.1.10", "example.com", "::"):
        with pytest.raises(ValueError, match="not a loopback address and no secret"):
            asyncio.run(serve(app, host, 0, None))


def test_the_config_refuses_an_enabled_non_loopback_http_without_a_secret() -> None:
    from engine.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="http"):
        load_settings(http={"enabled": True, "host": "0.0.0.0"})
    assert load_settings(http={"enabled": True, "host": "0.0.0.0", "secret": SECRET}).http.resolved_secret() == SECRET



def test_the_listening_socket_is_tcp_so_answers_are_sent_without_nagle_delays(sqlite_url: str) -> None:
    import asyncio
    import socket

    from engine.http import serve

    _, app, _ = make_daemon(sqlite_url)

    async def proto() -> int:
        server = await serve(app, "127.0.0.1", 0, SECRET)
        try:
            return int(server.server.servers[0].sockets[0].proto)
        finally:
            await server.stop()

    # asyncio sets TCP_NODELAY only on connections whose socket says IPPROTO_TCP: without it every
    # keep-alive answer waited ~40 ms for the client's delayed ACK
    assert asyncio.run(proto()) == socket.IPPROTO_TCP
