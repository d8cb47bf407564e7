"""The address guard's rules: which addresses are public, which origin a user
chose, what ``allow_private`` opens. Pure: no DNS, no sockets (fetch.py
resolves and connects, and asks these rules about every address).

The rules, in order:

1. Only http(s) URLs with a host.
2. The *trusted origin* (scheme, host, port) may be internal. There is one
   only when the URL the user chose (a feeds.opml row, a URL typed on the
   command line) names a plain IP address or ``localhost``; it covers that
   feed and its same-origin article links, never a host *name* that merely
   resolves to an internal address today (DNS rebinding), and never an odd
   spelling such as ``127.1`` or ``0x7f.1`` (those are names to the rules
   and resolve to loopback, so they are refused like any other name). It is
   reached at its own address only (a loopback one for localhost), whatever a
   resolver says of a spelling such as ``127.0.0.1.``.
3. Host names and networks listed in ``allow_private`` may be internal.
4. Everything else must resolve to public addresses only, checked on the
   address actually connected to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Not public, though parts of several are "global" to ipaddress (which also
# misses NAT64, 6to4 and Teredo, whose addresses embed an IPv4 address that may
# be internal). IPv6 must moreover be in 2000::/3, the only global unicast block.
_NOT_PUBLIC_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8",        # "this network"; 0.0.0.0 reaches the local host on Linux
    "10.0.0.0/8",       # private
    "100.64.0.0/10",    # carrier-grade NAT
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local, cloud metadata
    "172.16.0.0/12",    # private
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # documentation
    "192.88.99.0/24",   # 6to4 relay anycast
    "192.168.0.0/16",   # private
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",   # documentation
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, and 255.255.255.255 broadcast
))
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NOT_PUBLIC_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "2001::/23",        # IETF protocol assignments, Teredo (2001::/32) among them
    "2001:db8::/32",    # documentation
    "2002::/16",        # 6to4: embeds an IPv4 address
    "3fff::/20",        # documentation
))
# Outside 2000::/3, so refused anyway; listed for the reader (and the tests):
# ::/128 unspecified, ::1 loopback, ::/96 IPv4-compatible, ::ffff:0:0/96
# IPv4-mapped, 64:ff9b::/96 and 64:ff9b:1::/48 NAT64, 100::/64 discard,
# fc00::/7 unique-local, fe80::/10 link-local, fec0::/10 site-local, ff00::/8
# multicast.


def is_public(ip: str) -> bool:
    """True for an address anyone on the Internet could reach: a global unicast
    address outside every special-purpose block. An address with a zone id
    (``fe80::1%eth0``) or that doesn't parse is never public."""
    if "%" in ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return not any(addr in net for net in _NOT_PUBLIC_V4)
    return addr in _GLOBAL_UNICAST_V6 and not any(addr in net for net in _NOT_PUBLIC_V6)


