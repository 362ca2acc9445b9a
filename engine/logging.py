"""structlog setup: JSON lines for daemons and pipes, readable console output in a terminal.

Logs go to stderr; stdout is for the tables and JSON that commands print. Libraries that log through the
standard ``logging`` module (``ib_async``, uvicorn, alembic) are rendered the same way, with their logger's
name, so a JSON log has no plain-text line in it.

Warnings that come once per order in a burst (``REPEATING``: IB pacing) are rate limited: the first of an
interval is written, the others counted, and the next line (or ``flush_repeated`` at a session's end) says
how many there were.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


REPEATING = frozenset({"order.paced", "marketdata.no_quote_yet"})  # once per order or symbol, in bursts
REPEAT_INTERVAL_S = 10.0


class RepeatGate:
    """A structlog processor: an event of ``events`` is written once per ``interval_s``; the line after a quiet
    stretch carries ``repeated`` (how many were not written) and ``over_s`` (since the last line written)."""

    def __init__(self, events: frozenset[str] = REPEATING, interval_s: float = REPEAT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.events = events
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # event -> when its last line was written
        self._held: dict[str, tuple[int, str]] = {}  # event -> (lines not written since, the last one's level)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event = event_dict.get("event")
        if event not in self.events or event_dict.get("repeated_flush"):
            event_dict.pop("repeated_flush", None)
            return event_dict
        now = self.clock()
        with self._lock:
            last = self._last.get(event)
            if last is not None and now - last < self.interval_s:
                held, _ = self._held.get(event, (0, method))
                self._held[event] = (held + 1, method)
                raise structlog.DropEvent
            self._last[event] = now
            held, _ = self._held.pop(event, (0, method))
        if held:
            event_dict["repeated"] = held
            event_dict["over_s"] = round(now - last, 1) if last is not None else None
        return event_dict

    def pending(self) -> dict[str, tuple[int, str]]:
        """Events held since their last line (count, level), and forget them."""
        with self._lock:
            held, self._held = self._held, {}
        return held


_GATE = RepeatGate()
_CONFIGURED: dict[str, int | None] = {"level": None}  # set by configure_logging; None: nobody configured logs


def writes(level: int) -> bool:
    """Whether lines at ``level`` are written. False until ``configure_logging`` ran: a library user, a
    benchmark or a test that never asked for logs does not pay for building per-order events."""
    configured = _CONFIGURED["level"]
    return configured is not None and level >= configured


def flush_repeated() -> None:
    """Say how many repeats were held back since each event's last line (a session's end calls it)."""
    log = structlog.get_logger("tradectl.logging")
    for event, (count, level) in sorted(_GATE.pending().items()):
        getattr(log, level, log.warning)(event, repeated=count, repeated_flush=True,
                                         detail=f"{count} more like the last {event} line, not written one by one")


class _StreamLoggerFactory:
    """Resolve the stream per logger, not once: sys.stderr may be replaced (tests, daemons)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(self.stream or sys.stderr)


CHATTY_LIBRARIES = ("ib_async",)  # their info lines repeat what our events say: shown at debug only


class _LibraryHandler(logging.StreamHandler[TextIO]):
    """The root handler for libraries' records; resolves the stream per record, like ``_StreamLoggerFactory``."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self._fixed or sys.stderr
        super().emit(record)


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not getattr(out, "isatty", lambda: False)())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = _LibraryHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, structlog.processors.format_exc_info],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # ib_async narrates every message at info (each execDetails, commissionReport, position, "Connecting..."):
    # four lines a fill beside our own events. Its detail is for debugging; below debug it says warnings up.
    chatty = _LEVELS[level] if _LEVELS[level] <= logging.DEBUG else max(_LEVELS[level], logging.WARNING)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(chatty)
    _GATE.pending()  # a new configuration starts with nothing held
    _CONFIGURED["level"] = _LEVELS[level]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _GATE,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_StreamLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
