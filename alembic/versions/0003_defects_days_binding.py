"""row defects, trading days, the account a database belongs to, input line numbers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 23:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

import repositories.types
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('row_defects',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('ts', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('table_name', sa.String(length=32), nullable=False),
    sa.Column('row_key', sa.String(length=160), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('row', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_row_defects'))
    )
    with op.batch_alter_table('row_defects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_row_defects_session_id'), ['session_id'], unique=False)
    op.create_table('trading_days',
    sa.Column('account', sa.String(length=32), nullable=False),
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('start_equity', repositories.types.Money(), nullable=False),
    sa.Column('peak_equity', repositories.types.Money(), nullable=False),
    sa.Column('updated_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account', 'day', name=op.f('pk_trading_days'))
    )
    op.create_table('account_binding',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account', sa.String(length=32), nullable=False),
    sa.Column('broker', sa.String(length=16), nullable=False),
    sa.Column('bound_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_binding'))
    )
    with op.batch_alter_table('signal_rejects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('line_no', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('line_no', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.drop_column('line_no')
    with op.batch_alter_table('signal_rejects', schema=None) as batch_op:
        batch_op.drop_column('line_no')
    op.drop_table('account_binding')
    op.drop_table('trading_days')
    with op.batch_alter_table('row_defects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_row_defects_session_id'))
    op.drop_table('row_defects')
