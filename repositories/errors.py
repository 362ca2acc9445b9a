"""The one error the repositories raise for a database they cannot reach or use.

Callers outside ``repositories/`` catch ``DatabaseUnavailable`` and never see SQLAlchemy's exceptions:
``reading`` and ``writing`` open a connection (or a transaction) and translate every driver error
raised inside them, the commit included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from repositories.unavailable import DatabaseUnavailable
from repositories.writers import one_writer

# What "the database did not answer" looks like through SQLAlchemy: any driver error (OperationalError,
# InterfaceError and the other DBAPIErrors), a connection that died, a pool with no connection to give.
DRIVER_ERRORS = (DBAPIError, DisconnectionError, PoolTimeout)
__all__ = ["DRIVER_ERRORS", "DatabaseUnavailable", "describe_database_error", "reading", "translated", "writing"]


@contextmanager
def translated() -> Iterator[None]:
    """Driver errors raised inside become ``DatabaseUnavailable`` (the original is its ``__cause__``)."""
    try:
        yield
    except DRIVER_ERRORS as err:
        raise DatabaseUnavailable.from_error(err) from err


@contextmanager
def reading(db: Engine) -> Iterator[Connection]:
    """A connection for reads."""
    with translated(), db.connect() as conn:
        yield conn


@contextmanager
def writing(db: Engine) -> Iterator[Connection]:
    """A transaction, committed when the block ends."""
    with translated(), one_writer(db), db.begin() as conn:
        yield conn


def describe_database_error(err: BaseException) -> str | None:
    """One line for an error that means the database cannot be used (unreachable, refused, a URL without a
    driver); None for anything else."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    if isinstance(err, DatabaseUnavailable):
        return f"cannot use the database: {err.detail.splitlines()[0]}"
    if isinstance(err, DBAPIError) and (err.connection_invalidated or "connect" in str(err.orig).lower()):
        return f"cannot reach the database: {str(err.orig).splitlines()[0]}"
    if isinstance(err, (ArgumentError, NoSuchModuleError)):
        return f"not a database URL tradectl can use: {str(err).splitlines()[0]}"
    return None
