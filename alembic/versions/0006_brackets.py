"""orders name their bracket: the entry an exit belongs to, and the exits' OCA group

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 05:00:00

A bracket's exits (stop loss, take profit) are orders whose entry must be known after a restart: they
never count as working quantity, and once the entry is done they are the position's protection, which a
kill keeps and a flatten cancels. Both columns are empty for every other order.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("parent_order_id", sa.String(160), nullable=True))
        batch.add_column(sa.Column("oca_group", sa.String(160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("oca_group")
        batch.drop_column("parent_order_id")
