"""The daemon's life cycle, end to end: `python -m aggregator ... run` as a child
process, a real AF_UNIX datagram socket standing in for systemd ($NOTIFY_SOCKET),
the local feed farm (bench/farm.py) or a server that never answers on 127.0.0.1,
real SQLite files checked after the fact.

What systemd and a person at a terminal see: READY=1 only once the page is
served, STATUS= lines, WATCHDOG=1 only while the work moves, RELOADING=1/READY=1
around SIGHUP, STOPPING=1 and a clean exit 0 on SIGTERM/SIGINT within the unit's
TimeoutStopSec=10, with the database intact.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from bench.farm import Farm

ROOT = Path(__file__).resolve().parents[1]
STATUS = re.compile(
    r"(?P<feeds>\d+) feeds, (?P<items>\d+) items, last update (?:never|\d\d:\d\d UTC), "
    r"(?P<failing>\d+) failing; serving (?P<url>http://127\.0\.0\.1:\d+/)"
)
STOP_LIMIT = 10.0  # TimeoutStopSec= in systemd/aggregator.service
WATCHDOG_USEC = 2_000_000
TIMINGS: dict[str, float] = {}  # shutdown seconds, printed at the end of the module


# --- the systemd end ------------------------------------------------------------------


class Systemd:
    """The receiving end of $NOTIFY_SOCKET: every datagram with its arrival time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode()
            assert text.endswith("\n"), text
            msg = dict(line.split("=", 1) for line in text.splitlines())
            with self.cond:
                self.messages.append((time.monotonic(), msg))
                self.cond.notify_all()

    def wait_for(self, pred: Callable[[dict[str, str]], bool], timeout: float = 15.0,
                 start: int = 0) -> tuple[int, float, dict[str, str]]:
        """The first message at index >= start that satisfies pred: (index, time, message)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.messages)):
                    t, msg = self.messages[i]
                    if pred(msg):
                        return i, t, msg
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [m for _, m in self.messages[start:]]
                    raise AssertionError(f"no such message within {timeout} s; got {seen}")
                self.cond.wait(left)

    def times(self, key: str, since: float = 0.0) -> list[float]:
        with self.cond:
            return [t for t, m in self.messages if key in m and t >= since]

    def count(self) -> int:
        with self.cond:
            return len(self.messages)

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._thread.join(1)


def _status(key: str = "STATUS", **want: int) -> Callable[[dict[str, str]], bool]:
    """A predicate: a STATUS= line showing at least the given counts."""
    def pred(msg: dict[str, str]) -> bool:
        m = STATUS.search(msg.get(key, ""))
        return bool(m) and all(int(m[k]) >= v for k, v in want.items())
    return pred


# --- the daemon as a child process --------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    systemd: Systemd
    db: Path
    feeds: Path
    output: Path
    log: Path
    env: dict[str, str]
    url: str = ""
    ready_at: float = 0.0
    stopped_in: float = field(default=0.0)

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> dict[str, str]:
        try:
            _, self.ready_at, msg = self.systemd.wait_for(lambda m: m.get("READY") == "1",
                                                          timeout)
        except AssertionError:
            raise AssertionError(f"no READY=1; exit {self.proc.poll()}; stderr:\n"
                                 + self.stderr()) from None
        m = STATUS.search(msg.get("STATUS", ""))
        assert m, msg
        self.url = m["url"]
        return msg

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_LIMIT + 5) -> int:
        """Send `sig`, wait for the exit; returns the exit code, sets stopped_in."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout} s after {sig!r}; stderr:\n"
                                 + self.stderr()) from None
        self.stopped_in = time.monotonic() - started
        return code

    def db_rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """A query from another process, the way a person would look at the file."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(sql, args).fetchall()


def _clean_env() -> dict[str, str]:
    drop = ("AGGREGATOR_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "LISTEN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="agg-d-"))
    yield d
    shutil.rmtree(d)


@pytest.fixture
def start(tmp_path: Path, sock_dir: Path) -> Iterator[Callable[..., Running]]:
    """start(feeds_opml, watchdog=False, watchdog_pid=None|"self"|int, **AGGREGATOR_env)."""
    running: list[Running] = []

    def _start(feeds: Path, *, watchdog: bool = False, watchdog_pid: object = None,
               **settings: object) -> Running:
        n = len(running)
        notify = str(sock_dir / f"notify{n}")
        env = _clean_env()
        env.update({"NOTIFY_SOCKET": notify, "AGGREGATOR_PORT": "0",
                    "AGGREGATOR_FETCH_ARTICLES": "false", "AGGREGATOR_SUMMARIES": "false"})
        env.update({f"AGGREGATOR_{k.upper()}": str(v) for k, v in settings.items()})
        if watchdog:
            env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
        argv = [sys.executable, "-m", "aggregator", "--feeds", str(feeds),
                "--db", str(tmp_path / f"agg{n}.db"), "--output", str(tmp_path / f"public{n}"),
                "run"]
        if watchdog_pid == "self":  # the pid of the very process systemd started
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"',
                    "sh", *argv]
        elif watchdog_pid is not None:
            env["WATCHDOG_PID"] = str(watchdog_pid)
        log = tmp_path / f"stderr{n}.txt"
        systemd = Systemd(notify)
        with open(log, "wb") as err, open(tmp_path / f"stdout{n}.txt", "wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL)
        r = Running(proc, systemd, tmp_path / f"agg{n}.db", feeds, tmp_path / f"public{n}",
                    log, env)
        running.append(r)
        return r

    yield _start
    for r in running:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(5)
        r.systemd.close()


@pytest.fixture
def farm() -> Iterator[Farm]:
    with Farm(3, 5).serve() as f:
        yield f


def write_opml(path: Path, urls: list[str]) -> Path:
    outlines = "\n".join(f"<outline text={quoteattr(u)} xmlUrl={quoteattr(u)}/>" for u in urls)
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0"><head>'
                    f"<title>test</title></head><body>\n{outlines}\n</body></opml>\n",
                    encoding="utf-8")
    return path


def farm_urls(farm: Farm, indexes: range | list[int]) -> list[str]:
    return [f"{farm.base}/feed/{i}.xml" for i in indexes]


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def assert_clean_exit(d: Running, code: int, what: str) -> None:
    err = d.stderr()
    assert code == 0, f"exit {code}; stderr:\n{err}"
    assert d.stopped_in < STOP_LIMIT, f"took {d.stopped_in:.1f} s"
    assert "Traceback" not in err, err
    assert "ERROR" not in err, err
    d.systemd.wait_for(lambda m: m.get("STOPPING") == "1", timeout=1)
    with sqlite3.connect(d.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    TIMINGS[what] = d.stopped_in


@pytest.fixture(scope="module", autouse=True)
def _print_timings() -> Iterator[None]:
    yield
    if TIMINGS:
        print("\nshutdown times (s): " + ", ".join(f"{k} {v:.2f}" for k, v in TIMINGS.items()))


# --- start, status, watchdog, stop ---------------------------------------------------------


@pytest.mark.parametrize(("sig", "watchdog_pid"), [(signal.SIGTERM, "self"),
                                                   (signal.SIGINT, None)],
                         ids=["SIGTERM-WATCHDOG_PID=self", "SIGINT-no-WATCHDOG_PID"])
def test_ready_status_watchdog_and_clean_stop(start: Callable[..., Running], farm: Farm,
                                              tmp_path: Path, sig: int,
                                              watchdog_pid: object) -> None:
    d = start(write_opml(tmp_path / "feeds.opml", farm_urls(farm, range(3))),
              watchdog=True, watchdog_pid=watchdog_pid)
    ready = d.wait_ready()
    # READY=1 means serving: the page and the health check answer right now.
    status, body = get(d.url)
    assert status == 200 and b"<html" in body.lower()
    status, body = get(d.url + "healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    # the subscriptions were read before READY; the first pass then stores the items
    assert STATUS.search(ready["STATUS"])["feeds"] == "3"  # type: ignore[index]
    _, _, msg = d.systemd.wait_for(_status(feeds=3, items=15), timeout=10)
    assert STATUS.search(msg["STATUS"])["failing"] == "0"  # type: ignore[index]
    (title,), = d.db_rows("SELECT title FROM items ORDER BY sort_date DESC LIMIT 1")
    status, body = get(d.url)
    assert status == 200 and html.escape(str(title)).encode() in body

    # WatchdogSec=2: a ping every second, for as long as we look
    time.sleep(2.5)
    pings = d.systemd.times("WATCHDOG", since=d.ready_at)
    assert len(pings) >= 2, pings
    gaps = [b - a for a, b in zip([d.ready_at, *pings], [*pings, time.monotonic()],
                                  strict=True)]
    assert max(gaps) < 1.9, gaps  # WatchdogSec=2 would end us at 2

    assert_clean_exit(d, d.stop(sig), signal.Signals(sig).name)
    assert d.db_rows("SELECT count(*), count(DISTINCT key) FROM items") == [(15, 15)]
    assert "stopped in" in d.stderr()


def test_watchdog_pid_of_another_process_means_no_pings(start: Callable[..., Running],
                                                        farm: Farm, tmp_path: Path) -> None:
    """A child that inherited its parent's WATCHDOG_* must not ping for it."""
    d = start(write_opml(tmp_path / "feeds.opml", farm_urls(farm, range(1))),
              watchdog=True, watchdog_pid=os.getpid())
    d.wait_ready()
    time.sleep(1.5)
    assert d.systemd.times("WATCHDOG") == []
    assert_clean_exit(d, d.stop(), "SIGTERM, no watchdog")


