"""The plain-driver path of the operator's commands (repositories/direct.py) writes the rows and gives the
answers the SQLAlchemy repositories do, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from engine.config import load_settings
from engine.domain import KillState
from engine.session import PaperSession
from repositories.db import ensure_schema, make_engine, sqlite_file, upgrade
from repositories.direct import DirectRepositories, DirectUnsupported, NoDatabase, open_database
from repositories.models import OrderRow
from repositories.repos import Repositories
from repositories.unavailable import DatabaseUnavailable
from tests.conftest import T0, signal_line

ACCOUNT = "DU0000001"
NOW = datetime(2026, 3, 2, 15, 4, 5, 123456, tzinfo=UTC)
CHANGES = [  # scope, state, reason, flatten: every transition, quotes and non-ASCII in the reason
    ("global", KillState.HALTED, "desk says stop", False),
    ("symbol:AAPL", KillState.REDUCE_ONLY, "earnings 'tomorrow' — reduce", False),
    ("global", KillState.ACTIVE, "resumed", False),
    ("symbol:AAPL", KillState.HALTED, "flatten it", True),
    ("strategy:mom", KillState.HALTED, "bad model", False),
]


@pytest.fixture(params=["sqlite", "postgresql"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases of one kind, migrated to head."""
    if request.param == "sqlite":
        urls = (f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}")
        for url in urls:
            upgrade(url)
        yield urls
        return
    server = str(request.getfixturevalue("pg_server"))
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    names = [f"tradectl_t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    a, b = (make_url(server).set(database=n).render_as_string(hide_password=False) for n in names)
    try:
        upgrade(a)
        upgrade(b)
        yield a, b
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _stored(url: str, table: str) -> list[tuple[Any, ...]]:
    """A table's rows as the database holds them (the driver's values, no column types applied)."""
    db = make_engine(url)
    with db.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]
    db.dispose()
    return rows


def test_a_kill_switch_change_writes_the_rows_the_repository_writes(two_urls: tuple[str, str]) -> None:
    orm_url, direct_url = two_urls
    orm = Repositories(make_engine(orm_url), ACCOUNT)
    direct = DirectRepositories.open(direct_url, ACCOUNT)
    for i, (scope, state, reason, flatten) in enumerate(CHANGES):
        now = NOW + timedelta(seconds=i)
        by_orm = orm.killswitches.record(scope, state, reason=reason, actor="ops@desk", now=now, flatten=flatten)
        by_direct = direct.killswitches.record(scope, state, reason=reason, actor="ops@desk", now=now,
                                               flatten=flatten)
        assert by_direct == by_orm
    orm.dispose()
    direct.dispose()
    for table in ("killswitch_events", "audit_log"):
        assert _stored(direct_url, table) == _stored(orm_url, table)


def test_a_change_recorded_directly_reads_back_through_the_repository(db_url: str) -> None:
    ensure_schema(db_url)
    direct = DirectRepositories.open(db_url, ACCOUNT)
    change = direct.killswitches.record("global", KillState.HALTED, reason="r", actor="a", now=NOW)
    direct.dispose()
    orm = Repositories(make_engine(db_url), ACCOUNT)
    assert orm.killswitches.events() == [change]
    assert orm.killswitches.states() == {"global": KillState.HALTED}
    orm.dispose()


def test_a_resume_writes_the_rows_the_repository_writes_and_none_for_a_scope_not_halted(
        two_urls: tuple[str, str]) -> None:
    orm_url, direct_url = two_urls
    orm = Repositories(make_engine(orm_url), ACCOUNT)
    direct = DirectRepositories.open(direct_url, ACCOUNT)
    for repos in (orm, direct):
        repos.killswitches.record("symbol:AAPL", KillState.HALTED, reason="bad prints", actor="ops", now=NOW)
    for i, scope in enumerate(["symbol:AAPL", "symbol:AAPL", "global"], 1):  # halted, then ACTIVE twice
        now = NOW + timedelta(seconds=i)
        by_orm = orm.killswitches.resume(scope, reason="fixed", actor="ops", now=now)
        assert direct.killswitches.resume(scope, reason="fixed", actor="ops", now=now) == by_orm
    orm.dispose()
    direct.dispose()
    for table in ("killswitch_events", "audit_log"):
        assert _stored(direct_url, table) == _stored(orm_url, table)


def _repositories(path: str, url: str) -> Repositories | DirectRepositories:
    return Repositories(make_engine(url), ACCOUNT) if path == "sqlalchemy" else DirectRepositories.open(url, ACCOUNT)


@pytest.mark.parametrize("path", ["sqlalchemy", "plain driver"])
@pytest.mark.parametrize("before", [[], [KillState.HALTED, KillState.ACTIVE]], ids=["never changed", "resumed"])
def test_a_resume_of_a_scope_that_is_not_halted_writes_nothing(path: str, before: list[KillState],
                                                                db_url: str) -> None:
    ensure_schema(db_url)
    repos = _repositories(path, db_url)
    for i, state in enumerate(before):
        repos.killswitches.record("global", state, reason="drill", actor="ops", now=NOW + timedelta(seconds=i))
    assert repos.killswitches.resume("global", reason="again", actor="ops", now=NOW + timedelta(minutes=1)) is None
    repos.dispose()
    assert len(_stored(db_url, "killswitch_events")) == len(_stored(db_url, "audit_log")) == len(before)


