"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 22:43:38.929066
"""

from collections.abc import Sequence

import sqlalchemy as sa

import repositories.types
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=96), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_ts'), ['ts'], unique=False)

    op.create_table('fills',
    sa.Column('exec_id', sa.String(length=64), nullable=False),
    sa.Column('client_order_id', sa.String(length=160), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('symbol', sa.String(length=24), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('quantity', repositories.types.Money(), nullable=False),
    sa.Column('price', repositories.types.Money(), nullable=False),
    sa.Column('commission', repositories.types.Money(), nullable=False),
    sa.Column('ts', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('exec_id', name=op.f('pk_fills'))
    )
    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fills_client_order_id'), ['client_order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_fills_symbol'), ['symbol'], unique=False)

    op.create_table('killswitch_acks',
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('ts', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('engine', sa.String(length=128), nullable=False),
    sa.Column('cancelled', sa.Integer(), nullable=False),
    sa.Column('flatten_orders', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_killswitch_acks'))
    )
    op.create_table('killswitch_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ts', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('account', sa.String(length=32), nullable=False),
    sa.Column('scope', sa.String(length=96), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=False),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('flatten', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_killswitch_events'))
    )
    with op.batch_alter_table('killswitch_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_killswitch_events_scope'), ['scope'], unique=False)

    op.create_table('order_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('client_order_id', sa.String(length=160), nullable=False),
    sa.Column('ts', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_order_events'))
    )
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_events_client_order_id'), ['client_order_id'], unique=False)

    op.create_table('orders',
    sa.Column('client_order_id', sa.String(length=160), nullable=False),
    sa.Column('signal_id', sa.String(length=128), nullable=True),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('strategy', sa.String(length=64), nullable=False),
    sa.Column('symbol', sa.String(length=24), nullable=False),
    sa.Column('sec_type', sa.String(length=8), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('exchange', sa.String(length=16), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('quantity', repositories.types.Money(), nullable=False),
    sa.Column('order_type', sa.String(length=8), nullable=False),
    sa.Column('limit_price', repositories.types.Money(), nullable=True),
    sa.Column('stop_price', repositories.types.Money(), nullable=True),
    sa.Column('tif', sa.String(length=4), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('filled_qty', repositories.types.Money(), nullable=False),
    sa.Column('avg_fill_price', repositories.types.Money(), nullable=False),
    sa.Column('commission', repositories.types.Money(), nullable=False),
    sa.Column('broker_order_id', sa.BigInteger(), nullable=True),
    sa.Column('perm_id', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_order_id', name=op.f('pk_orders'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_signal_id'), ['signal_id'], unique=False)
        batch_op.create_index('ix_orders_status', ['status'], unique=False)

    op.create_table('positions',
    sa.Column('account', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=24), nullable=False),
    sa.Column('quantity', repositories.types.Money(), nullable=False),
    sa.Column('avg_cost', repositories.types.Money(), nullable=False),
    sa.Column('realized_pnl', repositories.types.Money(), nullable=False),
    sa.Column('commissions', repositories.types.Money(), nullable=False),
    sa.Column('updated_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account', 'symbol', name=op.f('pk_positions'))
    )
    op.create_table('sessions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('started_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', repositories.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('account', sa.String(length=32), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    op.create_table('signal_rejects',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('received_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('signal_id', sa.String(length=128), nullable=True),
    sa.Column('reason_code', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signal_rejects'))
    )
    with op.batch_alter_table('signal_rejects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signal_rejects_session_id'), ['session_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_signal_rejects_signal_id'), ['signal_id'], unique=False)

    op.create_table('signals',
    sa.Column('signal_id', sa.String(length=128), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('ts', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', repositories.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('strategy', sa.String(length=64), nullable=False),
    sa.Column('symbol', sa.String(length=24), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason_code', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('client_order_id', sa.String(length=160), nullable=True),
    sa.Column('payload', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('signal_id', name=op.f('pk_signals'))
    )
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signals_session_id'), ['session_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signals_session_id'))

    op.drop_table('signals')
    with op.batch_alter_table('signal_rejects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signal_rejects_signal_id'))
        batch_op.drop_index(batch_op.f('ix_signal_rejects_session_id'))

    op.drop_table('signal_rejects')
    op.drop_table('sessions')
    op.drop_table('positions')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_status')
        batch_op.drop_index(batch_op.f('ix_orders_signal_id'))

    op.drop_table('orders')
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_events_client_order_id'))

    op.drop_table('order_events')
    with op.batch_alter_table('killswitch_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_killswitch_events_scope'))

    op.drop_table('killswitch_events')
    op.drop_table('killswitch_acks')
    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fills_symbol'))
        batch_op.drop_index(batch_op.f('ix_fills_client_order_id'))

    op.drop_table('fills')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_ts'))

    op.drop_table('audit_log')
