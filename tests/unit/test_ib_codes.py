"""IB's statuses and error codes are read from one table by the adapter and the simulated gateway."""

from __future__ import annotations

import pytest

from broker.ib_codes import DOMAIN_STATUS, ErrorKind, IbStatus, error_kind, ib_status, order_outcome
from engine.domain import OrderStatus


def test_every_ib_status_has_a_meaning() -> None:
    assert set(DOMAIN_STATUS) == set(IbStatus)


@pytest.mark.parametrize(("status", "code", "filled", "expected"), [
    (IbStatus.SUBMITTED, 0, 0, OrderStatus.SUBMITTED),
    (IbStatus.PRE_SUBMITTED, 0, 0, OrderStatus.SUBMITTED),
    (IbStatus.INACTIVE, 201, 0, OrderStatus.REJECTED),
    (IbStatus.CANCELLED, 201, 0, OrderStatus.REJECTED),
    (IbStatus.CANCELLED, 201, 100, OrderStatus.CANCELLED),
    (IbStatus.CANCELLED, 202, 0, OrderStatus.CANCELLED),
    (IbStatus.API_CANCELLED, 0, 0, OrderStatus.CANCELLED),
    (IbStatus.CANCELLED, 10148, 0, None),
    (IbStatus.FILLED, 0, 100, OrderStatus.FILLED),
    (IbStatus.PENDING_SUBMIT, 0, 0, None),
])
def test_an_ib_status_read_with_the_last_error_gives_our_status(
        status: IbStatus, code: int, filled: float, expected: OrderStatus | None) -> None:
    assert order_outcome(status, code, filled) is expected


def test_a_refused_cancel_is_never_a_cancel() -> None:
    assert error_kind(10148) is ErrorKind.CANCEL_REFUSED
    assert order_outcome(IbStatus.CANCELLED, 10148, 0) is None


@pytest.mark.parametrize(("code", "kind"), [
    (1100, ErrorKind.LINK_LOST), (1101, ErrorKind.LINK_RESTORED_DATA_LOST), (1102, ErrorKind.LINK_RESTORED),
    (326, ErrorKind.CLIENT_ID_IN_USE), (502, ErrorKind.NOT_CONNECTED), (100, ErrorKind.PACING),
    (2104, ErrorKind.FARM_NOTICE), (2110, ErrorKind.FARM_NOTICE), (2199, ErrorKind.INFORMATIONAL),
    (103, ErrorKind.ORDER_REJECTED),
])
def test_error_codes_are_classified_by_kind(code: int, kind: ErrorKind) -> None:
    assert error_kind(code) is kind


def test_an_unknown_code_or_status_is_said_to_be_unknown() -> None:
    assert error_kind(31337) is None and ib_status("Sleeping") is None
