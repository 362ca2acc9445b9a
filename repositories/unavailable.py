"""The one error the repositories raise for a database they cannot reach or use, in a module of its own so
the plain-driver path (``repositories/direct.py``) raises it without importing SQLAlchemy."""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """The database could not be read or written; the message is the driver's."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @classmethod
    def from_error(cls, err: BaseException) -> DatabaseUnavailable:
        orig = getattr(err, "orig", None)
        text = str(orig if orig is not None else err).strip()
        # one line: drivers add hints on lines of their own ("\tIs the server running on that host...")
        text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
        return cls(text or type(err).__name__)
