"""aggregator.fetch: the address guard and the Fetcher's own limits, against real
servers on 127.0.0.1.

Network rule for this file: nothing is ever sent anywhere but 127.0.0.1. The
refusals of 10.x, 169.254.x and the like are asserted as BlockedAddressError
raised before any connection; if the guard had a bug, the connect would
instead fail after the short connect timeout with a NetworkError, and the
test would fail on the error's type without hanging.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time

import pytest
from hostile_servers import RawServer, answers, endless, head, rss

from aggregator import fetch
from aggregator.errors import (
    BlockedAddressError,
    FetchError,
    NetworkError,
    RedirectError,
    TooLargeError,
)
from aggregator.fetch import Fetcher, GuardedBackend, Limits, check_url, host_of
from aggregator.guard import Origin, trusted_origin

FEED = rss("Guarded", ("one", "http://127.0.0.1/1"))
FAST = Limits(connect_timeout=0.5, timeout=2.0, max_bytes=256 * 1024, user_agent="t")
ELSEWHERE = Origin("http", "feeds.example.org", 80)


def own(server: RawServer) -> Origin:
    """The trusted origin of a feed at ``server`` named by its IP address."""
    origin = trusted_origin(server.url())
    assert origin is not None
    return origin

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "ftp://127.0.0.1/feed.xml",
    "gopher://127.0.0.1/",
    "http://10.0.0.1/feed.xml",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://0.0.0.0/",
    "http://[::1]/feed.xml",
    "http://[::ffff:10.0.0.1]/",  # IPv4-mapped private address
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://localhost/feed.xml",
    "http://127.0.0.1/feed.xml",
    "http://127.1/feed.xml",  # another spelling of loopback
    "http://2130706433/",  # 127.0.0.1 as a number
    "javascript:alert(1)",
    "data:text/xml,<rss/>",
    "http:///no-host",
    "http://[::1/broken",
]


@pytest.mark.parametrize("url", REFUSED)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(BlockedAddressError):
        check_url(url, trusted=None)
    with pytest.raises(BlockedAddressError):
        check_url(url, trusted=ELSEWHERE)


@pytest.mark.parametrize("url", REFUSED)
def test_fetcher_refuses_before_connecting(url: str) -> None:
    with Fetcher(FAST) as fetcher:
        start = time.monotonic()
        with pytest.raises(BlockedAddressError):
            fetcher.get(url, trusted=ELSEWHERE)
        assert time.monotonic() - start < 0.4  # no connect attempt ran into its timeout


def test_trusted_origin_may_be_loopback() -> None:
    check_url("http://localhost/feed.xml", trusted=trusted_origin("http://localhost/"))
    check_url("http://127.0.0.1:8080/feed.xml", trusted=trusted_origin("http://127.0.0.1:8080/"))
    # the exemption is for the origin only: not another port, scheme or spelling
    for url in ("file://localhost/etc/passwd", "http://127.0.0.1:8081/feed.xml",
                "https://127.0.0.1:8080/feed.xml", "http://localhost:8080/feed.xml",
                "http://127.1:8080/feed.xml", "http://[::ffff:127.0.0.1]:8080/"):
        with pytest.raises(BlockedAddressError):
            check_url(url, trusted=trusted_origin("http://127.0.0.1:8080/"))


def test_host_of_never_raises() -> None:
    assert host_of("http://LOCALHOST:80/x") == "localhost"
    assert host_of("http://[::1/broken") == ""
    assert host_of("not a url") == ""


def test_trusted_origin_fetch_works() -> None:
    with RawServer(answers(FEED)) as server, Fetcher(FAST) as fetcher:
        res = fetcher.get(server.url(), trusted=own(server))
    assert res.status == 200 and res.body == FEED
    assert len(server.requests) == 1


def test_untrusted_loopback_gets_no_request() -> None:
    with RawServer(answers(FEED)) as server, Fetcher(FAST) as fetcher:
        with pytest.raises(BlockedAddressError):
            fetcher.get(server.url(), trusted=None)
        with pytest.raises(BlockedAddressError, match="localhost"):
            fetcher.get(server.url(host="localhost"), trusted=own(server))
        time.sleep(0.1)
    assert server.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://localhost:{port}/feed.xml",  # another name for loopback
        "http://127.1:{port}/feed.xml",
        "http://127.0.0.1:{port}/feed.xml",  # same address, another port: another origin
        "http://[::1]:{port}/feed.xml",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
    ],
)
def test_redirect_from_trusted_origin_to_internal_address_is_refused(target: str) -> None:
    with RawServer(answers(FEED)) as second:
        location = target.format(port=second.port)
        redirect = answers(b"", status="302 Found", headers=[("Location", location)])
        with RawServer(redirect) as first, Fetcher(FAST) as fetcher:
            start = time.monotonic()
            with pytest.raises(BlockedAddressError):
                fetcher.get(first.url(), trusted=own(first))
            assert time.monotonic() - start < 0.4
        time.sleep(0.1)
        assert len(first.requests) == 1
        assert second.requests == []  # the refusal came before any connection


def test_relative_redirect_in_the_trusted_origin_is_followed() -> None:
    def handler(server: RawServer, conn, request: bytes) -> None:  # type: ignore[no-untyped-def]
        if request.startswith(b"GET /old"):
            conn.sendall(head("302 Found", [("Location", "/new"), ("Content-Length", "0")]))
        else:
            conn.sendall(head(headers=[("Content-Length", str(len(FEED)))]) + FEED)

    with RawServer(handler) as server, Fetcher(FAST) as fetcher:
        res = fetcher.get(server.url("/old"), trusted=own(server))
    assert res.body == FEED
    assert res.final_url == server.url("/new")
    assert res.permanent_url is None  # 302 is not a move


def test_connect_time_guard_refuses_an_untrusted_loopback_name() -> None:
    """The second layer: even when a URL slipped past check_url (a DNS answer
    that changed between check and connect), the backend checks the address it
    is about to connect to."""
    with RawServer(answers(FEED)) as server:
        backend = GuardedBackend()
        with pytest.raises(BlockedAddressError):
            backend.connect_tcp("localhost", server.port, timeout=0.5)
        with pytest.raises(BlockedAddressError):
            backend.connect_tcp("127.0.0.1", server.port, timeout=0.5)
        time.sleep(0.1)
        assert server.requests == []
        fetch._local.trusted = own(server)
        try:
            with pytest.raises(BlockedAddressError):  # the origin is trusted, not the address
                backend.connect_tcp("127.0.0.1", server.port + 1, timeout=0.5)
            stream = backend.connect_tcp("127.0.0.1", server.port, timeout=0.5)
            stream.close()
        finally:
            fetch._local.trusted = None


def test_redirect_limit_and_loop() -> None:
    def chain(server: RawServer, conn, request: bytes) -> None:  # type: ignore[no-untyped-def]
        n = int(request.split(b" ")[1].strip(b"/") or 0)
        conn.sendall(
            head("307 Temporary Redirect", [("Location", f"/{n + 1}"), ("Content-Length", "0")])
        )

    def loop(server: RawServer, conn, request: bytes) -> None:  # type: ignore[no-untyped-def]
        nxt = "/b" if request.startswith(b"GET /a") else "/a"
        conn.sendall(head("301 Moved Permanently", [("Location", nxt), ("Content-Length", "0")]))

    limits = Limits(connect_timeout=0.5, timeout=2.0, max_redirects=3)
    with RawServer(chain) as server, Fetcher(limits) as fetcher:
        with pytest.raises(RedirectError, match="more than 3 redirects"):
            fetcher.get(server.url("/0"), trusted=own(server))
        assert len(server.requests) == 4  # the first request and three redirects
    with RawServer(loop) as server, Fetcher(limits) as fetcher:
        with pytest.raises(RedirectError, match="loop"):
            fetcher.get(server.url("/a"), trusted=own(server))
        assert len(server.requests) == 2


def test_bad_location_is_a_fetch_error() -> None:
    redirect = answers(b"", status="302 Found", headers=[("Location", "http://[::1/broken")])
    with RawServer(redirect) as server, Fetcher(FAST) as fetcher:
        with pytest.raises(FetchError):
            fetcher.get(server.url(), trusted=own(server))


def test_invalid_url_is_a_fetch_error_not_a_crash() -> None:
    with Fetcher(FAST) as fetcher:
        for url in ("http://127.0.0.1:abc/feed", "http://127.0.0.1/\x00"):
            with pytest.raises(FetchError):
                fetcher.get(url, trusted=trusted_origin("http://127.0.0.1/"))


def test_size_cap_counts_decoded_bytes() -> None:
    bomb = gzip.compress(b"<rss>" + b" " * (20 * 1024 * 1024))  # ~20 KB on the wire
    assert len(bomb) < FAST.max_bytes
    with (
        RawServer(answers(bomb, headers=[("Content-Encoding", "gzip")])) as server,
        Fetcher(FAST) as fetcher,
    ):
        with pytest.raises(TooLargeError):
            fetcher.get(server.url(), trusted=own(server))


def test_declared_length_over_the_cap_is_refused_at_once() -> None:
    handler = endless(FEED[:64], declare=200 * 1024 * 1024)
    with RawServer(handler) as server, Fetcher(FAST) as fetcher:
        start = time.monotonic()
        with pytest.raises(TooLargeError, match="209715200"):
            fetcher.get(server.url(), trusted=own(server))
        assert time.monotonic() - start < 1.0


def test_waiting_for_a_host_slot_does_not_eat_the_deadline() -> None:
    """per_host=1: the third request waits two holds for its slot, longer than
    the deadline, yet each exchange itself is quick: all three succeed."""
    limits = Limits(connect_timeout=0.5, timeout=1.0, per_host=1)
    with RawServer(answers(FEED, delay=0.6)) as server, Fetcher(limits) as fetcher:
        results: list[object] = []

        def get() -> None:
            try:
                results.append(fetcher.get(server.url(), trusted=own(server)).status)
            except FetchError as e:
                results.append(e)

        threads = [threading.Thread(target=get) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == [200, 200, 200]


def test_deadline_cuts_a_slow_exchange() -> None:
    limits = Limits(connect_timeout=0.5, timeout=1.0)
    with RawServer(answers(FEED, delay=5)) as server, Fetcher(limits) as fetcher:
        start = time.monotonic()
        with pytest.raises(NetworkError, match="timed out"):
            fetcher.get(server.url(), trusted=own(server))
        assert time.monotonic() - start < 2.0


# --- TLS: the CA bundle is read at the first handshake, not at start-up --------------


def test_tls_context_verifies_as_httpx_default_and_loads_the_ca_bundle_when_first_used(
) -> None:
    """A pass over plain-http feeds (or one of 304s) never reads the CA bundle
    (25-35 ms); the context still requires certificates and checks host
    names, with the bundle httpx's default reads (certifi's, or SSL_CERT_FILE's)."""
    import ssl

    import httpx

    with Fetcher(FAST) as fetcher:
        ctx = fetcher._client._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        default = httpx.create_ssl_context()  # what HTTPTransport() built before
        assert (ctx.protocol, ctx.options, ctx.minimum_version) == \
            (default.protocol, default.options, default.minimum_version)
        assert ctx.cert_store_stats()["x509_ca"] == 0  # not read yet
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="example.org")
        assert ctx.cert_store_stats() == default.cert_store_stats()


