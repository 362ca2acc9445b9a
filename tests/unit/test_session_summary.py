"""A session's summary names where its orders went and keeps its own money apart from the account's."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from rich.console import Console

from engine.domain import Venue, venue_of
from engine.report import print_summary
from engine.session import SessionSummary


def _summary(**kw: Any) -> SessionSummary:
    base: dict[str, Any] = dict(
        session_id=3, signals=0, accepted=0, rejected=0, invalid=0, duplicates=0, reject_reasons={}, orders={},
        fills=0, positions=[], realized_pnl=D("0.00"), unrealized_pnl=D("-0.00"), commissions=D("0.00"),
        elapsed_s=0.1, account_realized_pnl=D("-6389.68"), account_commissions=D("2644.26"))
    base.update(kw)
    return SessionSummary(**base)


def _text(summary: SessionSummary) -> str:
    console = Console(width=80, record=True)
    print_summary(summary, console=console)
    return console.export_text()


def test_venue_is_named_from_mode_and_account() -> None:
    assert venue_of("paper", "DU0000001") is Venue.SIMULATED
    assert venue_of("ibkr", "DU0000001") is Venue.IB_PAPER
    assert venue_of("ibkr", "U1234567") is Venue.IB_LIVE


def test_a_live_session_is_titled_ib_live_with_its_account_not_paper_session() -> None:
    text = _text(_summary(venue=Venue.IB_LIVE.value, account="U1234567"))
    assert text.startswith("session 3: IB live, account U1234567") and "paper session" not in text


def test_a_session_that_traded_nothing_shows_no_pnl_of_its_own_and_the_accounts_apart() -> None:
    lines = _text(_summary()).splitlines()
    own = next(line for line in lines if "realized P&L (this session)" in line)
    account = next(line for line in lines if "account realized P&L" in line)
    assert "0.00" in own and "-6,389.68" not in own and "-6,389.68" in account
    assert "-0.00" not in "\n".join(lines)
