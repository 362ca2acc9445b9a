"""the signal inbox: producers add signals, the engine of the account consumes each exactly once

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00

On PostgreSQL a BEFORE INSERT trigger takes a transaction lock per account and numbers the row then, so
ids of one account commit in increasing order: an engine reading "id > the last id I took" never skips
a row whose transaction was still open when a later one committed. It also NOTIFYs ``tradectl_inbox``
with the account, so the engine wakes for rows inserted by hand as for any other. SQLite needs neither:
one writer at a time numbers rows in commit order, and the engine polls.
"""

from collections.abc import Sequence

import sqlalchemy as sa

import repositories.types
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Two-key advisory locks never meet the engine's one-key account lock (PostgreSQL keeps the spaces apart).
_PG_ARRIVAL = """
CREATE FUNCTION tradectl_inbox_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7342, hashtext('tradectl_inbox:' || NEW.account));
    NEW.id := nextval(pg_get_serial_sequence('signal_inbox', 'id'));
    PERFORM pg_notify('tradectl_inbox', NEW.account);
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.create_table('signal_inbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('account', sa.String(length=32), nullable=False),
    sa.Column('signal_id', sa.String(length=128), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=8), server_default=sa.text("'sql'"), nullable=False),
    sa.Column('received_at', repositories.types.UTCDateTime(timezone=True),
              server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('consumed_at', repositories.types.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('length(raw) <= 16384', name=op.f('ck_signal_inbox_raw_length')),
    sa.CheckConstraint("source IN ('sql', 'cli', 'client', 'http')", name=op.f('ck_signal_inbox_source')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signal_inbox')),
    sa.UniqueConstraint('account', 'signal_id', name=op.f('uq_signal_inbox_account_signal_id')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('signal_inbox', schema=None) as batch_op:
        batch_op.create_index('ix_signal_inbox_pending', ['account', 'consumed_at', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_PG_ARRIVAL)
        op.execute('CREATE TRIGGER signal_inbox_arrival BEFORE INSERT ON signal_inbox '
                   'FOR EACH ROW EXECUTE FUNCTION tradectl_inbox_arrival()')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS signal_inbox_arrival ON signal_inbox')
        op.execute('DROP FUNCTION IF EXISTS tradectl_inbox_arrival()')
    with op.batch_alter_table('signal_inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_signal_inbox_pending')
    op.drop_table('signal_inbox')
