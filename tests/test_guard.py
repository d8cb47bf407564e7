"""The address guard: its pure rules (aggregator.guard) in tables of extreme
cases, then the rules at work in the Fetcher against real servers on
127.0.0.1, with DNS answers that change under it.

Network rule for this file: nothing is ever sent anywhere but 127.0.0.1. The
resolver used by aggregator.fetch is replaced where a test needs a name to
resolve to something (that is the one fake here: nothing real can make DNS
rebind or hang on this machine), and a tripwire on the socket backend fails
any test that would connect to an address outside 127.0.0.0/8.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import pytest
from hostile_servers import (
    RawServer,
    answers,
    fake_dns,
    feed_row,
    head,
    one_pass,
    rss,
    settings_for,
    write_opml,
)

from aggregator import config
from aggregator.errors import BlockedAddressError, ConfigError, NetworkError
from aggregator.fetch import Fetcher, Limits, check_url
from aggregator.guard import Guard, Origin, is_ip_literal, is_public, origin_of, trusted_origin

FEED = rss("Guarded", ("one", "http://127.0.0.1/1"))
FAST = Limits(connect_timeout=0.5, timeout=2.0, user_agent="t")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = httpcore.SyncBackend.connect_tcp

    def connect_tcp(self: Any, host: str, port: int, *args: Any, **kw: Any) -> Any:
        assert host.startswith("127."), f"test tried to connect to {host}"
        return real(self, host, port, *args, **kw)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)


# --- pure rules -------------------------------------------------------------------------

PUBLIC = [
    "93.184.216.34",
    "1.1.1.1",
    "8.8.8.8",
    "100.63.255.255",  # just below carrier-grade NAT
    "100.128.0.0",  # just above it
    "172.15.255.255",
    "172.32.0.0",
    "192.167.255.255",
    "223.255.255.255",
    "2606:2800:220:1:248:1893:25c8:1946",
    "2a00:1450:4001:81c::200e",
    "2001:4860:4860::8888",
]

NOT_PUBLIC = [
    # IPv4
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.255",
    "127.0.0.1", "127.255.255.254", "169.254.169.254", "172.16.0.1", "172.31.255.255",
    "192.0.0.1", "192.0.0.9", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1",
    "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255",
    # IPv6
    "::", "::1", "::127.0.0.1", "::8.8.8.8",  # unspecified, loopback, IPv4-compatible
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:8.8.8.8",  # IPv4-mapped: never
    "::ffff:0:7f00:1",  # IPv4-translated
    "64:ff9b::7f00:1", "64:ff9b::808:808", "64:ff9b:1::a00:1",  # NAT64, whatever inside
    "100::1",  # discard
    "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:2::1", "2001:10::1", "2001:20::1",  # benchmarking, ORCHID
    "2001:db8::1", "3fff::1",  # documentation
    "2002:7f00:1::1", "2002:808:808::1",  # 6to4
    "fc00::1", "fd12:3456::1",  # unique-local
    "fe80::1", "fe80::1%eth0", "fe80::1%1", "febf::1",  # link-local, with zone ids
    "fec0::1", "feff::1",  # site-local
    "ff02::1", "ff0e::1",  # multicast
    "2606:2800:220:1::1%eth0",  # a zone id makes any address local
    # not addresses at all
    "", "localhost", "127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "[::1]",
]


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses(ip: str) -> None:
    assert is_public(ip)


@pytest.mark.parametrize("ip", NOT_PUBLIC)
def test_internal_and_special_addresses(ip: str) -> None:
    assert not is_public(ip)


def test_only_standard_spellings_are_ip_literals() -> None:
    for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "fe80::1%eth0"):
        assert is_ip_literal(host), host
    for host in ("127.1", "2130706433", "0x7f.1", "0x7f.0.0.1", "0177.0.0.1", "127.0.0.1.",
                 "127.000.000.001", "localhost", "[::1]", ""):
        assert not is_ip_literal(host), host


@pytest.mark.parametrize(("url", "origin"), [
    ("http://127.0.0.1:8080/feed.xml", Origin("http", "127.0.0.1", 8080)),
    ("http://127.0.0.1/feed.xml", Origin("http", "127.0.0.1", 80)),
    ("https://127.0.0.1/feed.xml", Origin("https", "127.0.0.1", 443)),
    ("HTTP://LOCALHOST:80/x", Origin("http", "localhost", 80)),
    ("http://localhost./x", Origin("http", "localhost", 80)),  # trailing dot
    ("http://[::1]:8080/", Origin("http", "::1", 8080)),
    ("http://[0:0::1]/", Origin("http", "::1", 80)),  # one address, one origin
    ("http://[::ffff:127.0.0.1]/", Origin("http", "::ffff:7f00:1", 80)),
    ("http://10.0.0.5/feed", Origin("http", "10.0.0.5", 80)),  # the user chose it
])
def test_trusted_origin_of_a_chosen_ip_address_or_localhost(url: str, origin: Origin) -> None:
    assert trusted_origin(url) == origin


@pytest.mark.parametrize("url", [
    "http://feeds.example.org/rss",  # a name: must resolve to public addresses
    "http://feeds.rebind.test/rss",
    "http://127.1/feed.xml",  # spellings only a resolver turns into loopback
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://localhost.localdomain/",
    "http://foo.localhost/",
    "file://localhost/etc/passwd",
    "ftp://127.0.0.1/",
    "http://[::1/broken",
    "http://127.0.0.1:99999/",
    "not a url",
])
def test_no_trusted_origin(url: str) -> None:
    assert trusted_origin(url) is None


def test_origin_of_refuses_with_a_reason() -> None:
    for url, reason in [("file:///etc/passwd", "not an http(s) URL (file)"),
                        ("//127.0.0.1/", "relative"), ("http:///x", "no host"),
                        ("http://[::1/", "malformed"), ("http://h:99999/", "malformed")]:
        with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            origin_of(url)


def test_allow_private_entries() -> None:
    guard = Guard.parse(["10.0.0.0/8", " 192.168.1.5 ", "fd00::/8", "Intranet.Example.",
                         "10.1.2.3/16"])
    assert guard.hosts == frozenset({"intranet.example"})
    assert [str(n) for n in guard.networks] == [
        "10.0.0.0/8", "192.168.1.5/32", "fd00::/8", "10.1.0.0/16"]
    assert guard.allows_ip("10.9.8.7") and guard.allows_ip("fd00::1")
    assert guard.allows_ip("8.8.8.8")  # public is always allowed
    assert not guard.allows_ip("192.168.1.6") and not guard.allows_ip("127.0.0.1")
    assert guard.refusal("intranet.example", 80, ["127.0.0.1"], None) is None
    assert guard.refusal("INTRANET.example.", 80, ["127.0.0.1"], None) is None
    assert guard.refusal("www.intranet.example", 80, ["10.0.0.1"], None) is None  # by network
    assert guard.refusal("www.intranet.example", 80, ["127.0.0.1"], None)  # exact names only
    for bad in ("10.0.0.0/33", "10.0.0.0/8/8", "300.1.2.3", "127.1", "2130706433", "0x7f.1",
                "http://intranet.example/", "intra net", "", "-bad-.example"):
        with pytest.raises(ValueError, match="neither a network"):
            Guard.parse([bad])


def test_refusal_names_the_host_and_the_reason() -> None:
    guard = Guard()
    reason = guard.refusal("feeds.rebind.test", 80, ["93.184.216.34", "127.0.0.1"], None)
    assert reason and "feeds.rebind.test" in reason and "127.0.0.1" in reason
    assert "allow_private" in reason
    trusted = Origin("http", "127.0.0.1", 8080)
    assert guard.refusal("127.0.0.1", 8080, ["127.0.0.1"], trusted) is None
    assert guard.refusal("127.0.0.1", 8081, ["127.0.0.1"], trusted)
    assert guard.refusal("localhost", 8080, ["127.0.0.1"], trusted)


def test_allow_private_setting(tmp_path: Path) -> None:
    assert config.load(None, env={}).allow_private == ()
    got = config.load(None, env={"AGGREGATOR_ALLOW_PRIVATE": "10.0.0.0/8, intranet.example,"})
    assert got.allow_private == ("10.0.0.0/8", "intranet.example")
    toml = tmp_path / "a.toml"
    toml.write_text('allow_private = ["192.168.0.0/16", "nas.home"]\n')
    assert config.load(toml, env={}).allow_private == ("192.168.0.0/16", "nas.home")
    toml.write_text('allow_private = "10.0.0.0/8"\n')  # a single string is a list of one
    assert config.load(toml, env={}).allow_private == ("10.0.0.0/8",)
    toml.write_text("allow_private = [10]\n")
    with pytest.raises(ConfigError, match="allow_private: not a list of strings"):
        config.load(toml, env={})
    with pytest.raises(ConfigError) as e:
        config.load(None, env={"AGGREGATOR_ALLOW_PRIVATE": "10.0.0.0/8,10.0.0.0/40"})
    assert "\n" not in str(e.value) and "'10.0.0.0/40'" in str(e.value)


# --- the rules at work ------------------------------------------------------------------


def test_same_origin_only_for_a_feed_at_an_ip_address() -> None:
    """A feed at http://127.0.0.1:PORT/ may have its pages fetched from
    127.0.0.1:PORT, not from 127.0.0.1:OTHERPORT nor from localhost:PORT."""
    with RawServer(answers(b"<html>page</html>", content_type="text/html")) as site, \
            RawServer(answers(b"<html>other</html>", content_type="text/html")) as other, \
            Fetcher(FAST) as fetcher:
        trusted = trusted_origin(site.url("/feed.xml"))
        assert fetcher.get(site.url("/page.html"), trusted=trusted).body == b"<html>page</html>"
        with pytest.raises(BlockedAddressError, match=f"127.0.0.1:{other.port}/page.html"):
            fetcher.get(other.url("/page.html"), trusted=trusted)
        with pytest.raises(BlockedAddressError, match="localhost"):
            fetcher.get(site.url("/page.html", host="localhost"), trusted=trusted)
        with pytest.raises(BlockedAddressError):
            fetcher.get(site.url("/page.html", host="127.1"), trusted=trusted)
        time.sleep(0.1)
    assert len(site.requests) == 1 and other.requests == []


def test_allow_private_opens_a_network_and_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    with RawServer(answers(FEED)) as server:
        with Fetcher(FAST) as fetcher:
            with pytest.raises(BlockedAddressError):
                fetcher.get(server.url())
            with pytest.raises(BlockedAddressError, match="intranet.example"):
                fetcher.get(server.url(host="intranet.example"))
        with Fetcher(Limits(connect_timeout=0.5, timeout=2.0,
                            guard=Guard.parse(["127.0.0.0/8"]))) as fetcher:
            assert fetcher.get(server.url()).body == FEED
            assert fetcher.get(server.url(host="intranet.example")).body == FEED
        with Fetcher(Limits(connect_timeout=0.5, timeout=2.0,
                            guard=Guard.parse(["intranet.example"]))) as fetcher:
            assert fetcher.get(server.url(host="intranet.example")).body == FEED
            with pytest.raises(BlockedAddressError):
                fetcher.get(server.url(host="www.intranet.example"))
            with pytest.raises(BlockedAddressError):
                fetcher.get(server.url())
    assert len(server.requests) == 3


def test_dns_answer_that_changes_between_check_and_connect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebinding: the pre-check sees a public address, the connection would go
    to 127.0.0.1. The connect-time check on the address actually used refuses."""
    answers_given = iter([["93.184.216.34"], ["127.0.0.1"]])
    asked = fake_dns(monkeypatch, lambda host: next(answers_given))
    with RawServer(answers(FEED)) as server, Fetcher(FAST) as fetcher:
        with pytest.raises(BlockedAddressError, match=r"rebind\.test.*127\.0\.0\.1.*at connect"):
            fetcher.get(server.url(host="rebind.test"))
        time.sleep(0.1)
    assert asked == ["rebind.test", "rebind.test"]  # checked, then resolved to connect
    assert server.requests == []