def test_an_https_fetch_reads_the_ca_bundle_before_its_handshake() -> None:
    """The real path: httpcore's start_tls wraps the socket with our context,
    which loads the CA bundle first; a server that speaks no TLS fails the
    fetch as a NetworkError."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # not TLS

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with Fetcher(FAST) as fetcher:
            ctx = fetcher._client._transport._pool._ssl_context  # type: ignore[attr-defined]
            with pytest.raises(NetworkError):
                fetcher.get(f"https://127.0.0.1:{port}/feed.xml",
                            trusted=trusted_origin(f"https://127.0.0.1:{port}/feed.xml"))
            assert ctx.cert_store_stats()["x509_ca"] > 0
    finally:
        t.join(5)
        listener.close()


# --- the request on the wire (Fetcher._exchange sends on the transport itself) -------


def test_a_conditional_get_sends_the_headers_httpx_client_sent() -> None:
    """The same request head as httpx.Client.stream made, header for header."""
    with RawServer(answers(FEED)) as server, Fetcher(FAST) as fetcher:
        url = server.url()
        fetcher.get(url, etag='"v1"', last_modified="Tue, 01 Dec 2026 00:00:00 GMT",
                    trusted=own(server))
        lines = server.requests[0].decode("latin-1").split("\r\n")
    assert lines[:8] == [
        "GET /feed.xml HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Connection: keep-alive",
        "User-Agent: t", "Accept-Encoding: gzip, deflate", f"Accept: {fetch.FEED_ACCEPT}",
        'If-None-Match: "v1"', "If-Modified-Since: Tue, 01 Dec 2026 00:00:00 GMT"]
    assert lines[8:] == ["", ""]


def test_a_cookie_a_server_sets_goes_back_to_it_as_the_client_did() -> None:
    def handler(server: RawServer, conn: socket.socket, _: bytes) -> None:
        conn.sendall(head(headers=[("Content-Length", str(len(FEED))),
                                   ("Set-Cookie", "s=1; Path=/")]) + FEED)

    with RawServer(handler) as server, Fetcher(FAST) as fetcher:
        url = server.url()
        fetcher.get(url, trusted=own(server))
        fetcher.get(url, trusted=own(server))
    assert b"\r\nCookie: " not in server.requests[0]
    assert b"\r\nCookie: s=1\r\n" in server.requests[1]