# --- SIGHUP ------------------------------------------------------------------------------------


def test_sighup_reloads_feeds_opml_and_keeps_state(start: Callable[..., Running], farm: Farm,
                                                   tmp_path: Path) -> None:
    opml = write_opml(tmp_path / "feeds.opml", farm_urls(farm, [0, 1]))
    d = start(opml)  # default intervals: nothing is due again for half an hour
    d.wait_ready()
    d.systemd.wait_for(_status(feeds=2, items=10), timeout=10)
    before = d.db_rows("SELECT id, key, first_seen FROM items ORDER BY id")
    assert len(before) == 10

    write_opml(opml, farm_urls(farm, [0, 1, 2]))
    mark = d.systemd.count()
    sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    d.send(signal.SIGHUP)
    i, _, msg = d.systemd.wait_for(lambda m: m.get("RELOADING") == "1", timeout=5, start=mark)
    # MONOTONIC_USEC is CLOCK_MONOTONIC at the reload, as Type=notify-reload wants it
    assert sent <= int(msg["MONOTONIC_USEC"]) < sent + 5_000_000
    d.systemd.wait_for(lambda m: m.get("READY") == "1", timeout=5, start=i + 1)
    # the new feed is polled without waiting for the 30 s tick
    d.systemd.wait_for(_status(feeds=3, items=15), timeout=5, start=i + 1)

    after = d.db_rows("SELECT id, key, first_seen FROM items ORDER BY id")
    assert after[:10] == before  # same rows, same ids, same first_seen
    assert len(after) == 15 and len({k for _, k, _ in after}) == 15
    assert farm.requests["/feed/2.xml"] == 1
    # the feeds it already had were not due, so the reload did not poll them again
    assert farm.requests["/feed/0.xml"] == farm.requests["/feed/1.xml"] == 1
    assert "reloaded configuration" in d.stderr()
    assert_clean_exit(d, d.stop(), "SIGTERM after SIGHUP")


