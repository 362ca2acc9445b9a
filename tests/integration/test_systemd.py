"""sd_notify by hand, against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.systemd import Notifier, watchdog_loop


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return out


def test_without_notify_socket_every_call_is_a_noop() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog() and n.sent == 0


def test_ready_reaches_the_socket_with_its_status(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    assert Notifier({"NOTIFY_SOCKET": path}).ready("reconciled, trading")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=reconciled, trading"


def test_stopping_and_status_are_sent_as_systemd_expects(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    n.status("reconnecting to IB")
    n.stopping()
    assert [sock.recv(4096).decode() for _ in range(2)] == ["STATUS=reconnecting to IB", "STOPPING=1"]


def test_a_missing_socket_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.watchdog() and n.failures == 1


def test_the_watchdog_period_is_half_of_watchdog_usec_for_this_process() -> None:
    pid = str(os.getpid())
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}).watchdog_s == 30.0
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_the_watchdog_pings_only_while_the_loop_is_healthy(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    healthy = [True]

    async def run() -> tuple[list[str], list[str]]:
        task = asyncio.create_task(watchdog_loop(n, lambda: healthy[0], interval_s=0.01))
        await asyncio.sleep(0.1)
        first = received(sock)
        healthy[0] = False
        await asyncio.sleep(0.02)  # a ping in flight may land
        received(sock)
        await asyncio.sleep(0.1)
        second = received(sock)
        task.cancel()
        return first, second

    first, second = asyncio.run(asyncio.wait_for(run(), 5))
    assert len(first) >= 3 and set(first) == {"WATCHDOG=1"}
    assert second == []
