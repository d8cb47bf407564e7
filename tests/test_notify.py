"""sd_notify and the watchdog, against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.notify import Notifier, Watchdog, monotonic_usec, watchdog_interval


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def receive(self, timeout: float = 2.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        assert data.endswith("\n")
        return dict(line.split("=", 1) for line in data.splitlines())

    def drain(self, seconds: float) -> list[dict[str, str]]:
        """Every message that arrives within `seconds`."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.receive(timeout=left))
            except TimeoutError:
                break
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="agg-ntf-"))
    yield d
    shutil.rmtree(d)


@pytest.fixture
def systemd(sock_dir: Path) -> Iterator[tuple[FakeSystemd, str]]:
    path = str(sock_dir / "notify")
    fake = FakeSystemd(path)
    yield fake, path
    fake.close()


def test_ready_with_status_arrives_as_one_datagram(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    n = Notifier(path)
    assert n.enabled
    assert n.ready("42 feeds, 0 failing") is True
    assert fake.receive() == {"READY": "1", "STATUS": "42 feeds, 0 failing"}
    n.close()


def test_socket_comes_from_environment(
    systemd: tuple[FakeSystemd, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, path = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier()
    n.stopping()
    assert fake.receive() == {"STOPPING": "1"}
    n.close()


def test_abstract_socket() -> None:
    name = f"aggregator-test-{os.getpid()}-{time.monotonic_ns()}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert n.status("updating 3/42") is True
        assert fake.receive() == {"STATUS": "updating 3/42"}
        n.close()
    finally:
        fake.close()


def test_reloading_carries_monotonic_usec(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    n = Notifier(path)
    before = monotonic_usec()
    n.reloading()
    after = monotonic_usec()
    msg = fake.receive()
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    n.close()


def test_status_newline_cannot_inject_a_field(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    n = Notifier(path)
    n.status("feed title\nREADY=1")
    assert fake.receive() == {"STATUS": "feed title READY=1"}
    n.close()


def test_unset_socket_is_a_silent_no_op() -> None:
    n = Notifier(environ={})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False


def test_unsupported_address_is_a_no_op() -> None:
    assert not Notifier(environ={"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_missing_socket_does_not_raise(sock_dir: Path) -> None:
    n = Notifier(str(sock_dir / "gone"))
    assert n.enabled
    assert n.ready() is False
    n.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 60.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 60.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_only_while_every_condition_holds(
    systemd: tuple[FakeSystemd, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, path = systemd
    clock = Clock()
    healthy = True
    dog = Watchdog(Notifier(path), lambda: healthy, 60.0, clock=clock)
    assert dog.period == 30.0

    assert dog.check() is True
    assert fake.receive() == {"WATCHDOG": "1"}

    healthy = False  # e.g. the DB stopped answering
    with caplog.at_level(logging.INFO, logger="aggregator"):
        assert dog.check() is False
        assert dog.check() is False
    assert [r.getMessage() for r in caplog.records] == [
        "watchdog: not pinging systemd: health check failed"
    ]
    assert caplog.records[0].levelno == logging.ERROR
    healthy = True

    clock.now += 61  # the scheduler stopped calling beat()
    assert dog.problem() == "scheduler silent for 61s"
    assert dog.check() is False
    dog.beat()
    assert dog.check() is True

    with dog.busy("update pass", limit=300):
        clock.now += 200
        dog.beat()
        dog.progress()
        clock.now += 200  # 400 s into the pass, 200 s since the last feed: fine
        dog.beat()
        assert dog.check() is True
        clock.now += 101
        dog.beat()  # the scheduler lives on, but the pass is stuck
        assert dog.problem() == "update pass made no progress for 301s"
        assert dog.check() is False
    assert dog.check() is True  # the pass ended

    def broken() -> bool:
        raise RuntimeError("database is locked")

    dog.is_healthy = broken
    assert dog.problem() == "health check raised RuntimeError: database is locked"

    dog.notifier.close()
    # exactly one datagram per check() that returned True above
    assert fake.drain(0.2) == [{"WATCHDOG": "1"}] * 3


def test_busy_summaries_do_not_hide_a_hung_update_pass() -> None:
    clock = Clock()
    dog = Watchdog(Notifier(None, environ={}), lambda: True, 60.0, clock=clock)
    with dog.busy("update pass", limit=60), dog.busy("summaries", limit=60):
        for _ in range(4):
            clock.now += 20
            dog.beat()
            dog.progress("summaries")  # summaries move on, the pass doesn't
        assert dog.problem() == "update pass made no progress for 80s"
        dog.progress("update pass")
        assert dog.problem() is None


def test_watchdog_thread_stops_pinging_when_unhealthy(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    healthy = threading.Event()
    healthy.set()
    dog = Watchdog(Notifier(path), healthy.is_set, interval=0.4)  # pings every 0.2 s
    stop_beats = threading.Event()

    def scheduler_loop() -> None:
        while not stop_beats.wait(0.05):
            dog.beat()

    beater = threading.Thread(target=scheduler_loop)
    beater.start()
    dog.start()
    try:
        assert len(fake.drain(0.7)) >= 2

        healthy.clear()
        fake.drain(0.25)  # a ping already on its way may still land
        assert fake.drain(0.8) == []

        healthy.set()
        assert fake.receive(timeout=1.0) == {"WATCHDOG": "1"}

        stop_beats.set()  # a hung scheduler: no more beat()
        beater.join()
        fake.drain(0.5)
        assert fake.drain(0.8) == []
    finally:
        stop_beats.set()
        beater.join()
        dog.stop()
        dog.notifier.close()


def test_watchdog_rejects_nonpositive_interval() -> None:
    with pytest.raises(ValueError):
        Watchdog(Notifier(environ={}), lambda: True, 0)
