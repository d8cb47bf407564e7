"""Shared helpers for the polling tests: misbehaving raw HTTP servers on
127.0.0.1, a werkzeug server (pytest-httpserver) bound to 127.0.0.1, and a
small harness that writes feeds.opml, runs one real pass and reads back the
feeds and items tables.

The raw servers exist for what a well-behaved framework won't do: answer
late, never answer, trickle one byte a second, send a body far past its
declared Content-Length or declare 200 MB. Every one of them listens on
127.0.0.1 only; no test traffic goes anywhere else.
"""

from __future__ import annotations

import random
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from aggregator import opml
from aggregator.config import Settings
from aggregator.store import Store
from aggregator.types import Subscription
from aggregator.update import PassResult, make_fetcher, run_pass

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def fixture_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def rss(title: str, *items: tuple[str, str], extra: str = "") -> bytes:
    """A small RSS 2.0 document; items are (title, link)."""
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{link}</guid>"
        f"<description>Text of {t}.</description></item>"
        for t, link in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{title}</title><link>http://127.0.0.1/</link>{extra}{body}</channel></rss>\n"
    ).encode()


# --- a raw socket server --------------------------------------------------------------


Handler = Callable[["RawServer", socket.socket, bytes], None]


class RawServer:
    """Accepts on 127.0.0.1:<free port>; each connection's request head goes to
    ``handler(server, conn, head)`` on its own thread. ``requests`` keeps every
    request head received, so a test can assert that none came."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.stopping = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True, name="raw-accept")
        self._accepter.start()

    def url(self, path: str = "/feed.xml", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head)
            self.handler(self, conn, head)
        except OSError:
            pass  # the client gave up: that is what most of these tests want
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False when the server is stopping."""
        return not self.stopping.wait(seconds)

    def close(self) -> None:
        self.stopping.set()
        self._sock.close()
        self._accepter.join(2)
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def head(
    status: str = "200 OK",
    headers: Sequence[tuple[str, str]] = (),
    content_type: str = "application/rss+xml",
) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def never_answers(server: RawServer, conn: socket.socket, _: bytes) -> None:
    server.wait(30)


def answers_after(delay: float, body: bytes) -> Handler:
    def handler(server: RawServer, conn: socket.socket, _: bytes) -> None:
        if server.wait(delay):
            conn.sendall(head(headers=[("Content-Length", str(len(body)))]) + body)

    return handler


def trickles(body: bytes, every: float = 1.0) -> Handler:
    """Honest headers, then one byte per ``every`` seconds."""

    def handler(server: RawServer, conn: socket.socket, _: bytes) -> None:
        conn.sendall(head(headers=[("Content-Length", str(len(body)))]))
        for i in range(len(body)):
            conn.sendall(body[i : i + 1])
            if not server.wait(every):
                return

    return handler


def endless(prefix: bytes, declare: int | None = None, chunk: int = 65536) -> Handler:
    """A feed head followed by padding forever (or until the client hangs up);
    ``declare`` sends that Content-Length, None sends no length at all."""

    def handler(server: RawServer, conn: socket.socket, _: bytes) -> None:
        headers = [] if declare is None else [("Content-Length", str(declare))]
        conn.sendall(head(headers=headers) + prefix)
        pad = b"<!-- " + b"x" * (chunk - 9) + b" -->"
        sent = len(prefix)
        while not server.stopping.is_set() and sent < 300 * 1024 * 1024:
            conn.sendall(pad)
            sent += len(pad)

    return handler


def short_body(body: bytes, declared: int) -> Handler:
    """Declares ``declared`` bytes, sends ``body`` (fewer), hangs up."""

    def handler(server: RawServer, conn: socket.socket, _: bytes) -> None:
        conn.sendall(head(headers=[("Content-Length", str(declared))]) + body)

    return handler


def answers(
    body: bytes,
    *,
    status: str = "200 OK",
    headers: Sequence[tuple[str, str]] = (),
    content_type: str = "application/rss+xml",
    delay: float = 0.0,
) -> Handler:
    def handler(server: RawServer, conn: socket.socket, _: bytes) -> None:
        if delay and not server.wait(delay):
            return
        conn.sendall(
            head(status, [*headers, ("Content-Length", str(len(body)))], content_type) + body
        )

    return handler


def host_header(request_head: bytes) -> str:
    for line in request_head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            return value.strip().decode()
    return ""


