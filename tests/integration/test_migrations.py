"""The schema exists only through Alembic, and the migrations agree with the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from repositories.db import SCHEMA_HEAD, current_revision, downgrade, head_revision, make_engine, upgrade
from repositories.models import Base


def test_models_and_migrations_agree(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_upgrade_reaches_head_and_downgrade_removes_every_table(db_url: str) -> None:
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    downgrade(db_url, "base")
    tables = set(inspect(make_engine(db_url)).get_table_names()) - {"alembic_version"}
    assert tables == set()
    upgrade(db_url)
    assert set(Base.metadata.tables) <= set(inspect(make_engine(db_url)).get_table_names())


def test_the_schema_head_the_code_expects_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_HEAD


def test_a_migration_interrupted_half_way_leaves_no_half_built_schema(db_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import Any

    import sqlalchemy as sa

    from alembic import op

    create = op.create_table
    calls = {"n": 0}

    def crash_on_the_fourth(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("the process dies here")
        return create(*args, **kw)

    monkeypatch.setattr(op, "create_table", crash_on_the_fourth)
    with pytest.raises(RuntimeError, match="dies here"):
        upgrade(db_url)
    engine = sa.create_engine(db_url)
    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()
