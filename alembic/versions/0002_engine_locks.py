"""engine locks (who is trading an account, with a heartbeat) and kill-switch ack detail

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 00:05:04.899918
"""

from collections.abc import Sequence

import sqlalchemy as sa

import repositories.types
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('engine_locks',
    sa.Column('account', sa.String(length=32), nullable=False),
    sa.Column('holder', sa.String(length=160), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('started_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account', name=op.f('pk_engine_locks'))
    )
    with op.batch_alter_table('killswitch_acks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('detail', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('killswitch_acks', schema=None) as batch_op:
        batch_op.drop_column('detail')
    op.drop_table('engine_locks')
