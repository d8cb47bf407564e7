"""The HTTP connection pool: httpcore's, with the bookkeeping of a request
proportional to the connections of the request's own origin instead of to
every connection the pool holds.

httpcore's ``ConnectionPool`` runs ``_assign_requests_to_connections`` when a
request starts and when a response ends; each time it walks every connection
it holds, asks every idle one whether its server hung up (a ``poll()`` system
call each) and counts the connections once per connection (quadratic). With
the 16 connections of 8 workers that is up to a tenth of the CPU of a pass
whose every feed answers 304; a pool large enough to keep one connection per
host of a pass over 100 hosts costs more than the connections it saves (0.8 s
instead of 0.35 s for 200 feeds answering 304, see bench/).

``OriginPool`` keeps its connections by origin as well. A request looks at its
own origin's connections only and asks only the one it is about to use whether
it has expired (httpcore's own ``has_expired``: a connection its server closed,
or idle past ``keepalive_expiry``, is never reused: it is closed). The pool is
swept whole, as httpcore does at every request, at most once per ``SWEEP``
seconds, and whenever it is full and a request needs a new connection (the
oldest idle connection then makes room, as in httpcore). The requests are
unchanged (the same bytes, one request per connection at a time, the same
limits); only the choice of connection is cheaper, which lets the Fetcher keep
a large pool (update.POOL_SIZE), so feeds sharing a host reuse its connection.

Used by fetch.Fetcher. It overrides a private method of httpcore 1.x (the only
place that decides which connection serves a request); ``compatible()`` checks
the names it relies on, and the Fetcher keeps httpcore's pool when they are
missing.
"""

from __future__ import annotations

import time
from typing import Any

import httpcore

Key = tuple[bytes, bytes, int]  # an origin: scheme, host, port

SWEEP = 1.0  # seconds between sweeps of the whole pool for closed and expired connections


def compatible() -> bool:
    """Whether this httpcore's pool has what OriginPool builds on."""
    pool = httpcore.ConnectionPool
    return all(hasattr(pool, name) for name in (
        "_assign_requests_to_connections", "create_connection", "handle_request", "close"))


class OriginPool(httpcore.ConnectionPool):
    """httpcore's connection pool, keeping its connections by origin as well
    (see the module's docstring). Every method is called under the pool's lock,
    as httpcore calls ``_assign_requests_to_connections``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._by_origin: dict[Key, list[Any]] = {}
        self._key_of: dict[Any, Key] = {}
        self._swept = time.monotonic()

    def _assign_requests_to_connections(self) -> list[Any]:
        closing: list[Any] = []
        now = time.monotonic()
        if now - self._swept >= SWEEP:
            self._swept = now
            self._sweep(closing)
        for pool_request in self._requests:
            if not pool_request.is_queued():
                continue
            origin = pool_request.request.url.origin
            key = (origin.scheme, origin.host, origin.port)
            connection = self._reusable(key, closing)
            if connection is None:
                if len(self._connections) >= self._max_connections:
                    self._make_room(closing)
                if len(self._connections) >= self._max_connections:
                    continue  # stays queued until a connection ends, as in httpcore
                connection = self.create_connection(origin)
                self._connections.append(connection)
                self._by_origin.setdefault(key, []).append(connection)
                self._key_of[connection] = key
            pool_request.assign_to_connection(connection)
        return closing

    def _reusable(self, key: Key, closing: list[Any]) -> Any:
        """The first available connection to ``key`` that has not expired;
        the closed and expired ones met on the way are dropped."""
        for connection in list(self._by_origin.get(key, ())):
            if connection.is_closed():
                self._drop(connection)
            elif connection.is_available():
                if not connection.has_expired() and not _read_ahead(connection):
                    return connection
                self._drop(connection)
                closing.append(connection)
        return None

    def _sweep(self, closing: list[Any]) -> None:
        """httpcore's clean-up: closed connections go, expired ones and idle
        ones over ``max_keepalive_connections`` are closed."""
        for connection in list(self._connections):
            if connection.is_closed():
                self._drop(connection)
            elif connection.has_expired() or (
                    connection.is_idle()
                    and len(self._connections) > self._max_keepalive_connections):
                self._drop(connection)
                closing.append(connection)

    def _make_room(self, closing: list[Any]) -> None:
        """A full pool: sweep it; still full, close its oldest idle connection."""
        self._swept = time.monotonic()
        self._sweep(closing)
        if len(self._connections) >= self._max_connections:
            idle = next((c for c in self._connections if c.is_idle()), None)
            if idle is not None:
                self._drop(idle)
                closing.append(idle)

    def _drop(self, connection: Any) -> None:
        if connection in self._connections:  # (close() may have emptied the list)
            self._connections.remove(connection)
        key = self._key_of.pop(connection, None)
        if key is None:
            return
        same = self._by_origin[key]
        same.remove(connection)
        if not same:
            del self._by_origin[key]

    def close_idle(self) -> None:
        """Close every idle connection: a daemon between its passes keeps no
        sockets open (the next pass would find them expired anyway)."""
        with self._optional_thread_lock:
            idle = [c for c in self._connections if c.is_idle() or c.is_closed()]
            for connection in idle:
                self._drop(connection)
        self._close_connections(idle)

    def close(self) -> None:
        """httpcore's close, the bookkeeping emptied under the same hold of the
        lock: a request assigned meanwhile (another thread) finds both empty."""
        with self._optional_thread_lock:
            closing = list(self._connections)
            self._connections = []
            self._by_origin.clear()
            self._key_of.clear()
        self._close_connections(closing)


def _read_ahead(connection: Any) -> bool:
    """Whether an idle connection holds bytes its server sent before any
    request asked for them: read with the previous response (in the same
    packet), they would be taken for the next request's answer (a response
    queued ahead: another feed of the host would get it). httpcore does not
    look; h11 keeps them in its buffer (``trailing_data``)."""
    h11_state = getattr(getattr(connection, "_connection", None), "_h11_state", None)
    trailing = getattr(h11_state, "trailing_data", None)
    return bool(trailing and trailing[0])
