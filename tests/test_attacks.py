"""Attacks on the HTTP side by a hostile feed publisher, HTTP server and DNS,
each a regression test against real servers on 127.0.0.0/8 (a second
loopback address, 127.0.0.2, stands in for "an internal address the trusted
origin must not lead to"). The resolver is replaced where an attack needs a
hostile DNS answer; a tripwire fails any test that would connect outside
127.0.0.0/8.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import pytest
from hostile_servers import RawServer, answers, fake_dns, rss

from aggregator import fetch
from aggregator.errors import BlockedAddressError, NetworkError
from aggregator.fetch import Fetcher, Limits
from aggregator.guard import Guard, trusted_origin

FEED = rss("Attacked", ("one", "http://127.0.0.1/1"))
FAST = Limits(connect_timeout=0.5, timeout=2.0, max_bytes=256 * 1024, user_agent="t")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = httpcore.SyncBackend.connect_tcp

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kw: Any) -> Any:
        assert host.startswith("127.") or host == "::1", f"test tried to connect to {host}"
        return real(self, host, port, *args, **kw)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)


class Listener:
    """Accepts on ``host``:``port`` and records that something connected."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    with RawServer(answers(FEED)) as s:
        yield s


# --- the trusted origin, spelled so that DNS answers for it -----------------------------


@pytest.mark.parametrize(("spelling", "trusted_host", "answer"), [
    ("127.0.0.1.", "127.0.0.1", "127.0.0.2"),  # another address, even a loopback one
    ("LOCALHOST.", "localhost", "10.0.0.1"),
    ("localhost", "localhost", "169.254.169.254"),
    ("localhost", "localhost", "::ffff:169.254.169.254"),
])
def test_trusted_origin_spelled_as_a_name_resolves_only_to_its_own_address(
        monkeypatch: pytest.MonkeyPatch, server: RawServer, spelling: str, trusted_host: str,
        answer: str) -> None:
    """Attack: the feed is at http://127.0.0.1:PORT/ (or localhost), trusted; an
    article link names the same origin as ``127.0.0.1.:PORT`` (or
    ``localhost.``), which the guard reads as the trusted origin but which is a
    *name* to the resolver, and a hostile DNS answers another internal address.
    The connection must not follow it (127.0.0.2 is listened on: a connection
    there would be counted; the other answers would trip the tripwire)."""
    asked = fake_dns(monkeypatch, lambda host: [answer])
    trusted = trusted_origin(server.url(host=trusted_host))
    with Listener("127.0.0.2", server.port) as inside, Fetcher(FAST) as fetcher:
        with pytest.raises(BlockedAddressError, match=answer):
            fetcher.get(server.url("/article", host=spelling), trusted=trusted)
        time.sleep(0.1)
        assert inside.connections == 0
    assert asked and asked[-1] == spelling.lower()
    assert server.requests == []


def test_trusted_ip_origin_needs_no_dns_and_localhost_may_be_any_loopback(
        monkeypatch: pytest.MonkeyPatch, server: RawServer) -> None:
    """What the user chose still works: an IP origin is connected to as is, a
    localhost origin at whatever loopback address it resolves to."""
    asked = fake_dns(monkeypatch, lambda host: ["::1", "127.0.0.1"] if host == "localhost"
                     else ["127.0.0.2"])
    with Fetcher(FAST) as fetcher:
        assert fetcher.get(server.url(), trusted=trusted_origin(server.url())).body == FEED
        local = server.url(host="localhost")
        assert fetcher.get(local, trusted=trusted_origin(local)).body == FEED
        # "127.0.0.1." answered by the resolver with the address itself is the origin
        monkeypatch.setattr(fetch, "getaddrinfo", lambda host, port, **kw: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))])
        dotted = server.url(host="127.0.0.1.")
        assert fetcher.get(dotted, trusted=trusted_origin(server.url())).body == FEED
    assert "127.0.0.1" not in asked
    assert len(server.requests) == 3


def test_refusal_of_a_trusted_origin_at_another_address() -> None:
    guard = Guard()
    ip, local = trusted_origin("http://127.0.0.1:8080/"), trusted_origin("http://localhost:8080/")
    assert guard.refusal("127.0.0.1.", 8080, ["127.0.0.1"], ip) is None
    assert guard.refusal("127.0.0.1.", 8080, ["127.0.0.2"], ip)
    assert guard.refusal("127.0.0.1.", 8080, ["127.0.0.1", "10.0.0.1"], ip)  # mixed answer
    assert guard.refusal("localhost", 8080, ["::1", "127.0.0.1", "127.0.1.1"], local) is None
    assert guard.refusal("localhost.", 8080, ["127.0.0.1", "169.254.169.254"], local)
    assert guard.refusal("localhost", 8080, ["::ffff:10.0.0.1"], local)
    # a public answer is no exemption, merely allowed as for any name
    assert guard.refusal("localhost.", 8080, ["93.184.216.34"], local) is None


