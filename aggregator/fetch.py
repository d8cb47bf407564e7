"""HTTP for feeds and article pages: conditional GET, limits, redirects and the
address guard.

Every request obeys the same rules: a connect timeout and a deadline for the
whole exchange (a server trickling one byte a second is cut off), a size cap
on the decoded body (so a gzip bomb is too), a redirect limit with loop
detection, a User-Agent naming the project, bounded concurrency per host.

The address guard: only http(s) URLs, and never a loopback, private,
link-local, multicast or reserved address unless it is the host the caller
trusts (the feed's own host). It is checked before every hop from the URL and
again at connect time on the resolved address, so neither a redirect nor a DNS
answer that changes between the two can slip through.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from aggregator.errors import (
    BlockedAddressError,
    FetchError,
    HTTPStatusError,
    NetworkError,
    RedirectError,
    TooLargeError,
)
from aggregator.types import FetchResult

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
PERMANENT = {301, 308}
VALIDATORS = (b"etag", b"last-modified")
REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 10.0
    timeout: float = 30.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 5
    per_host: int = 2
    user_agent: str = "aggregator"


# --- the address guard ---------------------------------------------------------


def host_of(url: str) -> str:
    """The URL's host name, lower-case; "" for a URL too broken to have one."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. "http://[::1/": a malformed URL trusts nobody
        return ""


def is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


_local = threading.local()


def _trusted() -> str | None:
    return getattr(_local, "trusted_host", None)


def _deadline() -> float | None:
    return getattr(_local, "deadline", None)


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise NetworkError(f"cannot resolve {host}: {e}") from e
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: str, trusted_host: str | None) -> None:
    """Refuse a URL the guard would refuse, before any byte is sent."""
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - raises on a malformed IPv6 literal
    except ValueError as e:
        raise BlockedAddressError(f"refused malformed URL: {url[:200]}") from e
    if parts.scheme not in ("http", "https"):
        raise BlockedAddressError(f"refused {parts.scheme or 'relative'} URL: {url[:200]}")
    host = (parts.hostname or "").lower()
    if not host:
        raise BlockedAddressError(f"refused URL without a host: {url[:200]}")
    if host == trusted_host:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise BlockedAddressError(f"refused URL with a bad port: {url[:200]}") from e
    for ip in resolve(host, port):
        if not is_public(ip):
            raise BlockedAddressError(f"refused internal address {ip} for {host}")


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
    """Resolves the host itself, checks every address, connects to a checked one."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        host = host.lower()
        try:
            ips = resolve(host, port)
        except NetworkError as e:
            raise httpcore.ConnectError(str(e)) from e
        if host != _trusted():
            blocked = [ip for ip in ips if not is_public(ip)]
            if blocked:
                raise BlockedAddressError(f"refused internal address {blocked[0]} for {host}")
        last: Exception | None = None
        for ip in ips:
            try:
                stream = self._inner.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )
                return _DeadlineStream(stream)
            except httpcore.ConnectError as e:
                last = e
        raise last or httpcore.ConnectError(f"no address for {host}")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# --- the fetcher -------------------------------------------------------------------


class Fetcher:
    """One HTTP client for the whole process; thread-safe."""

    def __init__(self, limits: Limits, *, pool_size: int = 16) -> None:
        self.limits = limits
        transport = httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            retries=0,
        )
        transport._pool._network_backend = GuardedBackend()  # the guard sits at connect time
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(limits.timeout, connect=limits.connect_timeout),
            follow_redirects=False,
            headers={"User-Agent": limits.user_agent},
            trust_env=False,
        )
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _host_slot(self, host: str) -> Any:
        with self._hosts_lock:
            sem = self._hosts.setdefault(host, threading.BoundedSemaphore(self.limits.per_host))
        with sem:
            yield

    def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        trusted_host: str | None = None,
        accept: str = FEED_ACCEPT,
    ) -> FetchResult:
        """GET ``url`` following redirects; 200 and 304 come back, anything else
        raises a FetchError. ``trusted_host`` may be an internal address."""
        _local.trusted_host = trusted_host
        _local.deadline = None  # starts once a host slot is ours (see _one)
        start = time.monotonic()
        try:
            return self._follow(url, etag, last_modified, trusted_host, accept, start)
        finally:
            _local.trusted_host = None
            _local.deadline = None

    def _follow(self, url: str, etag: str | None, last_modified: str | None,
                trusted_host: str | None, accept: str, start: float) -> FetchResult:
        headers = {b"Accept": accept.encode("latin-1")}
        if etag:
            headers[b"If-None-Match"] = _raw(etag)
        if last_modified:
            headers[b"If-Modified-Since"] = _raw(last_modified)
        current = url
        visited = {url}
        permanent = True
        for _ in range(self.limits.max_redirects + 1):
            check_url(current, trusted_host)
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
                with self._client.stream("GET", url, headers=headers) as resp:
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
                    chunks = []
                    size = 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > cap:
                            raise TooLargeError(f"body over the cap of {cap} bytes")
                        chunks.append(chunk)
                    return resp.status_code, resp_headers, b"".join(chunks)
        except FetchError:
            raise
        except httpx.TimeoutException as e:
            limit = (self.limits.connect_timeout if isinstance(e, httpx.ConnectTimeout)
                     else self.limits.timeout)
            raise NetworkError(f"timed out after {limit:g} s ({type(e).__name__})") from e
        except httpx.DecodingError as e:
            raise NetworkError(f"bad content encoding: {e}") from e
        except httpx.InvalidURL as e:  # not an HTTPError: it must not escape as a bug
            raise FetchError(f"invalid URL: {e}") from e
        except httpx.HTTPError as e:
            raise NetworkError(str(e) or type(e).__name__) from e


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
