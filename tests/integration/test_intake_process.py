"""The HTTP intake in its own process (engine.intake): group commit of the inbox, rows handed to the engine,
health and metrics answered by the engine's server, and the worker's life tied to the engine's."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from engine.http import serve
from engine.intake import GroupCommit, IntakeProcess, IntakeSpec, Rows
from engine.sources import InboxSource
from repositories.db import make_engine, upgrade
from repositories.inbox import InboxError, InboxListener, Receipt, SignalInbox, Source
from repositories.models import INBOX_RAW_MAX, SignalInboxRow
from tests.conftest import signal_line

ACCOUNT = "DU0000001"
SECRET = "a-long-enough-shared-secret"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def db(db_url: str) -> Engine:
    upgrade(db_url)
    return make_engine(db_url)


class CountingInbox(SignalInbox):
    """Counts transactions; ``fail_next`` makes the next one raise like an unreachable database."""

    def __init__(self, db: Engine) -> None:
        super().__init__(db, ACCOUNT)
        self.calls: list[int] = []
        self.fail_next = False

    def append(self, lines: Sequence[str], source: Source, now: Any = None) -> tuple[list[Receipt], int]:
        self.calls.append(len(lines))
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("the database went away")
        time.sleep(0.02)  # a commit that takes a while: requests arriving meanwhile wait for the next one
        return super().append(lines, source, now)


# -- group commit ------------------------------------------------------------------------------------------
def test_requests_arriving_during_a_write_share_the_next_transaction_and_each_gets_its_own_receipts(
        db: Engine) -> None:
    inbox = CountingInbox(db)
    handed: list[tuple[int, Rows]] = []
    commit = GroupCommit(inbox, lambda before, rows: handed.append((before, rows)))

    async def burst() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(commit([signal_line(f"g{i}")]) for i in range(10))))

    answers = asyncio.run(burst())
    assert [a[0]["id"] for a in answers] == [f"g{i}" for i in range(10)]
    assert len(inbox.calls) < 10 and sum(inbox.calls) == 10  # fewer transactions than requests
    assert [i.signal_id for i in inbox.pending()] == [f"g{i}" for i in range(10)]
    ids = [row_id for _, rows in handed for row_id, _ in rows]
    assert ids == sorted(ids) == [a[0]["inbox_id"] for a in answers]
    assert [before for before, _ in handed] == [0, *(rows[-1][0] for _, rows in handed[:-1])]  # a chain


def test_a_signal_id_sent_twice_in_one_group_is_one_row_and_the_second_is_answered_duplicate(db: Engine) -> None:
    inbox = CountingInbox(db)
    handed: list[tuple[int, Rows]] = []
    commit = GroupCommit(inbox, lambda before, rows: handed.append((before, rows)))

    async def twice() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(commit([signal_line("d1")]), commit([signal_line("d1")])))

    first, second = asyncio.run(twice())
    assert first[0]["inbox_id"] == second[0]["inbox_id"]
    assert (first[0]["duplicate"], second[0]["duplicate"]) == (False, True)
    assert [row_id for _, rows in handed for row_id, _ in rows] == [first[0]["inbox_id"]]  # handed over once


def test_on_postgresql_the_rows_are_handed_over_by_the_writing_thread_before_the_answer_wakes_the_loop(
        db: Engine) -> None:
    inbox = CountingInbox(db)
    seen: list[tuple[bool, bool]] = []  # (on the loop's thread, the request answered already)
    loop_thread = threading.get_ident()
    answered: list[bool] = [False]
    commit = GroupCommit(inbox, lambda before, rows: seen.append((threading.get_ident() == loop_thread,
                                                                  answered[0])))

    async def one() -> None:
        await commit([signal_line("t1")])
        answered[0] = True

    asyncio.run(one())
    # PostgreSQL writes in a thread and hands over from it (the hop back to the loop is ~0.2 ms not on the way
    # to the order); SQLite writes on the loop. Either way before the request is answered.
    assert seen == [(db.dialect.name != "postgresql", False)]


def test_a_line_the_inbox_cannot_hold_fails_only_its_own_request(db: Engine) -> None:
    inbox = CountingInbox(db)
    commit = GroupCommit(inbox)

    async def mixed() -> list[Any]:
        return list(await asyncio.gather(commit([signal_line("ok1")]), commit(["x" * (INBOX_RAW_MAX + 1)]),
                                         commit([signal_line("ok2")]), return_exceptions=True))

    ok1, too_long, ok2 = asyncio.run(mixed())
    assert isinstance(too_long, InboxError)
    assert ok1[0]["id"] == "ok1" and ok2[0]["id"] == "ok2"
    assert [i.signal_id for i in inbox.pending()] == ["ok1", "ok2"]


def test_a_failed_transaction_fails_every_request_in_it_and_the_next_ones_are_written(db: Engine) -> None:
    inbox = CountingInbox(db)
    commit = GroupCommit(inbox)
    inbox.fail_next = True

    async def scenario() -> tuple[list[Any], list[dict[str, Any]]]:
        failed = await asyncio.gather(commit([signal_line("f1")]), return_exceptions=True)
        return list(failed), await commit([signal_line("f1")])  # the producer's retry

    failed, retried = asyncio.run(scenario())
    assert isinstance(failed[0], ConnectionError)
    assert retried[0]["duplicate"] is False and [i.signal_id for i in inbox.pending()] == ["f1"]


# -- the engine's side: rows handed over instead of read back ------------------------------------------------
def run_source(source: InboxSource, until: int, feed: Any) -> list[int]:
    seen: list[int] = []

    async def scenario() -> list[int]:
        stop = asyncio.Event()

        async def consume() -> None:
            async for line_no, _ in source.lines(stop):
                seen.append(line_no)
                if len(seen) >= until:
                    stop.set()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)  # the first read (of an empty inbox) is done
        await feed()
        await asyncio.wait_for(task, 20)
        return seen

    return asyncio.run(scenario())


def test_rows_handed_over_in_sequence_are_taken_without_reading_the_inbox(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    source = InboxSource(inbox, lambda _: None, poll_s=30, fallback_s=30)  # no timer read during the test

    async def feed() -> None:
        receipts, before = await asyncio.to_thread(inbox.append, [signal_line("o1"), signal_line("o2")], "http")
        reads = source.reads
        source.offer(before, [(r.inbox_id, signal_line(str(r.signal_id))) for r in receipts])
        await asyncio.sleep(0.05)
        assert source.reads == reads

    seen = run_source(source, 2, feed)
    assert seen == [r.id for r in inbox.pending()]  # both taken (none marked consumed here: no recorder)


def test_a_gap_before_the_handed_rows_is_read_first_so_arrival_order_holds(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    source = InboxSource(inbox, lambda _: None, poll_s=30, fallback_s=30)

    async def feed() -> None:
        other = await asyncio.to_thread(inbox.add, [signal_line("sql1")], "sql")  # another producer's row
        ours, before = await asyncio.to_thread(inbox.append, [signal_line("h1")], "http")
        source.offer(before, [(ours[0].inbox_id, signal_line("h1"))])  # only ours is handed over
        assert before == other[0].inbox_id
        assert other[0].inbox_id < ours[0].inbox_id

    seen = run_source(source, 2, feed)
    assert seen == sorted(seen) and len(seen) == 2


@contextmanager
def listening(pg_url: str) -> Iterator[tuple[Engine, SignalInbox, InboxListener]]:
    """The account's inbox on a new PostgreSQL database, and an engine's LISTEN on it."""
    upgrade(pg_url)
    db = make_engine(pg_url)
    inbox = SignalInbox(db, ACCOUNT)
    listener = inbox.listen()
    assert listener is not None
    try:
        yield db, inbox, listener
    finally:
        listener.close()
        db.dispose()


@pytest.mark.postgres
def test_the_notification_of_a_row_names_it_so_the_engine_can_tell_it_from_a_handed_one(pg_url: str) -> None:
    with listening(pg_url) as (db, inbox, listener):
        receipts = inbox.add([signal_line("n1"), signal_line("n2")], "client")  # (the intake's, "http": none)
        deadline = time.monotonic() + 5
        ids: set[int] | None = set()
        while not ids and time.monotonic() < deadline:
            ids = listener.arrivals()
            time.sleep(0.01)
        assert ids == {r.inbox_id for r in receipts}
        with db.begin() as conn:  # another account's row is not ours
            conn.execute(insert(SignalInboxRow), {"account": "U999", "raw": signal_line("x")})
        time.sleep(0.2)
        assert listener.arrivals() == set()


@pytest.mark.postgres
@pytest.mark.timeout(30)
def test_the_intake_s_own_rows_raise_no_notification_and_every_other_producer_s_do(pg_url: str) -> None:
    """The intake, the one producer of source 'http' rows, hands them to the engine itself (migration 0009)."""
    with listening(pg_url) as (_, inbox, listener):
        inbox.add([signal_line("handed")], "http")
        assert not listener.notified(timeout=0.5)
        others: tuple[Source, ...] = ("sql", "cli", "client")
        for n, source in enumerate(others):
            inbox.add([signal_line(f"other{n}")], source)
            assert listener.notified(timeout=5), source


# -- the worker process ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def engine_server() -> Any:
    async def healthz(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True, "from": "engine"})

    async def metrics(request: Any) -> PlainTextResponse:
        return PlainTextResponse("# TYPE tradectl_equity gauge\ntradectl_equity 1000.0\n")

    app = Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])
    return await serve(app, "127.0.0.1", 0, None)


def test_the_worker_queues_posts_hands_the_rows_over_and_answers_health_and_metrics_from_the_engine(
        sqlite_url: str) -> None:
    upgrade(sqlite_url)
    port = free_port()
    handed: list[tuple[int, Rows]] = []

    async def scenario() -> tuple[int, dict[str, Any], str, int | None]:
        upstream = await engine_server()
        worker = IntakeProcess(IntakeSpec(sqlite_url, ACCOUNT, "127.0.0.1", port, SECRET, 65536, False,
                                          upstream.port, "json", "error"),
                               lambda before, rows: handed.append((before, rows)))
        await worker.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                refused = await client.post("/signals", content=signal_line("w1"))
                posted = await client.post("/signals", content=signal_line("w1"),
                                           headers={"Authorization": f"Bearer {SECRET}"})
                health = (await client.get("/healthz")).json()
                metrics = (await client.get("/metrics")).text
            for _ in range(100):
                if handed:
                    break
                await asyncio.sleep(0.02)
        finally:
            await worker.stop()
            await upstream.stop()
        assert worker.proc is not None
        return refused.status_code, {"posted": posted.status_code, **health}, metrics, worker.proc.poll()

    refused, answers, metrics, exit_code = asyncio.run(scenario())
    assert refused == 401 and answers == {"posted": 202, "ok": True, "from": "engine"}
    assert "tradectl_equity 1000.0" in metrics  # the engine's series
    assert 'tradectl_http_refused_total{reason="no_secret"} 1.0' in metrics  # and the worker's
    pending = SignalInbox(make_engine(sqlite_url), ACCOUNT).pending()
    assert handed == [(0, [(p.id, p.raw) for p in pending])]
    assert exit_code is not None  # stopped with the engine


def test_a_worker_that_cannot_listen_fails_the_start_naming_the_address(sqlite_url: str) -> None:
    upgrade(sqlite_url)

    async def scenario() -> str:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            worker = IntakeProcess(IntakeSpec(sqlite_url, ACCOUNT, "127.0.0.1", port, SECRET, 65536, False, 1,
                                              "json", "error"), lambda before, rows: None)
            with pytest.raises(OSError) as err:
                await worker.start()
            return str(err.value)

    assert "127.0.0.1" in asyncio.run(scenario())


def test_the_worker_exits_when_the_engine_is_gone(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    port = free_port()

    async def scenario() -> int | None:
        worker = IntakeProcess(IntakeSpec(sqlite_url, ACCOUNT, "127.0.0.1", port, SECRET, 65536, False, 1,
                                          "json", "error"), lambda before, rows: None)
        await worker.start()
        assert worker.link is not None and worker.proc is not None
        worker.link.close()  # what the kernel does for an engine killed with SIGKILL
        for _ in range(500):
            if worker.proc.poll() is not None:
                break
            await asyncio.sleep(0.02)
        return worker.proc.poll()

    assert asyncio.run(scenario()) == 0
    with socket.socket() as again:  # the public port is free for the next engine's worker
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
