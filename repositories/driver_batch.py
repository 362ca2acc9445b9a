"""A batch of rows ready for the driver, apart from how it was made.

The recorder's writer process (``background_writer``) receives these pickled: it imports this module, which
needs nothing of SQLAlchemy, and writes them through the plain driver, so the worker starts in a fraction of
the time importing SQLAlchemy and the models takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Params = tuple[Any, ...] | dict[str, Any]


@dataclass(frozen=True, slots=True)
class DriverBatch:
    """Rows ready for the driver: the SQL, the parameter names in order, one parameter row each."""

    name: str
    sql: str
    names: tuple[str, ...]
    params: list[Params]
    refused: list[tuple[dict[str, Any], str]]  # rows a value of which could not be converted, and why

    def row(self, params: Params) -> dict[str, Any]:
        """One parameter row by name (for a refused row's record)."""
        return params if isinstance(params, dict) else dict(zip(self.names, params, strict=True))
