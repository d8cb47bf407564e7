"""Politeness of a real pass (run_pass + Fetcher + Store) against real HTTP
servers on 127.0.0.1: conditional GET, when to come back, error and redirect
handling, what the requests look like, concurrency per host."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from hostile_servers import (
    Clock,
    ConcurrencyCounter,
    RawServer,
    feed_row,
    head,
    items_of,
    local_httpserver,
    one_pass,
    rss,
    settings_for,
    write_opml,
)
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from aggregator import __version__, opml
from aggregator.store import iso

FEED = rss("Polite", ("one", "http://127.0.0.1/1"), ("two", "http://127.0.0.1/2"))


@pytest.fixture(scope="module")
def shared_server() -> Iterator[HTTPServer]:
    with local_httpserver() as s:  # stopping one takes half a second: one per module
        yield s


@pytest.fixture
def server(shared_server: HTTPServer) -> Iterator[HTTPServer]:
    shared_server.clear()
    yield shared_server
    shared_server.clear()


def real_clock() -> Clock:
    return Clock(datetime.now(UTC).replace(microsecond=0))


def served(server: HTTPServer, path: str) -> list[Request]:
    return [req for req, _ in server.log if req.path == path]


# --- conditional GET --------------------------------------------------------------------


def test_validators_are_stored_and_sent_back_verbatim(server: HTTPServer, tmp_path: Path) -> None:
    etag = 'W/"v1-\u00e9t\u00e9"'.encode().decode("latin-1")  # odd bytes must survive too
    last_modified = "Sun, 01 Mar 2026 08:00:00 GMT"
    answers = iter(
        [
            Response(
                FEED,
                200,
                {"ETag": etag, "Last-Modified": last_modified},
                content_type="application/rss+xml",
            ),
            Response(status=304, headers={"ETag": etag}),
            Response("overloaded", 503),
            Response(status=304),
        ]
    )
    server.expect_request("/feed").respond_with_handler(lambda req: next(answers))
    settings = settings_for(tmp_path)
    url = server.url_for("/feed")
    write_opml(settings, [url])
    clock = real_clock()
    for _ in range(4):
        one_pass(settings, clock=clock)
        clock.advance(hours=2)
    requests = served(server, "/feed")
    assert len(requests) == 4
    assert "If-None-Match" not in requests[0].headers
    assert "If-Modified-Since" not in requests[0].headers
    for req in requests[1:]:  # never unconditional again, not even after an error
        assert req.headers["If-None-Match"] == etag
        assert req.headers["If-Modified-Since"] == last_modified
    row = feed_row(settings, url)
    assert (row["etag"], row["last_modified"]) == (etag, last_modified)
    assert row["state"] == "ok" and row["last_status"] == 304
    assert len(items_of(settings, url)) == 2


def test_not_modified_keeps_items_and_clears_the_error(server: HTTPServer, tmp_path: Path) -> None:
    answers = iter(
        [
            Response(FEED, 200, {"ETag": '"a"'}, content_type="application/rss+xml"),
            Response("boom", 500),
            Response(status=304),
        ]
    )
    server.expect_request("/feed").respond_with_handler(lambda req: next(answers))
    settings = settings_for(tmp_path)
    url = server.url_for("/feed")
    write_opml(settings, [url])
    clock = real_clock()
    states = []
    for _ in range(3):
        one_pass(settings, clock=clock)
        row = feed_row(settings, url)
        states.append((row["state"], row["error_count"], row["last_error"] is not None))
        clock.advance(hours=3)
    assert states == [("ok", 0, False), ("error", 1, True), ("ok", 0, False)]
    assert [i["title"] for i in items_of(settings, url)] == ["one", "two"]


# --- when to come back ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "ttl", "expected"),
    [
        ({}, None, timedelta(minutes=30)),
        ({}, 90, timedelta(minutes=90)),  # <ttl> beats the interval
        ({"Cache-Control": "max-age=10800"}, 90, timedelta(hours=3)),
        ({"Cache-Control": "max-age=60"}, None, timedelta(minutes=30)),
        ({"Expires": "+4h"}, None, timedelta(hours=4)),
        ({"Cache-Control": "max-age=999999"}, None, timedelta(minutes=1440)),  # clamped
        ({}, 100000, timedelta(minutes=1440)),  # clamped
    ],
)
def test_next_fetch_is_the_largest_wish_clamped(
    server: HTTPServer,
    tmp_path: Path,
    headers: dict[str, str],
    ttl: int | None,
    expected: timedelta,
) -> None:
    clock = real_clock()
    headers = dict(headers)
    relative_to_server_date = headers.get("Expires") == "+4h"
    if relative_to_server_date:
        # Expires counts from the response's Date, which the test server stamps itself
        # with the real time (a second or two after `clock.now` on a slow machine).
        headers["Expires"] = format_datetime(clock.now + timedelta(hours=4), usegmt=True)
    body = rss(
        "TTL", ("one", "http://127.0.0.1/1"), extra=f"<ttl>{ttl}</ttl>" if ttl is not None else ""
    )
    server.expect_request("/feed").respond_with_response(
        Response(body, 200, headers, content_type="application/rss+xml")
    )
    settings = settings_for(tmp_path, interval=30, min_interval=5, max_interval=1440, jitter=0)
    url = server.url_for("/feed")
    write_opml(settings, [url])
    one_pass(settings, clock=clock)
    next_fetch = datetime.fromisoformat(feed_row(settings, url)["next_fetch"])
    if relative_to_server_date:
        assert clock.now + expected - timedelta(seconds=5) <= next_fetch <= clock.now + expected
    else:
        assert next_fetch == clock.now + expected


def test_jitter_spreads_within_bounds(server: HTTPServer, tmp_path: Path) -> None:
    server.expect_request("/feed").respond_with_data(FEED, content_type="application/rss+xml")
    settings = settings_for(tmp_path, interval=60, jitter=0.5)
    urls = [server.url_for(f"/feed?n={n}") for n in range(8)]
    server.clear_all_handlers()
    server.expect_request("/feed").respond_with_data(FEED, content_type="application/rss+xml")
    write_opml(settings, urls)
    clock = real_clock()
    one_pass(settings, clock=clock, seed=42)
    nexts = {feed_row(settings, u)["next_fetch"] for u in urls}
    lowest, highest = iso(clock.now + timedelta(minutes=60)), iso(clock.now + timedelta(minutes=90))
    assert all(lowest <= n <= highest for n in nexts), nexts
    assert len(nexts) > 1  # spread out, not all at once


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(server: HTTPServer, tmp_path: Path, status: int) -> None:
    clock = real_clock()
    wait = "7200" if status == 429 else format_datetime(clock.now + timedelta(hours=5), usegmt=True)
    server.expect_request("/feed").respond_with_response(
        Response("slow down", status, {"Retry-After": wait})
    )
    settings = settings_for(tmp_path, interval=30, max_interval=360)
    url = server.url_for("/feed")
    write_opml(settings, [url])
    result = one_pass(settings, clock=clock)
    assert [o.result for o in result.outcomes] == ["error"]
    row = feed_row(settings, url)
    expected = timedelta(hours=2) if status == 429 else timedelta(hours=5)
    # beyond the backoff: the server said so (within max_interval, which bounds it too)
    assert row["next_fetch"] == iso(clock.now + expected)
    assert row["state"] == "error" and row["last_status"] == status
    assert f"HTTP {status}" in row["last_error"]
    # not due before then: a pass an hour later asks nothing
    clock.advance(hours=1)
    one_pass(settings, clock=clock, all_feeds=False)
    assert len(served(server, "/feed")) == 1


def test_feeds_command_shows_the_error(server: HTTPServer, tmp_path: Path) -> None:
    server.expect_request("/feed").respond_with_response(
        Response("slow down", 429, {"Retry-After": "3600"})
    )
    settings = settings_for(tmp_path)
    url = server.url_for("/feed")
    write_opml(settings, [url])
    one_pass(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggregator",
            "--db",
            str(settings.db),
            "--feeds",
            str(settings.feeds),
            "feeds",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("error"))
    assert "429" in line and url in line
    assert "last error: HTTPStatusError: HTTP 429" in out.stdout


def test_other_errors_back_off_growing(server: HTTPServer, tmp_path: Path) -> None:
    server.expect_request("/feed").respond_with_data("broken", status=500)
    settings = settings_for(tmp_path, interval=30, max_interval=200, jitter=0)
    url = server.url_for("/feed")
    write_opml(settings, [url])
    clock = real_clock()
    delays = []
    for _ in range(5):
        one_pass(settings, clock=clock, all_feeds=False)
        row = feed_row(settings, url)
        nxt = datetime.fromisoformat(row["next_fetch"])
        delays.append(nxt - clock.now)
        clock.now = nxt  # come back exactly when due
    assert delays == [timedelta(minutes=m) for m in (30, 60, 120, 200, 200)]
    assert row["error_count"] == 5 and row["state"] == "error"
    assert len(served(server, "/feed")) == 5


# --- redirects ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 308])
def test_permanent_redirect_moves_the_feed(server: HTTPServer, tmp_path: Path, status: int) -> None:
    server.expect_request("/old").respond_with_response(
        Response(status=status, headers={"Location": "/new"})
    )
    server.expect_request("/new").respond_with_data(FEED, content_type="application/rss+xml")
    settings = settings_for(tmp_path)
    old, new = server.url_for("/old"), server.url_for("/new")
    write_opml(settings, [old])
    result = one_pass(settings)
    assert result.outcomes[0].moved_to == new
    assert [s.url for s in opml.read(settings.feeds)] == [new]  # the file on disk
    assert feed_row(settings, new)["state"] == "ok"
    assert len(items_of(settings, new)) == 2
    one_pass(settings)  # the next pass goes straight to the new address
    assert len(served(server, "/old")) == 1
    assert len(served(server, "/new")) == 2


def test_a_move_onto_an_internal_address_is_not_recorded(tmp_path: Path) -> None:
    """feeds.opml trusts a URL naming an IP address or localhost: a redirect (let through
    only by allow_private) must not make that trust permanent by moving the feed there."""
    from aggregator.store import Store
    from aggregator.update import _apply_moves

    settings = settings_for(tmp_path)
    urls = ["http://news.example/rss", "http://other.example/rss", "http://127.0.0.1:9/a"]
    write_opml(settings, urls)
    moves = [("http://news.example/rss", "http://10.0.0.5/rss"),  # public -> internal: kept
             ("http://other.example/rss", "https://other.example/feed"),  # public -> public
             ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")]  # same trusted origin
    with Store(settings.db) as store:
        store.sync_subscriptions(opml.read(settings.feeds), datetime.now(UTC))
        _apply_moves(settings, store, moves)
    assert [s.url for s in opml.read(settings.feeds)] == [
        "http://news.example/rss", "https://other.example/feed", "http://127.0.0.1:9/b"]
    assert feed_row(settings, "http://news.example/rss")["url"] == "http://news.example/rss"


@pytest.mark.parametrize("status", [302, 307])
def test_temporary_redirect_does_not_move(server: HTTPServer, tmp_path: Path, status: int) -> None:
    server.expect_request("/old").respond_with_response(
        Response(status=status, headers={"Location": "/new"})
    )
    server.expect_request("/new").respond_with_data(FEED, content_type="application/rss+xml")
    settings = settings_for(tmp_path)
    old = server.url_for("/old")
    write_opml(settings, [old])
    before = settings.feeds.read_bytes()
    result = one_pass(settings)
    assert result.outcomes[0].moved_to is None
    assert settings.feeds.read_bytes() == before
    assert feed_row(settings, old)["state"] == "ok"
    assert len(items_of(settings, old)) == 2
    one_pass(settings)
    assert len(served(server, "/old")) == 2


def test_permanent_then_temporary_hop_does_not_move(server: HTTPServer, tmp_path: Path) -> None:
    server.expect_request("/a").respond_with_response(
        Response(status=301, headers={"Location": "/b"})
    )
    server.expect_request("/b").respond_with_response(
        Response(status=302, headers={"Location": "/c"})
    )
    server.expect_request("/c").respond_with_data(FEED, content_type="application/rss+xml")
    settings = settings_for(tmp_path)
    url = server.url_for("/a")
    write_opml(settings, [url])
    one_pass(settings)
    assert [s.url for s in opml.read(settings.feeds)] == [url]


def test_redirect_limit_in_a_pass(server: HTTPServer, tmp_path: Path) -> None:
    for n in range(10):
        server.expect_request(f"/r{n}").respond_with_response(
            Response(status=302, headers={"Location": f"/r{n + 1}"})
        )
    settings = settings_for(tmp_path, max_redirects=3)
    url = server.url_for("/r0")
    write_opml(settings, [url])
    one_pass(settings)
    row = feed_row(settings, url)
    assert row["state"] == "error"
    assert "RedirectError" in row["last_error"] and "more than 3 redirects" in row["last_error"]
    assert len(server.log) == 4


def test_gone_disables_the_feed(server: HTTPServer, tmp_path: Path) -> None:
    server.expect_request("/gone").respond_with_data("gone", status=410)
    server.expect_request("/feed").respond_with_data(FEED, content_type="application/rss+xml")
    settings = settings_for(tmp_path)
    gone, good = server.url_for("/gone"), server.url_for("/feed")
    write_opml(settings, [gone, good])
    clock = real_clock()
    result = one_pass(settings, clock=clock)
    assert {o.url: o.result for o in result.outcomes} == {gone: "gone", good: "new"}
    row = feed_row(settings, gone)
    assert row["state"] == "gone" and row["last_status"] == 410
    assert "410" in row["last_error"] and "polling stopped" in row["last_error"]
    for _ in range(2):
        clock.advance(days=30)
        one_pass(settings, clock=clock, all_feeds=False)  # due by time
        one_pass(settings, clock=clock, all_feeds=True)  # forced
    assert len(served(server, "/gone")) == 1
    assert len(served(server, "/feed")) == 5


# --- what the requests look like ---------------------------------------------------------------


def test_user_agent_accept_encoding_and_gzip(server: HTTPServer, tmp_path: Path) -> None:
    server.expect_request("/feed").respond_with_response(
        Response(
            gzip.compress(FEED),
            200,
            {"Content-Encoding": "gzip"},
            content_type="application/rss+xml",
        )
    )
    settings = settings_for(tmp_path)
    url = server.url_for("/feed")
    write_opml(settings, [url])
    one_pass(settings)
    (req,) = served(server, "/feed")
    ua = req.headers["User-Agent"]
    assert ua.startswith(f"aggregator/{__version__}")
    assert "gzip" in [e.strip() for e in req.headers["Accept-Encoding"].split(",")]
    assert "application/rss+xml" in req.headers["Accept"]
    assert [i["title"] for i in items_of(settings, url)] == ["one", "two"]


def test_exactly_one_request_per_feed_per_pass(server: HTTPServer, tmp_path: Path) -> None:
    for n in range(6):
        server.expect_request(f"/f{n}").respond_with_data(
            rss(f"F{n}", (f"item {n}", f"http://127.0.0.1/{n}")), content_type="application/rss+xml"
        )
    settings = settings_for(tmp_path, workers=4)
    urls = [server.url_for(f"/f{n}") for n in range(6)]
    write_opml(settings, urls + [urls[0]])  # listed twice in the OPML: still one feed
    clock = real_clock()
    one_pass(settings, clock=clock, all_feeds=True)
    assert sorted(req.path for req, _ in server.log) == [f"/f{n}" for n in range(6)]
    one_pass(settings, clock=clock, all_feeds=False)  # nothing is due yet
    assert len(server.log) == 6
    clock.advance(minutes=31)
    one_pass(settings, clock=clock, all_feeds=False)
    assert sorted(req.path for req, _ in server.log) == sorted([f"/f{n}" for n in range(6)] * 2)


def test_per_host_concurrency_is_bounded(tmp_path: Path) -> None:
    counter = ConcurrencyCounter(FEED, hold=0.4)
    with RawServer(counter) as raw:
        urls = [raw.url(f"/f{n}") for n in range(6)]
        urls += [raw.url(f"/f{n}", host="localhost") for n in range(6)]
        settings = settings_for(tmp_path, workers=12, per_host=2)
        write_opml(settings, urls)
        result = one_pass(settings)
    assert counter.total == 12
    assert [o.result for o in result.outcomes].count("new") == 12
    assert counter.peak == {"127.0.0.1": 2, "localhost": 2}


def test_a_raw_server_answering_302_to_itself_is_a_loop(tmp_path: Path) -> None:
    def loop(server: RawServer, conn, request: bytes) -> None:  # type: ignore[no-untyped-def]
        conn.sendall(head("302 Found", [("Location", "/feed.xml"), ("Content-Length", "0")]))

    with RawServer(loop) as raw:
        settings = settings_for(tmp_path)
        write_opml(settings, [raw.url()])
        one_pass(settings)
        row = feed_row(settings, raw.url())
    assert row["state"] == "error" and "redirect loop" in row["last_error"]
    assert len(raw.requests) == 1