# --- the deadline covers connecting --------------------------------------------------------


class BlackHole:
    """127.0.0.2:<port> whose accept queue is full, so further SYNs are dropped
    and a connect hangs until its timeout (a host that drops packets)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.2", self.port), timeout=1)
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            with pytest.raises(TimeoutError):  # the queue is full: this is a black hole
                probe.connect(("127.0.0.2", self.port))
        finally:
            probe.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.filler.close()
        self.sock.close()


def test_a_connect_that_hangs_after_a_slow_first_hop_stops_at_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: the first hop answers just before the deadline with a redirect
    to a host that drops packets. The connect must not get its whole
    connect_timeout on top of the deadline."""
    fake_dns(monkeypatch, lambda host: ["127.0.0.2"])
    limits = Limits(connect_timeout=4.0, timeout=1.0, guard=Guard.parse(["127.0.0.0/8"]))
    with BlackHole() as hole:
        hop = answers(b"", status="302 Found", delay=0.5,
                      headers=[("Location", f"http://dropped.test:{hole.port}/feed.xml")])
        with RawServer(hop) as first, Fetcher(limits) as fetcher:
            start = time.monotonic()
            with pytest.raises(NetworkError, match="timed out after 1 s"):
                fetcher.get(first.url(), trusted=trusted_origin(first.url()))
            took = time.monotonic() - start
    assert took < 3.0, took  # the deadline (1 s), not 0.5 s + the 4 s connect timeout


# --- allow_private entries wider than meant ---------------------------------------------


def test_ipv6_networks_do_not_open_ipv4_internals_by_translation() -> None:
    """Attack: the user allows an IPv6 range (even ``::/0``); a hostile DNS
    answers an IPv6 spelling of an IPv4 internal address: IPv4-mapped (which
    the kernel connects to as IPv4), NAT64 or 6to4 (which a gateway translates)."""
    wide = Guard.parse(["::/0"])
    assert wide.allows_ip("fd00::1") and wide.allows_ip("::1") and wide.allows_ip("fe80::1")
    for ip in ("::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
               "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:a00:1::1", "2002:7f00:1::"):
        assert not wide.allows_ip(ip), ip
        assert wide.refusal("evil.test", 80, [ip], None), ip
    assert wide.allows_ip("64:ff9b::808:808")  # NAT64 to a public address: ::/0 opens it
    # an IPv4-mapped address is its IPv4 address: an IPv4 entry covers it, and only that
    v4 = Guard.parse(["10.0.0.0/8"])
    assert v4.allows_ip("::ffff:10.1.2.3") and not v4.allows_ip("::ffff:127.0.0.1")
    both = Guard.parse(["64:ff9b::/96", "10.0.0.0/8"])
    assert both.allows_ip("64:ff9b::a00:1") and not both.allows_ip("64:ff9b::a9fe:a9fe")
    for entry in ("*.corp.example", "intranet.*", "*", "0x7f.1", "127.1", "[::1]",
                  "localhost/8"):  # no wildcards, no odd spellings
        with pytest.raises(ValueError, match="neither a network"):
            Guard.parse([entry])


# --- politeness per host, whatever the spelling ------------------------------------------


