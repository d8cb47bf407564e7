"""HTTP for feeds and article pages: conditional GET, limits, redirects,
content decoding and the address guard.

Every request obeys the same rules: a connect timeout and a deadline for the
whole exchange (a server trickling one byte a second is cut off, a DNS lookup
that hangs too), a size cap on the bytes received and on every decoded layer
(so a gzip bomb, stacked or not, never takes more than the cap in memory), a
redirect limit with loop detection, a User-Agent naming the project, bounded
concurrency per host.

The address guard (rules in guard.py): only http(s) URLs, and never an
internal address (loopback, private, link-local, NAT64, ...) unless it is the
trusted origin of the request (a feed URL naming an IP address or localhost)
or allow_private opens it. Each hop is checked before it is sent (from a DNS
lookup: this also covers a pooled connection) and every new connection again
on the very addresses it connects to, so neither a redirect nor a DNS answer
that changes between the two (rebinding) can slip through.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from aggregator._imports import load_without
from aggregator.errors import (
    BlockedAddressError,
    DecodingError,
    FetchError,
    HTTPStatusError,
    NetworkError,
    RedirectError,
    TooLargeError,
)
from aggregator.guard import Guard, Origin, normalize_host, origin_of
from aggregator.types import FetchResult

load_without(("trio", "anyio", "click"), ("httpcore", "httpx"))  # see _imports

import httpcore  # noqa: E402
import httpx  # noqa: E402

from aggregator import httppool  # noqa: E402  (imports httpcore: after load_without)

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
ACCEPT_ENCODING = "gzip, deflate"  # exactly what _Inflater decodes
PERMANENT = {301, 308}
VALIDATORS = (b"etag", b"last-modified")
REDIRECTS = {301, 302, 303, 307, 308}
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 10.0
    timeout: float = 30.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    per_host: int = 2
    user_agent: str = "aggregator"
    guard: Guard = field(default_factory=Guard)  # what allow_private opens


def host_of(url: str) -> str:
    """The URL's host name, lower-case; "" for a URL too broken to have one."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. "http://[::1/": a malformed URL trusts nobody
        return ""


# --- DNS within the deadline --------------------------------------------------------

getaddrinfo = socket.getaddrinfo  # looked up at each call: the tests replace it
MAX_LOOKUPS = 16  # lookups running at once; a hung one holds its slot until it returns
_lookups = threading.BoundedSemaphore(MAX_LOOKUPS)


# A name the resolver said does not exist, kept so that one dead host costs one lookup per
# pass instead of one per article linking to it. Only the resolver's definite answers
# (EAI_NONAME: no such name; EAI_NODATA: the name has no address) are kept: a timeout or
# EAI_AGAIN (the resolver itself is in trouble) says nothing about the name.
_NO_SUCH_NAME = frozenset(
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name))


class DNSFailures:
    """The names that did not resolve, each kept ``ttl`` seconds (monotonic) or
    until ``clear``; keyed by normalized host (``Dead.example.`` is
    ``dead.example``); at most ``size`` hosts. Lookups of one name made at the
    same time share one answer, so twelve workers fetching twelve articles of
    one dead host ask once, not twelve times. Thread-safe. Each Fetcher has
    one; a pass clears it when it starts, so it lives one pass long."""

    def __init__(self, ttl: float = 300.0, size: int = 4096,
                 clock: Any = time.monotonic) -> None:
        self.ttl, self.size, self._clock = ttl, size, clock
        self._hosts: dict[str, tuple[float, str]] = {}  # host -> (expiry, error message)
        self._flights: dict[str, _Flight] = {}  # lookups under way
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._hosts.clear()

    def get(self, host: str) -> str | None:
        """The error message of ``host``'s failed lookup, while it is kept."""
        with self._lock:
            return self._get(normalize_host(host))

    def _get(self, key: str) -> str | None:
        entry = self._hosts.get(key)
        if entry is not None and entry[0] <= self._clock():
            del self._hosts[key]
            entry = None
        return entry[1] if entry else None

    def add(self, host: str, message: str) -> None:
        with self._lock:
            self._add(normalize_host(host), message)

    def _add(self, key: str, message: str) -> None:
        now = self._clock()
        if len(self._hosts) >= self.size:
            for k in [k for k, (expiry, _) in self._hosts.items() if expiry <= now]:
                del self._hosts[k]
            if len(self._hosts) >= self.size:
                self._hosts.pop(next(iter(self._hosts)))  # the oldest
        self._hosts[key] = (now + self.ttl, message)

    def __len__(self) -> int:
        return len(self._hosts)

    def lookup(self, host: str, look: Any, timeout: float) -> list[str]:
        """``look()`` (a lookup of ``host`` raising NetworkError), unless the name
        is known not to resolve or another thread is looking it up: then its
        answer. Only a success or a "no such name" is shared; after any other
        failure (a timeout, EAI_AGAIN) each caller asks for itself."""
        key = normalize_host(host)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                known = self._get(key)
                if known is not None:
                    raise NetworkError(known)
                flight = self._flights.get(key)
                leader = flight is None
                if leader:
                    flight = self._flights[key] = _Flight()
            assert flight is not None
            if leader:
                break
            if not flight.done.wait(max(deadline - time.monotonic(), 0.0)):
                raise NetworkError(f"DNS lookup of {host} timed out after {timeout:g} s")
            if flight.ips is not None:
                return list(flight.ips)
            if flight.failed_for_good:
                continue  # the name is in the cache now: its error
            return look()  # the other lookup failed for its own reasons: ask ourselves
        try:
            flight.ips = look()
            return list(flight.ips)
        except NetworkError as e:
            cause = e.__cause__
            if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_NAME:
                flight.failed_for_good = True
                with self._lock:
                    self._add(key, str(e))
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


