"""systemd's notify protocol on a real AF_UNIX datagram socket, in process and from the daemon."""
from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import pytest

from infersight.daemon.runtime import Daemon
from infersight.daemon.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket standing in for systemd's; yields (path, socket)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    yield path, sock
    sock.close()


def test_messages_arrive_on_the_socket(notify_socket):
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready() and n.watchdog() and n.status("collecting") and n.stopping()
    got = [sock.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1", "WATCHDOG=1", "STATUS=collecting", "STOPPING=1"]


def test_abstract_socket_names():
    name = f"infersight-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(64) == b"READY=1"


def test_outside_systemd_everything_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval_s is None
    assert n.ready() is False and n.stopping() is False


def test_a_vanished_socket_is_not_an_error(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False  # returns, never raises


@pytest.mark.parametrize("env, interval", [
    ({"WATCHDOG_USEC": "60000000"}, 30.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),   # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, interval):
    assert Notifier({"NOTIFY_SOCKET": "/run/x", **env}).watchdog_interval_s == interval


class _Sent(Notifier):
    def __init__(self) -> None:
        super().__init__({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "2000000"})
        self.sent: list[str] = []

    def send(self, message: str) -> bool:
        self.sent.append(message)
        return True


class _Store:
    def __init__(self, alive: bool) -> None:
        self.writer_alive = alive


async def test_watchdog_is_withheld_while_the_writer_is_dead(make_config):
    notifier = _Sent()
    daemon = Daemon(make_config(), notifier=notifier)
    await daemon._watchdog(_Store(alive=True))
    await daemon._watchdog(_Store(alive=False))  # systemd should restart an agent that stores nothing
    assert notifier.sent == ["WATCHDOG=1"]


def test_daemon_notifies_ready_watchdog_and_stopping(tmp_path, notify_socket, agent_process):
    path, sock = notify_socket
    agent = agent_process(["--db", str(tmp_path / "a.duckdb"), "--listen", "127.0.0.1:0"],
                          env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    got: list[tuple[float, str]] = []
    while sum(1 for _, m in got if m == "WATCHDOG=1") < 4:
        got.append((time.monotonic(), sock.recv(4096).decode()))  # 30 s socket timeout
    agent.wait_started()  # READY=1 is sent once the web server listens
    assert got[0][1] == "READY=1"
    assert [m for _, m in got[1:]] == ["WATCHDOG=1"] * 4
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    # every 0.5 s (half of WATCHDOG_USEC): never faster than that, whatever the load
    assert len(pings) - 1 <= (pings[-1] - pings[0]) / 0.5 + 1
    agent.proc.send_signal(signal.SIGTERM)
    rest = []
    while not rest or rest[-1] != "STOPPING=1":
        rest.append(sock.recv(4096).decode())
    assert set(rest[:-1]) <= {"WATCHDOG=1"}
    assert agent.proc.wait(timeout=5) == 0
