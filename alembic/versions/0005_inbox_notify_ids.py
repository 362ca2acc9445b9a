"""the inbox's NOTIFY names the row (payload ``account:id``); an (account, id) index for the row before

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 03:00:00

The daemon's HTTP intake hands the rows it commits to the engine directly; with the id in the payload the
engine can tell those notifications from rows of other producers and read the inbox only for the latter.
An engine of an older version reads ``account:id`` as another account's and falls back to its timer read.

The intake asks for the account's row just before its new ones at each commit (``SignalInbox.append``);
without an (account, id) index that walked every row of the account, slower each day of a daemon's life.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION tradectl_inbox_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7342, hashtext('tradectl_inbox:' || NEW.account));
    NEW.id := nextval(pg_get_serial_sequence('signal_inbox', 'id'));
    PERFORM pg_notify('tradectl_inbox', {payload});
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    with op.batch_alter_table('signal_inbox', schema=None) as batch_op:
        batch_op.create_index('ix_signal_inbox_account_id', ['account', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(payload="NEW.account || ':' || NEW.id"))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(payload="NEW.account"))
    with op.batch_alter_table('signal_inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_signal_inbox_account_id')
