"""Shared fixtures: databases (SQLite file, and a throwaway PostgreSQL database per test) and helpers.

PostgreSQL tests skip with the reason outside CI when the server is unreachable; under CI=true they
fail instead, so a green CI run always includes them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# Derandomized: a failing example replays identically on every machine.
settings.register_profile(
    "default", derandomize=True, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_problem() -> str | None:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means: no server for these tests
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _pg_problem()
    if problem is not None:
        message = f"PostgreSQL not reachable at {PG_URL} ({problem})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " and CI=true: start it (README: the test command starts it when it can)")
        pytest.skip(message + "; PostgreSQL tests skipped outside CI")
    return PG_URL


@contextmanager
def throwaway_pg_database(server_url: str) -> Iterator[str]:
    """A new empty database on the PostgreSQL server of ``server_url`` (its URL), dropped afterwards."""
    name = f"tradectl_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    with throwaway_pg_database(pg_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tradectl.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tradectl.db'}"
    return str(request.getfixturevalue("pg_url"))


T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def signal_line(sid: str, symbol: str = "AAPL", direction: str = "long", seconds: float = 0, **extra: Any) -> str:
    obj: dict[str, Any] = {"id": sid, "ts": (T0 + timedelta(seconds=seconds)).isoformat(), "symbol": symbol,
                           "direction": direction}
    if direction != "flat" and "expected_return" not in extra and "win_prob" not in extra:
        obj.update(win_prob=0.6, payoff=1.5)
    obj.update(extra)
    return json.dumps(obj)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
