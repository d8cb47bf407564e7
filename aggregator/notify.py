"""Tell systemd how the daemon is doing (sd_notify), without a compiled library.

systemd hands a Type=notify service the address of a datagram socket in
$NOTIFY_SOCKET; each datagram is a few ``KEY=VALUE`` lines (READY=1,
RELOADING=1, STOPPING=1, STATUS=..., WATCHDOG=1). Outside systemd the variable
is unset and every call here does nothing, so the daemon calls them
unconditionally.

The watchdog is only worth having if WATCHDOG=1 means "really working": a
thread that pings on a timer no matter what would keep a hung daemon alive.
``Watchdog`` therefore pings only while (1) the scheduler keeps calling
``beat()``, (2) no update pass has gone without ``progress()`` for longer than
its limit and (3) the caller's health check (e.g. the DB answers ``select 1``)
passes. When any of them fails it stops pinging, systemd kills the service
after WatchdogSec= and Restart=on-failure starts it again.

Wiring it in the daemon::

    notifier = Notifier()
    interval = watchdog_interval()          # None outside systemd / no WatchdogSec=
    if interval:
        dog = Watchdog(notifier, store_is_healthy, interval)
        scheduler.add_job(dog.beat, "interval", seconds=dog.period)
        dog.start()
    ...                                     # in the update job:
    with dog.busy("update pass", limit=900):
        run_pass(on_feed_done=lambda *_: dog.progress())
    notifier.ready("next update 12:30; 42 feeds, 0 failing")
    ...                                     # on SIGHUP:
    notifier.reloading(); reload(); notifier.ready()
    ...                                     # on SIGTERM:
    notifier.stopping(); dog.stop()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

log = logging.getLogger("aggregator.notify")

__all__ = ["Notifier", "Watchdog", "monotonic_usec", "watchdog_interval"]


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares RELOADING=1 against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(value: str) -> str | bytes | None:
    """$NOTIFY_SOCKET as an AF_UNIX address: a path, or '@name' for the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None  # e.g. vsock:... (VMs): not supported, stay silent


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


def _clean(value: str) -> str:
    """One line: a newline inside a value would start a new KEY= assignment."""
    return " ".join(value.split())


class Notifier:
    """Sends sd_notify messages; a silent no-op when $NOTIFY_SOCKET is unset.

    Sending never raises: a notification that can't be delivered is logged at
    debug level and reported by the ``False`` return, it must not stop the daemon.
    """

    def __init__(
        self, socket_path: str | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        raw = socket_path if socket_path is not None else env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            log.debug("NOTIFY_SOCKET=%s is not a unix socket address; notifications off", raw)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens."""
        return self._address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of KEY=VALUE lines; True when it was delivered."""
        if self._address is None:
            return False
        message = "".join(f"{key}={_clean(str(value))}\n" for key, value in fields.items())
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(message.encode(), self._address)
            except OSError as e:
                log.debug("sd_notify %r failed: %s", message, e)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup or reload finished: systemd's `start`/`reload` returns now."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def reloading(self) -> bool:
        """Config reload begins; send ready() when done.

        MONOTONIC_USEC is required by Type=notify-reload (systemd >= 253) and
        ignored by Type=notify.
        """
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown begins, so systemd doesn't mistake it for a crash."""
        if status is None:
            return self.send(STOPPING=1)
        return self.send(STOPPING=1, STATUS=status)

    def status(self, text: str) -> bool:
        """One line shown by `systemctl status`."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """Keep-alive for WatchdogSec=; use Watchdog rather than calling this on a timer."""
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """WatchdogSec= in seconds, or None when no watchdog applies to this process.

    $WATCHDOG_PID, when set, names the process the watchdog is meant for; a
    child that inherited the variables must not ping on its parent's behalf.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Watchdog:
    """Sends WATCHDOG=1 every ``interval / 2`` seconds, only while the daemon is healthy.

    ``interval`` is the watchdog timeout (``watchdog_interval()``). Healthy means:
    ``beat()`` was called less than ``interval`` ago (the scheduler is alive: call
    it from a scheduler job every ``period`` seconds); no ``busy()`` section has
    gone without ``progress()`` for longer than its limit (a hung update pass);
    and ``is_healthy()`` returns True (an exception counts as False).
    """

    def __init__(
        self,
        notifier: Notifier,
        is_healthy: Callable[[], bool],
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("watchdog interval must be positive")
        self.notifier = notifier
        self.is_healthy = is_healthy
        self.interval = interval
        self.period = interval / 2
        self._clock = clock
        self._lock = threading.Lock()
        self._last_beat = clock()
        self._busy: dict[
            int, tuple[str, float, float]
        ] = {}  # token -> (what, limit, last progress)
        self._next_token = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_problem: str | None = None

    def beat(self) -> None:
        """The scheduler loop is alive."""
        with self._lock:
            self._last_beat = self._clock()

    @contextmanager
    def busy(self, what: str, limit: float) -> Iterator[None]:
        """Mark long work; the daemon counts as hung if it goes ``limit`` s without progress()."""
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._busy[token] = (what, limit, self._clock())
        try:
            yield
        finally:
            with self._lock:
                del self._busy[token]

    def progress(self, what: str | None = None) -> None:
        """The busy work named ``what`` (all of it when None) moved on, e.g. one more
        feed done: restart its limit. Naming it keeps a busy summaries job from
        hiding a hung update pass."""
        with self._lock:
            now = self._clock()
            self._busy = {
                t: (w, limit, now if what is None or w == what else last)
                for t, (w, limit, last) in self._busy.items()
            }

    def problem(self) -> str | None:
        """Why the daemon is unhealthy right now, or None when it is fine."""
        with self._lock:
            now = self._clock()
            age = now - self._last_beat
            stalled = [
                (what, now - last)
                for what, limit, last in self._busy.values()
                if now - last > limit
            ]
        if age >= self.interval:
            return f"scheduler silent for {_seconds(age)}"
        if stalled:
            what, idle = stalled[0]
            return f"{what} made no progress for {_seconds(idle)}"
        try:
            healthy = bool(self.is_healthy())
        except Exception as e:  # the check itself failing means unhealthy
            return f"health check raised {type(e).__name__}: {e}"
        return None if healthy else "health check failed"

    def check(self) -> bool:
        """Ping systemd if healthy; log once when health changes. True when pinged."""
        problem = self.problem()
        # "... for 3.0s", "... for 4.0s": the same problem, growing; log it once
        kind = problem.rsplit(" for ", 1)[0] if problem else None
        if kind != self._last_problem:
            if problem is None:
                log.info("watchdog: healthy again, pinging systemd")
            else:
                log.error("watchdog: not pinging systemd: %s", problem)
            self._last_problem = kind
        if problem is not None:
            return False
        return self.notifier.watchdog()

    def start(self) -> None:
        """Ping now and then every ``period`` seconds from a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="aggregator-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # a bug here must not kill the thread silently
                log.exception("watchdog check crashed")
            if self._stop.wait(self.period):
                return
