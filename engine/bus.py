"""The session's event bus: one ``eventkit.Event`` per event type.

Handlers are plain synchronous functions on the hot path (positions, persistence buffers, the
progress bar, metrics). Anything slow belongs in an adapter, not in a handler.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import eventkit

from engine.domain import KillSwitchChange, Signal


@dataclass(slots=True)
class SignalRejected:
    """A signal that made no order. ``signal`` is None when the line was not a valid signal."""

    ts: datetime
    code: str
    reason: str
    signal: Signal | None = None
    signal_id: str | None = None
    raw: str | None = None

    @property
    def valid(self) -> bool:
        return self.signal is not None and self.code != "duplicate"


class EventBus:
    """Attribute per event; ``bus.fill += handler`` connects, ``bus.fill.emit(...)`` publishes."""

    __slots__ = (
        "fill",
        "killswitch",
        "order_status",
        "order_submitted",
        "position",
        "signal_accepted",
        "signal_rejected",
    )

    def __init__(self) -> None:
        self.signal_accepted = eventkit.Event("signal_accepted")  # (Signal, Order, raw line | None)
        self.signal_rejected = eventkit.Event("signal_rejected")  # (SignalRejected,)
        self.order_submitted = eventkit.Event("order_submitted")  # (Order,)
        self.order_status = eventkit.Event("order_status")  # (Order, StatusChange)
        self.fill = eventkit.Event("fill")  # (Fill, Order | None)
        self.position = eventkit.Event("position")  # (Position,)
        self.killswitch = eventkit.Event("killswitch")  # (KillSwitchChange,)


__all__ = ["EventBus", "KillSwitchChange", "SignalRejected"]
