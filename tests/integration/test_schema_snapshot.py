"""A fresh database gets the head's schema in one transaction (repositories.db.create_schema, from
repositories/schema_snapshot.py) instead of eight Alembic revisions: the schema must be the migrations' own.

Held here on SQLite and PostgreSQL: the snapshot is what the migrations run today; the schema it makes is the
same, object for object, as theirs (SQLite's sqlite_master and pragmas, PostgreSQL's catalog, SQLAlchemy's
inspection); any database that is not empty, or a snapshot of another revision, is left to Alembic."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

import repositories.schema_snapshot as snapshot
from repositories.db import (
    SCHEMA_HEAD,
    create_schema,
    current_revision,
    ensure_schema,
    make_engine,
    migration_statements,
    upgrade,
)
from repositories.errors import DatabaseUnavailable
from tests.conftest import throwaway_pg_database


@contextmanager
def another_database(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second empty database of ``db_url``'s kind (a file beside it, or a PostgreSQL database beside it)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    with throwaway_pg_database(db_url) as url:
        yield url


_PG_CATALOG = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.relhasindex, c.relhastriggers, c.relchecks
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() ORDER BY c.relname""",
    "attributes": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attisdropped,
               a.attidentity, a.attgenerated, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = current_schema() AND a.attnum > 0 ORDER BY c.relname, a.attnum""",
    "constraints": """
        SELECT c.relname, k.conname, k.contype, k.condeferrable, k.condeferred, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() ORDER BY c.relname, k.conname""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
               "ORDER BY tablename, indexname",
    "triggers": """
        SELECT c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND NOT t.tgisinternal ORDER BY c.relname, t.tgname""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema() ORDER BY p.proname""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, min_value, max_value, increment_by, cycle, cache_size,
               last_value
        FROM pg_sequences WHERE schemaname = current_schema() ORDER BY sequencename""",
    "owned_sequences": """
        SELECT s.relname, t.relname, a.attname, d.deptype
        FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_class t ON t.oid = d.refobjid JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        JOIN pg_namespace n ON n.oid = s.relnamespace
        WHERE n.nspname = current_schema() ORDER BY s.relname""",
    "comments": """
        SELECT c.relname, d.objsubid, d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()
        ORDER BY c.relname, d.objsubid""",
    "version": "SELECT version_num FROM alembic_version",
}


def catalog(url: str) -> dict[str, Any]:
    """Everything the database says of its schema: its own catalog, and SQLAlchemy's inspection of it."""
    db = make_engine(url, create=False)
    out: dict[str, Any] = {}
    try:
        with db.connect() as conn:
            if db.dialect.name == "sqlite":
                out["sqlite_master"] = [tuple(r) for r in conn.exec_driver_sql(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")]
                for pragma in ("user_version", "application_id", "auto_vacuum", "encoding", "page_size"):
                    out[pragma] = conn.exec_driver_sql(f"PRAGMA {pragma}").scalar()
                tables = [r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    for pragma in ("table_xinfo", "index_list", "foreign_key_list"):
                        out[f"{pragma}({table})"] = [tuple(r) for r in conn.exec_driver_sql(
                            f"PRAGMA {pragma}(\"{table}\")")]
                out["version"] = [tuple(r) for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
            else:
                for name, query in _PG_CATALOG.items():
                    out[name] = [tuple(str(v) for v in r) for r in conn.execute(text(query))]
        insp = inspect(db)
        for table in sorted(insp.get_table_names()):
            out[f"inspect({table})"] = json.dumps({
                "columns": insp.get_columns(table),
                "pk": insp.get_pk_constraint(table),
                "fks": insp.get_foreign_keys(table),
                "indexes": insp.get_indexes(table),
                "uniques": insp.get_unique_constraints(table),
                "checks": insp.get_check_constraints(table),
            }, default=str, sort_keys=True)
    finally:
        db.dispose()
    return out


def test_the_snapshot_is_of_the_head_and_is_what_the_migrations_run(db_url: str) -> None:
    dialect = make_url(db_url).get_backend_name()
    assert snapshot.REVISION == SCHEMA_HEAD, "a new migration: run scripts/schema_snapshot.py"
    assert migration_statements(db_url) == list(snapshot.STATEMENTS[dialect]), \
        "the migrations changed: run scripts/schema_snapshot.py"


def test_a_fresh_database_gets_the_schema_the_migrations_make(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    with another_database(db_url, tmp_path) as fresh:
        ensure_schema(fresh)
        made, migrated = catalog(fresh), catalog(db_url)
    assert made.keys() == migrated.keys()
    for key in migrated:
        assert made[key] == migrated[key], key
    assert any("signal_inbox" in k for k in made) and made["version"] == [(SCHEMA_HEAD,)]


def test_a_fresh_database_is_made_without_loading_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    probe = ("import sys; from repositories.db import ensure_schema; ensure_schema(sys.argv[1]); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    proc = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    assert current_revision(url) == SCHEMA_HEAD


def test_a_database_behind_head_is_migrated_by_alembic(db_url: str) -> None:
    upgrade(db_url, "0005")
    ensure_schema(db_url)
    assert current_revision(db_url) == SCHEMA_HEAD


def test_a_database_that_holds_any_table_is_left_to_the_migrations(db_url: str) -> None:
    db = make_engine(db_url)
    with db.begin() as conn:
        conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    assert create_schema(db) is False
    assert current_revision(db_url) is None  # nothing done
    db.dispose()
    ensure_schema(db_url)
    assert current_revision(db_url) == SCHEMA_HEAD
    assert "someone_elses" in inspect(create_engine(db_url)).get_table_names()


def test_a_snapshot_of_another_revision_is_not_used(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot, "REVISION", "0007")
    db = make_engine(db_url)
    assert create_schema(db) is False
    db.dispose()
    ensure_schema(db_url)  # Alembic, all the way
    assert current_revision(db_url) == SCHEMA_HEAD


def test_a_schema_interrupted_half_way_leaves_an_empty_database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dialect = make_url(db_url).get_backend_name()
    statements = list(snapshot.STATEMENTS[dialect])
    statements.insert(5, "CREATE TABLE broken (")  # the process dies here, as far as the database can tell
    monkeypatch.setitem(snapshot.STATEMENTS, dialect, tuple(statements))
    db = make_engine(db_url)
    with pytest.raises(DatabaseUnavailable):
        create_schema(db)
    assert inspect(db).get_table_names() == []
    db.dispose()
