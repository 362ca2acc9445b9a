"""signal_inbox.prev_id, the account's row before each, set by the trigger; no NOTIFY for the intake's rows

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 13:20:00

The daemon's HTTP intake tells the engine, at each commit, the account's row just before its new ones (an
engine that has taken exactly up to it takes them without reading the inbox). It asked with a query of its
own after the INSERT: a round trip to the server of its own in every intake commit, ~0.45 ms of ~1.3. The
trigger that numbers rows in commit order now records it as it numbers the row, under the same lock: a query
in a VOLATILE PL/pgSQL function takes a fresh snapshot (READ COMMITTED), so it sees every row of the account
numbered before this one, all committed before the lock was granted. The INSERT returns it. SQLite leaves it
NULL: one writer at a time makes the intake's own query exact there, and costs no round trip.

Not max(id): the function's plan is made once per connection, and on a new, small table the planner made max()
an aggregate over every row of the account below the new id, and kept that plan as the table grew (a 16-row
commit 2.5 -> 10 ms within 8,000 rows). ORDER BY the (account, id) index with LIMIT 1 is a backward walk of
that index from the new id, whatever the table's statistics say: one entry.

The intake hands the rows it commits to the engine over a socket pair, and the trigger's NOTIFY for the same
rows reached the engine first, to be drained and matched for nothing (and PostgreSQL serializes the commits of
transactions that notify). The intake is the one producer of source 'http' rows, so the trigger stays silent
for them; every other producer is heard as before. A hand-over lost with the engine is covered by the engine's
reads at start and on its fallback timer (``InboxSource.fallback_s``).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION tradectl_inbox_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7342, hashtext('tradectl_inbox:' || NEW.account));
    NEW.id := nextval(pg_get_serial_sequence('signal_inbox', 'id'));{body}
    RETURN NEW;
END
$$
"""
_HEAD = """
    SELECT id INTO NEW.prev_id FROM signal_inbox WHERE account = NEW.account AND id < NEW.id
        ORDER BY account DESC, id DESC LIMIT 1;
    IF NEW.source IS DISTINCT FROM 'http' THEN  -- the daemon's intake hands its rows to the engine itself
        PERFORM pg_notify('tradectl_inbox', NEW.account || ':' || NEW.id);
    END IF;"""
_0005 = """
    PERFORM pg_notify('tradectl_inbox', NEW.account || ':' || NEW.id);"""


def upgrade() -> None:
    with op.batch_alter_table('signal_inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_id', sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(body=_HEAD))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(body=_0005))
    with op.batch_alter_table('signal_inbox', schema=None) as batch_op:
        batch_op.drop_column('prev_id')
