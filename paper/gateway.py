"""The simulated IB Gateway: a TCP server speaking the TWS API socket protocol (first slice: connecting).

This slice serves what a client needs to connect and be ready: the ``API\\0`` handshake with version
negotiation, startApi, managedAccounts and nextValidId, the farm notices, and every request
``ib_async``'s ``IB.connect()`` sends on connect, each closed by its end marker. Orders, market data and
the fault controls come next (issue 4). Field layouts follow ``../shared/ib_protocol.md`` and the client
libraries' decoders.

Framing: a 4-byte big-endian length, then ``\\0``-terminated ASCII fields.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

log = structlog.get_logger("tradectl.gateway")

MIN_SERVER_VERSION = 157  # the floor both ib_async and ibapi accept
MAX_SERVER_VERSION = 178  # the newest layout implemented here (below 201, where IB moves to protobuf)


def frame(fields: Sequence[object]) -> bytes:
    payload = b"".join(str(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> list[str]:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    payload = await reader.readexactly(size)
    return payload.decode(errors="replace").split("\0")[:-1]


def negotiate(version_text: str) -> int | None:
    """The server version for a client's ``v<min>..<max>`` (or ``v<n>``); None when no overlap."""
    text = version_text.split(" ", 1)[0].removeprefix("v")
    low, _, high = text.partition("..")
    try:
        cmin, cmax = int(low), int(high or low)
    except ValueError:
        return None
    version = min(cmax, MAX_SERVER_VERSION)
    if version < MIN_SERVER_VERSION or version < cmin:
        return None
    return version


class _Client:
    def __init__(self, writer: asyncio.StreamWriter, version: int) -> None:
        self.writer = writer
        self.version = version
        self.client_id: int | None = None

    def send(self, *fields: object) -> None:
        self.writer.write(frame(fields))


class GatewaySim:
    def __init__(self, host: str = "127.0.0.1", port: int = 4002, account: str = "DU0000001") -> None:
        self.host = host
        self.port = port
        self.account = account
        self.next_order_id = 1
        self._server: asyncio.Server | None = None
        self._clients: dict[int, _Client] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # port 0 asks the OS for a free one
        log.info("gateway.listening", host=self.host, port=self.port, account=self.account)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for c in list(self._clients.values()):
                c.writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client: _Client | None = None
        try:
            if await reader.readexactly(4) != b"API\0":
                writer.close()
                return
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            versions = (await reader.readexactly(size)).decode(errors="replace").rstrip("\0")  # no field NUL
            version = negotiate(versions)
            if version is None:  # a real gateway answers nothing useful and drops the socket
                log.warning("gateway.version_refused", client_versions=versions)
                writer.close()
                return
            now = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")
            client = _Client(writer, version)
            client.send(version, now)
            while True:
                fields = await read_frame(reader)
                if fields:
                    self._dispatch(client, fields)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if client is not None and client.client_id is not None:
                self._clients.pop(client.client_id, None)
            writer.close()

    def _dispatch(self, c: _Client, f: list[str]) -> None:
        msg = int(f[0])
        if msg == 71:  # startApi [71, 2, clientId, optCapab]
            self._start_api(c, int(f[2]))
        elif msg == 61:  # reqPositions
            c.send(62, 1)
        elif msg == 5 or msg == 16:  # reqOpenOrders
            c.send(53, 1)
        elif msg == 99:  # reqCompletedOrders
            c.send(102)
        elif msg == 6:  # reqAccountUpdates [6, 2, subscribe, account]
            if f[2] == "1":
                self._account_updates(c)
        elif msg == 76:  # reqAccountUpdatesMulti [76, 1, reqId, account, modelCode, ledgerAndNLV]
            req = f[2]
            for key, value in self._account_values():
                c.send(73, 1, req, self.account, "", key, value, "USD")
            c.send(74, 1, req)
        elif msg == 7:  # reqExecutions [7, 3, reqId, ...filter]
            c.send(55, 1, f[2])
        elif msg == 8:  # reqIds
            c.send(9, 1, self.next_order_id)
        elif msg == 49:  # reqCurrentTime
            c.send(49, 1, int(datetime.now(UTC).timestamp()))
        elif msg == 62:  # reqAccountSummary [62, 1, reqId, group, tags]
            for key, value in self._account_values():
                c.send(63, 1, f[2], self.account, key, value, "USD")
            c.send(64, 1, f[2])
        elif msg in (15, 63, 64, 77):  # auto-open-orders, cancel summaries/updates: nothing to answer
            return
        else:
            log.info("gateway.unhandled", msg=msg, client_id=c.client_id)

    def _start_api(self, c: _Client, client_id: int) -> None:
        if client_id in self._clients:
            c.send(4, 2, -1, 326,
                   "Unable to connect as the client id is already in use. Retry with a unique client id.", "")
            c.writer.close()
            return
        c.client_id = client_id
        self._clients[client_id] = c
        c.send(15, 1, self.account)
        c.send(9, 1, self.next_order_id)
        for code, text in ((2104, "Market data farm connection is OK:usfarm"),
                           (2106, "HMDS data farm connection is OK:ushmds"),
                           (2158, "Sec-def data farm connection is OK:secdefnj")):
            c.send(4, 2, -1, code, text, "")
        log.info("gateway.client_connected", client_id=client_id, server_version=c.version)

    def _account_values(self) -> list[tuple[str, str]]:
        return [("NetLiquidation", "1000000.00"), ("TotalCashValue", "1000000.00"),
                ("AvailableFunds", "1000000.00"), ("BuyingPower", "4000000.00")]

    def _account_updates(self, c: _Client) -> None:
        for key, value in self._account_values():
            c.send(6, 2, key, value, "USD", self.account)
        c.send(8, 1, datetime.now(UTC).strftime("%H:%M"))
        c.send(54, 1, self.account)