def test_per_host_limit_holds_across_spellings_and_leaves_nothing_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: a feed links to one victim host under several spellings
    (``victim.test``, ``victim.test.``, ``VICTIM.TEST``) to get past per_host;
    and to ever new hosts, each of which used to keep a semaphore forever."""
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def handler(server: RawServer, conn: socket.socket, request: bytes) -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            server.wait(0.3)
        finally:
            with lock:
                state["now"] -= 1
        answers(FEED)(server, conn, request)

    limits = Limits(connect_timeout=0.5, timeout=5.0, per_host=1,
                    guard=Guard.parse(["127.0.0.0/8"]))
    with RawServer(handler) as server, Fetcher(limits) as fetcher:
        urls = [server.url(host=h) for h in ("victim.test", "victim.test.", "VICTIM.TEST")]
        results: list[object] = []
        threads = [threading.Thread(target=lambda u=u: results.append(fetcher.get(u).status))
                   for u in urls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [200, 200, 200]
        assert state["peak"] == 1
        assert fetcher._hosts == {}  # no slot outlives its requests


# --- held: the guard and httpx read one origin --------------------------------------------

TRICKY_URLS = [
    "http://evil.test\\@127.0.0.1:8080/", "http://127.0.0.1:8080\\@evil.test/",
    "http://a@127.0.0.1:8080@evil.test/", "http://127.0.0.1:8080#@evil.test/",
    "http://evil.test#@127.0.0.1:8080/", "http://evil.test?@127.0.0.1:8080/",
    "http://127.0.0.1:8080;@evil.test/", "http://evil.test:80@127.0.0.1:8080/",
    "http://evil.test@@127.0.0.1:8080/", "http://[::1]:8080@evil.test/",
    "http://127.0.0.1\u3002:8080/", "http://127.0.0.1\uff0e:8080/", "http://127.0.0.1.:8080/",
    "http://%31%32%37.0.0.1:8080/", "http://127.0.0.1%00.evil.test/", "http://LOCALHOST.:8080/",
    "http://127.0.0.1:+8080/", "http://127.0.0.1:\uff18\uff10\uff18\uff10/",
    "http://127.0.0.1: 8080/",
    "http://127.0.0.1:08080/", "http://evil.test\t.x/", "http://127.0.0.1\t:8080/",
    " http://127.0.0.1:8080/", "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:8080/",
]


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_guard_and_client_agree_on_the_origin_of_a_tricky_url(url: str) -> None:
    """A pooled connection is reused by httpcore for the origin *httpx* reads,
    and only the guard's pre-check (its own reading) runs then: a URL the
    guard reads as one host and httpx as 127.0.0.1 or localhost would reuse a
    trusted keep-alive connection unchecked. Either the two agree, or one of
    them refuses the URL, or httpx's host is a name the guard resolves (and
    the pool key differs from every IP address and localhost)."""
    import httpx

    from aggregator.guard import normalize_host, origin_of

    try:
        ours = origin_of(url)
    except ValueError:
        return  # refused by the guard: never sent
    try:
        theirs = httpx.URL(url)
        host = theirs.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        return  # refused by the client: never sent
    if host in ("localhost", "127.0.0.1") or host.startswith("::"):  # an exact pool key
        assert (ours.host, ours.port) == (normalize_host(host), theirs.port or 80), url


# --- held: protocol abuse stops at h11's limits or at the deadline ---------------------------

STATUS = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"


def floods(prefix: bytes, unit: bytes) -> Any:
    def handler(server: RawServer, conn: socket.socket, _: bytes) -> None:
        conn.sendall(prefix)
        while not server.stopping.is_set():
            conn.sendall(unit)

    return handler


@pytest.mark.parametrize(("prefix", "unit", "error"), [
    (STATUS, b"X-A: b\r\n" * 1000, "Receive buffer too long"),  # header flood
    (STATUS + b"X-A: ", b"a" * 65536, "Receive buffer too long"),  # one endless header
    (b"HTTP/1.1 200 ", b"a" * 65536, "Receive buffer too long"),  # endless status line
    (STATUS + b"Transfer-Encoding: chunked\r\n\r\n", b"0" * 65536, "Receive buffer too long"),
    (STATUS + b"Transfer-Encoding: chunked\r\n\r\n1;", b"a" * 65536, "Receive buffer too long"),
    (STATUS + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n", b"X-T: a\r\n" * 1000,
     "Receive buffer too long"),  # trailer flood
    (STATUS + b"Transfer-Encoding: gzip, chunked\r\n\r\n", b"", "Transfer-Encoding: chunked"),
    (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 2000, "timed out after 1 s"),  # 1xx forever
    # one byte of body per 8 KB of chunk extension: 80 GB for a 10 MB body
    (STATUS + b"Transfer-Encoding: chunked\r\n\r\n", b"1;" + b"a" * 8000 + b"\r\nx\r\n",
     "timed out after 1 s"),
])
def test_protocol_floods_end_in_a_network_error(prefix: bytes, unit: bytes, error: str) -> None:
    limits = Limits(connect_timeout=0.5, timeout=1.0)
    with RawServer(floods(prefix, unit)) as server, Fetcher(limits) as fetcher:
        start = time.monotonic()
        with pytest.raises(NetworkError, match=error):
            fetcher.get(server.url(), trusted=trusted_origin(server.url()))
        assert time.monotonic() - start < 5.0