@dataclass
class _Flight:
    """One lookup under way, which other threads asking for the name wait for."""

    done: threading.Event = field(default_factory=threading.Event)
    ips: list[str] | None = None
    failed_for_good: bool = False


def resolve(host: str, port: int, timeout: float,
            failures: DNSFailures | None = None) -> list[str]:
    """The addresses of ``host``, within ``timeout`` seconds. getaddrinfo has no
    timeout of its own, so it runs on a daemon thread that is left behind when
    it hangs (it can't keep the process from exiting). With ``failures``, a
    name known not to resolve is not asked again (see DNSFailures)."""
    try:
        ipaddress.ip_address(host)
        return [host]  # an address: nothing to look up
    except ValueError:
        pass
    if failures is None:
        return _lookup(host, port, timeout)
    return failures.lookup(host, lambda: _lookup(host, port, timeout), timeout)


def _lookup(host: str, port: int, timeout: float) -> list[str]:
    timeout = max(timeout, 0.0)
    if not _lookups.acquire(timeout=timeout):
        raise NetworkError(f"DNS lookup of {host} timed out after {timeout:g} s "
                           "(every resolver thread is busy)")
    done = threading.Event()
    box: dict[str, Any] = {}

    def lookup() -> None:
        try:
            box["infos"] = getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as e:  # handed to the caller
            box["error"] = e
        finally:
            _lookups.release()
            done.set()

    threading.Thread(target=lookup, name=f"dns {host[:40]}", daemon=True).start()
    if not done.wait(timeout):
        raise NetworkError(f"DNS lookup of {host} timed out after {timeout:g} s")
    error = box.get("error")
    if isinstance(error, (OSError, UnicodeError)):  # socket.gaierror is an OSError
        raise NetworkError(f"cannot resolve {host}: {error}") from error
    if error is not None:
        raise error
    return list(dict.fromkeys(str(info[4][0]) for info in box["infos"]))


# --- the address guard at work ----------------------------------------------------------

_local = threading.local()  # the request this thread is making (sync httpx connects here)


def _deadline() -> float | None:
    return getattr(_local, "deadline", None)


def _within_deadline(timeout: float) -> float:
    deadline = _deadline()
    return timeout if deadline is None else min(timeout, deadline - time.monotonic())


def check_url(url: str, trusted: Origin | None = None, guard: Guard | None = None,
              timeout: float = 10.0, failures: DNSFailures | None = None) -> None:
    """Refuse a URL the guard would refuse, before any byte is sent. ``trusted``
    is the trusted origin of the request (None: none)."""
    guard = guard or Guard()
    try:
        origin = origin_of(url)
    except ValueError as e:
        raise BlockedAddressError(f"refused {url[:200]}: {e}") from e
    if origin == trusted or origin.host in guard.hosts:
        return
    ips = resolve(origin.host, origin.port, timeout, failures)
    reason = guard.refusal(origin.host, origin.port, ips, None)
    if reason:
        raise BlockedAddressError(f"refused {url[:200]}: {reason}")