def test_redirect_to_a_name_that_rebinds_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    with RawServer(answers(FEED)) as inside:
        hop = answers(b"", status="302 Found",
                      headers=[("Location", inside.url(host="rebind.test"))])
        with RawServer(hop) as feed, Fetcher(FAST) as fetcher:
            with pytest.raises(BlockedAddressError, match="rebind.test"):
                fetcher.get(feed.url(), trusted=trusted_origin(feed.url()))
        time.sleep(0.1)
    assert inside.requests == []


def test_redirect_out_of_the_trusted_origin_and_back_loses_the_trust(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust holds while the chain stays in the trusted origin: a redirect out
    (here to a name allow_private opens) and back is the other site's choice."""
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])

    def home_handler(server: RawServer, conn: Any, request: bytes) -> None:
        if request.startswith(b"GET /feed.xml"):
            location = f"http://away.test:{away.port}/"
            conn.sendall(head("302 Found", [("Location", location), ("Content-Length", "0")]))
        else:
            conn.sendall(head(headers=[("Content-Length", str(len(FEED)))]) + FEED)

    with RawServer(home_handler) as home:
        back = answers(b"", status="302 Found", headers=[("Location", home.url("/secret"))])
        with RawServer(back) as away, Fetcher(Limits(
                connect_timeout=0.5, timeout=2.0, guard=Guard.parse(["away.test"]))) as fetcher:
            with pytest.raises(BlockedAddressError, match=f"{home.port}/secret"):
                fetcher.get(home.url(), trusted=trusted_origin(home.url()))
            time.sleep(0.1)
            assert len(away.requests) == 1
    assert [r.split(b" ")[1] for r in home.requests] == [b"/feed.xml"]


