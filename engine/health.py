"""Health of a running session: ``/healthz`` (the process and its loop are alive), ``/readyz`` (can it trade
now, each condition named), and the routes that serve them beside ``/metrics``.

Readiness is computed from the objects' state only (no database or broker round trip), so answering
``/readyz`` costs microseconds on the engine's loop:

- ``broker``: the engine's link to the broker is up (IB Gateway accepts API sessions only while it is
  logged in; a drop, a restart or a pending 2FA shows as a disconnection; inside a maintenance window
  the detail says it is expected).
- ``gateway`` (IB Gateway): what the gateway says of its own links, each named (broker/ib_codes.py
  ``GatewayCondition``): IB's servers (1100 / 2110), the market data farm (2103), a competing live
  session holding the market data (10197).
- ``market_data``: every watched symbol (held, working, subscribed) has a quote younger than the limit.
- ``database``: the recorder's writes succeed and the kill switches can be read.
- ``engine_lock``: this engine holds the account's lock (``session.lock_held`` when the session provides
  it, else the claim made at start).
- ``not_halted``: the global kill switch is not HALTED (REDUCE_ONLY is ready, and says so).
- ``not_blocked``: nothing outside the kill switches stops new orders (``engine.blocked``).
- ``reconciliation``: no position differs from the broker's (none awaiting a second look, none halted).
- ``loop``: the loop's heartbeat is fresh (only when a ``Health`` keeps one).

Liveness is a timestamp the loop refreshes (``Health.keep_beating``); a stale one means the loop is stuck
or its ticker died. A loop that is blocked does not answer ``/healthz`` at all, which probes treat the same.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.ib_codes import GatewayCondition
from engine.bus import EventBus
from engine.domain import BlockedCause, KillState, KillSwitchChange
from engine.metrics import RECONCILIATION_ACTOR, SessionMetrics, quote_ages

GLOBAL = "global"
DEFAULT_QUOTE_AGE_S = 5.0
DEFAULT_LOOP_STALE_S = 10.0

Conditions = dict[str, dict[str, Any]]


def _c(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": ok, "detail": detail}


def _setting(session: Any, *path: str) -> Any:
    obj = getattr(session, "settings", None)
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def readiness(
    session: Any,
    *,
    now: datetime | None = None,
    max_quote_age_s: float | None = None,
    reconciliation_scopes: Iterable[str] = (),
) -> tuple[bool, Conditions]:
    """Whether ``session`` can trade now, and each condition with ``ok`` and a ``detail`` for a person.

    ``session`` needs ``engine`` and ``recorder``; ``settings``, ``report`` (reconciliation at start),
    ``holder``, ``lock_held`` and ``subscribed`` are used when present. ``max_quote_age_s`` defaults to the
    account's ``risk.max_quote_age_s`` (the age at which the checks reject orders anyway).
    """
    engine = session.engine
    recorder = session.recorder
    now = now or engine.clock()
    conditions: Conditions = {}

    # broker
    broker_up = bool(engine.broker_connected) and bool(getattr(engine.broker, "connected", True))
    if broker_up:
        conditions["broker"] = _c(True, f"{engine.broker.name} connected")
    else:
        since = engine.trips.disconnected_since
        down = f" for {(now - since).total_seconds():.0f}s" if since is not None else ""
        window = engine.trips.expected_outage()
        if window is not None:  # expected: not ready, but nobody needs waking (the alert watch says the same)
            conditions["broker"] = _c(False, f"{engine.broker.name} disconnected{down}, expected: maintenance "
                                             f"window {window[0].name} until {window[1].isoformat()}")
        else:
            gateway = getattr(engine.broker, "gateway", None) or {}
            ok, detail = gateway.get(GatewayCondition.LOGIN, (True, ""))
            login = None if ok else detail
            conditions["broker"] = _c(False, f"{engine.broker.name} disconnected{down}: {login}" if login else
                                      f"{engine.broker.name} disconnected{down} (gateway restart, network, or a "
                                      f"login/2FA waiting)")

    # the gateway's own links (IB Gateway only): a competing session, a broken farm, IB's servers unreachable
    gateway = getattr(engine.broker, "gateway", None)
    if broker_up and gateway:
        bad = {c: detail for c, (ok, detail) in gateway.items() if not ok and c.needed_to_trade}
        worse = "; ".join(f"{c.value}: {detail}" for c, detail in sorted(bad.items()))
        conditions["gateway"] = _c(not bad, worse or "IB servers, market data farm and market data session fine")

    # market data
    limit = max_quote_age_s
    if limit is None:
        limit = _setting(session, "risk", "max_quote_age_s") or DEFAULT_QUOTE_AGE_S
    ages = dict(quote_ages(session, now))
    stale = {sym: age for sym, age in ages.items() if age > limit}
    if stale:
        shown = ", ".join(f"{sym} {'none' if age == float('inf') else f'{age:.1f}s'}"
                          for sym, age in sorted(stale.items())[:10])
        conditions["market_data"] = _c(False, f"{len(stale)} of {len(ages)} watched symbol(s) without a quote "
                                              f"younger than {limit}s: {shown}")
    else:
        conditions["market_data"] = _c(True, f"{len(ages)} watched symbol(s), every quote younger than {limit}s")
    delayed = sorted(sym for sym in ages if engine.broker.quote_delayed(sym))
    if delayed:  # ready (prices are marked from them) unless risk.require_live_data refuses orders on them
        conditions["market_data"]["detail"] += f"; delayed data (no live subscription): {', '.join(delayed[:10])}"

    # database
    blocked = engine.blocked
    if recorder.failing is not None:
        conditions["database"] = _c(False, f"writes failing: {recorder.failing} ({recorder.pending} row(s) kept)")
    elif blocked is not None and blocked.cause is BlockedCause.KILLSWITCHES_UNREADABLE:
        conditions["database"] = _c(False, str(blocked))
    else:
        conditions["database"] = _c(True, "writes succeed")

    # engine lock
    held = getattr(session, "lock_held", None)
    holder = getattr(session, "holder", None)
    if callable(held):
        held = held()
    if held is None:
        held = holder is not None
    conditions["engine_lock"] = _c(bool(held), f"held by {holder}" if held else "this engine does not hold the lock")

    # kill switches
    state = engine.killswitches.get(GLOBAL)
    conditions["not_halted"] = _c(state is not KillState.HALTED, f"global kill switch {state}")

    conditions["not_blocked"] = _c(blocked is None, "new orders allowed" if blocked is None else str(blocked))

    # reconciliation
    differing: dict[str, str] = {}
    for symbol, (ours, theirs) in engine.suspect_breaks.items():
        differing[symbol] = f"ours {ours}, broker {theirs} (checking again)"
    report = getattr(session, "report", None)
    breaks = getattr(report, "position_breaks", None) or {}
    board = engine.killswitches
    for symbol, (ours, theirs) in breaks.items():
        if board.get(f"symbol:{symbol}") is not KillState.ACTIVE:
            differing.setdefault(symbol, f"ours {ours}, broker {theirs} at start (halted)")
    for scope in reconciliation_scopes:
        if board.get(scope) is not KillState.ACTIVE:
            differing.setdefault(scope.removeprefix("symbol:"), "halted on a position break")
    if differing:
        detail = "; ".join(f"{sym}: {why}" for sym, why in sorted(differing.items()))
        conditions["reconciliation"] = _c(False, detail)
    else:
        conditions["reconciliation"] = _c(True, "positions agree with the broker's")

    return all(c["ok"] for c in conditions.values()), conditions


class Health:
    """Liveness (a loop heartbeat) and readiness of one session; ``health_routes`` serves them."""

    def __init__(
        self,
        session: Any,
        *,
        loop_stale_s: float = DEFAULT_LOOP_STALE_S,
        max_quote_age_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.loop_stale_s = loop_stale_s
        self.max_quote_age_s = max_quote_age_s
        self.monotonic = monotonic
        self.last_beat = monotonic()
        self.lag_s = 0.0  # how late the last heartbeat woke (a busy or blocked loop)
        self.reconciliation_scopes: set[str] = set()

    def attach(self, bus: EventBus) -> Health:
        """Follow kill-switch changes for position breaks tripped while running (not per signal)."""
        bus.killswitch += self._on_killswitch
        return self

    def _on_killswitch(self, change: KillSwitchChange) -> None:
        if change.actor == RECONCILIATION_ACTOR and change.to_state is not KillState.ACTIVE:
            self.reconciliation_scopes.add(change.scope)
        elif change.to_state is KillState.ACTIVE:
            self.reconciliation_scopes.discard(change.scope)

    # -- liveness -----------------------------------------------------------------------------------
    def beat(self) -> None:
        self.last_beat = self.monotonic()

    def loop_age_s(self) -> float:
        return self.monotonic() - self.last_beat

    def alive(self) -> bool:
        """The loop refreshed its heartbeat within ``loop_stale_s`` (the watchdog's predicate)."""
        return self.loop_age_s() <= self.loop_stale_s

    async def keep_beating(self, interval_s: float = 1.0) -> None:
        """Run on the engine's loop (a task): refresh the heartbeat every ``interval_s``, measure lag."""
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            self.beat()
            await asyncio.sleep(interval_s)
            self.lag_s = max(0.0, loop.time() - t - interval_s)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = self.loop_age_s()
        ok = age <= self.loop_stale_s
        return ok, {"alive": ok, "loop_heartbeat_age_s": round(age, 3), "loop_lag_s": round(self.lag_s, 4),
                    "stale_after_s": self.loop_stale_s}

    # -- readiness ----------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, Conditions]:
        ready, conditions = readiness(self.session, max_quote_age_s=self.max_quote_age_s,
                                      reconciliation_scopes=self.reconciliation_scopes)
        age = self.loop_age_s()
        loop_ok = age <= self.loop_stale_s
        conditions["loop"] = _c(loop_ok, f"heartbeat {age:.1f}s ago (stale after {self.loop_stale_s}s)")
        return ready and loop_ok, conditions


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body, sort_keys=True, default=str), status_code=status, media_type="application/json")


