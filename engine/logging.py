"""structlog setup: JSON lines for daemons and pipes, readable console output in a terminal.

Logs go to stderr; stdout is for the tables and JSON that commands print. Libraries that log through the
standard ``logging`` module (``ib_async``, uvicorn, alembic) are rendered the same way, with their logger's
name, so a JSON log has no plain-text line in it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _StreamLoggerFactory:
    """Resolve the stream per logger, not once: sys.stderr may be replaced (tests, daemons)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> structlog.PrintLogger:
        return structlog.PrintLogger(self.stream or sys.stderr)


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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_StreamLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