def test_feed_on_a_name_that_resolves_to_loopback_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """feeds.rebind.test answers 127.0.0.1: a host *name* is never trusted for an
    internal address, the feed's own host included: neither the feed nor
    article links on it are fetched."""
    fake_dns(monkeypatch, lambda host: ["127.0.0.1"])
    with RawServer(answers(FEED)) as server:
        feed_url = server.url(host="feeds.rebind.test")
        settings = settings_for(tmp_path)
        write_opml(settings, [feed_url])
        result = one_pass(settings)
        assert result.failed == 1
        row = feed_row(settings, feed_url)
        assert row["last_error"].startswith("BlockedAddressError"), row
        assert "feeds.rebind.test" in row["last_error"] and "127.0.0.1" in row["last_error"]
        with Fetcher(FAST) as fetcher:
            with pytest.raises(BlockedAddressError):
                fetcher.get(server.url("/article.html", host="feeds.rebind.test"),
                            trusted=trusted_origin(feed_url))
        time.sleep(0.1)
    assert server.requests == []


@pytest.fixture
def hung_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A resolver that hangs for the names in ``state["hang"]`` (until the test
    ends) and answers 127.0.0.1 for the others."""
    release = threading.Event()
    state: dict[str, Any] = {"hang": set(), "calls": 0}

    def answer(host: str) -> list[str]:
        state["calls"] += 1
        if host in state["hang"] or state.get("hang_after", 99) < state["calls"]:
            release.wait(30)
        return ["127.0.0.1"]

    fake_dns(monkeypatch, answer)
    yield state
    release.set()


def test_a_hung_dns_lookup_is_cut_off(hung_dns: dict[str, Any]) -> None:
    hung_dns["hang"] = {"slow.test"}
    with Fetcher(Limits(connect_timeout=0.3, timeout=1.0)) as fetcher:
        start = time.monotonic()
        with pytest.raises(NetworkError, match="DNS lookup of slow.test timed out after 0.3 s"):
            fetcher.get("http://slow.test/feed.xml")
        assert time.monotonic() - start < 5  # not the 30 s the lookup hangs


def test_a_lookup_hung_at_connect_time_is_cut_off(hung_dns: dict[str, Any]) -> None:
    """The pre-check's lookup answers, the one made to connect hangs."""
    hung_dns["hang_after"] = 1
    guard = Guard.parse(["127.0.0.0/8"])
    with RawServer(answers(FEED)) as server, \
            Fetcher(Limits(connect_timeout=0.3, timeout=1.0, guard=guard)) as fetcher:
        with pytest.raises(NetworkError, match="DNS lookup of late.test timed out"):
            fetcher.get(server.url(host="late.test"))
    assert hung_dns["calls"] == 2
    assert server.requests == []


def test_check_url_lookup_respects_its_timeout(hung_dns: dict[str, Any]) -> None:
    hung_dns["hang"] = {"slow.test"}
    with pytest.raises(NetworkError, match="timed out after 0.2 s"):
        check_url("http://slow.test/", timeout=0.2)
