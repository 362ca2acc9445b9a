"""Connecting to the database and migrating it. The schema is made only by Alembic revisions: on an empty database
by replaying, in one transaction, the statements they run (``create_schema``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from repositories.errors import reading, translated

ROOT = Path(__file__).resolve().parent.parent
# The newest Alembic revision this code expects. Kept here so the CLI can check a database without
# loading Alembic (half a second); tests/test_migrations.py fails when it falls behind the scripts.
SCHEMA_HEAD = "0010"
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

    if not (ALEMBIC_DIR / "versions").is_dir():
        # Installed as a wheel the packages sit in site-packages, whose "alembic" is the Alembic library itself:
        # the scripts live in the checkout, so tradectl is installed from it in place (pip install -e .).
        raise FileNotFoundError(f"the migration scripts are not at {ALEMBIC_DIR}: install tradectl from its "
                                f"checkout in place (pip install -e .), as scripts/bootstrap and deploy/Dockerfile do")
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
    """Migrate to head when behind (a paper session, or a kill on a fresh database, needs no extra step). An
    empty database gets the head's schema in one go (``create_schema``); any other runs the migrations.

    Raises DatabaseUnavailable when the database cannot be reached."""
    db = make_engine(url)
    try:
        current = schema_revision(db)
        made = current is None and create_schema(db)
    finally:
        db.dispose()
    if current != SCHEMA_HEAD and not made:
        with translated():
            upgrade(url)


# Two-key advisory lock of a fresh PostgreSQL database's first schema (the inbox's arrival trigger uses 7342 too,
# with the hash of an account: the spaces never meet but by a 1 in 2**32 chance, and then only wait).
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(7342, 0)"
_ANY_TABLE = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
}


def create_schema(db: Engine) -> bool:
    """Give an empty database the head's schema in one transaction: the statements the migrations run on an empty
    database (repositories/schema_snapshot.py, recorded from them) and Alembic's version row, without loading
    Alembic (~0.25 s to import) or running eight revisions one by one (~0.1 s on SQLite).

    Returns False, having changed nothing, when the database holds any table (the migrations then do what they
    do) or the snapshot is not of the head this code expects. tests/integration/test_schema_snapshot.py holds
    the schema it makes identical to the migrations', on SQLite and PostgreSQL."""
    from repositories.schema_snapshot import REVISION, STATEMENTS

    dialect = db.dialect.name
    statements = STATEMENTS.get(dialect)
    if statements is None or REVISION != SCHEMA_HEAD:
        return False
    with translated(), db.connect() as conn:
        if dialect == "sqlite":
            # As alembic/env.py: pysqlite would commit before each DDL statement; one transaction, taken at once.
            driver: Any = conn.connection.driver_connection
            driver.isolation_level = None
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql(_SCHEMA_LOCK)  # two fresh starts at once: the second finds the first's tables
        try:
            if conn.exec_driver_sql(_ANY_TABLE[dialect]).scalar():
                conn.rollback()
                return False
            for statement in statements:
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"INSERT INTO alembic_version (version_num) VALUES ('{REVISION}')")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    import structlog

    structlog.get_logger("tradectl.db").info("db.schema_created", revision=REVISION, statements=len(statements))
    return True


_REFLECTION = ("pg_catalog", "information_schema", "sqlite_master")


def migration_statements(url: str) -> list[str]:
    """Migrate the empty database at ``url`` to head and return, in order, the statements that changed it: what
    a snapshot (scripts/schema_snapshot.py) replays. Left out: transaction control, reflection (PRAGMA, catalog
    queries) and Alembic's version rows (``create_schema`` writes the head's). A statement that takes parameters,
    or reads anything else, is refused: a replay could not do what it did."""
    caught: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        caught.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        upgrade(url)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    kept = []
    for statement, parameters in caught:
        text = statement.strip()
        word = text.split(None, 1)[0].upper()
        if word in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
            continue
        if word == "SELECT" and any(name in text for name in _REFLECTION):
            continue
        if "alembic_version" in text and word in ("INSERT", "UPDATE", "DELETE"):
            continue
        if parameters or word in ("SELECT", "WITH", "SHOW"):
            raise ValueError(f"a migration ran a statement a snapshot cannot replay: {text[:200]!r} {parameters!r}")
        kept.append(text)
    return kept


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
