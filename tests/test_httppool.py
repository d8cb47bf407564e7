"""The HTTP connection pool (aggregator/httppool.py) against real keep-alive
servers on 127.0.0.1: connections are reused per origin across many origins,
a connection the server closed or that expired is never reused, a full pool
closes its oldest idle connection, and the Fetcher uses this pool."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore
import pytest

from aggregator import httppool
from aggregator.fetch import Fetcher, Limits


class KeepAliveServer(ThreadingHTTPServer):
    """HTTP/1.1 with keep-alive on 127.0.0.1; counts connections and requests.
    With ``hang_up`` it closes every connection after its first answer, without
    saying so (as a server whose idle timeout ran out does)."""

    daemon_threads = True

    def __init__(self, hang_up: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hang_up = hang_up
        self.connections = 0
        self.requests = 0
        self.ended = 0  # connections whose client hung up (or the server did)
        self.closed = threading.Event()  # set once a hung-up connection is closed
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/feed.xml") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KeepAliveServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        with self.server.lock:
            self.server.requests += 1
        if self.headers.get("If-None-Match") == '"v1"':
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        else:
            body = b"<rss version='2.0'><channel><title>t</title></channel></rss>"
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"v1"')
            self.end_headers()
            self.wfile.write(body)
        self.wfile.flush()
        if self.server.hang_up:
            self.close_connection = True

    def finish(self) -> None:
        super().finish()
        with self.server.lock:
            self.server.ended += 1
        if self.server.hang_up:
            self.connection.close()
            self.server.closed.set()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[list[KeepAliveServer]]:
    made: list[KeepAliveServer] = []
    yield made
    for s in made:
        s.stop()


def fetcher(pool_size: int) -> Fetcher:
    return Fetcher(Limits(timeout=10.0, per_host=2), pool_size=pool_size)


def test_the_fetcher_uses_the_origin_pool() -> None:
    assert httppool.compatible()
    with fetcher(8) as f:
        assert isinstance(f._transport._pool, httppool.OriginPool)


def test_a_connection_per_origin_is_kept_across_many_origins(
        servers: list[KeepAliveServer]) -> None:
    servers += [KeepAliveServer() for _ in range(20)]
    with fetcher(32) as f:
        for _ in range(3):  # round robin: each server's connection waits 19 others out
            for s in servers:
                res = f.get(s.url(), etag='"v1"', trusted=_origin(s))
                assert res.status == 304 and res.body is None
    assert [s.requests for s in servers] == [3] * 20
    assert [s.connections for s in servers] == [1] * 20  # one each, reused


def test_a_full_pool_closes_its_oldest_idle_connection(servers: list[KeepAliveServer]) -> None:
    servers += [KeepAliveServer() for _ in range(6)]
    with fetcher(4) as f:
        for _ in range(2):
            for s in servers:
                assert f.get(s.url(), trusted=_origin(s)).status == 200
        assert len(f._transport._pool.connections) <= 4
    # six origins through four connections in turn: the one needed next is
    # always the oldest, closed to make room, so none is reused
    assert [s.connections for s in servers] == [2] * 6


def test_a_connection_the_server_closed_is_not_reused(servers: list[KeepAliveServer]) -> None:
    s = KeepAliveServer(hang_up=True)
    servers.append(s)
    with fetcher(8) as f:
        assert f.get(s.url(), trusted=_origin(s)).status == 200
        assert s.closed.wait(5)  # the server hung up on the idle connection
        res = f.get(s.url(), etag='"v1"', trusted=_origin(s))  # no error: a new connection
        assert res.status == 304
    assert (s.connections, s.requests) == (2, 2)


def test_an_expired_connection_is_not_reused(servers: list[KeepAliveServer]) -> None:
    s = KeepAliveServer()
    servers.append(s)
    # keepalive_expiry below zero: every idle connection has expired at once
    with httppool.OriginPool(max_connections=4, keepalive_expiry=-1.0) as pool:
        for _ in range(3):
            assert pool.request("GET", s.url()).status == 200
        assert len(pool.connections) <= 1
    assert (s.connections, s.requests) == (3, 3)
    with httppool.OriginPool(max_connections=4, keepalive_expiry=60.0) as pool:
        for _ in range(3):
            assert pool.request("GET", s.url()).status == 200
    assert (s.connections, s.requests) == (4, 6)


def test_a_request_waits_for_a_connection_of_a_full_pool(
        servers: list[KeepAliveServer]) -> None:
    """One connection, requests to two origins from eight threads: each waits
    its turn (queued, as in httpcore) and every one is answered."""
    servers += [KeepAliveServer(), KeepAliveServer()]
    statuses: list[int] = []
    with httppool.OriginPool(max_connections=1) as pool:
        def ask(i: int) -> None:
            statuses.append(pool.request("GET", servers[i % 2].url()).status)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(pool.connections) <= 1
    assert statuses == [200] * 8
    assert servers[0].requests + servers[1].requests == 8


def test_close_idle_hangs_up_idle_connections_only(servers: list[KeepAliveServer]) -> None:
    """What the daemon calls after each pass: no socket stays open until the
    next pass, and the next request simply opens a new connection."""
    import time

    servers += [KeepAliveServer() for _ in range(5)]
    with fetcher(16) as f:
        for s in servers:
            assert f.get(s.url(), trusted=_origin(s)).status == 200
        assert len(f._transport._pool.connections) == 5
        f.close_idle()
        assert f._transport._pool.connections == []
        deadline = time.monotonic() + 5
        while sum(s.ended for s in servers) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [s.ended for s in servers] == [1] * 5  # each server saw its hang-up
        res = f.get(servers[0].url(), etag='"v1"', trusted=_origin(servers[0]))
        assert res.status == 304
    assert servers[0].connections == 2 and servers[0].requests == 2


def _origin(s: KeepAliveServer) -> object:
    from aggregator.guard import trusted_origin

    return trusted_origin(s.url())


def test_origin_pool_is_an_httpcore_pool() -> None:
    assert issubclass(httppool.OriginPool, httpcore.ConnectionPool)
