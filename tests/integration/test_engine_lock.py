"""Only one engine trades an account: a lock in the database (advisory on PostgreSQL, a row on SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from engine.clock import SimClock
from engine.config import load_settings
from engine.session import PaperSession
from paper.market import SIM_START
from repositories.db import ensure_schema, make_engine
from repositories.engine_lock import EngineLocked
from repositories.repos import Repositories
from tests.integration.test_kill_integration import tradectl, wait_for


def _open(url: str) -> PaperSession:
    session = PaperSession(load_settings(database_url=url), seed=1)
    session.prepare(SimClock(SIM_START), datetime.now(UTC))
    return session


def test_a_second_engine_on_the_same_account_is_refused_with_the_holder_named(db_url: str) -> None:
    first = _open(db_url)
    with pytest.raises(EngineLocked, match=rf"already traded by .*:{os.getpid()} \(paper, session"):
        _open(db_url)
    first.control.close()
    third = _open(db_url)  # released: the next engine may trade
    third.control.close()


def test_a_lock_row_left_by_a_dead_process_on_this_host_is_taken_over(sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    repos = Repositories(make_engine(sqlite_url), "DU0000001")
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    repos.engine_lock.claim(f"{socket.gethostname()}:{dead.pid}", "paper", datetime.now(UTC))
    session = _open(sqlite_url)  # the holder's pid is gone: no waiting for its heartbeat to age
    lock = repos.engine_lock.holder()
    assert lock is not None and lock["holder"].endswith(f":{os.getpid()}")
    session.control.close()


def test_another_hosts_lock_holds_while_its_heartbeat_is_fresh_and_not_after(sqlite_url: str) -> None:
    ensure_schema(sqlite_url)
    repos = Repositories(make_engine(sqlite_url), "DU0000001")
    now = datetime.now(UTC)
    repos.engine_lock.claim("elsewhere:4242", "ibkr", now)
    other = Repositories(make_engine(sqlite_url), "DU0000001")
    with pytest.raises(EngineLocked, match="elsewhere:4242"):
        other.engine_lock.claim("here:1", "paper", now + timedelta(seconds=2), stale_after_s=5)
    other.engine_lock.claim("here:1", "paper", now + timedelta(seconds=6), stale_after_s=5)
    lock = other.engine_lock.holder()
    assert lock is not None and lock["holder"] == "here:1"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_tradectl_refuses_a_second_engine_with_exit_2_and_a_killed_engine_frees_the_account(db_url: str) -> None:
    first = tradectl("paper", "--db", db_url, "--signals", "-", "--no-progress", stdin=subprocess.PIPE)
    repos = Repositories(make_engine(db_url), "DU0000001")
    try:
        wait_for(lambda: _locked(repos), 30, "the first engine holds the account")
        second = tradectl("paper", "--db", db_url, "--no-progress")
        _, err = second.communicate(timeout=30)
        assert second.returncode == 2
        assert f":{first.pid} (paper, session" in err and "only one engine" in err
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: no release, no goodbye
        first.wait(10)
    third = tradectl("paper", "--db", db_url, "--no-progress", "--json")
    _, err = third.communicate(timeout=60)
    assert third.returncode == 0, err


def _locked(repos: Repositories) -> bool:
    try:
        lock = repos.engine_lock.holder()
    except Exception:  # schema not there yet
        return False
    return lock is not None and lock["session_id"] is not None


def test_a_live_engine_on_a_traded_account_is_refused_before_it_connects_to_ib(db_url: str) -> None:
    """A second `tradectl run` used to connect to IB first (with the first's client id it would wait for the
    gateway forever): now the lock is looked at before, and nothing listens on the port it would dial."""
    import asyncio
    import socket

    from engine.live import IbkrSession

    first = _open(db_url)
    with socket.socket() as probe:  # a port nothing listens on: dialling it would fail with IbkrError instead
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    second = IbkrSession(load_settings(database_url=db_url), host="127.0.0.1", port=port, client_id=1)
    try:
        with pytest.raises(EngineLocked, match=rf"already traded by .*:{os.getpid()} \(paper, session"):
            asyncio.run(second.connect())
        assert getattr(second, "broker", None) is None  # no IB connection was even made
    finally:
        first.control.close()


@pytest.mark.postgres
def test_the_account_locked_in_another_database_of_the_server_does_not_count_as_held(pg_url: str,
                                                                                      pg_server: str) -> None:
    """Advisory locks are per database: a rehearsal database on the same server, trading the same account,
    must not make the live database's engine look held (its claim would succeed)."""
    from sqlalchemy import text

    from repositories.direct import DirectEngineLock, open_database
    from repositories.rows import lock_key
    from tests.conftest import throwaway_pg_database

    ensure_schema(pg_url)
    repos = Repositories(make_engine(pg_url), "DU0000001")
    direct = DirectEngineLock(open_database(pg_url), "DU0000001")
    with throwaway_pg_database(pg_server) as elsewhere:
        other = make_engine(elsewhere)
        with other.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("DU0000001")})
            assert repos.engine_lock.held_by_a_connection() is False
            assert direct.held_by_a_connection() is False
            repos.engine_lock.refuse_if_held(datetime.now(UTC))  # nothing held here: no refusal
        other.dispose()
    with make_engine(pg_url).connect() as conn:  # held in this database: it counts
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("DU0000001")})
        assert repos.engine_lock.held_by_a_connection() is True
        assert direct.held_by_a_connection() is True
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("DU0000001")})


def test_a_live_engine_on_a_database_behind_the_code_migrates_it_instead_of_failing_the_lock_check(
        sqlite_url: str) -> None:
    """The look at the lock before IB reads the lock table as the code knows it: on an older schema (no table,
    or fewer columns) it leaves the database to the start, which migrates it; here the start then fails only
    for what it should, the gateway nobody runs."""
    import asyncio
    import socket

    from broker.ibkr import IbkrError
    from engine.live import IbkrSession
    from repositories.db import upgrade

    upgrade(sqlite_url, "0006")  # before the lock row had its broker_state column
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = IbkrSession(load_settings(database_url=sqlite_url, ibkr={"connect_timeout_s": 2}), host="127.0.0.1",
                          port=port, client_id=1)
    with pytest.raises(IbkrError):
        asyncio.run(session.connect())
