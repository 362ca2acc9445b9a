"""Client order ids: one scheme, and two namespaces that can never meet.

A signal's order id is derived from the signal id, so a replay after a crash finds the order at the
broker by ``orderRef``. Orders the engine makes itself (flatten orders, and any later kind) take
another prefix, so no signal id, whatever its characters, can produce one of their ids.
"""

from __future__ import annotations

# A signal id is 1 to 64 characters that IB's ``orderRef`` carries unchanged (no separators, no control
# characters, nothing a FIX or TWS field would cut or escape).
SIGNAL_ID_MAX_LEN = 64
SIGNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$"

SIGNAL_ORDER_PREFIX = "tc-"  # tc-<signal id>
ENGINE_ORDER_PREFIX = "te-"  # te-<kind>-<tag>-<symbol>
OUR_PREFIXES = (SIGNAL_ORDER_PREFIX, ENGINE_ORDER_PREFIX)


def client_order_id_for(signal_id: str) -> str:
    """Derived, not random: a signal replayed after a crash finds its order at the broker by orderRef."""
    return SIGNAL_ORDER_PREFIX + signal_id


def engine_order_id(kind: str, tag: str, symbol: str) -> str:
    """An order no signal asked for (``kind`` says why, e.g. ``flat``; ``tag`` is the event behind it)."""
    return f"{ENGINE_ORDER_PREFIX}{kind}-{tag}-{symbol}"


STOP_LOSS, TAKE_PROFIT = "sl", "tp"  # the kinds of a bracket's exits: te-sl-<signal id>-<symbol>


def exit_order_id(kind: str, signal_id: str, symbol: str) -> str:
    """A bracket exit's id, derived from its signal like the entry's, so a restart finds it by orderRef."""
    return engine_order_id(kind, signal_id, symbol)


def entry_of_exit(client_order_id: str, symbol: str) -> str | None:
    """The entry a bracket exit belongs to (its parent), read back from the exit's id; None for any other."""
    for kind in (STOP_LOSS, TAKE_PROFIT):
        head, tail = f"{ENGINE_ORDER_PREFIX}{kind}-", f"-{symbol}"
        if client_order_id.startswith(head) and client_order_id.endswith(tail):
            signal_id = client_order_id[len(head):-len(tail)]
            return client_order_id_for(signal_id) if signal_id else None
    return None


def signal_id_of(client_order_id: str) -> str | None:
    """The signal behind one of our order ids; None for an engine-made order or someone else's."""
    if client_order_id.startswith(SIGNAL_ORDER_PREFIX):
        return client_order_id[len(SIGNAL_ORDER_PREFIX):]
    return None


def is_ours(client_order_id: str) -> bool:
    """Whether this engine made the order (the broker may hold manual orders and other clients')."""
    return client_order_id.startswith(OUR_PREFIXES)