class _DeadlineStream(httpcore.NetworkStream):
    """Reads and writes never run past the caller's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    @staticmethod
    def _budget(timeout: float | None, exc: type[Exception]) -> float | None:
        deadline = _deadline()
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise exc("deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._budget(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._budget(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves the host itself, checks every address, connects to a checked one
    (httpcore still sends the host name in SNI and Host). This check is the
    authoritative one: it sees the answer actually used."""

    def __init__(self, guard: Guard | None = None,
                 failures: DNSFailures | None = None) -> None:
        self._inner = httpcore.SyncBackend()
        self.guard = guard or Guard()
        self.failures = failures

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        limit = _within_deadline(10.0 if timeout is None else timeout)
        ips = resolve(host, port, limit, self.failures)
        trusted: Origin | None = getattr(_local, "trusted", None)
        reason = self.guard.refusal(host, port, ips, trusted)
        if reason:
            url = getattr(_local, "url", None) or f"{host}:{port}"
            raise BlockedAddressError(f"refused {url[:200]}: {reason} (at connect)")
        last: Exception | None = None
        for ip in ips:
            # each attempt gets what is left of the deadline, not a fresh connect
            # timeout: a host that drops packets after a slow first hop must not
            # take the exchange past its deadline
            limit = _within_deadline(10.0 if timeout is None else timeout)
            if limit <= 0:
                raise httpcore.ConnectTimeout("deadline passed")
            try:
                stream = self._inner.connect_tcp(
                    ip, port, timeout=limit, local_address=local_address,
                    socket_options=socket_options,
                )
                return _DeadlineStream(stream)
            except httpcore.ConnectError as e:
                last = e
        raise last or httpcore.ConnectError(f"no address for {host}")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# --- content decoding under the size cap -----------------------------------------------

MAX_CODINGS = 2  # "gzip, gzip" is odd but seen; a third layer is only ever an attack
# concatenated gzip members are legal, a few are seen; 10 MB of empty 20-byte
# members took 2.3 s of CPU (Python per member) where 10 MB of gzip takes 0.05 s
MAX_MEMBERS = 1024
STEP = 64 * 1024  # most bytes any layer produces before they are counted
_GZIP_MAGIC = b"\x1f\x8b"


class _Inflater:
    """Undoes one content coding, ``STEP`` bytes at a time at most, and never
    more than ``cap`` bytes in all: zlib is told the remaining budget
    (max_length) before it inflates, so a bomb is stopped before it exists."""

    def __init__(self, coding: str, cap: int) -> None:
        self.coding = coding
        self.cap = cap
        self.produced = 0
        self._gzip = coding in ("gzip", "x-gzip")
        self._d: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        self._head = b""  # deflate: the first two bytes tell zlib-wrapped from raw
        self._after = b""  # bytes after the end of a gzip member
        self._ended = False  # trailing bytes that are not another member: ignored
        self._members = 1

    def push(self, data: bytes) -> Iterator[bytes]:
        if self._d is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        while data and not self._ended:
            if self._d.eof:
                data = self._next_member(data)
                continue
            try:
                while True:
                    out = self._d.decompress(data, min(STEP, self.cap - self.produced + 1))
                    data = self._d.unconsumed_tail
                    self.produced += len(out)
                    if self.produced > self.cap:
                        raise TooLargeError(f"body over the cap of {self.cap} bytes "
                                            f"once {self.coding} is decoded")
                    if out:
                        yield out
                    if self._d.eof or not (data or out):
                        break
            except zlib.error as e:
                raise DecodingError(f"bad {self.coding} data: {e}") from e
            if self._d.eof:
                data = self._d.unused_data + data

    def _next_member(self, data: bytes) -> bytes:
        """After one gzip member another may follow (concatenated gzip files are one
        gzip stream); anything else after the end is ignored, as browsers do."""
        data = self._after + data
        self._after = b""
        if not self._gzip or data[:len(_GZIP_MAGIC)] != _GZIP_MAGIC[:len(data)]:
            self._ended = True
            return b""
        if len(data) < 2:
            self._after = data
            return b""
        self._members += 1
        if self._members > MAX_MEMBERS:
            raise DecodingError(f"refused more than {MAX_MEMBERS} concatenated gzip members")
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return data


