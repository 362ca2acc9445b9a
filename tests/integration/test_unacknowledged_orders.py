"""An order IB never acknowledges (its paper server sometimes drops a placement) is Unknown after the ack
timeout and settled by reconciliation: lost, it is closed Rejected and never sent again; working at IB
with its acknowledgement lost, it is Submitted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal as D

from broker.base import BrokerOrder, BrokerSnapshot
from broker.reconcile import OpenOrderRecord, reconcile_live
from engine.domain import OrderStatus as S
from engine.domain import Side
from paper import wire
from tests.ibrig import IbRig, run
from tests.integration.test_ibkr_adapter import _signal

ACK_S = 5.0


def test_an_unknown_order_the_broker_does_not_have_is_closed_rejected_and_a_pending_one_left_alone() -> None:
    live = [OpenOrderRecord("tc-u1", "AAPL", D(0), S.UNKNOWN.value),
            OpenOrderRecord("tc-p1", "AAPL", D(0), S.PENDING_NEW.value)]
    report = reconcile_live(live, set(), {}, BrokerSnapshot([], [], []))
    assert [(c, s) for c, s, _ in report.close_orders] == [("tc-u1", S.REJECTED)]
    assert "not sent again" in report.close_orders[0][2] and report.acknowledged == []


def test_an_unknown_order_the_broker_has_working_is_acknowledged() -> None:
    working = BrokerOrder("tc-u2", "AAPL", Side.BUY, D(10), D(0), S.SUBMITTED, broker_order_id=7, perm_id=70)
    report = reconcile_live([OpenOrderRecord("tc-u2", "AAPL", D(0), S.UNKNOWN.value)], set(), {},
                            BrokerSnapshot([working], [], []))
    assert report.acknowledged == [working] and report.close_orders == []


async def settle_unknown(rig: IbRig) -> None:
    """What the session's control does after the ack timeout: mark, ask IB again, compare, apply."""
    rig.clock.advance(timedelta(seconds=ACK_S))
    rig.engine.housekeeping(rig.clock())
    rig.broker.refresh()
    await rig.until(lambda: not rig.broker.refreshing)
    live = [OpenOrderRecord(o.client_order_id, o.symbol, o.filled_qty, o.status.value)
            for o in rig.engine.orders.values()]
    rig.engine.apply_reconcile(reconcile_live(live, set(), {}, rig.broker.snapshot()))


def unacknowledged(sid: str, fault: Callable[[IbRig], None]) -> tuple[list[S], int]:
    """A resting order placed with ``fault`` set at the gateway, then settled after the ack timeout: its
    statuses, and how many orders with its orderRef the gateway has."""

    async def scenario() -> tuple[list[S], int]:
        rig = IbRig()
        rig.engine.ack_timeout_s = ACK_S
        await rig.start()
        await rig.quote("100.00", "100.02")
        fault(rig)
        order = rig.engine.on_signal(_signal(sid, order_type="LMT", limit_price=99))
        assert order is not None
        await rig.settle()
        await settle_unknown(rig)
        await rig.settle()
        at_gateway = sum(o.ref == f"tc-{sid}" for o in [*rig.gw.live.values(), *rig.gw.done.values()])
        statuses = rig.status_of(order)
        await rig.stop()
        return statuses, at_gateway

    return run(scenario)


def test_a_dropped_placement_ends_rejected_after_the_timeout_and_is_never_sent_again() -> None:
    statuses, at_gateway = unacknowledged("lost1", lambda rig: setattr(rig.gw.faults, "drop_next_placement", True))
    assert statuses == [S.UNKNOWN, S.REJECTED] and at_gateway == 0


def test_an_order_whose_acknowledgement_was_lost_is_submitted_once_reconciliation_finds_it() -> None:
    statuses, at_gateway = unacknowledged(
        "quiet1", lambda rig: rig.gw.faults.drop_replies.update({wire.OPEN_ORDER: 1, wire.ORDER_STATUS: 1}))
    assert statuses[:2] == [S.UNKNOWN, S.SUBMITTED] and at_gateway == 1
