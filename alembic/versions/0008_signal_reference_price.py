"""signals.ref_price: the price the engine sized a signal on (the quote's reference at the decision)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 05:00:00

Session reports measure slippage against it (a fill's price against the price the decision saw) and draw
each symbol's price path from it. Older rows keep NULL: their reports leave them out of slippage.
"""

from collections.abc import Sequence

import sqlalchemy as sa

import repositories.types
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ref_price', repositories.types.Money(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('signals', schema=None) as batch_op:
        batch_op.drop_column('ref_price')
