"""Operator control of a running engine through the database.

The CLI appends kill-switch events; this applies them to the engine (cancels in scope, a flatten when
asked), then writes the acknowledgement the CLI waits for. Changes that start inside the engine (the
automatic triggers) go the other way: they are stored, with the audit record, the moment they happen.
It also keeps the engine's heartbeat, so an operator's `tradectl kill` knows whether anyone listens.

Everything here runs on the engine's own thread, between signals: the engine is never touched from
two places at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from broker.reconcile import OpenOrderRecord, reconcile_live
from engine.acks import NOT_FLATTENED, not_flattened_detail, protection_kept_detail
from engine.domain import Blocked, BlockedCause, KillState, KillSwitchChange
from engine.engine import Engine
from repositories.errors import DatabaseUnavailable
from repositories.killswitch_feed import KillSwitchFeed
from repositories.recorder import Recorder
from repositories.repos import Repositories

log = structlog.get_logger("tradectl.control")

REFRESH_WAIT_S = 5.0  # longest a reconciliation waits for the broker's fresh executions and orders
SECOND_LOOK_S = 2.0  # a difference seen once is looked at again this soon


def engine_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def wall_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _PendingFlatten:
    event: KillSwitchChange
    cancelled: int
    deadline: float


def broker_state(engine: Engine) -> str:
    """What the engine knows of its broker link, for ``tradectl status`` (another process, reading the
    database): connected or not, and each gateway condition IB Gateway reports (IB servers, farms, a competing
    session, login) with its detail. JSON text, stored with the heartbeat."""
    gateway = getattr(engine.broker, "gateway", None) or {}
    return json.dumps({
        "broker": engine.broker.name,
        "connected": engine.broker_connected,
        "gateway": {str(condition): {"ok": ok, "detail": detail}
                    for condition, (ok, detail) in sorted(gateway.items(), key=lambda item: str(item[0]))},
    })


class OperatorControl:
    def __init__(
        self,
        engine: Engine,
        *,
        repos: Repositories,
        recorder: Recorder,
        feed: KillSwitchFeed,
        holder: str,
        flatten_collar: Decimal = Decimal("0.01"),
        heartbeat_s: float = 1.0,
        reconcile_s: float = 60.0,
        flatten_wait_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.repos = repos
        self.recorder = recorder
        self.feed = feed
        self.holder = holder
        self.flatten_collar = flatten_collar
        self.heartbeat_s = heartbeat_s
        self.reconcile_s = reconcile_s
        self.flatten_wait_s = flatten_wait_s
        self.applied: list[KillSwitchChange] = []
        self._pending: list[_PendingFlatten] = []
        now = time.monotonic()
        self._next_heartbeat = now + heartbeat_s
        self._next_reconcile = now + reconcile_s
        self._refresh_asked: float | None = None
        self.on_heartbeat: Callable[[], None] | None = None  # the session's paced writes (its trading day)
        engine.bus.killswitch += self._store_trip
        recorder.on_health = self._database_health

    def _database_health(self, failing: str | None) -> None:
        """Writes failing: no new orders (what is in memory is kept and written when the database returns)."""
        engine = self.engine
        if failing is not None:
            if engine.blocked is None:
                engine.blocked = Blocked(BlockedCause.DATABASE_UNAVAILABLE, failing)
                log.error("engine.blocked", cause=str(engine.blocked.cause), reason=str(engine.blocked))
        elif engine.blocked is not None and engine.blocked.cause is BlockedCause.DATABASE_UNAVAILABLE:
            engine.blocked = None
            log.warning("engine.unblocked", reason="database writes succeed again")

    # -- engine -> database ---------------------------------------------------------------------------
    def _store_trip(self, change: KillSwitchChange) -> None:
        """A change without an event id started here (a trigger): store it and its audit record now."""
        if change.id is not None:
            return
        try:
            stored = self.repos.killswitches.record(change.scope, change.to_state, reason=change.reason,
                                                    actor=change.actor, now=wall_now())
        except DatabaseUnavailable as err:  # the trip holds in memory; the record is what failed
            log.error("killswitch.store_failed", scope=change.scope, to_state=str(change.to_state), error=str(err))
            return
        assert stored.id is not None
        self.feed.own.add(stored.id)

    # -- database -> engine ---------------------------------------------------------------------------
    def tick(self, force: bool = False) -> int:
        """Apply new operator changes, finish deferred flattens, heartbeat, timers. Returns events applied."""
        engine = self.engine
        try:
            events = self.feed.poll(force)
        except DatabaseUnavailable as err:
            if engine.blocked is None:
                why = str(err).splitlines()[0] if str(err) else type(err).__name__
                engine.blocked = Blocked(BlockedCause.KILLSWITCHES_UNREADABLE, why)
                log.error("killswitch.unreadable", error=why)
            return 0
        if engine.blocked is not None and engine.blocked.cause is BlockedCause.KILLSWITCHES_UNREADABLE:
            failing = self.recorder.failing
            engine.blocked = Blocked(BlockedCause.DATABASE_UNAVAILABLE, failing) if failing else None
            log.warning("killswitch.readable_again")
        for event in events:
            self.apply(event)
        if self._pending:
            self._finish_flattens()
        now = time.monotonic()
        engine.housekeeping(engine.clock())
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_s
            try:
                self.repos.engine_lock.heartbeat(self.holder, wall_now(), broker_state(engine))
            except DatabaseUnavailable as err:
                log.error("engine.heartbeat_failed", error=str(err).splitlines()[0])
            if self.on_heartbeat is not None:
                self.on_heartbeat()
        if engine.unknown_orders and self._next_reconcile > now + SECOND_LOOK_S:  # unacknowledged: ask IB soon
            self._next_reconcile = now + min(SECOND_LOOK_S, self.reconcile_s)
        if engine.suspect_breaks and self._next_reconcile > now + SECOND_LOOK_S:  # seen after a reconnect
            self._next_reconcile = now + min(SECOND_LOOK_S, self.reconcile_s)
        # While the link is down the broker's books are unknown (the IB adapter holds no positions, no orders):
        # comparing them halted every held symbol during IB's daily restart. Reconnecting compares at once, and
        # the timer's look that would confirm a difference comes a second look's time after it, not at once.
        if not engine.broker_connected:
            self._next_reconcile = max(self._next_reconcile, now + SECOND_LOOK_S)
        elif now >= self._next_reconcile and self._refreshed(now):
            self.reconcile()
            # a difference seen once is looked at again soon, not in a full interval
            second = min(SECOND_LOOK_S, self.reconcile_s)
            self._next_reconcile = now + (second if engine.suspect_breaks else self.reconcile_s)
        return len(events)

    # -- reconciliation while trading ----------------------------------------------------------------
    def _refreshed(self, now: float) -> bool:
        """Ask the broker for its executions and orders first; compare once the answer is in (bounded)."""
        broker = self.engine.broker
        if self._refresh_asked is None:
            self._refresh_asked = now
            broker.refresh()
        if broker.refreshing and now - self._refresh_asked < REFRESH_WAIT_S:
            return False
        self._refresh_asked = None
        return True

    def reconcile(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Our books against the broker's during the session, on the reconcile timer (never per signal).

        Executions we never heard of (a report lost in flight) are booked as inferred fills against their
        orders; live orders the broker has finished (a lost cancel confirmation) take its state; then
        positions are compared, and a difference that remains halts the symbol on its second sighting.
        Returns the position differences.
        """
        engine = self.engine
        if not engine.broker_connected:  # nothing to compare with: see tick
            return {}
        snap = engine.broker.snapshot()
        repos = self.repos
        try:
            known = engine.booked_executions([f.exec_id for f in snap.executions], repos.fills.existing_exec_ids)
            live = [OpenOrderRecord(o.client_order_id, o.symbol, o.filled_qty, o.status.value)
                    for o in engine.orders.values()]
            report = reconcile_live(live, known, {s: p.quantity for s, p in engine.positions.items()}, snap)
            engine.apply_reconcile(report, load_orders=repos.orders.find)
        except DatabaseUnavailable as err:  # positions are still compared; the fills wait for the next look
            log.error("reconcile.database_unavailable", error=str(err).splitlines()[0])
            return engine.reconcile_positions(confirm=True)
        if report.adopt_fills or report.close_orders:
            self.recorder.flush()
            try:
                repos.audit.record(actor="reconciliation", action="reconcile.session", scope=None,
                                   detail=report.to_json(), now=wall_now())
            except DatabaseUnavailable as err:
                log.error("reconcile.audit_failed", error=str(err).splitlines()[0])
        return engine.reconcile_positions(confirm=True)

    def apply(self, event: KillSwitchChange) -> None:
        assert event.id is not None
        engine = self.engine
        cancelled = engine.set_killswitch(event.scope, event.to_state, event.reason, event.actor, event.id,
                                          cancel_protection=event.flatten)
        self.applied.append(event)
        log.warning("killswitch.applied", event_id=event.id, scope=event.scope, to_state=str(event.to_state),
                    actor=event.actor, cancelled=cancelled, flatten=event.flatten)
        if event.flatten and event.to_state is KillState.HALTED:
            if engine.pending_cancels(event.scope):  # close only once the cancels are confirmed
                self._pending.append(_PendingFlatten(event, cancelled, time.monotonic() + self.flatten_wait_s))
                return
            self._flatten_and_ack(event, cancelled)
            return
        kept = engine.protection_kept(event.scope) if event.to_state is KillState.HALTED else 0
        self._ack(event, cancelled, 0, protection_kept_detail(kept) if kept else None)

    def _flatten_and_ack(self, event: KillSwitchChange, cancelled: int) -> None:
        assert event.id is not None
        result = self.engine.flatten(event.scope, str(event.id), self.flatten_collar)
        detail = not_flattened_detail(result.skipped) if result.skipped else None
        self._ack(event, cancelled, len(result.sent), detail)

    def _finish_flattens(self) -> None:
        now = time.monotonic()
        still: list[_PendingFlatten] = []
        for p in self._pending:
            waiting = self.engine.pending_cancels(p.event.scope)
            if not waiting:
                self._flatten_and_ack(p.event, p.cancelled)
            elif now >= p.deadline:
                self._ack(p.event, p.cancelled, 0,
                          f"{NOT_FLATTENED}{waiting} cancel(s) unconfirmed after {self.flatten_wait_s}s")
            else:
                still.append(p)
        self._pending = still

    def _ack(self, event: KillSwitchChange, cancelled: int, flatten_orders: int, detail: str | None) -> None:
        assert event.id is not None
        self.recorder.flush()  # the cancels are on disk before the operator hears they happened
        try:
            self.repos.killswitches.ack(event.id, engine_name=self.holder, cancelled=cancelled,
                                        flatten_orders=flatten_orders, now=wall_now(), detail=detail,
                                        scope=event.scope)
        except DatabaseUnavailable as err:
            log.error("killswitch.ack_failed", event_id=event.id, error=str(err).splitlines()[0])

    # -- lifetime -------------------------------------------------------------------------------------
    def close(self) -> None:
        for p in self._pending:
            self._ack(p.event, p.cancelled, 0, f"{NOT_FLATTENED}the session ended first")
        self._pending = []
        self.feed.close()
        try:
            self.repos.engine_lock.release(self.holder)
        except DatabaseUnavailable as err:
            log.error("engine.release_failed", error=str(err).splitlines()[0])

