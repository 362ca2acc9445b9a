"""IB order ids across reconnects, over TCP with ib_async: ids only go up whatever nextValidId says, and an
id refused as a duplicate (103) is sent again with a fresh id and the same orderRef, once at IB."""

from __future__ import annotations

from engine.domain import OrderStatus as S
from tests.ibrig import IbRig, run
from tests.integration.test_ibkr_adapter import _order


def refs_at(rig: IbRig) -> list[str]:
    return [o.ref for o in [*rig.gw.live.values(), *rig.gw.done.values()]]


def test_a_duplicate_order_id_is_retried_with_a_fresh_id_and_the_same_order_ref() -> None:
    async def scenario() -> tuple[S, list[str], list[S]]:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        rig.gw.faults.duplicate_id_next = True
        order = await _order(rig, "dup1", order_type="LMT", limit_price=99)
        await rig.until(lambda: order.status is S.SUBMITTED)
        refs, statuses = refs_at(rig), rig.status_of(order)
        await rig.stop()
        return order.status, refs, statuses

    status, refs, statuses = run(scenario)
    assert status is S.SUBMITTED and refs.count("tc-dup1") == 1
    assert S.REJECTED not in statuses


def restarted_engine_ids(floor_from_database: bool) -> tuple[S, list[str], dict[str, int]]:
    """An order fills; the engine's process ends; the gateway's next session announces a nextValidId below the
    filled order's id (ib_async raises its ids above open orders it is shown, not above filled ones)."""

    async def scenario() -> tuple[S, list[str], dict[str, int]]:
        rig = await IbRig().start()
        await rig.quote("100.00", "100.02")
        filled = await _order(rig, "f1")
        await rig.until(lambda: filled.status is S.FILLED)
        await rig.broker.close()
        rig.gw.faults.id_rollback = 1000
        again = IbRig()  # a new process: a new ib_async client that knows nothing of the ids used
        again.gw = rig.gw
        again.broker.port = rig.gw.port
        await again.broker.connect()
        if floor_from_database:  # what IbkrSession.connect does with the orders table's highest broker id
            again.broker.raise_id_floor(int(filled.broker_order_id or 0))
        await again.quote("50.00", "50.02", symbol="MSFT")
        second = await _order(again, "w2", symbol="MSFT", order_type="LMT", limit_price=49)
        await again.until(lambda: second.status in (S.SUBMITTED, S.REJECTED))
        ids = {str(o.ref): int(str(o.extra["order_id"])) for o in [*rig.gw.live.values(), *rig.gw.done.values()]}
        refs = refs_at(rig)
        await again.broker.close()
        await rig.gw.stop()
        return second.status, refs, ids

    return run(scenario)


def test_a_restarted_engine_keeps_order_ids_above_the_highest_its_database_knows() -> None:
    status, refs, ids = restarted_engine_ids(floor_from_database=True)
    assert status is S.SUBMITTED and sorted(refs) == ["tc-f1", "tc-w2"]
    assert ids["tc-w2"] > ids["tc-f1"]


def test_without_that_floor_a_reused_filled_orders_id_104_is_sent_again_with_a_fresh_id() -> None:
    status, refs, ids = restarted_engine_ids(floor_from_database=False)
    assert status is S.SUBMITTED and sorted(refs) == ["tc-f1", "tc-w2"]  # refused once (104), then placed
    assert ids["tc-w2"] > ids["tc-f1"]