def health_routes(health: Health, metrics: SessionMetrics | None = None) -> list[Route]:
    """``/healthz``, ``/readyz`` (200, or 503 with the same JSON) and ``/metrics`` as Starlette routes.

    Mount them into any Starlette app (``Starlette(routes=[*intake_routes, *health_routes(...)])``).
    The handlers are ``async``: they run on the engine's loop between signals and never block it.
    """

    async def healthz(request: Request) -> Response:
        ok, body = health.liveness()
        return _json(body, 200 if ok else 503)

    async def readyz(request: Request) -> Response:
        ready, conditions = health.readiness()
        failing = sorted(name for name, c in conditions.items() if not c["ok"])
        return _json({"ready": ready, "failing": failing, "conditions": conditions}, 200 if ready else 503)

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
    if metrics is not None:
        m = metrics

        async def metrics_endpoint(request: Request) -> Response:
            return Response(m.render(), media_type=CONTENT_TYPE_LATEST)

        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return routes


def observe(session: Any, *, loop_stale_s: float = DEFAULT_LOOP_STALE_S,
            max_quote_age_s: float | None = None) -> tuple[Health, SessionMetrics]:
    """Health and metrics for a wired session (after ``prepare`` / ``connect``: its bus, engine and recorder
    exist). Subscribes to the bus, times signals, times recorder writes, counts IB error codes."""
    health = Health(session, loop_stale_s=loop_stale_s, max_quote_age_s=max_quote_age_s).attach(session.bus)
    metrics = SessionMetrics().attach(session.bus).instrument(session.engine).instrument_recorder(session.recorder)
    metrics.collect_from(session, readiness=health.readiness)
    broker = session.engine.broker
    if hasattr(broker, "on_ib_error"):
        broker.on_ib_error = metrics.observe_ib_error
    return health, metrics
