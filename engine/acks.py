"""The words of a kill-switch acknowledgement that the engine writes and the CLI reads back.

A flatten that sent nothing for some positions says so in the acknowledgement's detail, one part per
symbol; ``tradectl kill --flatten`` reads the parts back to say which positions stay open and why. A halt
without a flatten leaves the exits that protect positions working, and says how many: "0 cancelled" must
not read as "nothing is working".
"""

from __future__ import annotations

import re

NOT_FLATTENED = "not flattened: "
_SYMBOL_PART = re.compile(r"; (?=[A-Z0-9][A-Z0-9./-]*: )")  # "AAPL: why; MSFT: why" -> one part per symbol


def not_flattened_detail(skipped: dict[str, str]) -> str:
    """The acknowledgement's words for positions a flatten sent nothing for (read back by ``skipped_by_symbol``)."""
    return NOT_FLATTENED + "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))


def protection_kept_detail(kept: int) -> str:
    """The acknowledgement's words for the protective exits a halt left working at the broker."""
    return (f"{kept} exit order(s) protecting a position left working: they can only reduce it "
            f"(`tradectl kill --flatten` closes the position and cancels them)")


def skipped_by_symbol(detail: str | None) -> dict[str, str]:
    """Why the engine sent no closing order, per symbol; "*" for a reason that holds for the whole scope."""
    if not detail or not detail.startswith(NOT_FLATTENED):
        return {}
    out: dict[str, str] = {}
    for part in _SYMBOL_PART.split(detail[len(NOT_FLATTENED):]):
        symbol, sep, why = part.partition(": ")
        if sep and symbol and " " not in symbol and symbol == symbol.upper():
            out[symbol] = why
        else:
            out["*"] = part
    return out
