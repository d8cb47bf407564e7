"""Attacks on the HTTP connection pool (aggregator/httppool.py, installed by
fetch.Fetcher) and on the start-up changes that came with it (_imports hiding
anyio, opml's own attribute escaping, config reading tomllib lazily), against
real servers on 127.0.0.1 only (host names through fake_dns).

What the pool promises: a connection serves its own origin (scheme, host,
port) only; the guard checks every new connection; a hostile server can
neither leak connections nor starve or deadlock the pool, nor get an answer
taken for another request's."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import xml.sax.saxutils as saxutils
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpcore
import pytest

from aggregator import httppool, opml
from aggregator.config import load
from aggregator.errors import BlockedAddressError, ConfigError, FetchError
from aggregator.fetch import Fetcher, Limits
from aggregator.guard import Guard, trusted_origin
from aggregator.types import Subscription
from tests.hostile_servers import RawServer, fake_dns

# --- a keep-alive server on raw sockets ----------------------------------------------

# handler(connection number, request number on it, request head) -> bytes to send
# (None: hang up without answering)
Answer = Callable[[int, int, bytes], bytes | None]


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class KeepAlive(RawServer):
    """HTTP/1.1 keep-alive on 127.0.0.1 on raw sockets (a server can send what
    it likes when it likes): hostile_servers.RawServer, each connection served
    request after request; keeps each connection's request heads, and counts
    the connections the client hung up on."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.heads: list[list[bytes]] = []  # per connection
        self.hung_up = 0  # connections the client closed
        self.lock = threading.Lock()
        self._conns: list[socket.socket] = []
        super().__init__(lambda *_: None)

    def url(self, path: str = "/feed.xml", host: str = "127.0.0.1", auth: str = "") -> str:
        return f"http://{auth}{host}:{self.port}{path}"

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            number = len(self.heads)
            self.heads.append([])
            self._conns.append(conn)
        buf = b""
        try:
            conn.settimeout(20)
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        with self.lock:
                            self.hung_up += 1
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                with self.lock:
                    self.heads[number].append(head)
                    n = len(self.heads[number])
                out = self.answer(number, n, head)
                if out is None:
                    return
                conn.sendall(out)
        except OSError:
            pass
        finally:
            conn.close()

    def hosts(self) -> list[set[str]]:
        return [{_header(h, b"host") for h in heads} for heads in self.heads]

    def close(self) -> None:
        self.stopping.set()
        with self.lock:  # idle keep-alive connections end now, not at their timeout
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        super().close()


