"""The engine's side of the inbox: read pending lines in arrival order and hand each one to the session.

``pump_inbox`` is the whole consumer loop. For each row it calls ``consume(item.id)`` (the recorder's
``consume_inbox``) and then ``handle(item)`` (the session's ``process_line``). The order matters: the
mark is buffered before the line's row, so whatever flush writes the row also writes the mark, in one
transaction. It wakes on PostgreSQL NOTIFY, with a read every ``fallback_s`` in case a notification was
lost. On SQLite it reads every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

import structlog

from repositories.inbox import InboxItem, SignalInbox

log = structlog.get_logger("tradectl.intake")


async def pump_inbox(inbox: SignalInbox, handle: Callable[[InboxItem], Awaitable[None] | None],
                     consume: Callable[[int], None], stop: asyncio.Event, *, poll_s: float = 0.05,
                     fallback_s: float = 1.0, batch: int = 500) -> int:
    """Consume ``inbox`` until ``stop`` is set; returns the number of lines handed over.

    Reads run in a worker thread (a slow database never blocks the loop); ``handle`` runs on the loop.
    A failed read is logged and tried again at the next wake: the rows stay in the inbox.
    """
    loop = asyncio.get_running_loop()
    listener = await asyncio.to_thread(inbox.listen)
    wake = asyncio.Event()
    fd = listener.fileno() if listener is not None else None
    if fd is not None:
        loop.add_reader(fd, wake.set)
    wait_s = fallback_s if listener is not None else poll_s
    after, n = 0, 0
    try:
        while not stop.is_set():
            try:
                items = await asyncio.to_thread(inbox.pending, after, batch)
            except Exception as err:  # the database is down: the rows wait in the inbox
                log.error("intake.read_failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
                items = []
            for item in items:
                consume(item.id)
                result = handle(item)
                if inspect.isawaitable(result):
                    await result
                after = item.id
                n += 1
                if stop.is_set():
                    break
            if len(items) == batch:
                await asyncio.sleep(0)  # more are waiting: let the loop breathe, then read on
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=wait_s)
            wake.clear()
            if listener is not None:
                listener.notified()  # drain: the read that follows covers them all
    finally:
        if fd is not None:
            loop.remove_reader(fd)
        if listener is not None:
            listener.close()
    return n
