"""The events an operator follows are logged, and a warning repeated in a burst is written once per interval."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from engine.logging import RepeatGate, configure_logging, flush_repeated
from engine.trade_log import TradeLog
from tests.conftest import signal_line
from tests.rig import Rig


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)
    configure_logging("json", "info")


def events(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _trade(level: str, trades_level: str, stream: io.StringIO, line: str) -> list[dict[str, object]]:
    configure_logging("json", level, stream)
    rig = Rig()
    TradeLog(trades_level).attach(rig.bus)
    rig.quote()
    rig.engine.on_signal_line(line)
    return events(stream)


def test_an_ib_sessions_orders_statuses_and_fills_are_logged_at_info(stream: io.StringIO) -> None:
    logged = _trade("info", "info", stream, signal_line("s1"))
    names = [e["event"] for e in logged]
    assert names[0] == "order.submitted" and "fill.received" in names and "order.status" in names
    submitted = logged[0]
    assert submitted["client_order_id"] == "tc-s1" and submitted["symbol"] == "AAPL" and submitted["level"] == "info"
    fill = next(e for e in logged if e["event"] == "fill.received")
    assert fill["price"] == "100.02" and fill["position"] == fill["quantity"]
    assert any(e["event"] == "order.status" and e["to_status"] == "Filled" for e in logged)


def test_a_simulated_sessions_trades_stay_out_of_an_info_log(stream: io.StringIO) -> None:
    assert _trade("info", "debug", stream, signal_line("s1")) == []


def test_a_rejected_signal_is_logged_at_debug_with_its_code(stream: io.StringIO) -> None:
    logged = _trade("debug", "debug", stream, signal_line("s1", win_prob=0.3, payoff=1))
    (rejected,) = [e for e in logged if e["event"] == "signal.rejected"]
    assert rejected["level"] == "debug" and rejected["code"] == "no_edge" and rejected["signal_id"] == "s1"


def test_a_rejected_signal_is_not_logged_at_info(stream: io.StringIO) -> None:
    assert _trade("info", "info", stream, signal_line("s1", win_prob=0.3, payoff=1)) == []


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_repeated_warning_is_written_once_per_interval_then_with_its_count() -> None:
    clock = FakeClock()
    gate = RepeatGate(frozenset({"order.paced"}), interval_s=10.0, clock=clock)
    written = []
    for i in range(12):
        clock.t = i * 0.5
        with contextlib.suppress(structlog.DropEvent):
            written.append(dict(gate(None, "warning", {"event": "order.paced", "client_order_id": f"c{i}"})))
    clock.t = 10.5
    written.append(dict(gate(None, "warning", {"event": "order.paced", "client_order_id": "late"})))
    assert [w["client_order_id"] for w in written] == ["c0", "late"]
    assert written[1]["repeated"] == 11 and written[1]["over_s"] == 10.5


def test_other_events_are_never_held_back() -> None:
    gate = RepeatGate(frozenset({"order.paced"}), clock=FakeClock())
    for _ in range(3):
        assert gate(None, "warning", {"event": "fill.unknown_order"})["event"] == "fill.unknown_order"


def test_the_count_held_at_the_end_is_written_by_flush(stream: io.StringIO) -> None:
    configure_logging("json", "info", stream)
    log = structlog.get_logger("tradectl.test")
    for i in range(5):
        log.warning("order.paced", client_order_id=f"c{i}")
    flush_repeated()
    paced = [e for e in events(stream) if e["event"] == "order.paced"]
    assert len(paced) == 2 and paced[0]["client_order_id"] == "c0" and paced[1]["repeated"] == 4