@pytest.mark.parametrize("path", ["sqlalchemy", "plain driver"])
@pytest.mark.parametrize("state", [KillState.HALTED, KillState.REDUCE_ONLY])
def test_a_resume_of_a_halted_or_reduce_only_scope_sets_it_active(path: str, state: KillState, db_url: str) -> None:
    ensure_schema(db_url)
    repos = _repositories(path, db_url)
    repos.killswitches.record("strategy:mr", state, reason="review", actor="ops", now=NOW)
    change = repos.killswitches.resume("strategy:mr", reason="done", actor="ops", now=NOW + timedelta(seconds=1))
    assert change is not None and (change.from_state, change.to_state) == (state, KillState.ACTIVE)
    assert repos.killswitches.states() == {"strategy:mr": KillState.ACTIVE}
    repos.dispose()


@pytest.fixture
def traded(db_url: str) -> str:
    """A database after a paper session (signals, rejects, orders, fills, positions), with a resting order,
    kill switches, an engine holding the lock and an acknowledgement."""
    lines = [signal_line(f"s{i}", ["AAPL", "MSFT"][i % 2], ["long", "short", "flat"][i % 3], seconds=i)
             for i in range(30)]
    lines.insert(4, "not json")
    PaperSession(load_settings(database_url=db_url), seed=1).run_file(lines)
    repos = Repositories(make_engine(db_url), ACCOUNT)
    with repos.db.begin() as conn:
        conn.execute(insert(OrderRow).values(
            client_order_id="rest-1", signal_id="r1", session_id=1, strategy="m", symbol="SPY", sec_type="STK",
            currency="USD", exchange="SMART", side="BUY", quantity=D(10), order_type="LMT", limit_price=D("1.25"),
            stop_price=None, tif="DAY", status="Submitted", filled_qty=D(0), avg_fill_price=D(0),
            commission=D(0), broker_order_id=7, perm_id=70, reason=None, created_at=T0, updated_at=T0))
    for i, (scope, state, reason, flatten) in enumerate(CHANGES):
        repos.killswitches.record(scope, state, reason=reason, actor="ops", now=NOW + timedelta(seconds=i),
                                  flatten=flatten)
    repos.killswitches.ack(1, engine_name="host:42", cancelled=3, flatten_orders=0, now=NOW, detail="x",
                           scope="global")
    repos.engine_lock.claim("host:42", "paper", NOW)
    repos.dispose()
    return db_url


def test_the_reads_answer_what_the_repositories_answer(traded: str) -> None:
    orm = Repositories(make_engine(traded), ACCOUNT)
    direct = DirectRepositories.open(traded, ACCOUNT)
    assert direct.signals.counts() == orm.signals.counts()
    assert direct.killswitches.listing() == orm.killswitches.listing()
    assert direct.killswitches.states() == orm.killswitches.states()
    assert direct.killswitches.ack_of(1) == orm.killswitches.ack_of(1) is not None
    assert direct.killswitches.ack_of(2) is None
    assert direct.sessions.last() == orm.sessions.last() is not None
    assert direct.orders.open() == orm.orders.open() != []
    assert direct.orders.symbols() == orm.orders.symbols() == {"AAPL", "MSFT", "SPY"}
    ids = [*(r["client_order_id"] for r in orm.listings.rows("orders", 5)), "no-such-order"]
    assert direct.orders.find(ids) == orm.orders.find(ids) != []
    assert direct.positions.all() == orm.positions.all() != []
    assert direct.engine_lock.holder() == orm.engine_lock.holder() is not None
    assert direct.schema_revision() is not None
    orm.engine_lock.release("host:42")
    assert direct.engine_lock.holder() is None
    orm.dispose()
    direct.dispose()


def test_a_database_without_a_schema_has_no_revision(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):  # an empty file: SQLite has a database, no tables
        (tmp_path / "tradectl.db").touch()
    direct = DirectRepositories.open(db_url, ACCOUNT)
    assert direct.schema_revision() is None
    direct.dispose()


@pytest.mark.parametrize("relative", [False, True])
def test_a_missing_sqlite_file_is_the_file_sqlalchemy_names_and_is_not_created(
        relative: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///typo/x.db" if relative else f"sqlite:///{tmp_path / 'typo' / 'x.db'}"
    with pytest.raises(NoDatabase) as err:
        open_database(url)
    assert err.value.path == sqlite_file(url)
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///x.db?mode=ro", "mysql://h/db"])
def test_urls_it_does_not_read_are_left_to_sqlalchemy(url: str) -> None:
    with pytest.raises(DirectUnsupported):
        open_database(url)


def test_an_unreachable_postgresql_is_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable):
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