def _header(head: bytes, name: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


def _path(head: bytes) -> bytes:
    return head.split(b" ")[1]


@contextmanager
def serving(answer: Answer) -> Iterator[KeepAlive]:
    server = KeepAlive(answer)
    try:
        yield server
    finally:
        server.close()


def echo(number: int, n: int, head: bytes) -> bytes:
    return ok(_path(head))


def fetcher(**limits: Any) -> Fetcher:
    return Fetcher(Limits(**{"timeout": 10.0, "connect_timeout": 5.0, **limits}), pool_size=128)


def get(f: Fetcher, url: str) -> bytes | None:
    return f.get(url, trusted=trusted_origin(url)).body


# --- a connection serves its own origin only ---------------------------------------------


def test_a_response_sent_ahead_of_its_request_is_never_taken_for_the_next_one() -> None:
    """A server (or a broken proxy a feed's owner can split responses through)
    sends a second answer in the same packet as the first: httpcore kept it in
    h11's buffer and handed it to the next request on the connection, another
    feed of the host. Such a connection is now closed, not reused."""
    def ahead(number: int, n: int, head: bytes) -> bytes:
        answer = ok(_path(head))
        return answer + ok(b"queued by the server") if n == 1 else answer

    with serving(ahead) as server, fetcher() as f:
        assert get(f, server.url("/a")) == b"/a"
        assert get(f, server.url("/b")) == b"/b"  # was b"queued by the server"
        assert get(f, server.url("/c")) == b"/c"
    assert len(server.heads) == 3


def test_a_connection_is_reused_for_its_own_origin_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same server as 127.0.0.1, localhost, LOCALHOST, localhost. (and with
    credentials in the URL): every connection carries one Host only, and the
    credentials go to their own origin only."""
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    with serving(echo) as server, fetcher() as f:
        urls = [server.url("/1"), server.url("/2", host="localhost"),
                server.url("/3", host="LOCALHOST"), server.url("/4", host="localhost."),
                server.url("/5", auth="user:secret@"), server.url("/6", host="localhost")]
        for _ in range(3):
            for url in urls:
                assert get(f, url) == url.rsplit(":", 1)[1][len(str(server.port)):].encode()
    assert all(len(hosts) == 1 for hosts in server.hosts()), server.hosts()
    assert len(server.heads) == 3  # 127.0.0.1, localhost (any case), localhost.
    for heads in server.heads:
        for head in heads:
            if _header(head, b"authorization"):
                assert _header(head, b"host") == f"127.0.0.1:{server.port}"
                assert _path(head) == b"/5"


def test_a_pooled_connection_to_an_address_never_serves_a_name_resolving_to_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A trusted feed at 127.0.0.1:port leaves a connection in the pool; a name
    that resolves (or rebinds, between the check and the connect) to that
    address is refused by the guard, not sent down the pooled connection."""
    answers = iter([["127.0.0.1"], ["93.184.216.34"], ["127.0.0.1"]])
    fake_dns(monkeypatch, lambda host: next(answers))
    with serving(echo) as server, fetcher() as f:
        assert get(f, server.url("/mine")) == b"/mine"
        with pytest.raises(BlockedAddressError):  # the pre-check
            f.get(server.url("/x", host="evil.test"))
        with pytest.raises(BlockedAddressError, match="at connect"):  # rebinding
            f.get(server.url("/y", host="evil.test"))
        assert get(f, server.url("/mine")) == b"/mine"
    assert [[_path(h) for h in heads] for heads in server.heads] == [[b"/mine", b"/mine"]]


# --- hostile servers: no leak, no starvation, no deadlock --------------------------------


def test_hostile_endings_of_a_connection_leave_nothing_open() -> None:
    """Connection: close, HTTP/1.0, a hang-up mid-body, a 100 Continue, garbage
    after the answer, no answer at all: every connection ends closed by the
    client or the server, none is reused wrongly, and close() closes the rest."""
    def hostile(number: int, n: int, head: bytes) -> bytes | None:
        path = _path(head)
        if path == b"/close":
            return ok(b"c", "Connection: close")
        if path == b"/http10":
            return b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n10"
        if path == b"/midbody":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
        if path == b"/continue":
            return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 100")
        if path == b"/garbage":
            return ok(b"g") + b"\x00\xffNOT HTTP\r\n\r\n"
        if path == b"/silent":
            return None
        return ok(path)

    outcomes: list[object] = []
    with serving(hostile) as server:
        with fetcher(timeout=3.0) as f:
            for _ in range(3):
                for path in ("/close", "/http10", "/midbody", "/continue", "/garbage",
                             "/silent", "/plain"):
                    try:
                        outcomes.append(get(f, server.url(path)))
                    except FetchError as e:
                        outcomes.append(type(e).__name__)
            pool = f._transport._pool
            live = [c for c in pool.connections if not c.is_closed()]
            assert len(live) <= 1 and all(c.is_idle() for c in live)
        # the pool is closed: every connection the server still had ends
        for _ in range(100):
            with server.lock:
                if server.hung_up + _closed_by_server(server) >= len(server.heads):
                    break
            threading.Event().wait(0.05)
    assert outcomes[:7] == [b"c", b"10", "NetworkError", b"after 100", b"g",
                            "NetworkError", b"/plain"]
    assert outcomes[7:14] == outcomes[:7] and outcomes[14:] == outcomes[:7]
    assert server.hung_up + _closed_by_server(server) >= len(server.heads)


def _closed_by_server(server: KeepAlive) -> int:
    """Connections the server ended itself (no answer, or after Connection:
    close / HTTP/1.0 / a short body: its handler returned or the client went)."""
    count = 0
    for heads in server.heads:
        last = _path(heads[-1]) if heads else b""
        count += last in (b"/silent",)
    return count


def test_one_slow_host_holds_its_per_host_slots_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Feeds of one host on many ports (many origins) from eight workers: the
    host gets per_host connections at once, however large the pool, and a
    feed of another host is answered while they all wait."""
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    release = threading.Event()
    now = {"in": 0, "peak": 0}
    lock = threading.Lock()

    def slow(number: int, n: int, head: bytes) -> bytes:
        with lock:
            now["in"] += 1
            now["peak"] = max(now["peak"], now["in"])
        release.wait(20)
        with lock:
            now["in"] -= 1
        return ok(b"slow")

    slows = [KeepAlive(slow) for _ in range(8)]
    try:
        with serving(echo) as other, fetcher(per_host=2) as f:
            results: list[object] = []
            threads = [threading.Thread(target=lambda s=s: results.append(get(f, s.url())))
                       for s in slows]
            for t in threads:
                t.start()
            for _ in range(200):  # until the host's two slots are taken
                with lock:
                    if now["in"] == 2:
                        break
                threading.Event().wait(0.02)
            assert get(f, other.url("/other", host="localhost")) == b"/other"
            with lock:
                assert now["peak"] == 2
            release.set()
            for t in threads:
                t.join(30)
            assert results == [b"slow"] * 8
            with lock:
                assert now["peak"] == 2
    finally:
        release.set()
        for s in slows:
            s.close()


def test_closing_the_fetcher_with_requests_in_flight_ends_every_one() -> None:
    """Daemon stop or reload: Fetcher.close() while eight workers wait for
    answers; no worker is left waiting, and the pool stays consistent."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(number: int, n: int, head: bytes) -> bytes:
        started.release()
        release.wait(20)
        return ok(b"late")

    with serving(slow) as server:
        f = fetcher(per_host=8)
        done: list[object] = []

        def one(i: int) -> None:
            try:
                done.append(get(f, server.url(f"/{i}")))
            except Exception as e:  # noqa: BLE001 - any end will do, none may hang
                done.append(type(e).__name__)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for _ in range(8):
            assert started.acquire(timeout=20)
        f.close()
        release.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert len(done) == 8
        pool = f._transport._pool
        assert pool.connections == [] and pool._by_origin == {} and pool._key_of == {}


def test_a_request_assigned_while_the_pool_closes_leaves_it_consistent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """close() used to empty the per-origin index, let go of the lock, then
    close the connections: a connection another thread opened in between was
    closed yet stayed indexed, and the next request of its origin died in
    ``_drop`` (ValueError) inside the pool, for good."""
    with serving(echo) as server:
        pool = httppool.OriginPool(max_connections=8)
        close = httpcore.ConnectionPool.close

        def close_late(self: httpcore.ConnectionPool) -> None:  # the other thread's turn
            assert pool.request("GET", server.url("/between")).status == 200
            close(self)

        monkeypatch.setattr(httpcore.ConnectionPool, "close", close_late)
        assert pool.request("GET", server.url("/before")).status == 200
        pool.close()
        assert set(pool._key_of) <= set(pool.connections)
        assert pool.request("GET", server.url("/after")).status == 200  # was ValueError
        assert set(pool._key_of) == set(pool.connections)
        close(pool)


def test_the_fallback_to_httpcores_own_pool_fetches_and_guards(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httppool, "compatible", lambda: False)
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    with serving(echo) as server, fetcher() as f:
        assert not isinstance(f._transport._pool, httppool.OriginPool)
        assert get(f, server.url("/a")) == b"/a"
        assert get(f, server.url("/b")) == b"/b"
        with pytest.raises(BlockedAddressError):
            f.get(server.url("/c", host="evil.test"))
    assert len(server.heads) == 1  # one connection, reused


# --- the start-up changes -----------------------------------------------------------------


ASYNC = """
import asyncio, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import aggregator.fetch
assert "anyio" not in sys.modules and "trio" not in sys.modules
import httpx

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass

s = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=s.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/" % s.server_address[1]

async def get():
    async with httpx.AsyncClient() as c:
        return (await c.get(url)).text

print(asyncio.run(get()))
import trio
print(trio.run(get))
"""


def test_httpx_async_still_works_in_a_process_that_loaded_fetch(tmp_path: Path) -> None:
    """fetch loads httpcore with anyio and trio hidden; httpcore kept None for
    them and told an AsyncClient (asyncio or trio) in the same process to
    install what is installed."""
    pytest.importorskip("trio")
    script = tmp_path / "async_probe.py"
    script.write_text(ASYNC)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["ok", "ok"]


def test_opml_attribute_escaping_is_saxutils_escaping() -> None:
    """The hand-written escape against the one it replaced, on hostile text."""
    rng = random.Random(13)
    alphabet = "&<>\"'\n\r\t ;#x\x00\x01\x0b\x1f\x7f\u00e9\u2028\ud800\udfff\U0001f600a"
    cases = ["", "&amp;", "&&", "<![CDATA[", '"\'"', "\r\n", "a\tb\nc"]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 20)))
              for _ in range(2000)]
    entities = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
    for value in cases:
        assert opml._escape(value) == saxutils.escape(value, entities), repr(value)


