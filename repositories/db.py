"""Connecting to the database and migrating it. The schema is made only by Alembic revisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from repositories.errors import reading, translated

ROOT = Path(__file__).resolve().parent.parent
# The newest Alembic revision this code expects. Kept here so the CLI can check a database without
# loading Alembic (half a second); tests/test_migrations.py fails when it falls behind the scripts.
SCHEMA_HEAD = "0008"
ALEMBIC_DIR = ROOT / "alembic"
DEFAULT_SQLITE_PATH = Path("var") / "tradectl.db"


def default_url() -> str:
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def normalise_url(url: str) -> str:
    """Accept the common spellings and always drive PostgreSQL through psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the CLI read and write kill switches while a session writes; NORMAL sync is durable
    # against a process crash (kill -9), which is the failure the engine must survive.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def make_engine(url: str, *, create: bool = True, **kwargs: Any) -> Engine:
    """A SQLAlchemy Engine (a connection pool) for ``url``: callers name it ``db``. ``create=False``: a SQLite
    file's directory is not made (read-only commands never create files or directories)."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None and create:
            path.parent.mkdir(parents=True, exist_ok=True)
        db = create_engine(url, **kwargs)
        event.listen(db, "connect", _sqlite_pragmas)
        return db
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    db = make_engine(url, create=False)
    try:
        with reading(db) as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        db.dispose()


def schema_revision(db: Engine) -> str | None:
    """The database's Alembic revision by a plain query (None when it has no schema yet).

    Raises DatabaseUnavailable when the database cannot be read."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    with translated():
        try:
            with db.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError) as err:
            if "alembic_version" in str(err.orig):
                return None
            raise


def ensure_schema(url: str) -> None:
    """Migrate to head when behind (a paper session, or a kill on a fresh database, needs no extra step).

    Raises DatabaseUnavailable when the database cannot be reached."""
    db = make_engine(url)
    try:
        current = schema_revision(db)
    finally:
        db.dispose()
    if current != SCHEMA_HEAD:
        with translated():
            upgrade(url)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