def _codings(header: str) -> list[str]:
    """The codings to undo, in the order to undo them (the reverse of the header's)."""
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > MAX_CODINGS:
        raise DecodingError(f"refused {len(codings)} stacked content encodings "
                            f"({header[:100]!r}); at most {MAX_CODINGS}")
    for c in codings:
        if c not in ("gzip", "x-gzip", "deflate"):
            raise DecodingError(f"unsupported content encoding {c[:40]!r} "
                                f"(we ask for {ACCEPT_ENCODING})")
    return codings[::-1]


def _decode(raw: Iterable[bytes], codings: list[str], cap: int) -> Iterator[bytes]:
    layers = [_Inflater(c, cap) for c in codings]

    def through(i: int, data: bytes) -> Iterator[bytes]:
        if i == len(layers):
            yield data
            return
        for piece in layers[i].push(data):
            yield from through(i + 1, piece)

    for chunk in raw:
        yield from through(0, chunk)


# --- TLS ----------------------------------------------------------------------------


class _LazyTLSContext(ssl.SSLContext):
    """What httpx's default verification builds (``ssl.create_default_context``
    with certifi's CA bundle, or the one SSL_CERT_FILE / SSL_CERT_DIR names:
    certificates required, host names checked), except that the CA bundle is
    read at the first TLS handshake instead of when the client is made. Reading
    it costs 25-35 ms, a tenth of a pass whose every feed answers 304, and a
    pass over plain-http feeds never needs it."""

    _ca_loaded = False
    _ca_lock = threading.Lock()
    _cafile: str | None = None
    _capath: str | None = None

    def __new__(cls) -> _LazyTLSContext:
        ctx = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)  # verify_mode, check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
        if sys.version_info >= (3, 13):  # as create_default_context does from 3.13 on
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        # the trust anchors httpx's transport chose (trust_env): read now, as it did
        ctx._cafile = os.environ.get("SSL_CERT_FILE") or None
        ctx._capath = None if ctx._cafile else os.environ.get("SSL_CERT_DIR") or None
        keylog = os.environ.get("SSLKEYLOGFILE")  # as create_default_context does
        if keylog and not sys.flags.ignore_environment and hasattr(ctx, "keylog_filename"):
            ctx.keylog_filename = keylog
        return ctx

    def __init__(self) -> None:  # SSLContext.__init__ takes the protocol; __new__ set it
        pass

    def load_ca(self) -> None:
        if self._ca_loaded:
            return
        with self._ca_lock:
            if not self._ca_loaded:
                if self._cafile or self._capath:
                    self.load_verify_locations(cafile=self._cafile, capath=self._capath)
                else:
                    import certifi

                    self.load_verify_locations(cafile=certifi.where())
                self._ca_loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        self.load_ca()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # type: ignore[override]
        self.load_ca()
        return super().wrap_bio(*args, **kwargs)


# --- the fetcher -------------------------------------------------------------------