def test_opml_titles_with_markup_and_whitespace_round_trip(tmp_path: Path) -> None:
    """An edited feeds.opml (lines inserted as text, attributes escaped by
    hand) reads back the same titles and URLs."""
    path = tmp_path / "feeds.opml"
    opml.write_bytes(path, b'<?xml version="1.0" encoding="utf-8"?>\n<opml version="2.0">'
                     b'<head><title>t</title></head>\n<body>\n'
                     b'  <outline type="rss" text="first" xmlUrl="http://127.0.0.1/0"/>\n'
                     b'</body>\n</opml>\n')
    titles = ['a "quoted" <b>bold</b> & more', "tab\there\nnew line\r\nreturn",
              "&amp; already", "it's", "\u00e9t\u00e9 \U0001f600", "]]> --> <!--"]
    doc = opml.Document(path.read_bytes())
    for i, title in enumerate(titles, 1):
        assert doc.add(Subscription(url=f"http://127.0.0.1/{i}?a=1&b=<2>", title=title,
                                    category='news/"x" & <y>'))
    assert doc.data is not None  # edited as text, with our escaping
    opml.write_bytes(path, doc.to_bytes())
    back = {s.url: s for s in opml.read(path)}
    for i, title in enumerate(titles, 1):
        sub = back[f"http://127.0.0.1/{i}?a=1&b=<2>"]
        assert sub.category == 'news / "x" & <y>'  # folders read back joined by " / "
        assert sub.title == opml.xml_safe(Subscription(url="http://x/", title=title)).title


def test_a_config_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    """tomllib is imported when a file is read: a corrupt one still says what
    is wrong, a Latin-1 or binary one too (it was a UnicodeDecodeError)."""
    for name, data in (("broken.toml", b'workers = 4\nfeeds = "x\n[[[\n'),
                       ("latin1.toml", 'user_agent = "caf\u00e9"\n'.encode("latin-1")),
                       ("binary.toml", b"\xff\xfe\x00w\x00o")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=rf"{name}: not valid TOML"):
            load(path)


def test_guard_is_untouched_by_the_pool() -> None:
    """The pool's backend is the Fetcher's guarded one (whatever pool is used)."""
    with fetcher(guard=Guard.parse(["intranet.example"])) as f:
        backend = f._transport._pool._network_backend
        assert backend.guard.hosts == frozenset({"intranet.example"})
