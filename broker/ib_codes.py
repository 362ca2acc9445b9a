"""IB's order statuses and error codes as tables: what each one means to the engine.

Pure data, used by the IBKR adapter and the simulated gateway alike, so both speak one vocabulary.
Sources: the TWS API's order status and message code pages (see ../shared/ib_protocol.md).
"""

from __future__ import annotations

from enum import StrEnum

from engine.domain import OrderStatus


class IbStatus(StrEnum):
    """``orderStatus.status`` as IB sends it."""

    API_PENDING = "ApiPending"
    PENDING_SUBMIT = "PendingSubmit"
    PENDING_CANCEL = "PendingCancel"
    PRE_SUBMITTED = "PreSubmitted"  # accepted, not yet elected (a stop waiting for its trigger)
    SUBMITTED = "Submitted"
    API_CANCELLED = "ApiCancelled"
    CANCELLED = "Cancelled"
    FILLED = "Filled"
    INACTIVE = "Inactive"  # rejected, or not working (a 201 arrives as error, then Inactive)
    VALIDATION_ERROR = "ValidationError"  # ib_async's own status for a 'Order validation' failure

    @property
    def is_final(self) -> bool:
        return self in IB_FINAL_STATUSES


IB_FINAL_STATUSES = frozenset({IbStatus.API_CANCELLED, IbStatus.CANCELLED, IbStatus.FILLED, IbStatus.INACTIVE})

# What each status means for our order; None: no change of ours (the fills drive Filled; pending states
# are transient). A Cancelled is refined by the error that preceded it (see ``ErrorKind``).
DOMAIN_STATUS: dict[IbStatus, OrderStatus | None] = {
    IbStatus.API_PENDING: None,
    IbStatus.PENDING_SUBMIT: None,
    IbStatus.PENDING_CANCEL: None,
    IbStatus.PRE_SUBMITTED: OrderStatus.SUBMITTED,
    IbStatus.SUBMITTED: OrderStatus.SUBMITTED,
    IbStatus.API_CANCELLED: OrderStatus.CANCELLED,
    IbStatus.CANCELLED: OrderStatus.CANCELLED,
    IbStatus.FILLED: OrderStatus.FILLED,
    IbStatus.INACTIVE: OrderStatus.REJECTED,
    IbStatus.VALIDATION_ERROR: None,
}


def ib_status(text: str) -> IbStatus | None:
    """The status IB sent, or None for one this table does not know (logged by the caller)."""
    try:
        return IbStatus(text)
    except ValueError:
        return None


class ErrorKind(StrEnum):
    """What an IB error code means for the engine."""

    ORDER_REJECTED = "order_rejected"  # the order is refused; a Cancelled that follows is a reject
    CANCEL_REFUSED = "cancel_refused"  # 10148: usually filled; never book it as cancelled
    LINK_LOST = "link_lost"  # 1100
    LINK_RESTORED_DATA_LOST = "link_restored_data_lost"  # 1101: resubscribe market data
    LINK_RESTORED = "link_restored"  # 1102
    PACING = "pacing"  # 100: too many messages, the gateway may disconnect
    CLIENT_ID_IN_USE = "client_id_in_use"  # 326: the previous connection is not gone yet; retry
    NOT_CONNECTED = "not_connected"  # 502, 504
    FARM_NOTICE = "farm_notice"  # 2103-2108, 2110, 2157, 2158: data farm / server link notices
    COMPETING_SESSION = "competing_session"  # 10197: no market data while another live session is logged in
    DATA_REQUEST_LOST = "data_request_lost"  # 10182: a live data request failed as the link dropped: request again
    NO_LIVE_DATA = "no_live_data"  # 354, 10168: no live subscription (and delayed not enabled): no quotes
    DELAYED_DATA = "delayed_data"  # 10167: no live subscription, delayed data instead (ibkr.market_data_type)
    INFORMATIONAL = "informational"  # anything else in 2100-2199


