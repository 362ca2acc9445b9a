"""the engine's heartbeat carries what it knows of its broker link (connected, the gateway's conditions)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 05:30:00

`tradectl status` runs in another process and reads only the database: without this it could say an
engine is running but not that its gateway has lost IB's servers, a farm, or its market data to a
competing session (10197). The engine writes the state as JSON text with each heartbeat.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("engine_locks") as batch:
        batch.add_column(sa.Column("broker_state", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("engine_locks") as batch:
        batch.drop_column("broker_state")
