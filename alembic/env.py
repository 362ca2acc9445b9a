"""Alembic environment: the URL comes from the caller (tradectl), `-x url=...`, or DATABASE_URL."""

from __future__ import annotations

import os
from typing import Any

from alembic import context
from repositories.db import default_url, make_engine, normalise_url
from repositories.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    return normalise_url(url or default_url())


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    db = make_engine(_url())
    with db.connect() as connection:
        if connection.dialect.name == "sqlite":
            # pysqlite commits before every DDL statement on its own; take the transaction over so that a
            # migration interrupted half-way (a crash, kill -9) leaves the schema as it was, not half-built.
            driver: Any = connection.connection.driver_connection
            driver.isolation_level = None
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            # SQLite can roll DDL back too: a crash mid-migration must not leave a half-built schema.
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    db.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