class Fetcher:
    """One HTTP client for the whole process; thread-safe."""

    def __init__(self, limits: Limits, *, pool_size: int = 16) -> None:
        self.limits = limits
        transport = httpx.HTTPTransport(
            verify=_LazyTLSContext(),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size,
                                keepalive_expiry=KEEPALIVE_EXPIRY),
            retries=0,
        )
        # names that did not resolve, not asked again this pass (see DNSFailures)
        self.dns_failures = DNSFailures()
        # the guard sits at connect time
        backend = GuardedBackend(limits.guard, self.dns_failures)
        if httppool.compatible():  # the pool that looks at a request's origin only
            transport._pool = httppool.OriginPool(
                ssl_context=transport._pool._ssl_context, max_connections=pool_size,
                max_keepalive_connections=pool_size, keepalive_expiry=KEEPALIVE_EXPIRY,
                retries=0, network_backend=backend)
        else:
            transport._pool._network_backend = backend
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(limits.timeout, connect=limits.connect_timeout),
            follow_redirects=False,
            headers={"User-Agent": limits.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
            trust_env=False,
        )
        # What the client's send() adds to every request, ahead of the request's own
        # headers, in its order (see _exchange); the timeouts as it hands them on.
        self._transport = transport
        sent = {name.lower(): value for name, value in self._client.headers.raw}
        self._headers = [(b"Connection", sent[b"connection"]),
                         (b"User-Agent", sent[b"user-agent"]),
                         (b"Accept-Encoding", sent[b"accept-encoding"])]
        self._timeouts = self._client.timeout.as_dict()
        # host -> (its semaphore, requests holding or awaiting it); an entry goes
        # when its last request ends, so a feed linking to a million hosts
        # leaves nothing behind
        self._hosts: dict[str, tuple[threading.BoundedSemaphore, int]] = {}
        self._hosts_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def close_idle(self) -> None:
        """Close the connections no request is using (the daemon does after
        each pass: up to POOL_SIZE sockets would otherwise stay open until the
        next one). httpcore's own pool (the fallback) closes them at its next use."""
        pool = getattr(self._transport, "_pool", None)
        if isinstance(pool, httppool.OriginPool):
            pool.close_idle()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _exchange(self, url: str, headers: dict[bytes, bytes]) -> Iterator[httpx.Response]:
        """One GET on the client's transport: what ``Client.stream`` does for a
        request without redirects or hooks (the same bytes on the wire, cookies
        kept and sent as the client keeps them, a URL's ``user:pass@`` sent as
        Basic auth as the client did, httpx's errors), without its per-request
        layers: a third of the CPU of a 304 (see bench/)."""
        client = self._client
        if client.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        request = httpx.Request("GET", url, headers=[*self._headers, *headers.items()],
                                extensions={"timeout": self._timeouts})
        if len(client.cookies.jar):
            httpx.Cookies(client.cookies).set_cookie_header(request)
        user, password = request.url.username, request.url.password
        if user or password:  # the client's auth layer: credentials in the URL, Basic
            request = next(httpx.BasicAuth(user, password).sync_auth_flow(request))
        response = self._transport.handle_request(request)
        try:
            response.request = request
            raw = response.headers
            if "set-cookie" in raw or "set-cookie2" in raw:
                client.cookies.extract_cookies(response)
            yield response
        finally:
            response.close()

    @contextmanager
    def _host_slot(self, host: str) -> Any:
        """One of the host's per_host slots. The host is normalized first:
        ``Example.org.`` and ``example.org`` are one host to be polite to."""
        host = normalize_host(host)
        with self._hosts_lock:
            sem, users = self._hosts.get(host) or (
                threading.BoundedSemaphore(self.limits.per_host), 0)
            self._hosts[host] = (sem, users + 1)
        try:
            with sem:
                yield
        finally:
            with self._hosts_lock:
                sem, users = self._hosts[host]
                if users == 1:
                    del self._hosts[host]
                else:
                    self._hosts[host] = (sem, users - 1)

    def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        trusted: Origin | None = None,
        accept: str = FEED_ACCEPT,
    ) -> FetchResult:
        """GET ``url`` following redirects; 200 and 304 come back, anything else
        raises a FetchError. ``trusted`` (see guard.trusted_origin of the URL the
        user chose) may be internal, as long as the request stays in it."""
        _local.deadline = None  # starts once a host slot is ours (see _one)
        start = time.monotonic()
        try:
            return self._follow(url, etag, last_modified, trusted, accept, start)
        finally:
            _local.trusted = _local.url = _local.deadline = None

    def _follow(self, url: str, etag: str | None, last_modified: str | None,
                trusted: Origin | None, accept: str, start: float) -> FetchResult:
        headers = {b"Accept": accept.encode("latin-1")}
        if etag:
            headers[b"If-None-Match"] = _raw(etag)
        if last_modified:
            headers[b"If-Modified-Since"] = _raw(last_modified)
        current = url
        visited = {url}
        permanent = True
        for _ in range(self.limits.max_redirects + 1):
            # trust holds while the chain stays in the trusted origin: a redirect
            # out of it and back is the other site's choice, not the user's
            if trusted is not None and _origin(current) != trusted:
                trusted = None
            check_url(current, trusted, self.limits.guard,
                      _within_deadline(self.limits.connect_timeout), self.dns_failures)
            _local.trusted, _local.url = trusted, current
            status, resp_headers, body = self._one(current, headers)
            if status in REDIRECTS:
                location = resp_headers.get("location")
                if not location:
                    raise RedirectError(f"HTTP {status} without Location")
                try:
                    nxt = urljoin(current, location.strip())
                except ValueError as e:
                    raise RedirectError(f"bad Location: {location[:200]}") from e
                if nxt in visited:
                    raise RedirectError(f"redirect loop at {nxt[:200]}")
                visited.add(nxt)
                permanent = permanent and status in PERMANENT
                current = nxt
                continue
            if status in (200, 304) or (200 <= status < 300 and body is not None):
                return FetchResult(
                    url=url,
                    final_url=current,
                    status=status,
                    headers=resp_headers,
                    body=body if status != 304 else None,
                    permanent_url=current if permanent and current != url else None,
                    elapsed=time.monotonic() - start,
                )
            raise HTTPStatusError(status, f"HTTP {status}", resp_headers)
        raise RedirectError(f"more than {self.limits.max_redirects} redirects")

    def _one(self, url: str, headers: dict[bytes, bytes],
             ) -> tuple[int, dict[str, str], bytes | None]:
        cap = self.limits.max_bytes
        try:
            with self._host_slot(host_of(url)):
                # The deadline covers the whole exchange, redirects included, but
                # not the wait for a host slot: ten slow feeds on one host must
                # not time out the eleventh before it has sent a byte.
                if _local.deadline is None:
                    _local.deadline = time.monotonic() + self.limits.timeout
                with self._exchange(url, headers) as resp:
                    resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                    for name, value in resp.headers.raw:  # validators go back byte for byte
                        if name.lower() in VALIDATORS:
                            resp_headers[name.decode("latin-1").lower()] = value.decode("latin-1")
                    if (resp.status_code in REDIRECTS or resp.status_code == 304
                            or resp.status_code >= 400):
                        _drain(resp)
                        return resp.status_code, resp_headers, None
                    declared = resp_headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > cap:
                        raise TooLargeError(f"body of {int(declared)} bytes is over the cap")
                    codings = _codings(resp_headers.get("content-encoding", ""))
                    body = bytearray()
                    for chunk in _decode(_capped(resp.iter_raw(), cap), codings, cap):
                        body += chunk
                        if len(body) > cap:
                            raise TooLargeError(f"body over the cap of {cap} bytes")
                    return resp.status_code, resp_headers, bytes(body)
        except FetchError:
            raise
        except httpx.TimeoutException as e:
            deadline = _deadline()
            limit = (self.limits.connect_timeout if isinstance(e, httpx.ConnectTimeout)
                     and not (deadline is not None and time.monotonic() >= deadline)
                     else self.limits.timeout)
            raise NetworkError(f"timed out after {limit:g} s ({type(e).__name__})") from e
        except httpx.InvalidURL as e:  # not an HTTPError: it must not escape as a bug
            raise FetchError(f"invalid URL: {e}") from e
        except httpx.HTTPError as e:
            raise NetworkError(str(e) or type(e).__name__) from e


