"""Logs off a terminal are JSON lines, libraries' records included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from engine.logging import configure_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_library_record_is_a_json_line_with_its_logger_name_and_level(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream)
    logging.getLogger("ib_async.wrapper").error("Error 399, reqId 5: Order message error")
    structlog.get_logger("tradectl.test").info("order.submitted", client_order_id="tc-1")
    library, ours = lines(stream)
    assert library["logger"] == "ib_async.wrapper" and library["level"] == "error"
    assert library["event"] == "Error 399, reqId 5: Order message error" and "timestamp" in library
    assert ours["event"] == "order.submitted" and ours["client_order_id"] == "tc-1"


def test_the_configured_level_filters_libraries_too(stream: io.StringIO) -> None:
    configure_logging("json", "warning", stream)
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    assert [line["event"] for line in lines(stream)] == ["Invalid HTTP request received."]


def test_configuring_twice_leaves_one_handler_so_no_line_is_written_twice(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream)
    configure_logging("json", "info", stream)
    logging.getLogger("alembic").info("Running upgrade")
    assert len(lines(stream)) == 1


def test_ib_asyncs_narration_is_kept_for_debug(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream)
    logging.getLogger("ib_async.wrapper").info("execDetails Execution(execId='0001.01')")
    logging.getLogger("ib_async.client").warning("Peer closed connection.")
    configure_logging("json", "debug", stream)
    logging.getLogger("ib_async.wrapper").info("commissionReport: CommissionReport(execId='0001.01')")
    events = [line["event"] for line in lines(stream)]
    assert events == ["Peer closed connection.", "commissionReport: CommissionReport(execId='0001.01')"]
