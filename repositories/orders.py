"""Orders as the database holds them, returned as domain ``Order``s (to track them again after a restart,
or to book fills against them), and the final states reconciliation gives them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from engine.domain import OPEN_STATUSES, Order, OrderStatus
from repositories.errors import reading, writing
from repositories.models import OrderEventRow, OrderRow
from repositories.rows import order_from_row

_OPEN = sorted(s.value for s in OPEN_STATUSES)
CHUNK = 500  # keys per IN (...) list


def existing(db: Engine, column: Any, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` are in ``column`` (read in chunks)."""
    found: set[str] = set()
    keys = list(keys)
    with reading(db) as conn:
        for i in range(0, len(keys), CHUNK):
            found.update(conn.execute(select(column).where(column.in_(keys[i:i + CHUNK]))).scalars())
    return found


class OrderRepository:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def open(self) -> list[Order]:
        """Orders not yet in a final state, oldest first."""
        stmt = select(OrderRow.__table__).where(OrderRow.status.in_(_OPEN)).order_by(OrderRow.created_at)
        with reading(self.db) as conn:
            return [order_from_row(r) for r in conn.execute(stmt).mappings()]

    def symbols(self) -> set[str]:
        """Every symbol this database has an order for (operators' scope typos are checked against them)."""
        with reading(self.db) as conn:
            return set(conn.execute(select(OrderRow.symbol).distinct()).scalars())

    def strategies(self) -> set[str]:
        """Every strategy this database has an order for (operators' scope typos are checked against them)."""
        with reading(self.db) as conn:
            return set(conn.execute(select(OrderRow.strategy).distinct()).scalars())

    def max_broker_order_id(self) -> int:
        """The highest order id the broker has given any of our orders (0: none): IB's ids must stay above it,
        whatever nextValidId says after a restart."""
        with reading(self.db) as conn:
            return int(conn.execute(select(func.max(OrderRow.broker_order_id))).scalar() or 0)

    def find(self, client_order_ids: Sequence[str]) -> list[Order]:
        """These orders, whatever their state (reconciliation books fills against them)."""
        found: list[Order] = []
        keys = list(client_order_ids)
        with reading(self.db) as conn:
            for i in range(0, len(keys), CHUNK):
                rows = conn.execute(select(OrderRow.__table__).where(OrderRow.client_order_id.in_(keys[i:i + CHUNK])))
                found.extend(order_from_row(r) for r in rows.mappings())
        return found

    def existing_ids(self, client_order_ids: Sequence[str]) -> set[str]:
        """Which of these client order ids the database holds."""
        return existing(self.db, OrderRow.client_order_id, client_order_ids)

    def close(self, client_order_id: str, status: OrderStatus, reason: str, now: datetime) -> None:
        """Give an order the final state reconciliation found for it, with its event."""
        with writing(self.db) as conn:
            prev = conn.execute(select(OrderRow.status).where(OrderRow.client_order_id == client_order_id)).scalar()
            conn.execute(update(OrderRow).where(OrderRow.client_order_id == client_order_id)
                         .values(status=status.value, reason=reason, updated_at=now))
            conn.execute(insert(OrderEventRow).values(client_order_id=client_order_id, ts=now, from_status=prev,
                                                      to_status=status.value, reason=reason))

    def status_counts(self, session_id: int) -> dict[str, int]:
        """Orders of one session per status."""
        stmt = (select(OrderRow.status, func.count()).where(OrderRow.session_id == session_id)
                .group_by(OrderRow.status))
        with reading(self.db) as conn:
            return {status: n for status, n in conn.execute(stmt).all()}