def _origin(url: str) -> Origin | None:
    try:
        return origin_of(url)
    except ValueError:
        return None


def _capped(raw: Iterable[bytes], cap: int) -> Iterator[bytes]:
    """The bytes on the wire, which may not pass the cap either."""
    size = 0
    for chunk in raw:
        size += len(chunk)
        if size > cap:
            raise TooLargeError(f"body over the cap of {cap} bytes")
        yield chunk


DRAIN_BYTES = 64 * 1024


def _drain(resp: httpx.Response) -> None:
    """Read the body of an answer we don't use (a 304, a redirect, an error
    page) so that its connection goes back to the pool: httpcore closes a
    connection whose response was not read to the end. A body too big or of
    unknown size isn't worth reading: that connection closes."""
    declared = resp.headers.get("content-length", "")
    if resp.status_code != 304 and not (declared.isdigit() and int(declared) <= DRAIN_BYTES):
        return
    try:
        for _ in resp.iter_raw():
            pass
    except httpx.HTTPError:
        pass  # the connection is closed, as it would have been


def _raw(validator: str) -> bytes:
    """A stored ETag / Last-Modified as the bytes the server sent (kept as Latin-1
    text, which maps bytes to characters one to one)."""
    try:
        return validator.encode("latin-1")
    except UnicodeEncodeError:  # stored by something else: the best we can do
        return validator.encode("utf-8")
