"""The signal inbox: arrival order, idempotent resubmission, exactly-once consumption, NOTIFY."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner

from engine.domain import RejectCode
from repositories.db import make_engine, upgrade
from repositories.inbox import InboxError, SignalInbox
from repositories.models import INBOX_RAW_MAX, SignalInboxRow, SignalRejectRow, SignalRow
from repositories.recorder import Recorder
from repositories.repos import Repositories
from tests.conftest import signal_line, write_lines
from tests.rig import Rig

ACCOUNT = "DU0000001"
runner = CliRunner()


@pytest.fixture
def db(db_url: str) -> Engine:
    upgrade(db_url)
    return make_engine(db_url)


def consume_all(db: Engine, inbox: SignalInbox, batch: int = 50) -> int:
    """What a runner does: each pending line's id to the recorder, then the line to the engine; flush a batch."""
    rig = Rig()
    rig.quote()
    session_id = Repositories(db, ACCOUNT).sessions.start("paper", None, datetime.now(UTC))
    recorder = Recorder(db, session_id, ACCOUNT).attach(rig.bus)
    after, n = 0, 0
    while items := inbox.pending(after, batch):
        for item in items:
            recorder.consume_inbox(item.id)
            rig.engine.on_signal_line(item.raw, line_no=item.id)
            after = item.id
            n += 1
        recorder.flush()
    return n


def outcome_rows(db: Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(SignalRow)).scalar_one()
                   + conn.execute(select(func.count()).select_from(SignalRejectRow)).scalar_one())


