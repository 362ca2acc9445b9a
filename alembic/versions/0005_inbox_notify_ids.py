"""the inbox's NOTIFY names the row: payload ``account:id`` instead of ``account``

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 03:00:00

The daemon's HTTP intake hands the rows it commits to the engine directly; with the id in the payload the
engine can tell those notifications from rows of other producers and read the inbox only for the latter.
An engine of an older version reads ``account:id`` as another account's and falls back to its timer read.
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
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(payload="NEW.account || ':' || NEW.id"))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(payload="NEW.account"))
