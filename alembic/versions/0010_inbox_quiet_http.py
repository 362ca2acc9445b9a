"""the inbox trigger sends no NOTIFY for the rows of the daemon's HTTP intake (source 'http'): it hands them over

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 14:00:00

The daemon's HTTP intake hands the rows it commits to the engine over a socket pair. The trigger's NOTIFY for
the same rows reached the engine first and was drained before the hand-over (0.1-0.3 ms of a lone POST's path,
and the engine then matched the two), and PostgreSQL serializes the commits of transactions that notify. The
intake is the one producer of source 'http' rows, so the trigger stays silent for them; every other producer
is heard as before. A hand-over lost with the engine is covered by the engine's reads at start and on its
fallback timer (``InboxSource.fallback_s``).
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION tradectl_inbox_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7342, hashtext('tradectl_inbox:' || NEW.account));
    NEW.id := nextval(pg_get_serial_sequence('signal_inbox', 'id'));
    SELECT id INTO NEW.prev_id FROM signal_inbox WHERE account = NEW.account AND id < NEW.id
        ORDER BY account DESC, id DESC LIMIT 1;{notify}
    RETURN NEW;
END
$$
"""
_ALWAYS = """
    PERFORM pg_notify('tradectl_inbox', NEW.account || ':' || NEW.id);"""
_UNLESS_HANDED_OVER = """
    IF NEW.source IS DISTINCT FROM 'http' THEN  -- the daemon's intake hands its rows to the engine itself
        PERFORM pg_notify('tradectl_inbox', NEW.account || ':' || NEW.id);
    END IF;"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(notify=_UNLESS_HANDED_OVER))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_FUNCTION.format(notify=_ALWAYS))
