"""fills.session_id indexed: a session's own fills without reading every fill

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 15:40:00

`tradectl sessions` counts a running session's fills so far (and `fills --session N` lists them); on an account's
months of fills that was a scan of the whole table each time.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_fills_session_id', 'fills', ['session_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_fills_session_id', table_name='fills')