ERRORS: dict[int, ErrorKind] = {
    100: ErrorKind.PACING,
    103: ErrorKind.ORDER_REJECTED,  # duplicate order id
    104: ErrorKind.ORDER_REJECTED,  # cannot modify a filled order
    110: ErrorKind.ORDER_REJECTED,  # price does not conform to the minimum variation
    200: ErrorKind.ORDER_REJECTED,  # no security definition
    201: ErrorKind.ORDER_REJECTED,  # order rejected
    203: ErrorKind.ORDER_REJECTED,  # security not available or not allowed for this account
    321: ErrorKind.ORDER_REJECTED,  # error validating request
    326: ErrorKind.CLIENT_ID_IN_USE,
    502: ErrorKind.NOT_CONNECTED,
    504: ErrorKind.NOT_CONNECTED,
    1100: ErrorKind.LINK_LOST,
    1101: ErrorKind.LINK_RESTORED_DATA_LOST,
    1102: ErrorKind.LINK_RESTORED,
    10147: ErrorKind.ORDER_REJECTED,  # order id to cancel not found
    10148: ErrorKind.CANCEL_REFUSED,
    354: ErrorKind.NO_LIVE_DATA,
    10167: ErrorKind.DELAYED_DATA,
    10168: ErrorKind.NO_LIVE_DATA,
    10182: ErrorKind.DATA_REQUEST_LOST,
    10197: ErrorKind.COMPETING_SESSION,
}
for _code in (2103, 2104, 2105, 2106, 2107, 2108, 2110, 2157, 2158):
    ERRORS[_code] = ErrorKind.FARM_NOTICE


# reqMarketDataType: what the engine asks for (ibkr.market_data_type); 3 and 4 are delayed data
MARKET_DATA_TYPES = {"live": 1, "frozen": 2, "delayed": 3, "delayed_frozen": 4}
DELAYED_TYPES = frozenset({3, 4})


class GatewayCondition(StrEnum):
    """What IB Gateway reports about its own links, each one a named condition in ``/readyz`` and metrics."""

    IB_SERVERS = "ib_servers"  # the gateway's link to IB (1100 lost, 1101 / 1102 restored, 2110 broken)
    MARKET_DATA_FARM = "market_data_farm"  # 2103 broken, 2104 / 2108 fine
    HISTORICAL_DATA_FARM = "historical_data_farm"  # 2105 broken, 2106 / 2107 fine
    SECDEF_FARM = "secdef_farm"  # 2157 broken, 2158 fine (contract details for new symbols)
    MARKET_DATA_SESSION = "market_data_session"  # 10197: another live session (a phone, a TWS) has the data
    LOGIN = "login"  # the gateway accepts the socket but never completes the API handshake: login or 2FA waiting

    @property
    def needed_to_trade(self) -> bool:
        return self in NEEDED_TO_TRADE


NEEDED_TO_TRADE = frozenset({GatewayCondition.IB_SERVERS, GatewayCondition.MARKET_DATA_FARM,
                             GatewayCondition.MARKET_DATA_SESSION, GatewayCondition.LOGIN})

# code -> (the condition it reports, whether that condition is now fine)
GATEWAY_NOTICES: dict[int, tuple[GatewayCondition, bool]] = {
    1100: (GatewayCondition.IB_SERVERS, False),
    1101: (GatewayCondition.IB_SERVERS, True),
    1102: (GatewayCondition.IB_SERVERS, True),
    2110: (GatewayCondition.IB_SERVERS, False),
    2103: (GatewayCondition.MARKET_DATA_FARM, False),
    2104: (GatewayCondition.MARKET_DATA_FARM, True),
    2108: (GatewayCondition.MARKET_DATA_FARM, True),
    2105: (GatewayCondition.HISTORICAL_DATA_FARM, False),
    2106: (GatewayCondition.HISTORICAL_DATA_FARM, True),
    2107: (GatewayCondition.HISTORICAL_DATA_FARM, True),
    2157: (GatewayCondition.SECDEF_FARM, False),
    2158: (GatewayCondition.SECDEF_FARM, True),
    10197: (GatewayCondition.MARKET_DATA_SESSION, False),
}
# Market data that flows again (the farm is back, the link restored) ends a competing session's hold on it.
DATA_RESUMED = frozenset({1101, 1102, 2104})


def error_kind(code: int) -> ErrorKind | None:
    """The kind of an IB error code; informational for the 21xx notices; None for an unknown code."""
    kind = ERRORS.get(code)
    if kind is None and 2100 <= code < 2200:
        return ErrorKind.INFORMATIONAL
    return kind


def order_outcome(status: IbStatus, last_error_code: int, filled: float) -> OrderStatus | None:
    """Our status for an order IB reports ``status``, read together with the last error on the order.

    A Cancelled after a reject code with nothing filled is a reject; after 10148 (cancel refused) it is
    no cancel at all (the order usually filled: its fills say so). None: no change of ours.
    """
    domain = DOMAIN_STATUS[status]
    if domain is OrderStatus.CANCELLED:
        kind = error_kind(last_error_code)
        if kind is ErrorKind.CANCEL_REFUSED:
            return None
        if kind is ErrorKind.ORDER_REJECTED and filled == 0:
            return OrderStatus.REJECTED
    return domain
