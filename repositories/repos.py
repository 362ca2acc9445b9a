"""One handle on every repository of an account's database, for callers that need several.

Each attribute is one aggregate's repository; the handle itself holds no queries.
"""

from __future__ import annotations

from sqlalchemy import Engine

from repositories.accounts import AccountRepository
from repositories.audit import AuditRepository
from repositories.engine_lock import EngineLockRepository
from repositories.errors import translated
from repositories.fills import FillRepository
from repositories.killswitches import KillSwitchRepository
from repositories.listings import Listings
from repositories.orders import OrderRepository
from repositories.positions import PositionRepository
from repositories.sessions import SessionRepository
from repositories.signals import SignalRepository


class Repositories:
    def __init__(self, db: Engine, account: str) -> None:
        self.db = db
        self.account = account
        self.accounts = AccountRepository(db, account)
        self.audit = AuditRepository(db)
        self.engine_lock = EngineLockRepository(db, account)
        self.fills = FillRepository(db)
        self.killswitches = KillSwitchRepository(db, account)
        self.listings = Listings(db, account)
        self.orders = OrderRepository(db)
        self.positions = PositionRepository(db, account)
        self.sessions = SessionRepository(db, account)
        self.signals = SignalRepository(db)

    def dispose(self) -> None:
        """Close the pool's connections."""
        with translated():
            self.db.dispose()
