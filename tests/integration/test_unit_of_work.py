"""What must be written together is one unit of work: no flush, at any flush_rows, holds half of one.

A new order travels with its signal's row and the inbox mark of its line (``order_recorded``); a fill with
its order's row and its position (``fill_booked``). After every committed flush the database is checked as
a crash right after it would leave it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select

from engine.domain import Fill, Instrument, Order, OrderIntent, OrderType, Position, Side, Signal, TimeInForce
from engine.signals import parse_signal
from repositories.db import make_engine, upgrade
from repositories.inbox import SignalInbox
from repositories.models import FillRow, OrderRow, PositionRow, SignalInboxRow, SignalRejectRow, SignalRow
from repositories.recorder import Recorder
from repositories.repos import Repositories
from tests.conftest import T0, signal_line
from tests.rig import Rig

ACCOUNT = "DU0000001"


@pytest.fixture
def db(db_url: str) -> Engine:
    upgrade(db_url)
    return make_engine(db_url)


def whole(db: Engine) -> list[str]:
    """What a crash right now would leave split: each problem found, in words (empty when none)."""
    problems: list[str] = []
    with db.connect() as conn:
        signals = conn.execute(select(SignalRow.signal_id, SignalRow.status, SignalRow.client_order_id,
                                      SignalRow.line_no)).all()
        orders = conn.execute(select(OrderRow.client_order_id, OrderRow.signal_id, OrderRow.filled_qty)).all()
        fills = conn.execute(select(FillRow.client_order_id, FillRow.symbol, FillRow.side, FillRow.quantity)).all()
        positions = dict(conn.execute(select(PositionRow.symbol, PositionRow.quantity)).all())
        reject_lines = set(conn.execute(select(SignalRejectRow.line_no)).scalars())
        consumed = set(conn.execute(select(SignalInboxRow.id).where(SignalInboxRow.consumed_at.is_not(None)))
                       .scalars())
    order_ids = {o.client_order_id for o in orders}
    signal_ids = {s.signal_id for s in signals}
    for s in signals:
        if s.status == "accepted" and s.client_order_id not in order_ids:
            problems.append(f"signal {s.signal_id} accepted without its order")
    for o in orders:
        if o.signal_id is not None and o.signal_id not in signal_ids:
            problems.append(f"order {o.client_order_id} without its signal")
    sums: dict[str, Decimal] = defaultdict(Decimal)
    by_order: dict[str, Decimal] = defaultdict(Decimal)
    for f in fills:
        sums[f.symbol] += f.quantity if f.side == "BUY" else -f.quantity
        by_order[f.client_order_id] += f.quantity
    for symbol, qty in sums.items():
        if positions.get(symbol) != qty:
            problems.append(f"{symbol}: position {positions.get(symbol)} is not the sum of its fills {qty}")
    for o in orders:
        if o.filled_qty != by_order.get(o.client_order_id, Decimal(0)):
            problems.append(f"order {o.client_order_id} filled {o.filled_qty}, its fills "
                            f"{by_order.get(o.client_order_id)}")
    lines = {s.line_no for s in signals} | reject_lines
    problems += [f"inbox row {i} consumed without its line's row" for i in sorted(consumed - lines)]
    return problems


def checked_recorder(db: Engine, rig: Rig, flush_rows: int) -> tuple[Recorder, list[list[str]]]:
    session_id = Repositories(db, ACCOUNT).sessions.start("paper", None, datetime.now(UTC))
    recorder = Recorder(db, session_id, ACCOUNT, flush_rows=flush_rows).attach(rig.bus)
    seen: list[list[str]] = []
    recorder.on_flush = lambda rows, s: seen.append(whole(db))
    return recorder, seen


@pytest.mark.parametrize("flush_rows", [1, 2, 3])
def test_no_flush_splits_an_order_from_its_signal_a_fill_from_its_position_or_a_line_from_its_mark(
        db: Engine, flush_rows: int) -> None:
    inbox = SignalInbox(db, ACCOUNT)
    inbox.add([
        signal_line("s1", order_type="LMT", limit_price=99.0),  # rests
        signal_line("s2", direction="short"),  # cancels s1 (a flush of its own at flush_rows=1), then fills
        signal_line("s3", direction="flat"),
        "not json",
        signal_line("s2"),  # a duplicate
        signal_line("m1", symbol="MSFT"),
    ], "cli")
    rig = Rig()
    rig.quote()
    rig.quote(symbol="MSFT")
    recorder, seen = checked_recorder(db, rig, flush_rows)
    for item in inbox.pending():
        recorder.consume_inbox(item.id)
        rig.engine.on_signal_line(item.raw, line_no=item.id)
    recorder.flush()
    assert len(seen) > 3
    assert [p for p in seen if p] == []
    assert inbox.pending() == [] and whole(db) == []


def test_a_fill_with_its_order_and_position_is_one_unit_at_flush_rows_1(db: Engine) -> None:
    rig = Rig()
    recorder, seen = checked_recorder(db, rig, 1)
    order = Order(_intent("tc-x"), T0)
    rig.bus.order_recorded.emit(order, _signal("x"), None, None)
    position = Position("AAPL", Decimal(10), Decimal(100))
    order.filled_qty = Decimal(10)
    rig.bus.fill_booked.emit(Fill("e1", "tc-x", "AAPL", Side.BUY, Decimal(10), Decimal(100), Decimal(0), T0), order,
                             position)
    assert len(seen) == 2 and [p for p in seen if p] == []
    assert recorder.pending == 0


def test_an_order_recorded_with_a_row_that_cannot_be_made_buffers_nothing(db: Engine) -> None:
    rig = Rig()
    recorder, _ = checked_recorder(db, rig, 100)
    order = Order(_intent("tc-y"), T0)
    bad: Signal = _signal("y")
    object.__setattr__(bad, "direction", None)  # its row cannot be made: the handler raises
    with pytest.raises(AttributeError):
        recorder.on_order_recorded(order, bad, None, None)
    assert recorder.pending == 0 and recorder._new_orders == {} and recorder._events == []


def _intent(coid: str) -> OrderIntent:
    return OrderIntent(coid, coid.removeprefix("tc-"), "s", Instrument("AAPL"), Side.BUY, Decimal(10), OrderType.MKT,
                       None, None, TimeInForce.DAY, T0)


def _signal(sid: str) -> Signal:
    parsed = parse_signal(signal_line(sid))
    assert isinstance(parsed, Signal)
    return parsed



def test_with_a_loop_what_one_turn_buffered_is_committed_together_at_the_end_of_the_turn(db: Engine) -> None:
    import asyncio

    rig = Rig()
    recorder, seen = checked_recorder(db, rig, 1000)

    async def turn() -> tuple[int, int]:
        recorder.defer = asyncio.get_running_loop().call_soon
        for i in range(3):  # three units in one turn: a signal and its order each
            rig.bus.order_recorded.emit(Order(_intent(f"tc-t{i}"), T0), _signal(f"t{i}"), None, None)
        during = recorder.flushes
        await asyncio.sleep(0)  # the end of the turn
        return during, recorder.flushes

    during, after = asyncio.run(turn())
    assert (during, after) == (0, 1)
    assert recorder.pending == 0 and len(seen) == 1 and seen[0] == []
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(OrderRow)).scalar() == 3