def test_sighup_during_a_pass_polls_the_new_feed_right_after_it(
        start: Callable[..., Running], tmp_path: Path) -> None:
    with Farm(3, 5, latency=1.0).serve() as slow:
        opml = write_opml(tmp_path / "feeds.opml", farm_urls(slow, [0, 1]))
        d = start(opml, per_host=1, timeout=5)  # a 2 s first pass; the next tick is 30 s away
        d.wait_ready()
        time.sleep(0.3)
        write_opml(opml, farm_urls(slow, [0, 1, 2]))
        mark = d.systemd.count()
        d.send(signal.SIGHUP)
        i, _, _ = d.systemd.wait_for(lambda m: m.get("READY") == "1", timeout=5, start=mark)
        d.systemd.wait_for(_status(feeds=3, items=15), timeout=8, start=i)
        assert slow.requests["/feed/2.xml"] == 1
        assert "maximum number of running instances" not in d.stderr()
        assert_clean_exit(d, d.stop(), "SIGTERM after SIGHUP mid-pass")


# --- the watchdog watches the work, not the clock ---------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections (the kernel does, from the backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}/feed.xml"
    s.close()


def test_hung_pass_stops_the_watchdog(start: Callable[..., Running], silent_server: str,
                                      tmp_path: Path) -> None:
    d = start(write_opml(tmp_path / "feeds.opml", [silent_server]), watchdog=True,
              timeout=600, connect_timeout=600)
    d.wait_ready()
    time.sleep(5.0)
    pings = d.systemd.times("WATCHDOG")
    now = time.monotonic()
    # pinged while the pass was young, then silent: systemd kills and restarts us
    assert pings and pings[0] - d.ready_at < 1.0, pings
    assert now - pings[-1] > 2.0, f"still pinging {now - pings[-1]:.1f} s ago"
    assert pings[-1] - d.ready_at < 3.2, pings
    # said once, not once a second
    assert d.stderr().count("watchdog: not pinging systemd: update pass made no progress") == 1
    # and the stop is still clean and quick: the fetch in flight is abandoned
    code = d.stop()
    assert_clean_exit_except_watchdog(d, code, "SIGTERM, pass hung")