def is_ip_literal(host: str) -> bool:
    """A host that is an IP address in its standard spelling: dotted quad or an
    IPv6 address (as urlsplit gives it, without brackets). ``127.1``,
    ``2130706433`` and ``0x7f.0.0.1`` are not: only a resolver makes them
    addresses."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# normalize_host and origin_of are pure and asked several times per request (the
# guard, the host slot, the trusted origin): remembered, a 304 costs a fifth less.
# Only short arguments are remembered, so the memory is bounded in bytes too: a
# redirect's Location may be 100 kB long (httpcore's limit on a head), and a
# hostile server answering each request with another would otherwise keep
# 1024 + 4096 of them for the life of the process. Longer ones (no real host
# name is over 253 characters; clean.py drops item links over 4096) are
# computed each time.
CACHED_HOST_CHARS = 255
CACHED_URL_CHARS = 4096


def normalize_host(host: str) -> str:
    """Lower-case, without one trailing dot; an IP address in its canonical
    spelling (``[0:0::1]`` and ``[::1]`` are one origin)."""
    if len(host) <= CACHED_HOST_CHARS:
        return _normalize_host_cached(host)
    return _normalize_host(host)


def _normalize_host(host: str) -> str:
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if is_ip_literal(host):
        return str(ipaddress.ip_address(host))
    return host


_normalize_host_cached = lru_cache(maxsize=4096)(_normalize_host)


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin:
    """The URL's origin; ValueError (with the reason) for a URL the guard refuses
    whatever its address: not http(s), no host, malformed, a bad port."""
    if len(url) <= CACHED_URL_CHARS:
        return _origin_of_cached(url)
    return _origin_of(url)


def _origin_of(url: str) -> Origin:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as e:  # "http://[::1/", "http://h:99999/"
        raise ValueError(f"malformed URL ({e})") from e
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL ({scheme or 'relative'})")
    if not host:
        raise ValueError("no host")
    return Origin(scheme, normalize_host(host), port or (443 if scheme == "https" else 80))


_origin_of_cached = lru_cache(maxsize=1024)(_origin_of)


def trusted_origin(url: str) -> Origin | None:
    """The origin a URL the user chose may reach even when it is internal: its
    own, when its host is an IP address or ``localhost``; None otherwise (and
    for a URL the guard refuses anyway)."""
    try:
        origin = origin_of(url)
    except ValueError:
        return None
    if origin.host == "localhost" or is_ip_literal(origin.host):
        return origin
    return None


_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)"
                        r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")


@dataclass(frozen=True)
class Guard:
    """What ``allow_private`` opens: networks whose addresses may be connected
    to, and host names that may resolve to anything."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Guard:
        """From ``["10.0.0.0/8", "192.168.1.5", "intranet.example"]``; ValueError
        naming the first entry that is neither a network nor a host name."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = normalize_host(entry)
            if "/" in entry or not _HOST_NAME.match(name) or _looks_numeric(name):
                raise ValueError(f"{raw!r} is neither a network (CIDR such as 10.0.0.0/8) "
                                 "nor a host name")
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def allows_ip(self, ip: str) -> bool:
        """Public, or in a listed network. An IPv6 address that carries an IPv4
        one (IPv4-mapped, which *is* that IPv4 address on the wire; NAT64 and
        6to4, which a gateway translates to it) is judged by its IPv4 address
        too: ``::/0`` opens IPv6 networks, not 127.0.0.1 as ``::ffff:7f00:1``."""
        if is_public(ip):
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.ipv4_mapped is not None:
                return self.allows_ip(str(addr.ipv4_mapped))
            inner = _embedded_ipv4(addr)
            if inner is not None and not self.allows_ip(str(inner)):
                return False
        return any(addr in net for net in self.networks)

    def refusal(self, host: str, port: int, ips: Iterable[str],
                trusted: Origin | None) -> str | None:
        """Why a connection to ``host``:``port`` at ``ips`` is refused, or None.
        ``trusted`` is the trusted origin of the request, when it is the origin
        being fetched."""
        name = normalize_host(host)
        ips = list(ips)
        if (trusted is not None and (name, port) == (trusted.host, trusted.port)
                and all(_is_trusted_address(ip, trusted) for ip in ips)):
            return None
        if name in self.hosts:
            return None
        for ip in ips:
            if not self.allows_ip(ip):
                if is_ip_literal(name):
                    return (f"{ip} is an internal address (only the origin of a feed URL "
                            "you subscribed to, or allow_private, may be internal)")
                return (f"{host} resolves to the internal address {ip} (a host name may "
                        "be internal only when allow_private lists it)")
        return None


_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"),)


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 (well-known prefix) or 6to4 address leads to."""
    if any(addr in net for net in _NAT64):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def _is_trusted_address(ip: str, trusted: Origin) -> bool:
    """An address the trusted origin stands for: its own when it is an IP
    address, a loopback address when it is localhost. ``127.0.0.1.`` and
    ``localhost.`` are the trusted origin to the rules but names to the
    resolver, so a hostile DNS may answer anything for them."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if trusted.host == "localhost":
        return addr.is_loopback
    return str(addr) == trusted.host


def _looks_numeric(name: str) -> bool:
    """``2130706433``, ``127.1``, ``0x7f.1``: spellings of addresses, not names."""
    return all(re.fullmatch(r"(0x[0-9a-f]*|[0-9]+)", label) for label in name.split("."))
