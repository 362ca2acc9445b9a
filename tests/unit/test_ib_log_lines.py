"""ib_async's own lines for IB codes the adapter handles are debug, not error: a cancel is no error."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from broker.ibkr import _HANDLED
from engine.logging import configure_logging


@pytest.fixture
def wrapper_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logger = logging.getLogger("ib_async.wrapper")
    logger.addFilter(_HANDLED)
    out = io.StringIO()
    yield logger, out
    root.handlers[:] = handlers
    root.setLevel(level)


def _levels(out: io.StringIO) -> list[tuple[str, str]]:
    return [(r["level"], r["event"]) for r in map(json.loads, out.getvalue().splitlines())]


def test_a_cancel_confirmation_is_not_logged_as_an_error(wrapper_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = wrapper_log
    configure_logging("json", "info", out)
    logger.error("Error 202, reqId 29: Order Canceled - reason:")
    logger.error("Error 10148, reqId 7: OrderId 7 that needs to be cancelled cannot be cancelled")
    assert _levels(out) == []


def test_at_debug_the_handled_codes_are_kept_as_debug(wrapper_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = wrapper_log
    configure_logging("json", "debug", out)
    logger.error("Error 202, reqId 29: Order Canceled - reason:")
    assert _levels(out) == [("debug", "Error 202, reqId 29: Order Canceled - reason:")]


def test_a_code_the_adapter_does_not_handle_stays_an_error(wrapper_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = wrapper_log
    configure_logging("json", "info", out)
    logger.error("Error 399, reqId 3: Order message error")
    assert _levels(out) == [("error", "Error 399, reqId 3: Order message error")]


def test_ib_asyncs_trade_lines_name_the_order_in_one_short_line() -> None:
    """ib_async formats a Trade into placeOrder / openOrder / orderStatus lines at any level: its dataclass repr
    (~1,400 characters, ~100 us) cost the live engine more than the order itself."""
    from ib_async import LimitOrder, OrderStatus, Stock, Trade

    import broker.ibkr  # noqa: F401 - the adapter sets the repr

    order = LimitOrder("BUY", 100, 150.25, orderId=5, permId=123, orderRef="tc-abc", tif="DAY", parentId=4)
    line = repr(Trade(Stock("AAPL", "SMART", "USD"), order,
                      OrderStatus(orderId=5, status="Filled", filled=100, remaining=0, avgFillPrice=150.25)))
    assert line == ("Trade(AAPL BUY 100 LMT limit=150.25 DAY orderId=5 permId=123 ref='tc-abc' parentId=4 "
                    "status=Filled filled=100 remaining=0 avgFillPrice=150.25 fills=0)")