def assert_clean_exit_except_watchdog(d: Running, code: int, what: str) -> None:
    """As assert_clean_exit, allowing the watchdog's own ERROR line."""
    lines = [ln for ln in d.stderr().splitlines() if "watchdog: not pinging" not in ln]
    assert code == 0, d.stderr()
    assert d.stopped_in < STOP_LIMIT
    assert not [ln for ln in lines if "ERROR" in ln or "Traceback" in ln], d.stderr()
    d.systemd.wait_for(lambda m: m.get("STOPPING") == "1", timeout=1)
    with sqlite3.connect(d.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    TIMINGS[what] = d.stopped_in


def test_slow_pass_that_progresses_keeps_the_watchdog(start: Callable[..., Running],
                                                      tmp_path: Path) -> None:
    # 8 feeds one at a time, 0.5 s each: a 4 s pass, twice the watchdog interval
    with Farm(8, 5, latency=0.5).serve() as slow:
        d = start(write_opml(tmp_path / "feeds.opml", farm_urls(slow, range(8))),
                  watchdog=True, per_host=1, timeout=5, min_interval=0.02)  # tick 1 s
        d.wait_ready()
        _, done, _ = d.systemd.wait_for(_status(feeds=8, items=40), timeout=15)
        assert done - d.ready_at > 3.5  # the pass really was slow
        pings = [d.ready_at, *d.systemd.times("WATCHDOG", since=d.ready_at), time.monotonic()]
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 1.9, gaps  # WatchdogSec=2 would end us at 2
        assert "not pinging" not in d.stderr()
        # ticks that came while the pass ran were not refused (with a warning each)
        assert "maximum number of running instances" not in d.stderr()
        assert_clean_exit(d, d.stop(), "SIGTERM after slow pass")


# --- stopping while work is in flight ------------------------------------------------------------


def test_stop_during_a_pass_keeps_whole_feeds(start: Callable[..., Running],
                                              tmp_path: Path) -> None:
    # 2 s per response, one at a time: SIGTERM lands with one feed stored, one in flight
    with Farm(4, 5, latency=2.0).serve() as slow:
        d = start(write_opml(tmp_path / "feeds.opml", farm_urls(slow, range(4))),
                  per_host=1, timeout=10)
        d.wait_ready()
        deadline = time.monotonic() + 10
        while d.db_rows("SELECT count(*) FROM items") == [(0,)]:
            assert time.monotonic() < deadline, d.stderr()
            time.sleep(0.05)
        assert_clean_exit(d, d.stop(), "SIGTERM, response in flight")
    assert d.stopped_in < 2.0  # it did not wait for the 2 s response
    per_feed = d.db_rows("SELECT f.url, count(i.id), f.last_fetch IS NOT NULL FROM feeds f "
                         "LEFT JOIN items i ON i.feed_id = f.id GROUP BY f.id")
    assert len(per_feed) == 4
    # each feed all or nothing: every fetched feed has all 5 items, the others none
    assert all((n, fetched) in {(5, 1), (0, 0)} for _, n, fetched in per_feed), per_feed
    assert 1 <= sum(fetched for *_, fetched in per_feed) < 4, per_feed


@pytest.mark.parametrize("second", [True, False], ids=["second-SIGTERM", "one-SIGTERM"])
def test_stop_while_another_process_locks_the_database(start: Callable[..., Running],
                                                       farm: Farm, tmp_path: Path,
                                                       second: bool) -> None:
    """A pass stuck on a locked database: one SIGTERM still ends us within
    TimeoutStopSec=, exit 0; a second one ends us at once."""
    d = start(write_opml(tmp_path / "feeds.opml", farm_urls(farm, range(2))))
    d.wait_ready()
    d.systemd.wait_for(_status(items=10), timeout=10)
    lock = sqlite3.connect(d.db, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the write lock, held
        mark = d.systemd.count()
        d.send(signal.SIGHUP)  # the reload starts a pass, which waits for the lock
        d.systemd.wait_for(lambda m: m.get("READY") == "1", timeout=5, start=mark)
        time.sleep(0.5)
        first = time.monotonic()
        d.send(signal.SIGTERM)
        d.systemd.wait_for(lambda m: m.get("STOPPING") == "1", timeout=2, start=mark)
        if second:
            time.sleep(1.0)
            assert d.proc.poll() is None  # a slow shutdown: still waiting for the pass
            code = d.stop(signal.SIGTERM)
            assert code != 0
            assert d.stopped_in < 1.0, d.stopped_in
            assert "second stop signal" in d.stderr()
            TIMINGS["second SIGTERM"] = d.stopped_in
        else:
            code = d.proc.wait(STOP_LIMIT + 5)
            d.stopped_in = time.monotonic() - first
            assert code == 0, d.stderr()
            assert d.stopped_in < STOP_LIMIT - 2, d.stopped_in
            assert "without waiting for the update pass" in d.stderr()
            TIMINGS["SIGTERM, database locked"] = d.stopped_in
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert "Traceback" not in d.stderr()
    with sqlite3.connect(d.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (10,)


# --- `make run` with no network ----------------------------------------------------------------


def test_no_network_every_feed_fails_and_ctrl_c_stops(start: Callable[..., Running],
                                                      tmp_path: Path) -> None:
    # .invalid never resolves (RFC 6761): no request leaves the machine
    urls = ["http://feeds.invalid/rss.xml", "https://news.invalid/atom",
            "http://blog.invalid/feed"]
    d = start(write_opml(tmp_path / "feeds.opml", urls))
    d.wait_ready()
    d.systemd.wait_for(_status(feeds=3, failing=3), timeout=10)
    # the page is there for the person who ran `make run`, and says nothing is wrong yet
    status, body = get(d.url)
    assert status == 200 and b"<html" in body.lower()
    status, body = get(d.url + "healthz")
    assert status == 200 and json.loads(body)["detail"] == "no successful update yet"
    # `aggregator feeds` beside the running daemon shows every feed in error
    shown = subprocess.run(
        [sys.executable, "-m", "aggregator", "--feeds", str(d.feeds), "--db", str(d.db),
         "feeds"], env=d.env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    for url in urls:
        line = next(ln for ln in shown.stdout.splitlines() if f"<{url}>" in ln)
        assert line.startswith("error "), shown.stdout
    hosts = re.findall(r"last error: .*cannot resolve ([\w.]+)", shown.stdout)
    assert sorted(hosts) == ["blog.invalid", "feeds.invalid", "news.invalid"], shown.stdout
    out = (tmp_path / "stdout0.txt").read_text()
    assert f"serving {d.url}" in out and "Ctrl-C stops" in out
    code = d.stop(signal.SIGINT)  # Ctrl-C
    assert code == 0, d.stderr()
    assert d.stopped_in < STOP_LIMIT
    assert "Traceback" not in d.stderr()
    TIMINGS["SIGINT, no network"] = d.stopped_in


# --- summaries don't hold up polling -------------------------------------------------------------


def test_polling_stays_on_time_while_summaries_are_worked_off(
        start: Callable[..., Running], tmp_path: Path) -> None:
    pytest.importorskip("aggregator.summarize", reason="aggregator/summarize.py absent")
    feeds = 12
    # every item's text is a teaser, so each summary first fetches its article page
    with Farm(feeds, 25, latency=0.05).serve() as f:
        d = start(write_opml(tmp_path / "feeds.opml", farm_urls(f, range(feeds))),
                  summaries="true", fetch_articles="true",
                  interval=0.03, min_interval=0.02)  # feeds due every ~2 s, tick 1 s
        d.wait_ready()
        _, stored, _ = d.systemd.wait_for(_status(items=feeds * 25), timeout=10)
        polled: list[tuple[float, int, int]] = []  # (time, fewest polls of a feed, pending)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            fewest = min(f.requests[f"/feed/{i}.xml"] for i in range(feeds))
            (pending,), = d.db_rows(
                "SELECT count(*) FROM items WHERE summary_hash IS NULL")
            polled.append((time.monotonic(), fewest, pending))
            if fewest >= 3:
                break
            time.sleep(0.1)
        assert polled[-1][1] >= 3, polled[-1]
        # on time: every feed polled twice more within two intervals (1.8 s + 10 % jitter)
        # and two ticks (1 s) of the first pass, plus slack for a busy machine
        took = polled[-1][0] - stored
        print(f"two more polls of every feed {took:.1f} s after the first pass")
        assert took < 2 * (2.0 + 1.0) + 2.0, took
        # two more polls of every feed happened while the backlog was still there
        assert polled[-1][2] > 0, "the backlog was gone before the second re-poll"
        assert polled[0][2] > polled[-1][2], "no summary was written meanwhile"
        articles = sum(n for p, n in f.requests.items() if p.startswith("/article/"))
        assert articles > 0
        assert_clean_exit(d, d.stop(), "SIGTERM, summaries backlog")


# --- /healthz after a restart ------------------------------------------------------------------


def test_healthz_starts_from_the_databases_last_success(tmp_path: Path) -> None:
    """A restarted daemon reports the last success the database holds, as `aggregator
    serve`'s /healthz does, not "no successful update yet" until its first pass ends."""
    from datetime import UTC, datetime, timedelta

    from aggregator.config import Settings
    from aggregator.daemon import Daemon
    from aggregator.store import Store
    from aggregator.types import Subscription

    settings = Settings(db=tmp_path / "agg.db", feeds=tmp_path / "feeds.opml",
                        output=tmp_path / "public", serve=False)  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)

    def health() -> tuple[bool, str]:
        d = Daemon(settings)
        try:
            return d.health()
        finally:
            d.fetcher.close()
            d.store.close()

    with Store(settings.db) as store:
        store.sync_subscriptions([Subscription(url="http://127.0.0.1:9/a.xml"),
                                  Subscription(url="http://127.0.0.1:9/b.xml")], now)
        ids = [f.id for f in store.feeds()]
    assert health() == (True, "no successful update yet")
    then = now - timedelta(hours=1)
    with Store(settings.db) as store:
        store.record_not_modified_many([(ids[0], then - timedelta(hours=1), 304, now, {}),
                                        (ids[1], then, 304, now, {})])
    assert health() == (True, f"last successful update {then.isoformat(timespec='seconds')}")
