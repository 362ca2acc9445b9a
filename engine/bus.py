"""The session's event bus: one channel per event type, handlers called directly.

Handlers are plain synchronous functions on the hot path (positions, persistence buffers, the
progress bar, metrics). An exception a handler raises reaches the publisher: the engine fails closed
on it (an order whose record could not be buffered does not leave). eventkit, which the broker adapter
still uses for ib_async's events, logs and swallows handler errors, so it is not used here.

What must be written together is published together, as one event: a new order with the signal it
answers (``order_recorded``), a fill with the order it moved and the position it made (``fill_booked``).
A subscriber that persists takes each event as one unit of work, so no write can hold half of it,
whatever the order in which events are published.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, ParamSpec

from engine.domain import Fill, KillSwitchChange, Order, Position, RejectCode, Signal, StatusChange

P = ParamSpec("P")


class Channel(Generic[P]):
    """``channel += handler`` connects, ``channel.emit(...)`` calls every handler in order."""

    __slots__ = ("handlers", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.handlers: tuple[Callable[P, object], ...] = ()

    def __iadd__(self, handler: Callable[P, object]) -> Channel[P]:
        self.handlers = (*self.handlers, handler)
        return self

    def __isub__(self, handler: Callable[P, object]) -> Channel[P]:
        self.handlers = tuple(h for h in self.handlers if h != handler)
        return self

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for handler in self.handlers:
            handler(*args, **kwargs)


@dataclass(slots=True)
class SignalRejected:
    """A signal that made no order. ``signal`` is None when the line was not a valid signal."""

    ts: datetime
    code: RejectCode
    reason: str
    signal: Signal | None = None
    signal_id: str | None = None
    raw: str | None = None
    line_no: int | None = None

    @property
    def valid(self) -> bool:
        """Whether it is the signal's own row (in ``signals``); others are ``signal_rejects`` rows."""
        return self.signal is not None and self.code not in NOT_THE_SIGNALS_ROW


# A duplicate's id already has its row; one whose dedupe could not be decided may have one.
NOT_THE_SIGNALS_ROW = frozenset({RejectCode.DUPLICATE, RejectCode.DEDUPE_UNAVAILABLE})


class EventBus:
    """Attribute per event; ``bus.fill_booked += handler`` connects, ``bus.fill_booked.emit(...)`` publishes."""

    __slots__ = (
        "fill_booked",
        "killswitch",
        "order_recorded",
        "order_status",
        "signal_rejected",
    )

    def __init__(self) -> None:
        # A new order, before it leaves the engine, with the signal it answers and that signal's line and
        # line number (None, None, None for an order the engine made, or one reconciliation found at the
        # broker). A handler that raises keeps the order from the broker: it is rejected (fail closed).
        self.order_recorded: Channel[[Order, Signal | None, str | None, int | None]] = Channel("order_recorded")
        self.signal_rejected: Channel[[SignalRejected]] = Channel("signal_rejected")
        self.order_status: Channel[[Order, StatusChange]] = Channel("order_status")
        # A fill booked, the order it moved (None when no order of ours is known) and the position after it.
        self.fill_booked: Channel[[Fill, Order | None, Position]] = Channel("fill_booked")
        self.killswitch: Channel[[KillSwitchChange]] = Channel("killswitch")


__all__ = ["Channel", "EventBus", "KillSwitchChange", "SignalRejected"]
