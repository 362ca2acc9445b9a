"""The benchmarks' throwaway databases: never the shared one a URL names."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def fresh_database(url: str | None, prefix: str = "tradectl_bench") -> Iterator[str]:
    """A temp SQLite file when no URL is given; SQLite as given; on PostgreSQL a database made beside the
    one named (``prefix`` and this pid) and dropped afterwards."""
    if url is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    if not url.startswith("postgresql"):
        yield url
        return
    name = f"{prefix}_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
