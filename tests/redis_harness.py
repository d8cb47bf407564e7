"""The real parts of distributed mode, for tests/test_distributed*.py.

- ``Redis``: a real ``redis-server`` on a free 127.0.0.1 port (never 6379), no RDB
  snapshots, the append-only file on and synced on every write, in its own
  directory. ``kill9()`` then ``restart()`` brings it back on the same port with
  the same directory (the work queued survives) or ``restart(empty=True)`` with
  an empty one (everything in the broker lost).
- ``Cluster``: one config file, database, feeds.opml and output directory, and
  the ``aggregator coordinator`` / ``aggregator worker`` child processes started
  against that Redis; each logs to its own file (never an unread pipe) and is
  killed at teardown. ``Proc.children()`` finds a worker's prefork children
  (psutil) for a ``kill -9`` of one child.
- ``TestFarm``: the feeds and article pages of bench/farm.py, served by our own
  handler on 127.0.0.1 (or spread over several loopback addresses), counting the
  requests per path, and able to hold a request open (a "mid-fetch" kill), to
  answer late (slower than the broker's visibility timeout), or to kill the
  process that made the request (a task that kills its worker every time).
- ``wait_until``: poll a condition until a deadline; on failure the logs of the
  processes involved are in the message. No timed assertions: only deadlines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from bench.farm import Farm, _bind_all

ROOT = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
HOLD_LIMIT = 120.0  # s a held request waits at most (the farm's threads must end)


# --- waiting ----------------------------------------------------------------------------


def wait_until(pred: Callable[[], Any], timeout: float, what: str, *,
               logs: Iterable[Proc] = (), every: float = 0.1) -> Any:
    """``pred()`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds naming ``what`` with the tail of every log in ``logs``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(p.tail() for p in logs)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{tails}")
        time.sleep(every)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    if port == 6379:  # never the machine's own Redis port
        return free_port(host)
    return port


# --- Redis ------------------------------------------------------------------------------


class Redis:
    """A redis-server of our own. ``url`` names database 0 on its port."""

    def __init__(self, base: Path) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install "
                               "redis-server; .ci/run installs it)")
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.generation = 0
        self.dir = self._new_dir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _new_dir(self) -> Path:
        self.generation += 1
        d = self.base / f"data{self.generation}"
        d.mkdir()
        return d

    @property
    def log(self) -> Path:
        return self.base / "redis.log"

    def start(self) -> Redis:
        argv = [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(self.dir), "--logfile", str(self.log), "--daemonize", "no"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"redis-server did not answer PING on {self.port} "
                                   f"(exit {self.proc.poll()}):\n{log[-3000:]}")
            time.sleep(0.05)
        return self

    def _ping(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def kill9(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to the clients."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def restart(self, *, empty: bool = False) -> Redis:
        """Start again on the same port: with the same directory (its append-only
        file replays what was queued) or, ``empty``, a fresh one."""
        if self.proc is not None:
            self.kill9()
        if empty:
            self.dir = self._new_dir()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    # a small RESP client: enough for PING, LLEN, KEYS and the like
    def command(self, *args: str) -> Any:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = f"*{len(args)}\r\n" + "".join(
                f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            s.sendall(out.encode())
            reader = s.makefile("rb")
            return _read_reply(reader)

    def queued(self, prefix: str = "aggregator.") -> dict[str, int]:
        """Messages waiting in each list whose name starts with ``prefix`` (kombu
        keeps a queue as a Redis list named after it), and ``unacked``: delivered,
        not yet acknowledged."""
        out: dict[str, int] = {}
        for key in self.command("KEYS", f"{prefix}*") or []:
            if self.command("TYPE", key) == "list":
                out[key] = int(self.command("LLEN", key))
        out["unacked"] = int(self.command("HLEN", "unacked") or 0)
        return out


def redis_server(tmp_path: Path) -> Iterator[str]:
    """A fixture body: a redis-server of our own for one test, its URL (the
    tests that need no kill or restart use this)."""
    import pytest

    pytest.importorskip("celery", reason="the distributed extra is not installed")
    server = Redis(tmp_path / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


def _read_reply(reader: Any) -> Any:
    line = reader.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = reader.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(reader) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")


# --- child processes --------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The machine's environment without AGGREGATOR_*/systemd variables, our
    checkout first on the path (so the children import this worktree's code)."""
    drop = ("AGGREGATOR_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "LISTEN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() \
            else ""

    def tail(self, n: int = 4000) -> str:
        return f"--- {self.name} (pid {self.pid}, exit {self.proc.poll()}) {self.log}:\n" \
            + self.text()[-n:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill9(self) -> None:
        """kill -9 of the main process and every child (a whole worker)."""
        kids = self.children()
        for p in [psutil.Process(self.pid), *kids] if self.alive() else kids:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(10)
        psutil.wait_procs(kids, timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running {timeout} s after {sig!r}\n"
                                 + self.tail()) from None


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a TOML basic string


# Settings of every test cluster: short leases and visibility timeout, a fast
# dispatch tick (min_interval 0.1 min -> the daemon looks every 1.5 s), nothing
# served, no jitter, tasks and results signed.
BASE_SETTINGS: dict[str, Any] = {
    "interval": 30, "min_interval": 0.1, "jitter": 0.0, "serve": False, "port": 0,
    "connect_timeout": 5.0, "timeout": 20.0, "per_host": 20, "workers": 8,
    "fetch_articles": False, "summaries": False, "stories": False,
    "lease_seconds": 30, "visibility_timeout": 6, "max_in_flight": 200,
    # the coordinator and every worker read the same file: the suite runs signed
    "task_key": "test-cluster-key-\u00e9-0123456789",
}


class Cluster:
    """A database, feeds.opml, output directory and config file in ``base``, and
    the aggregator processes run against them and ``redis``."""

    def __init__(self, base: Path, redis: Redis | None, **settings: Any) -> None:
        self.base = base
        self.redis = redis
        self.db = base / "agg.db"
        self.feeds = base / "feeds.opml"
        self.output = base / "public"
        self.config = base / "aggregator.toml"
        self.settings = {**BASE_SETTINGS, **settings}
        self.procs: list[Proc] = []
        self.write_config()

    def write_config(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.config.write_text("".join(f"{k} = {toml_value(v)}\n"
                                       for k, v in self.settings.items()), encoding="utf-8")

    def write_opml(self, urls: Sequence[str]) -> None:
        from xml.sax.saxutils import quoteattr

        outlines = "\n".join(f"<outline text={quoteattr(u)} xmlUrl={quoteattr(u)}/>"
                             for u in urls)
        self.feeds.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">'
                              f"<head><title>test</title></head><body>\n{outlines}\n"
                              "</body></opml>\n", encoding="utf-8")

    def _global(self) -> list[str]:
        return [sys.executable, "-m", "aggregator", "--config", str(self.config),
                "--db", str(self.db), "--feeds", str(self.feeds), "--output", str(self.output)]

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log = self.base / f"{name}.{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*self._global(), *args], env=child_env(**(env or {})),
                                    cwd=self.base, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        p = Proc(name, proc, log)
        self.procs.append(p)
        return p

    def coordinator(self, **env: str) -> Proc:
        assert self.redis is not None
        return self.spawn("coordinator", ["coordinator", "--broker", self.redis.url], env)

    def worker(self, role: str, concurrency: int = 2, **env: str) -> Proc:
        assert self.redis is not None
        return self.spawn(f"worker-{role}", ["worker", "--broker", self.redis.url, "--role",
                                             role, "--concurrency", str(concurrency)], env)

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """A one-shot command (``update --all``, ``publish``), to completion."""
        log = self.base / f"run.{len(self.procs)}.log"
        with open(log, "wb") as out:
            done = subprocess.run([*self._global(), *args], env=child_env(), cwd=self.base,
                                  stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        text = log.read_text(errors="replace")
        assert done.returncode == 0, f"{args} exit {done.returncode}:\n{text[-4000:]}"
        return subprocess.CompletedProcess(done.args, done.returncode, text, "")

    def wait_workers_ready(self, *workers: Proc, timeout: float = 60.0) -> None:
        """The worker logs "worker poll@host ready: ..." once it consumes its queue."""
        for w in workers:
            wait_until(lambda w=w: " ready: queue " in w.text() or not w.alive(), timeout,
                       f"{w.name} ready", logs=[w])
            assert w.alive(), w.tail()

    def logs(self) -> list[Proc]:
        return list(self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.alive() or p.children():
                try:
                    p.kill9()
                except (psutil.Error, subprocess.TimeoutExpired):
                    pass

    # --- the SQLite file, read as a user would --------------------------------------

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, args)]
        except sqlite3.OperationalError as e:  # no such table yet: not migrated
            if "no such table" in str(e):
                return []
            raise
        finally:
            conn.close()

    def scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        found = self.rows(sql, args)
        return next(iter(found[0].values())) if found else None

    def duplicates(self) -> list[dict[str, Any]]:
        return self.rows("SELECT feed_id, key, count(*) AS n FROM items "
                         "GROUP BY feed_id, key HAVING count(*) > 1")

    def item_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM items") or 0)

    def keys_by_url(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in self.rows("SELECT f.url, i.key FROM items i JOIN feeds f ON f.id = i.feed_id"):
            out.setdefault(r["url"], set()).add(r["key"])
        return out


# --- the farm ---------------------------------------------------------------------------


@dataclass
class _Rule:
    kind: str  # "hold" | "delay" | "kill"
    times: int | None  # how many requests it applies to (None: all)
    seconds: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)


class TestFarm:
    """bench/farm.py's feeds and article pages, with our own handler: per-path
    request counts, and rules per path (``hold``, ``delay``, ``kill_client``)."""

    __test__ = False  # not a pytest class

    def __init__(self, feeds: int, items: int, *, hosts: int = 1) -> None:
        self.data = Farm(feeds, items, hosts=hosts)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.requests: Counter[str] = Counter()
        self.arrived: Counter[str] = Counter()  # requests that reached a rule
        self.killed: list[tuple[str, int]] = []  # (path, pid) of killed clients
        self.client_pids: dict[str, list[int]] = {}
        self.rules: dict[str, _Rule] = {}
        self.servers: list[ThreadingHTTPServer] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # what it serves
    @property
    def port(self) -> int:
        return self.data.port

    def urls(self) -> list[str]:
        return self.data.urls()

    def feed_path(self, index: int) -> str:
        return f"/feed/{index}.xml"

    def guids(self, index: int) -> set[str]:
        return {f"farm-{index}-{serial}" for _, serial in self.data.feeds[index].items}

    def article_paths(self, index: int) -> list[str]:
        return [f"/article/{index}/{serial}.html" for _, serial in self.data.feeds[index].items]

    def expected_keys(self) -> dict[str, set[str]]:
        return {url: self.guids(i) for i, url in enumerate(self.urls())}

    @property
    def total_items(self) -> int:
        return sum(len(f.items) for f in self.data.feeds)

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests[path]

    def feed_requests(self) -> dict[int, int]:
        with self.lock:
            return {i: self.requests[self.feed_path(i)] for i in range(len(self.data.feeds))}

    # rules
    def hold(self, path: str, times: int = 1) -> _Rule:
        """The first ``times`` requests for ``path`` wait (their connection open)
        until ``release()`` or HOLD_LIMIT."""
        rule = self.rules[path] = _Rule("hold", times)
        return rule

    def release(self, path: str) -> None:
        self.rules[path].release.set()

    def delay(self, path: str, seconds: float, times: int | None = 1) -> None:
        self.rules[path] = _Rule("delay", times, seconds)

    def kill_client(self, path: str) -> None:
        """Every request for ``path`` kills (SIGKILL) the process that sent it:
        a task that kills its worker child every time."""
        self.rules[path] = _Rule("kill", None)

    def wait_arrived(self, path: str, n: int = 1, timeout: float = 60.0,
                     logs: Iterable[Proc] = ()) -> None:
        wait_until(lambda: self.arrived[path] >= n, timeout,
                   f"{n} request(s) for {path} (got {self.arrived[path]})", logs=logs)

    # serving
    def serve(self) -> TestFarm:
        farm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except OSError:  # a client killed mid-request (as some tests want)
                    self.close_connection = True

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with farm.lock:
                    farm.requests[path] += 1
                    rule = farm.rules.get(path)
                    if rule is not None and rule.times is not None:
                        if rule.times <= 0:
                            rule = None
                        else:
                            rule.times -= 1
                if rule is not None:
                    pid = _client_pid(self.client_address, self.server.server_address)
                    with farm.cond:
                        farm.arrived[path] += 1
                        farm.client_pids.setdefault(path, []).append(pid or 0)
                        farm.cond.notify_all()
                    if rule.kind == "hold":
                        rule.release.wait(HOLD_LIMIT)
                    elif rule.kind == "delay":
                        time.sleep(rule.seconds)
                    elif rule.kind == "kill":
                        if pid:
                            with farm.lock:
                                farm.killed.append((path, pid))
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                        self.close_connection = True
                        return
                self._answer(path)

            def _answer(self, path: str) -> None:
                data = farm.data
                if path.startswith("/feed/") and path.endswith(".xml"):
                    try:
                        feed = data.feeds[int(path[6:-4])]
                    except (ValueError, IndexError):
                        return self._send(404, b"no such feed", "text/plain")
                    with data.lock:
                        body, etag, modified = feed.body, feed.etag, feed.modified
                    if self.headers.get("If-None-Match") == etag:
                        return self._send(304, b"", None, etag, modified)
                    return self._send(200, body, "application/rss+xml", etag, modified)
                if path.startswith("/article/"):
                    try:
                        f, s = path[9:].removesuffix(".html").split("/")
                        page = data.article_page(int(f), int(s))
                    except ValueError:
                        page = None
                    if page is None:
                        return self._send(404, b"no such article", "text/plain")
                    return self._send(200, page, "text/html; charset=utf-8")
                self._send(404, b"not found", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str | None,
                      etag: str | None = None, modified: str | None = None) -> None:
                try:
                    self.send_response(status)
                    if ctype:
                        self.send_header("Content-Type", ctype)
                    if etag:
                        self.send_header("ETag", etag)
                    if modified:
                        self.send_header("Last-Modified", modified)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if status != 304:
                        self.wfile.write(body)
                except OSError:
                    self.close_connection = True  # the client died (as some tests want)

        from bench.farm import host_of

        addresses = ["127.0.0.1"] + sorted(
            {host_of(i, self.data.hosts) for i in range(self.data.n_feeds)} - {"127.0.0.1"})
        self.servers = _bind_all(addresses, 0, Handler)
        self.data.port = self.servers[0].server_address[1]
        with self.data.lock:
            for feed in self.data.feeds:
                self.data._render(feed)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="testfarm")
        self._thread.start()
        return self

    def _serve(self) -> None:
        import selectors

        with selectors.DefaultSelector() as sel:
            for srv in self.servers:
                sel.register(srv, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    key.fileobj._handle_request_noblock()  # type: ignore[union-attr]

    def stop(self) -> None:
        for rule in self.rules.values():
            rule.release.set()
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for srv in self.servers:
            srv.server_close()


def _client_pid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The local process at the other end of this connection (ours: same machine)."""
    me = os.getpid()
    for c in psutil.net_connections("tcp"):
        if c.pid and c.pid != me and c.laddr and c.raddr \
                and (c.laddr.ip, c.laddr.port) == (client[0], client[1]) \
                and (c.raddr.ip, c.raddr.port) == (server[0], server[1]):
            return c.pid
    return None


# --- fixtures' building blocks ------------------------------------------------------------


def tmp_short() -> Path:
    """A short temporary directory (Celery/kombu keep no sockets there, but keep
    paths short anyway)."""
    return Path(tempfile.mkdtemp(prefix="agg-r-"))


@dataclass
class Parts:
    redis: Redis
    clusters: list[Cluster] = field(default_factory=list)

    def cluster(self, base: Path, **settings: Any) -> Cluster:
        base.mkdir(parents=True, exist_ok=True)
        c = Cluster(base, self.redis, **settings)
        self.clusters.append(c)
        return c

    def close(self) -> None:
        for c in self.clusters:
            c.close()
        self.redis.stop()


def parts(base: Path) -> Iterator[Parts]:
    p = Parts(Redis(base / "redis").start())
    try:
        yield p
    finally:
        p.close()