@dataclass
class ConcurrencyCounter:
    """Counts requests in flight per Host header (for the per-host limit)."""

    body: bytes
    hold: float = 0.4
    lock: threading.Lock = field(default_factory=threading.Lock)
    now: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def __call__(self, server: RawServer, conn: socket.socket, request_head: bytes) -> None:
        host = host_header(request_head).rsplit(":", 1)[0]
        with self.lock:
            self.total += 1
            self.now[host] = self.now.get(host, 0) + 1
            self.peak[host] = max(self.peak.get(host, 0), self.now[host])
        try:
            server.wait(self.hold)
        finally:
            # out of flight before the answer leaves: the client may reuse its slot as
            # soon as it has the bytes, and must not be counted twice for it
            with self.lock:
                self.now[host] -= 1
        conn.sendall(head(headers=[("Content-Length", str(len(self.body)))]) + self.body)


# --- a werkzeug server on 127.0.0.1 -----------------------------------------------------


@contextmanager
def local_httpserver() -> Iterator[HTTPServer]:
    """pytest-httpserver bound to 127.0.0.1 (its default fixture binds to
    "localhost", which the address guard treats as a different host)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


# --- one real pass -----------------------------------------------------------------------


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    base = dict(
        db=tmp_path / "x.db",
        feeds=tmp_path / "feeds.opml",
        output=tmp_path / "out",
        fetch_articles=False,
        summaries=False,
        publish=False,
        serve=False,
        connect_timeout=2.0,
        timeout=5.0,
        jitter=0.0,
        workers=4,
    )
    base.update(changes)
    return Settings(**base)


def write_opml(settings: Settings, urls: Sequence[str | Subscription]) -> None:
    subs = [u if isinstance(u, Subscription) else Subscription(url=u) for u in urls]
    opml.write(settings.feeds, opml.build(subs))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        from datetime import timedelta

        self.now += timedelta(**delta)


def one_pass(
    settings: Settings, *, all_feeds: bool = True, clock: Clock | None = None, seed: int = 1
) -> PassResult:
    with Store(settings.db) as store, make_fetcher(settings) as fetcher:
        return run_pass(
            settings,
            store,
            fetcher,
            all_feeds=all_feeds,
            clock=clock or (lambda: datetime.now(UTC)),
            rng=random.Random(seed),
        )


def db_rows(db: Path, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Read the database file the way a user would (plain sqlite3)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def rows(settings: Settings, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    return db_rows(settings.db, sql, args)


def feed_row(settings: Settings, url: str) -> dict[str, Any]:
    found = rows(settings, "SELECT * FROM feeds WHERE url = ?", (url,))
    assert found, f"no feed row for {url}"
    return found[0]


def items_of(settings: Settings, url: str) -> list[dict[str, Any]]:
    return rows(
        settings,
        "SELECT i.* FROM items i JOIN feeds f ON f.id = i.feed_id WHERE f.url = ? ORDER BY i.id",
        (url,),
    )


def elapsed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def random_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


_URL_ATTR = re.compile(
    r"""\b(?:href|src|action|data|formaction|poster|background)\s*=\s*["']?([^"'\s>]*)""",
    re.IGNORECASE,
)


def assert_no_script(table_rows: Sequence[dict[str, Any]]) -> None:
    """No stored HTML may carry script: in ``content`` (the only HTML column)
    no <script>/<iframe>/<object>/<form>/<embed>, no on*= handler, no
    javascript: attribute, every URL http(s) or mailto; every url/site_url
    column http(s). (Plain-text columns such as content_text may quote "<iframe"
    as text: they are text and are escaped wherever they are shown.)"""
    for row in table_rows:
        for column, value in row.items():
            if not isinstance(value, str):
                continue
            if column in ("url", "site_url"):
                assert value.startswith(("http://", "https://")), (column, value)
            if column != "content":
                continue
            low = value.lower()
            for tag in ("<script", "<iframe", "<object", "<form", "<embed"):
                assert tag not in low, (column, value[:300])
            assert not re.search(r"<[^>]*\son[a-z]+\s*=", low), (column, value[:300])
            # "http://host/jav\tascript:x" is an ordinary http URL; an attribute
            # starting with javascript: (however spaced out) is not
            assert not re.search(r"=[\"']?javascript:", re.sub(r"\s", "", low)), (
                column,
                value[:300],
            )
            for target in _URL_ATTR.findall(value):
                assert re.match(r"(https?|mailto):", target), (column, target)


# --- a resolver that answers what a test says -------------------------------------------

Answer = Callable[[str], list[str]]


def fake_dns(monkeypatch: Any, answer: Answer) -> list[str]:
    """Make fetch's resolver answer ``answer(host)``; returns the hosts asked.
    (Nothing real can change a DNS answer between two lookups here.)"""
    from aggregator import fetch

    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        asked.append(host)
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port)) for ip in answer(host)]

    monkeypatch.setattr(fetch, "getaddrinfo", getaddrinfo)
    return asked
