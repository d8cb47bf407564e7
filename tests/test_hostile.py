"""Hostile and broken feeds in one real pass beside a good one.

Every bad feed must end with a clear error state on its row (state 'error',
a readable last_error), one log line, nothing half-written, while the good
feeds in the same pass still update; and the CLI must exit 0 over such a mix.
Servers: pytest-httpserver on 127.0.0.1 for bodies, raw sockets
(hostile_servers.py) for misbehaviour; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import (
    RawServer,
    answers,
    answers_after,
    assert_no_script,
    endless,
    feed_row,
    fixture_bytes,
    head,
    items_of,
    local_httpserver,
    one_pass,
    random_bytes,
    rows,
    settings_for,
    short_body,
    trickles,
    write_opml,
)
from werkzeug import Response

from aggregator.config import Settings
from aggregator.errors import ParseError
from aggregator.update import PassResult

GOOD = fixture_bytes("feed-good.xml")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random_bytes(4000)

# path on the static server -> (body, content type)
STATIC: dict[str, tuple[bytes, str | None]] = {
    "/good": (GOOD, "application/rss+xml"),
    "/malformed": (fixture_bytes("feed-malformed.xml"), "application/rss+xml"),
    "/truncated": (fixture_bytes("feed-truncated.xml"), "application/rss+xml"),
    "/html": (fixture_bytes("feed-html-page.xml"), "text/html; charset=utf-8"),
    "/random": (random_bytes(5000), "application/rss+xml"),
    "/png": (PNG, "image/png"),
    "/bomb": (fixture_bytes("feed-billion-laughs.xml"), "application/rss+xml"),
    "/dates": (fixture_bytes("feed-dates.xml"), "application/rss+xml"),
    "/empty-feed": (fixture_bytes("feed-empty.xml"), "application/rss+xml"),
    "/empty-body": (b"", "application/rss+xml"),
    "/blank-body": (b"   \r\n\t  \n", "application/rss+xml"),
    "/cp1251": (fixture_bytes("feed-windows-1251-undeclared.xml"), "application/rss+xml"),
    "/cp1251-text": (fixture_bytes("feed-windows-1251-undeclared.xml"), "text/xml"),
    "/latin1": (fixture_bytes("feed-iso-8859-1-undeclared.xml"), "application/xml"),
    "/latin1-none": (fixture_bytes("feed-iso-8859-1-undeclared.xml"), None),
    "/script": (fixture_bytes("feed-script.xml"), "application/rss+xml"),
}

# name -> (state, text expected in last_error or None)
EXPECT: dict[str, tuple[str, str | None]] = {
    "good": ("ok", None),
    "malformed": ("error", "ParseError: not a feed"),
    "truncated": ("ok", "unclosed token"),  # items recovered; the warning is kept
    "html": ("error", "ParseError: an HTML page"),
    "random": ("error", "ParseError: not a feed"),
    "png": ("error", "ParseError: not a feed"),
    "bomb": ("error", "entity expansion bomb"),
    "xxe": ("error", "external entity passwd (XXE)"),
    "external-dtd": ("ok", None),
    "dates": ("ok", None),
    "empty-feed": ("ok", None),
    "empty-body": ("error", "ParseError: empty response body"),
    "blank-body": ("error", "ParseError: empty response body"),
    "cp1251": ("ok", None),
    "cp1251-text": ("ok", None),
    "latin1": ("ok", None),
    "latin1-none": ("ok", None),
    "script": ("ok", None),
    "huge-stream": ("error", "TooLargeError: body over the cap"),
    "huge-declared": ("error", "TooLargeError: body of 209715200 bytes"),
    "late": ("error", "NetworkError: timed out after 2 s"),
    "never": ("error", "NetworkError: timed out after 2 s"),
    "trickle": ("error", "NetworkError: timed out after 2 s"),
    "short-body": ("error", "NetworkError"),
    "redirect-loop": ("error", "RedirectError: redirect loop"),
    "http-500": ("error", "HTTPStatusError: HTTP 500"),
}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Outcome:
    settings: Settings
    urls: dict[str, str]
    result: PassResult
    seconds: float
    log: list[logging.LogRecord]
    leak_requests: list[bytes]


def loop_handler(server: RawServer, conn: Any, request: bytes) -> None:
    nxt = "/b" if request.startswith(b"GET /a") else "/a"
    conn.sendall(head("302 Found", [("Location", nxt), ("Content-Length", "0")]))


@pytest.fixture(scope="module")
def hostile_pass(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("hostile")
    settings = settings_for(
        tmp, timeout=2.0, connect_timeout=1.0, max_bytes=256 * 1024, workers=len(EXPECT)
    )
    with (
        local_httpserver() as web,
        RawServer(answers(b"SECRET-FROM-SECOND-SERVER", content_type="text/plain")) as leak,
        RawServer(endless(GOOD[:200])) as huge,
        RawServer(endless(GOOD[:200], declare=200 * 1024 * 1024)) as declared,
        RawServer(answers_after(3.0, GOOD)) as late,
        RawServer(lambda s, c, h: s.wait(30)) as never,
        RawServer(trickles(GOOD, every=1.0)) as trickle,
        RawServer(short_body(GOOD[:100], 5000)) as short,
        RawServer(loop_handler) as loop,
    ):
        for path, (body, ctype) in STATIC.items():
            web.expect_request(path).respond_with_response(
                Response(body, 200, content_type=ctype)
                if ctype
                else Response(body, 200, headers={"Content-Type": ""})
            )
        other = leak.url("/entity")
        for name in ("xxe", "external-dtd"):
            body = fixture_bytes(f"feed-{name}.xml").replace(b"OTHER", other.encode())
            web.expect_request(f"/{name}").respond_with_data(
                body, content_type="application/rss+xml"
            )
        web.expect_request("/http-500").respond_with_data("oops", status=500)
        names = [path.lstrip("/") for path in STATIC] + ["xxe", "external-dtd", "http-500"]
        urls = {name: web.url_for(f"/{name}") for name in names}
        urls.update(
            {
                "huge-stream": huge.url(),
                "huge-declared": declared.url(),
                "late": late.url(),
                "never": never.url(),
                "trickle": trickle.url(),
                "short-body": short.url(),
                "redirect-loop": loop.url("/a"),
            }
        )
        assert set(urls) == set(EXPECT)
        write_opml(settings, list(urls.values()))
        handler = Records()
        logger = logging.getLogger("aggregator")
        logger.addHandler(handler)
        try:
            start = time.monotonic()
            result = one_pass(settings)
            seconds = time.monotonic() - start
        finally:
            logger.removeHandler(handler)
        time.sleep(0.1)
        yield Outcome(settings, urls, result, seconds, handler.records, list(leak.requests))


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_each_feed_gets_a_clear_state(hostile_pass: Outcome, name: str) -> None:
    state, error = EXPECT[name]
    row = feed_row(hostile_pass.settings, hostile_pass.urls[name])
    assert row["state"] == state, row["last_error"]
    if error is None:
        assert row["last_error"] is None
    else:
        assert error in (row["last_error"] or "")
        assert len(row["last_error"]) < 400 and "\n" not in row["last_error"]
    if state == "error":
        # nothing written half-way: no items, no feed metadata, no validators
        assert items_of(hostile_pass.settings, hostile_pass.urls[name]) == []
        assert row["feed_title"] is None and row["etag"] is None and row["body_hash"] is None
        assert row["last_success"] is None and row["error_count"] == 1


@pytest.mark.parametrize("name", sorted(n for n, (s, _) in EXPECT.items() if s == "error"))
def test_one_log_line_per_failing_feed(hostile_pass: Outcome, name: str) -> None:
    url = hostile_pass.urls[name]
    lines = [r for r in hostile_pass.log if url in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.WARNING


def test_good_feeds_log_nothing_and_update(hostile_pass: Outcome) -> None:
    for name, (state, _) in EXPECT.items():
        if state == "ok":
            url = hostile_pass.urls[name]
            assert not [r for r in hostile_pass.log if url in r.getMessage()], name
    titles = [i["title"] for i in items_of(hostile_pass.settings, hostile_pass.urls["good"])]
    assert titles == ["First story", "Second story", "Third story"]
    outcomes = {o.url: o.result for o in hostile_pass.result.outcomes}
    assert outcomes[hostile_pass.urls["good"]] == "new"
    assert len(outcomes) == len(EXPECT)


def test_the_pass_is_bounded_by_the_deadline(hostile_pass: Outcome) -> None:
    # the trickling, late and silent servers are cut at timeout=2 s, in parallel
    assert hostile_pass.seconds < 6, hostile_pass.seconds


def test_entities_are_never_expanded_or_resolved(hostile_pass: Outcome) -> None:
    assert hostile_pass.leak_requests == []  # neither &remote; nor the external DTD
    dump = repr(rows(hostile_pass.settings, "SELECT * FROM items")) + repr(
        rows(hostile_pass.settings, "SELECT * FROM feeds")
    )
    assert "root:" not in dump and "SECRET-FROM-SECOND-SERVER" not in dump
    assert "lollollol" not in dump
    items = items_of(hostile_pass.settings, hostile_pass.urls["external-dtd"])
    assert [i["title"] for i in items] == ["Only item"]


def test_undeclared_charsets_come_out_readable(hostile_pass: Outcome) -> None:
    for name in ("cp1251", "cp1251-text"):
        feed = feed_row(hostile_pass.settings, hostile_pass.urls[name])
        assert feed["feed_title"] == "Новости дня"
        titles = [i["title"] for i in items_of(hostile_pass.settings, hostile_pass.urls[name])]
        assert titles == [
            "Привет, мир: съешь же ещё этих мягких французских булок",
            "Москва и Санкт-Петербург",
        ]
    for name in ("latin1", "latin1-none"):
        feed = feed_row(hostile_pass.settings, hostile_pass.urls[name])
        assert feed["feed_title"] == "Café crème"
        items = items_of(hostile_pass.settings, hostile_pass.urls[name])
        assert [i["title"] for i in items] == [
            "Élève à l'école où ça déçoit",
            "Über Straßen und Plätze",
        ]
        assert "Côte d'Azur" in items[0]["content_text"]


def test_bad_dates_are_stored_as_unknown(hostile_pass: Outcome) -> None:
    items = items_of(hostile_pass.settings, hostile_pass.urls["dates"])
    published = {i["title"]: i["published"] for i in items}
    assert published == {
        "From the future": None,
        "Not a date": None,
        "Empty date": None,
        "Normal date": "2026-03-01T08:00:00+00:00",
    }
    for i in items:  # the sort date is never in the future either
        assert i["sort_date"] < "2030"


def test_empty_feed_is_not_an_error(hostile_pass: Outcome) -> None:
    row = feed_row(hostile_pass.settings, hostile_pass.urls["empty-feed"])
    assert row["feed_title"] == "Nothing yet" and row["last_status"] == 200
    assert items_of(hostile_pass.settings, hostile_pass.urls["empty-feed"]) == []


def test_truncated_feed_keeps_only_whole_items(hostile_pass: Outcome) -> None:
    items = items_of(hostile_pass.settings, hostile_pass.urls["truncated"])
    assert [(i["title"], i["url"]) for i in items] == [("Whole item", "http://127.0.0.1/whole")]


def test_no_script_ever_stored(hostile_pass: Outcome) -> None:
    items = rows(hostile_pass.settings, "SELECT * FROM items")
    feeds = rows(hostile_pass.settings, "SELECT * FROM feeds")
    script_items = items_of(hostile_pass.settings, hostile_pass.urls["script"])
    assert [i["title"] for i in script_items] == ["Harmless title", "Second"]
    assert feed_row(hostile_pass.settings, hostile_pass.urls["script"])["feed_title"] == "Evil Feed"
    assert "safe link" in script_items[0]["content"]  # sanitised, not emptied
    assert_no_script(items + feeds)


def test_parse_refuses_the_bomb_quickly() -> None:
    from datetime import UTC, datetime

    from aggregator.parse import parse

    start = time.monotonic()
    with pytest.raises(ParseError, match="entity expansion bomb"):
        parse(fixture_bytes("feed-billion-laughs.xml"), {}, "http://127.0.0.1/b", datetime.now(UTC))
    assert time.monotonic() - start < 0.5


def test_cli_update_exits_zero_over_a_hostile_mix(tmp_path: Path) -> None:
    with (
        local_httpserver() as web,
        RawServer(answers(b"SECRET", content_type="text/plain")) as leak,
        RawServer(trickles(GOOD, every=1.0)) as trickle,
        RawServer(endless(GOOD[:200], declare=200 * 1024 * 1024)) as declared,
    ):
        web.expect_request("/good").respond_with_data(GOOD, content_type="application/rss+xml")
        web.expect_request("/html").respond_with_data(
            fixture_bytes("feed-html-page.xml"), content_type="text/html"
        )
        web.expect_request("/bomb").respond_with_data(
            fixture_bytes("feed-billion-laughs.xml"), content_type="application/rss+xml"
        )
        web.expect_request("/xxe").respond_with_data(
            fixture_bytes("feed-xxe.xml").replace(b"OTHER", leak.url().encode()),
            content_type="application/rss+xml",
        )
        web.expect_request("/empty").respond_with_data(b"", content_type="application/rss+xml")
        bad = [
            web.url_for("/html"),
            web.url_for("/bomb"),
            web.url_for("/xxe"),
            web.url_for("/empty"),
            trickle.url(),
            declared.url(),
        ]
        settings = settings_for(tmp_path)
        write_opml(settings, [web.url_for("/good"), *bad])
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        env.update(
            AGGREGATOR_TIMEOUT="2",
            AGGREGATOR_CONNECT_TIMEOUT="1",
            AGGREGATOR_MAX_BYTES="262144",
            AGGREGATOR_WORKERS="8",
        )
        start = time.monotonic()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--db",
                str(settings.db),
                "--feeds",
                str(settings.feeds),
                "--output",
                str(settings.output),
                "update",
                "--all",
                "--no-articles",
                "--no-summaries",
                "--no-publish",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
        )
        seconds = time.monotonic() - start
        assert leak.requests == []
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "7 feeds polled: 3 new items, 0 changed, 6 failed" in out.stdout
    for url in bad:  # one line each on stderr
        assert sum(url in line for line in out.stderr.splitlines()) == 1, (url, out.stderr)
    assert seconds < 20
    assert [i["title"] for i in items_of(settings, web.url_for("/good"))] == [
        "First story",
        "Second story",
        "Third story",
    ]