def test_pending_lines_come_back_in_arrival_order(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    inbox.add([signal_line("b"), signal_line("a")], "cli")
    inbox.add([signal_line("c")], "client")
    assert [i.signal_id for i in inbox.pending()] == ["b", "a", "c"]
    assert [i.source for i in inbox.pending()] == ["cli", "cli", "client"]


def test_a_resubmitted_id_is_the_row_already_there_and_nothing_is_written(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    first = inbox.add([signal_line("s1")], "http")[0]
    again = inbox.add([signal_line("s1", symbol="MSFT"), signal_line("s1")], "cli")
    assert not first.duplicate
    assert [(r.inbox_id, r.duplicate) for r in again] == [(first.inbox_id, True), (first.inbox_id, True)]
    assert len(inbox.pending()) == 1


def test_one_call_mixing_known_new_id_less_and_repeated_lines_answers_each_in_order(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    known = inbox.add([signal_line("k1")], "sql")[0]
    receipts, before = inbox.append(["not json", signal_line("n1"), signal_line("k1"), signal_line("n1"), "[]"],
                                    "http")
    new = [r.inbox_id for r in receipts if not r.duplicate]
    assert [r.duplicate for r in receipts] == [False, False, True, True, False]
    assert new == sorted(new) and known.inbox_id < new[0] and before == known.inbox_id
    assert receipts[2].inbox_id == known.inbox_id and receipts[3].inbox_id == receipts[1].inbox_id
    assert [(p.id, p.signal_id) for p in inbox.pending()] == [(known.inbox_id, "k1"), (new[0], None),
                                                               (new[1], "n1"), (new[2], None)]


def test_the_same_id_for_another_account_is_another_row(db: Engine) -> None:
    a = SignalInbox(db, ACCOUNT).add([signal_line("s1")], "cli")[0]
    b = SignalInbox(db, "DU0000002").add([signal_line("s1")], "cli")[0]
    assert a.inbox_id != b.inbox_id and not b.duplicate
    assert [i.id for i in SignalInbox(db, ACCOUNT).pending()] == [a.inbox_id]


def test_a_line_without_a_readable_id_is_still_a_row_and_ends_as_a_reject(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    receipts = inbox.add(["not json", "not json"], "cli")
    assert [r.signal_id for r in receipts] == [None, None] and receipts[0].inbox_id != receipts[1].inbox_id
    assert consume_all(db, inbox) == 2
    with db.connect() as conn:
        rows = conn.execute(select(SignalRejectRow.reason_code, SignalRejectRow.line_no)).all()
    assert sorted(rows) == sorted((RejectCode.MALFORMED_JSON.value, r.inbox_id) for r in receipts)


def test_a_line_longer_than_the_inbox_holds_is_refused_and_nothing_of_the_call_is_written(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    with pytest.raises(InboxError, match="at most"):
        inbox.add([signal_line("ok"), "x" * (INBOX_RAW_MAX + 1)], "cli")
    assert inbox.pending() == []


def test_a_flush_marks_consumed_exactly_the_inbox_rows_of_the_lines_it_wrote(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    ids = [r.inbox_id for r in inbox.add([signal_line(f"s{i}") for i in range(5)], "cli")]
    rig = Rig()
    rig.quote()
    recorder = Recorder(db, 1, ACCOUNT).attach(rig.bus)
    for item in inbox.pending(limit=3):
        recorder.consume_inbox(item.id)
        rig.engine.on_signal_line(item.raw, line_no=item.id)
    with db.connect() as conn:  # buffered, not written: nothing is consumed yet
        assert conn.execute(select(func.count()).where(SignalInboxRow.consumed_at.is_not(None))).scalar() == 0
    recorder.flush()
    with db.connect() as conn:
        consumed = conn.execute(select(SignalInboxRow.id).where(SignalInboxRow.consumed_at.is_not(None))).scalars()
        assert sorted(consumed) == ids[:3]
        assert conn.execute(select(func.count()).select_from(SignalRow)).scalar() == 3
    assert [i.id for i in inbox.pending()] == ids[3:]


def test_while_the_database_is_unreachable_the_line_stays_pending_and_is_consumed_by_the_write_that_succeeds(
        db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    inbox.add([signal_line("s1")], "cli")
    rig = Rig()
    rig.quote()
    recorder = Recorder(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"), 1, ACCOUNT).attach(rig.bus)
    item = inbox.pending()[0]
    recorder.consume_inbox(item.id)
    rig.engine.on_signal_line(item.raw)
    recorder.flush()
    assert recorder.failing is not None
    assert [i.id for i in inbox.pending()] == [item.id] and outcome_rows(db) == 0  # neither, as after a crash
    recorder.engine = db
    recorder.flush(force=True)
    assert inbox.pending() == [] and outcome_rows(db) == 1


def test_a_signal_row_the_database_refuses_still_consumes_its_line_with_the_reject_that_replaces_it(
        db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    inbox.add([signal_line("s1")], "cli")
    rig = Rig()
    rig.quote()
    recorder = Recorder(db, 1, ACCOUNT).attach(rig.bus)
    item = inbox.pending()[0]
    recorder.consume_inbox(item.id)
    rig.engine.on_signal_line(item.raw)
    recorder._signals[0]["symbol"] = None  # the database refuses the signal row: the batch is salvaged
    recorder.flush()
    assert inbox.pending() == [] and outcome_rows(db) == 1


@pytest.mark.timeout(120)
def test_four_producers_in_parallel_every_signal_consumed_exactly_once(db: Engine) -> None:
    producers, per = 4, 200
    errors: list[BaseException] = []

    def produce(p: int) -> None:
        try:
            inbox = SignalInbox(db, ACCOUNT)
            for i in range(0, per, 10):
                inbox.add([signal_line(f"p{p}-{j}") for j in range(i, i + 10)], "client")
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    inbox = SignalInbox(db, ACCOUNT)
    consumed = 0
    while any(t.is_alive() for t in threads):  # consuming while producers still write
        consumed += consume_all(db, inbox, batch=37)
    for t in threads:
        t.join(timeout=60)
    consumed += consume_all(db, inbox, batch=37)
    assert errors == []
    assert consumed == producers * per
    with db.connect() as conn:
        ids = Counter(conn.execute(select(SignalRow.signal_id)).scalars())
        left = conn.execute(select(func.count()).where(SignalInboxRow.consumed_at.is_(None))).scalar()
    assert left == 0 and len(ids) == producers * per and set(ids.values()) == {1}
    assert outcome_rows(db) == producers * per  # no duplicate rejects: nothing was handled twice


def test_a_row_inserted_by_hand_with_sql_is_consumed_like_any_other(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(text("INSERT INTO signal_inbox (account, signal_id, raw) VALUES (:a, :s, :r)"),
                     {"a": ACCOUNT, "s": "by-hand", "r": signal_line("by-hand")})
    inbox = SignalInbox(db, ACCOUNT)
    [item] = inbox.pending()
    assert item.source == "sql" and item.received_at is not None
    assert consume_all(db, inbox) == 1
    outcome = inbox.outcome("by-hand")
    assert outcome is not None and outcome["status"] == "accepted" and outcome["order_status"] is not None


def test_the_outcome_of_an_id_says_pending_then_what_became_of_it(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    assert inbox.outcome("s1") is None
    inbox.add([signal_line("s1"), signal_line("bad", win_prob=7)], "cli")
    assert (inbox.outcome("s1") or {})["status"] == "pending"
    consume_all(db, inbox)
    accepted, rejected = inbox.outcome("s1"), inbox.outcome("bad")
    assert accepted is not None and accepted["status"] == "accepted" and accepted["client_order_id"]
    assert rejected is not None and rejected["status"] == "rejected" and "win_prob" in rejected["reason"]


@pytest.mark.timeout(30)
def test_an_insert_notifies_a_listener_on_postgresql(db: Engine) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    listener = inbox.listen()
    if db.dialect.name != "postgresql":
        assert listener is None  # SQLite: the engine polls
        return
    assert listener is not None
    try:
        assert not listener.notified()
        with db.begin() as conn:  # by hand: the trigger notifies for every producer
            conn.execute(text("INSERT INTO signal_inbox (account, raw) VALUES (:a, 'x')"), {"a": ACCOUNT})
        t0 = time.monotonic()
        assert listener.notified(timeout=5)
        assert time.monotonic() - t0 < 5
        SignalInbox(db, "DU0000002").add([signal_line("other")], "cli")
        assert not listener.notified(timeout=0.5)  # another account's row does not wake this engine
    finally:
        listener.close()


# -- producers: the Python client and `tradectl submit` -----------------------------------------------------
def test_the_client_submits_mappings_and_lines_and_reads_their_outcome(sqlite_url: str) -> None:
    from engine.client import outcome, submit

    receipts = submit([{"id": "c1", "symbol": "AAPL", "direction": "long", "win_prob": 0.6, "payoff": 1.5},
                       signal_line("c2")], db_url=sqlite_url, account=ACCOUNT)
    assert [(r.signal_id, r.duplicate) for r in receipts] == [("c1", False), ("c2", False)]
    assert submit([signal_line("c1")], db_url=sqlite_url, account=ACCOUNT)[0].duplicate
    assert (outcome("c1", db_url=sqlite_url, account=ACCOUNT) or {})["status"] == "pending"
    assert outcome("nobody", db_url=sqlite_url, account=ACCOUNT) is None


def test_the_client_refuses_a_batch_with_an_invalid_signal_naming_the_field_and_writes_nothing(
        sqlite_url: str) -> None:
    from engine.client import InvalidSignals, submit

    with pytest.raises(InvalidSignals, match="win_prob") as err:
        submit([signal_line("ok"), signal_line("bad", win_prob=7)], db_url=sqlite_url, account=ACCOUNT)
    assert [(b.index, b.signal_id) for b in err.value.invalid] == [(1, "bad")]
    upgrade(sqlite_url)
    assert SignalInbox(make_engine(sqlite_url), ACCOUNT).pending() == []


def test_tradectl_submit_takes_an_argument_a_file_or_stdin_and_prints_receipts(sqlite_url: str,
                                                                                tmp_path: Path) -> None:
    from engine.cli import app

    upgrade(sqlite_url)  # the daemon's database (submit never makes one: a mistyped --db must not queue)
    one = runner.invoke(app, ["submit", signal_line("a1"), "--db", sqlite_url, "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)[0] == {"inbox_id": 1, "id": "a1", "duplicate": False}
    path = write_lines(tmp_path / "s.jsonl", [signal_line("f1"), "", signal_line("a1")])
    from_file = runner.invoke(app, ["submit", "--file", str(path), "--db", sqlite_url])
    assert from_file.exit_code == 0 and "f1\tinbox #2\tqueued" in from_file.stdout
    assert "a1\tinbox #1\tduplicate" in from_file.stdout
    from_stdin = runner.invoke(app, ["submit", "-", "--db", sqlite_url, "--account", "DU0000002"],
                               input=signal_line("a1") + "\n")
    assert from_stdin.exit_code == 0 and "queued" in from_stdin.stdout  # another account's inbox


def test_tradectl_submit_exits_2_for_usage_errors_and_invalid_signals_writing_nothing(sqlite_url: str,
                                                                                      tmp_path: Path) -> None:
    from engine.cli import app

    assert runner.invoke(app, ["submit", "--db", sqlite_url]).exit_code == 2
    assert runner.invoke(app, ["submit", "{}", "--file", "x", "--db", sqlite_url]).exit_code == 2
    assert runner.invoke(app, ["submit", "--file", str(tmp_path / "none"), "--db", sqlite_url]).exit_code == 2
    bad = runner.invoke(app, ["submit", signal_line("b1", symbol="$$$"), "--db", sqlite_url])
    assert bad.exit_code == 2 and "field 'symbol'" in bad.output and "nothing was submitted" in bad.output
    upgrade(sqlite_url)
    assert SignalInbox(make_engine(sqlite_url), ACCOUNT).pending() == []


# -- the engine's source: engine.sources.InboxSource ---------------------------------------------------------
@pytest.mark.timeout(60)
def test_the_pump_hands_over_lines_as_they_arrive_and_each_is_consumed_once(db: Engine) -> None:
    import asyncio

    from engine.sources import InboxSource

    inbox = SignalInbox(db, ACCOUNT)
    rig = Rig()
    rig.quote()
    recorder = Recorder(db, 1, ACCOUNT).attach(rig.bus)
    seen: list[int] = []

    async def consume(stop: asyncio.Event) -> int:
        async for line_no, raw in InboxSource(inbox, recorder.consume_inbox, poll_s=0.02).lines(stop):
            seen.append(line_no)
            rig.engine.on_signal_line(str(raw), line_no=line_no)
            recorder.flush()
        return len(seen)

    async def scenario() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(consume(stop))
        await asyncio.to_thread(inbox.add, [signal_line("p1"), signal_line("p2")], "cli")
        for _ in range(500):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(inbox.add, [signal_line("p3")], "http")
        for _ in range(500):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.01)
        stop.set()
        return await task

    assert asyncio.run(scenario()) == 3
    assert len(seen) == len(set(seen)) == 3 and inbox.pending() == []
    assert outcome_rows(db) == 3


@pytest.mark.timeout(60)
def test_on_postgresql_a_producer_that_waited_for_another_gets_its_row_as_the_row_before(pg_url: str) -> None:
    """The row before a commit's first is found under the arrival lock: a producer blocked behind another
    sees the other's row once it commits, though its statement began before that commit."""
    upgrade(pg_url)
    db = make_engine(pg_url)
    first_inbox, second_inbox = SignalInbox(db, ACCOUNT), SignalInbox(db, ACCOUNT)
    earlier = first_inbox.add([signal_line("w0")], "sql")[0].inbox_id
    with db.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(7342, hashtext('tradectl_inbox:' || :a))"),
                       {"a": ACCOUNT})  # a producer mid-commit: later ones wait at the trigger's lock
        result: list[tuple[int, int]] = []
        second = threading.Thread(
            target=lambda: result.append((lambda r: (r[0][0].inbox_id, r[1]))(second_inbox.append(
                [signal_line("w2")], "http"))))
        second.start()
        time.sleep(0.3)  # the second producer's INSERT has begun and waits for the lock
        assert not result
        row = holder.execute(text("INSERT INTO signal_inbox (account, signal_id, raw) VALUES (:a, 'w1', '{}') "
                                  "RETURNING id, prev_id"), {"a": ACCOUNT}).one()
        holder.commit()
    second.join(timeout=30)
    assert row.prev_id == earlier
    (second_id, second_before), = result
    assert second_id > row.id and second_before == row.id
    db.dispose()


def test_on_postgresql_the_trigger_finds_the_row_before_by_walking_the_index_back_on_any_statistics(
        pg_url: str) -> None:
    """The trigger's plan is made once per connection, often while the table is new and small: its lookup of
    the row before must be one step back along the (account, id) index then too, not an aggregate over every
    row of the account (which kept a 16-row commit growing from 2.5 to 10 ms within 8,000 rows)."""
    upgrade(pg_url)
    db = make_engine(pg_url)
    with db.connect() as conn:
        source = conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'tradectl_inbox_arrival'")).scalar_one()
        lookup = " ".join(source[source.index("SELECT id INTO NEW.prev_id"):].split(";")[0].split())
        query = lookup.replace(" INTO NEW.prev_id", "").replace("NEW.account", "$1").replace("NEW.id", "$2")
        conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        conn.exec_driver_sql(f"PREPARE row_before(text, int) AS {query}")
        plan = "\n".join(conn.exec_driver_sql("EXPLAIN EXECUTE row_before('DU0000001', 1000)").scalars())
    db.dispose()
    assert plan.startswith("Limit") and "Backward using ix_signal_inbox_account_id" in plan, plan


@pytest.mark.timeout(60)
def test_an_append_larger_than_one_statement_lets_no_other_producer_s_row_in_between(db: Engine) -> None:
    """SQLAlchemy sends a large append as several INSERT statements: they commit together, so its rows are
    contiguous among the account's (the engine takes a commit's rows as such)."""
    big, small = SignalInbox(db, ACCOUNT), SignalInbox(db, ACCOUNT)
    size = db.dialect.insertmanyvalues_page_size * 2 + 10
    done = threading.Event()
    others: list[int] = []

    def other_producer() -> None:
        n = 0
        while not done.is_set():
            others.append(small.add([signal_line(f"other{n}")], "sql")[0].inbox_id)
            n += 1

    producer = threading.Thread(target=other_producer)
    producer.start()
    try:
        receipts, before = big.append([signal_line(f"big{i}") for i in range(size)], "http")
    finally:
        done.set()
        producer.join(timeout=30)
    ids = [r.inbox_id for r in receipts]
    assert len(ids) == size and ids == sorted(ids)
    assert not [i for i in others if ids[0] <= i <= ids[-1]]
    assert before == max((i for i in others if i < ids[0]), default=0)
