"""Recovery: a bug in one feed, item or article stays that unit's error; a gone feed can be
brought back; failed article fetches are retried with backoff; a stored row keeps its story;
feeds.opml edits never lose each other; private subscriptions are never published.

Everything runs against real things: a local HTTP server on 127.0.0.1, a real SQLite
file, the CLI as a user runs it, real processes racing for feeds.opml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hostile_servers import Clock, db_rows, local_httpserver, rss, settings_for, write_opml
from werkzeug import Request, Response

from aggregator import decide, opml
from aggregator.cli import main
from aggregator.errors import StorageError
from aggregator.stages.summaries import summarize_pending
from aggregator.store import Store
from aggregator.types import ParsedItem, Subscription
from aggregator.update import make_fetcher, run_pass
from bench.farm import Farm

ROOT = Path(__file__).resolve().parents[1]


def feed_state(db: Path, url: str) -> dict[str, object]:
    found = db_rows(db, "SELECT * FROM feeds WHERE url = ?", (url,))
    assert found, url
    return found[0]


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "aggregator", *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120, env=env)


def serve(server, path: str, body: bytes | Response, ctype: str = "application/rss+xml"):
    if isinstance(body, Response):
        server.expect_request(path).respond_with_response(body)
    else:
        server.expect_request(path).respond_with_data(body, content_type=ctype)


# --- 1. the per-feed boundary --------------------------------------------------------------


def test_a_twenty_digit_ttl_fails_alone_and_the_update_still_publishes(tmp_path):
    with local_httpserver() as server:
        # three different stories: clustering keeps them apart, so the page lists all three
        serve(server, "/good1.xml",
              rss("Good one", ("Bridge reopens after two years", server.url_for("/a"))))
        serve(server, "/good2.xml",
              rss("Good two", ("Council approves school budget", server.url_for("/b"))))
        serve(server, "/bad.xml", rss("Bad", ("Storm closes coastal roads", server.url_for("/c")),
                                      extra="<ttl>99999999999999999999</ttl>"))
        urls = [server.url_for(p) for p in ("/good1.xml", "/bad.xml", "/good2.xml")]
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([Subscription(u) for u in urls]))
        out = cli(tmp_path, "--feeds", str(feeds), "--db", "x.db", "--output", "out",
                  "update", "--all", "--no-articles")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert "Bridge reopens after two years" in page  # published
    assert "Council approves school budget" in page
    db = tmp_path / "x.db"
    for url in (urls[0], urls[2]):
        assert feed_state(db, url)["state"] == "ok"
    bad = feed_state(db, urls[1])
    # the absurd <ttl> is clamped where it enters: the feed is stored like the others and
    # polled again within the longest delay, not in 10^20 minutes
    assert bad["state"] == "ok", bad["last_error"]
    next_fetch = datetime.fromisoformat(str(bad["next_fetch"]))
    assert datetime.now(UTC) < next_fetch < datetime.now(UTC) + timedelta(days=2)
    assert "Storm closes coastal roads" in page


def test_a_bug_for_one_feed_is_its_error_state_and_the_rest_goes_on(tmp_path, monkeypatch,
                                                                     capsys):
    real = decide.assign_keys

    def buggy(items):
        if any("/bad/" in (i.url or "") for i in items):
            raise ZeroDivisionError("a bug met by one feed only")
        return real(items)

    monkeypatch.setattr(decide, "assign_keys", buggy)
    with local_httpserver() as server:
        serve(server, "/one.xml", rss("One", ("First good story", server.url_for("/1"))))
        serve(server, "/bad.xml", rss("Bad", ("Doomed story", server.url_for("/bad/1"))))
        serve(server, "/two.xml", rss("Two", ("Second good story", server.url_for("/2"))))
        urls = [server.url_for(p) for p in ("/one.xml", "/bad.xml", "/two.xml")]
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([Subscription(u) for u in urls]))
        status = main(["--feeds", str(feeds), "--db", str(tmp_path / "x.db"), "--output",
                       str(tmp_path / "out"), "update", "--all", "--no-articles"])
    err = capsys.readouterr().err
    assert status == 0
    assert "Traceback" not in err
    # one line about the feed, naming it and the bug
    lines = [line for line in err.splitlines() if urls[1] in line]
    assert len(lines) == 1 and "internal error: ZeroDivisionError" in lines[0]
    db = tmp_path / "x.db"
    bad = feed_state(db, urls[1])
    assert bad["state"] == "error"
    assert bad["last_error"] == "internal error: ZeroDivisionError: a bug met by one feed only"
    titles = {r["title"] for r in db_rows(db, "SELECT title FROM items")}
    assert titles == {"First good story", "Second good story"}
    assert "Second good story" in (tmp_path / "out" / "rss.xml").read_text()


def test_a_failed_write_for_one_feed_is_retried_next_pass_and_nothing_is_lost(tmp_path,
                                                                               monkeypatch):
    s = settings_for(tmp_path)
    with local_httpserver() as server:
        serve(server, "/ok.xml", rss("Ok", ("Kept story", server.url_for("/k"))))
        serve(server, "/flaky.xml", rss("Flaky", ("Late story", server.url_for("/l"))))
        ok, flaky = server.url_for("/ok.xml"), server.url_for("/flaky.xml")
        write_opml(s, [ok, flaky])
        real = Store.record_feed
        failures = Counter[int]()

        def locked_once(self, feed_id, *a, **kw):
            if self.feed(flaky).id == feed_id and not failures[feed_id]:
                failures[feed_id] += 1
                raise StorageError("database x.db is busy or read-only: database is locked")
            return real(self, feed_id, *a, **kw)

        monkeypatch.setattr(Store, "record_feed", locked_once)
        clock = Clock(datetime.now(UTC))
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            first = run_pass(s, store, fetcher, clock=clock)
            by_url = {o.url: o for o in first.outcomes}
            assert by_url[ok].result == "new"
            assert by_url[flaky].result == "error" and "StorageError" in by_url[flaky].error
            row = store.feed(flaky)
            assert row.state == "new" and row.last_fetch is None  # untouched, still due
            clock.advance(seconds=1)
            second = run_pass(s, store, fetcher, clock=clock)  # only what is due
            assert [o.url for o in second.outcomes] == [flaky]
            assert second.outcomes[0].result == "new"
            assert store.count_items() == 2


def test_a_database_failing_every_write_stops_the_pass_instead_of_hiding_it(tmp_path,
                                                                           monkeypatch, capsys):
    # three feeds: the pass stops at the last one, with no fetch left in flight
    with Farm(3, 1).serve() as farm:
        s = settings_for(tmp_path, feeds=farm.write_opml(tmp_path / "farm.opml"))

        def broken(self, *a, **kw):
            raise StorageError("cannot write database x.db: disk I/O error")

        monkeypatch.setattr(Store, "record_feed", broken)
        monkeypatch.setattr(Store, "record_error", broken)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            with pytest.raises(StorageError, match="writes in a row failed"):
                run_pass(s, store, fetcher, all_feeds=True)
        capsys.readouterr()
        status = main(["--feeds", str(s.feeds), "--db", str(s.db), "update", "--all"])
        err = capsys.readouterr().err
        assert status == 1
        # (the farm's server thread may print its own traceback for a connection we dropped)
        assert f"{os.sep}aggregator{os.sep}" not in err  # no traceback through our code
        assert err.splitlines()[-1].startswith("aggregator: error: cannot write database")


def test_a_pass_whose_every_write_failed_says_so_even_for_a_few_unchanged_feeds(
        tmp_path, monkeypatch):
    with Farm(3, 1).serve() as farm:
        s = settings_for(tmp_path, feeds=farm.write_opml(tmp_path / "farm.opml"))
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            assert run_pass(s, store, fetcher, all_feeds=True).new == 3

            def broken(self, *a, **kw):
                raise StorageError("database x.db is busy or read-only: database is locked")

            monkeypatch.setattr(Store, "record_not_modified_many", broken)
            with pytest.raises(StorageError, match="no write of this pass succeeded"):
                run_pass(s, store, fetcher, all_feeds=True)  # three 304s, one batch
            monkeypatch.undo()
            again = run_pass(s, store, fetcher, all_feeds=True)
            assert {o.result for o in again.outcomes} == {"not modified"}


def test_one_items_broken_extraction_or_save_is_that_items_failure(tmp_path, monkeypatch):
    from aggregator import extract

    s = settings_for(tmp_path, fetch_articles=True, summaries=True)
    page = ("<html><body><article>" + "".join(
        f"<p>Paragraph {n} of a long story about the river crossing and the new bridge "
        "that the council approved after years of debate in the town.</p>"
        for n in range(10)) + "</article></body></html>")
    with local_httpserver() as server:
        links = [server.url_for(f"/story/{n}.html") for n in range(4)]
        for n in range(4):
            serve(server, f"/story/{n}.html", page.encode(), "text/html")
        serve(server, "/feed.xml", rss("Stories", *[(f"Story {n}", link)
                                                   for n, link in enumerate(links)]))
        write_opml(s, [server.url_for("/feed.xml")])
        real_extract = extract.extract_main_text

        def exploding(body, url, **kw):
            if url.endswith("/1.html"):
                raise RecursionError("trafilatura blew up on this page")
            return real_extract(body, url, **kw)

        monkeypatch.setattr(extract, "extract_main_text", exploding)
        real_save = Store.save_summary
        ids: dict[str, int] = {}

        def failing_save(self, item_id, *a, **kw):
            if item_id == ids.get("Story 2"):
                raise StorageError("cannot write database: disk full")
            return real_save(self, item_id, *a, **kw)

        monkeypatch.setattr(Store, "save_summary", failing_save)
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher, all_feeds=True)
            ids.update({r["title"]: r["id"] for r in db_rows(s.db, "SELECT id, title FROM items")})
            written = summarize_pending(s, store, fetcher)
        assert written == 3
        by_title = {r["title"]: r for r in db_rows(s.db, "SELECT * FROM items")}
        assert by_title["Story 0"]["article_status"] == "ok"
        assert by_title["Story 3"]["summary_source"] == "article"
        broken = by_title["Story 1"]
        assert broken["article_status"] == \
            "failed: internal error: RecursionError: trafilatura blew up on this page"
        assert broken["summary_method"] and broken["summary_source"] == "item"  # its teaser
        assert by_title["Story 2"]["summary_hash"] is None  # not saved: still pending
        assert by_title["Story 2"]["article_status"] == "ok"


def test_a_publish_bug_does_not_stop_the_daemons_poll(tmp_path, monkeypatch, caplog):
    from aggregator import daemon as daemon_module

    with Farm(2, 2).serve() as farm:
        s = settings_for(tmp_path, feeds=farm.write_opml(tmp_path / "farm.opml"),
                         publish=True)

        def broken_publish(*a, **kw):
            raise KeyError("a bug in publishing")

        monkeypatch.setattr(daemon_module, "publish_now", broken_publish)
        d = daemon_module.Daemon(s)
        try:
            with caplog.at_level("INFO", logger="aggregator"):
                d._poll_once()  # would raise out of the job without the boundary
                farm.add_item()
                with Store(s.db) as store:  # due again now
                    for f in store.feeds():
                        store.revive_feed(f.url, datetime.now(UTC))
                d._poll_once()
        finally:
            d.fetcher.close()
            d.store.close()
        failures = [r for r in caplog.records if "publish failed" in r.getMessage()]
        assert len(failures) == 2
        assert "internal error: KeyError" in failures[0].getMessage()
        assert all(r.exc_info is None for r in failures)  # one line, no traceback at ERROR
        assert db_rows(s.db, "SELECT count(*) AS n FROM items")[0]["n"] == 6


# --- 2. recovery paths ----------------------------------------------------------------------


class Switch:
    """A feed URL whose answer the test changes: 410 Gone, then a feed again."""

    def __init__(self, server, path: str) -> None:
        self.gone = True
        self.body = rss("Back", ("Returned story", server.url_for("/r")))
        server.expect_request(path).respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        if self.gone:
            return Response("gone", status=410)
        return Response(self.body, content_type="application/rss+xml")


def test_revive_brings_a_gone_feed_back_to_polling(tmp_path):
    with local_httpserver() as server:
        switch = Switch(server, "/feed.xml")
        url = server.url_for("/feed.xml")
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([Subscription(url)]))
        base = ("--feeds", str(feeds), "--db", "x.db", "--output", "out")
        assert cli(tmp_path, *base, "update", "--no-articles", "--no-publish").returncode == 0
        db = tmp_path / "x.db"
        assert feed_state(db, url)["state"] == "gone"
        assert "0 feeds polled" in cli(tmp_path, *base, "update", "--all").stdout  # not polled

        switch.gone = False
        out = cli(tmp_path, *base, "feeds", "--revive", url)
        assert out.returncode == 0, out.stderr
        assert "revived" in out.stdout
        row = feed_state(db, url)
        assert (row["state"], row["error_count"], row["last_error"]) == ("new", 0, None)
        assert datetime.fromisoformat(str(row["next_fetch"])) <= datetime.now(UTC)
        out = cli(tmp_path, *base, "update", "--no-articles", "--no-publish")  # due ones only
        assert "1 feeds polled: 1 new items" in out.stdout, out.stdout
        assert feed_state(db, url)["state"] == "ok"

        missing = cli(tmp_path, *base, "feeds", "--revive", server.url_for("/nope.xml"))
        assert missing.returncode == 1 and missing.stderr.startswith("aggregator: error:")


def test_remove_then_add_again_brings_a_gone_feed_back(tmp_path):
    with local_httpserver() as server:
        switch = Switch(server, "/feed.xml")
        url = server.url_for("/feed.xml")
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([Subscription(url, "Feed")]))
        base = ("--feeds", str(feeds), "--db", "x.db", "--output", "out")
        cli(tmp_path, *base, "update", "--no-articles", "--no-publish")
        db = tmp_path / "x.db"
        assert feed_state(db, url)["state"] == "gone"

        assert cli(tmp_path, *base, "remove", url).returncode == 0
        assert feed_state(db, url)["active"] == 0
        switch.gone = False  # `add` fetches it to find the feed
        out = cli(tmp_path, *base, "add", url)
        assert out.returncode == 0, out.stderr
        row = feed_state(db, url)
        assert (row["active"], row["state"], row["error_count"]) == (1, "new", 0)
        out = cli(tmp_path, *base, "update", "--no-articles", "--no-publish")
        assert "1 feeds polled: 1 new items" in out.stdout, out.stdout


# --- article retries --------------------------------------------------------------------------


ARTICLE = ("<html><body><article><h1>The bridge</h1>" + "".join(
    f"<p>Sentence {n} of the full article explains how the bridge over the river was "
    f"finally approved by the council after {n + 2} years of debate.</p>"
    for n in range(12)) + "</article></body></html>").encode()


class FlakyArticle:
    """An article page that fails (503) until told to work; counts its requests."""

    def __init__(self, server, path: str, body: bytes = ARTICLE) -> None:
        self.ok = False
        self.requests = 0
        self.body = body
        server.expect_request(path).respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        self.requests += 1
        if not self.ok:
            return Response("try later", status=503)
        return Response(self.body, content_type="text/html; charset=utf-8")


def _item(db: Path) -> dict[str, object]:
    (row,) = db_rows(db, "SELECT * FROM items")
    return row


def test_a_failed_article_is_retried_with_backoff_and_resummarised_when_it_arrives(tmp_path):
    s = settings_for(tmp_path, fetch_articles=True, summaries=True)
    with local_httpserver() as server:
        page = FlakyArticle(server, "/story.html")
        serve(server, "/feed.xml", rss("News", ("The bridge", server.url_for("/story.html"))))
        write_opml(s, [server.url_for("/feed.xml")])
        clock = Clock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher, all_feeds=True, clock=clock)
            assert summarize_pending(s, store, fetcher, clock=clock) == 1
            item = _item(s.db)
            assert str(item["article_status"]).startswith("failed: HTTPStatusError")
            assert item["article_tries"] == 1
            assert item["article_retry_at"] == "2026-03-01T12:15:00+00:00"
            assert item["summary_source"] == "item"  # summarised from its teaser meanwhile
            teaser_summary = item["summary_context"]
            assert "Text of The bridge" in str(teaser_summary)

            clock.advance(minutes=10)  # not due yet: no request
            assert summarize_pending(s, store, fetcher, clock=clock) == 0
            assert page.requests == 1

            clock.advance(minutes=6)  # 12:16, still failing: next in an hour
            assert summarize_pending(s, store, fetcher, clock=clock) == 0
            item = _item(s.db)
            assert page.requests == 2 and item["article_tries"] == 2
            assert item["article_retry_at"] == "2026-03-01T13:16:00+00:00"
            assert item["summary_context"] == teaser_summary

            page.ok = True
            clock.advance(hours=1)
            assert summarize_pending(s, store, fetcher, clock=clock) == 1  # re-summarised
            item = _item(s.db)
            assert page.requests == 3
            assert (item["article_status"], item["article_tries"], item["article_retry_at"]) \
                == ("ok", 3, None)
            assert item["summary_source"] == "article"
            assert "Sentence 0 of the full article" in str(item["summary_context"])
            clock.advance(days=2)
            assert summarize_pending(s, store, fetcher, clock=clock) == 0
            assert page.requests == 3


def test_a_failing_article_is_given_up_after_five_tries(tmp_path):
    s = settings_for(tmp_path, fetch_articles=True, summaries=True)
    with local_httpserver() as server:
        page = FlakyArticle(server, "/story.html")
        serve(server, "/feed.xml", rss("News", ("The bridge", server.url_for("/story.html"))))
        write_opml(s, [server.url_for("/feed.xml")])
        clock = Clock()
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher, all_feeds=True, clock=clock)
            for _ in range(8):
                summarize_pending(s, store, fetcher, clock=clock)
                clock.advance(hours=13)
        item = _item(s.db)
        assert page.requests == 5
        assert item["article_tries"] == 5 and item["article_retry_at"] is None
        assert str(item["article_status"]).startswith("failed:")
        assert item["summary_method"]  # its teaser's summary stands


def test_too_little_text_is_not_retried(tmp_path):
    s = settings_for(tmp_path, fetch_articles=True, summaries=True)
    with local_httpserver() as server:
        page = FlakyArticle(server, "/story.html", b"<html><body><p>Hi.</p></body></html>")
        page.ok = True
        serve(server, "/feed.xml", rss("News", ("The bridge", server.url_for("/story.html"))))
        write_opml(s, [server.url_for("/feed.xml")])
        clock = Clock()
        with Store(s.db) as store, make_fetcher(s) as fetcher:
            run_pass(s, store, fetcher, all_feeds=True, clock=clock)
            summarize_pending(s, store, fetcher, clock=clock)
            clock.advance(days=1)
            summarize_pending(s, store, fetcher, clock=clock)
        item = _item(s.db)
        assert item["article_status"] == "too little text" and item["article_retry_at"] is None
        assert page.requests == 1


def test_backoff_rule():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    delays = [decide.article_retry_at(n, t) for n in range(0, 7)]
    assert delays == [None, t + timedelta(minutes=15), t + timedelta(hours=1),
                      t + timedelta(hours=4), t + timedelta(hours=12), None, None]


# --- a stored row keeps its story -------------------------------------------------------------


def story(guid: str | None, url: str | None, title: str | None, text: str = "Body.") -> ParsedItem:
    return ParsedItem(guid=guid, url=url, title=title, author=None, published=None,
                      updated=None, content=f"<p>{text}</p>", content_text=text)


def test_same_story_rule():
    a = ("http://x/a", "Bridge approved")
    assert decide.same_story(a, story("g", "http://x/a", "Bridge finally approved"))  # edit
    assert decide.same_story(a, story("g", "http://x/a2", "Bridge approved"))  # link moved
    assert not decide.same_story(a, story("g", "http://x/b", "Storm hits coast"))
    assert decide.same_story((None, None), story("g", None, None))
    assert not decide.same_story((None, "Old"), story("g", None, "New"))


def test_settle_keys_keeps_stored_rows_with_their_stories():
    a, b = story("g", "http://x/a", "A"), story("g", "http://x/b", "B")
    # b arrives alone under a's key: a new, suffixed key
    (key_b,) = [k for k, _ in decide.settle_keys([("g", b)], {"g": ("http://x/a", "A")})]
    assert key_b.startswith("g#")
    # both arrive, assign_keys makes b the owner of "g": a keeps "g" all the same
    settled = dict((i.title, k) for k, i in decide.settle_keys(
        [("g", b), ("g#123", a)], {"g": ("http://x/a", "A"), key_b: ("http://x/b", "B")}))
    assert settled == {"A": "g", "B": key_b}
    # an edit of a (same link, new title) keeps its key
    edited = story("g", "http://x/a", "A, updated")
    assert decide.settle_keys([("g", edited)], {"g": ("http://x/a", "A")}) == [("g", edited)]


class Document:
    """A feed whose whole document the test replaces between passes."""

    def __init__(self, server, path: str) -> None:
        self.body = b""
        server.expect_request(path).respond_with_handler(self)

    def __call__(self, request: Request) -> Response:
        return Response(self.body, content_type="application/rss+xml")

    def items(self, *items: tuple[str, str, str, str]) -> None:
        """(guid, link, title, text) each."""
        out = "".join(f"<item><guid>{g}</guid><link>{link}</link><title>{t}</title>"
                      f"<description>{x}</description></item>" for g, link, t, x in items)
        self.body = (f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
                     f"<link>http://127.0.0.1/</link>{out}</channel></rss>").encode()


def _entry_ids(store: Store) -> dict[str, str]:
    from aggregator.publish import entry_id

    return {e.title: entry_id(e) for e in store.recent_entries(100)}


def test_a_later_story_reusing_a_guid_gets_its_own_row_and_edits_update_in_place(tmp_path):
    s = settings_for(tmp_path)
    with local_httpserver() as server:
        doc = Document(server, "/feed.xml")
        write_opml(s, [server.url_for("/feed.xml")])
        clock = Clock(datetime.now(UTC))
        with Store(s.db) as store, make_fetcher(s) as fetcher:

            def poll() -> list[dict[str, object]]:
                clock.advance(seconds=1)
                run_pass(s, store, fetcher, all_feeds=True, clock=clock)
                return db_rows(s.db, "SELECT id, key, url, title, content_text FROM items "
                                     "ORDER BY id")

            doc.items(("42", "http://x.example/a", "Bridge approved", "First text."))
            (first,) = poll()
            ids = _entry_ids(store)
            # a different story (other link, other title) with the same guid, later on
            doc.items(("42", "http://x.example/b", "Storm hits coast", "Other story."))
            rows = poll()
            assert len(rows) == 2
            assert rows[0] == first  # the first story's row is untouched
            assert str(rows[1]["key"]).startswith(f"{first['key']}#")  # the guid, suffixed
            assert _entry_ids(store)["Bridge approved"] == ids["Bridge approved"]
            # both listed again, in either order: each keeps its own row
            doc.items(("42", "http://x.example/b", "Storm hits coast", "Other story."),
                      ("42", "http://x.example/a", "Bridge approved", "First text."))
            assert poll() == rows
            # a real edit of the first story (same link, new title and text): in place
            doc.items(("42", "http://x.example/a", "Bridge approved at last", "Edited."))
            edited = poll()
            assert len(edited) == 2 and edited[0]["id"] == first["id"]
            assert (edited[0]["key"], edited[0]["title"], edited[0]["content_text"]) == \
                (first["key"], "Bridge approved at last", "Edited.")
            assert _entry_ids(store)["Bridge approved at last"] == ids["Bridge approved"]
            # and one with the same title whose link changed: in place too
            doc.items(("42", "http://x.example/a-moved", "Bridge approved at last", "Edited."))
            moved = poll()
            assert len(moved) == 2 and moved[0]["url"] == "http://x.example/a-moved"


# --- feeds.opml under a lock -----------------------------------------------------------------


def _openers(lock: Path, pid: int) -> int:
    """How many descriptors process ``pid`` holds open on ``lock`` (Linux /proc):
    an edit opens the lock file, then waits for the lock (trying it every 0.1 s
    at most, until opml.LOCK_TIMEOUT), so once it is open it reads the list only
    after the lock is released."""
    found, lock = 0, lock.resolve()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if Path(os.readlink(fd)) == lock:
                found += 1
        except OSError:
            continue  # closed meanwhile
    return found


def _wait_for(predicate, what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc/<pid>/fd")
def test_an_add_waits_for_the_lock_and_keeps_the_edit_made_meanwhile(tmp_path):
    with Farm(2, 1).serve() as farm:
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([]))
        mine, theirs = f"{farm.base}/feed/0.xml", f"{farm.base}/feed/1.xml"
        with opml.locked(feeds):
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator", "--feeds", str(feeds), "--db", "x.db",
                 "add", theirs], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            _wait_for(lambda: _openers(opml.lock_path(feeds), proc.pid) == 1,
                      "the add to wait for the lock")
            tree = opml.load_tree(feeds)  # an edit while it waits (as the daemon would)
            opml.add(tree, Subscription(mine, "Mine"))
            opml.write(feeds, tree)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert {s.url for s in opml.read(feeds)} == {mine, theirs}


def test_two_processes_adding_feeds_at_once_lose_none(tmp_path):
    with Farm(24, 1).serve() as farm:
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([]))
        script = ("import sys\nfrom aggregator.cli import main\n"
                  "for url in sys.argv[2:]:\n"
                  "    assert main(['--feeds', sys.argv[1], '--db', 'x.db', 'add', url]) == 0\n")
        urls = [f"{farm.base}/feed/{n}.xml" for n in range(24)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        procs = [subprocess.Popen([sys.executable, "-c", script, str(feeds), *urls[n::2]],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for n in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        assert sorted(s.url for s in opml.read(feeds)) == sorted(urls)
        assert len(db_rows(tmp_path / "x.db", "SELECT id FROM feeds WHERE active = 1")) == 24


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc/<pid>/fd")
def test_a_move_recorded_by_a_pass_waits_for_the_lock_and_keeps_other_edits(tmp_path):
    s = settings_for(tmp_path)
    with local_httpserver() as server:
        server.expect_request("/old.xml").respond_with_data(
            "", status=301, headers={"Location": "/new.xml"})
        serve(server, "/new.xml", rss("Moved", ("A story", server.url_for("/s"))))
        old, new = server.url_for("/old.xml"), server.url_for("/new.xml")
        write_opml(s, [old])
        added = "http://127.0.0.1:9/added-meanwhile.xml"
        errors: list[BaseException] = []

        def a_pass() -> None:
            try:
                with Store(s.db) as store, make_fetcher(s) as fetcher:
                    run_pass(s, store, fetcher, all_feeds=True)
            except BaseException as e:  # handed to the test thread
                errors.append(e)

        with opml.locked(s.feeds):
            worker = threading.Thread(target=a_pass)
            worker.start()
            _wait_for(lambda: _openers(opml.lock_path(s.feeds), os.getpid()) == 2,
                      "the pass to wait for the lock")  # ours and the pass's
            tree = opml.load_tree(s.feeds)
            opml.add(tree, Subscription(added))
            opml.write(s.feeds, tree)
        worker.join(60)
        assert not errors and not worker.is_alive()
        assert [x.url for x in opml.read(s.feeds)] == [new, added]


# --- 3. private subscriptions ------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://example.org/feed.xml?token=abc",
    "https://example.org/feed.xml?API-Key=abc",
    "https://example.org/feed.xml?private_token=abc",
    "https://example.org/feed.xml?sig=1&expires=2",
    "https://user:hunter2@example.org/feed.xml",
    "https://user@example.org/feed.xml",
    "https://example.org/feed.xml?u=7f3a9c2e41b84d0e9a6f5c3b2d1e0f4a",
    "https://example.org/feed.xml?x=dGhpcyBpcyBhIHNlY3JldCB0b2tlbg9",
])
def test_urls_carrying_secrets_are_private(url):
    assert opml.is_private(url)


@pytest.mark.parametrize("url", [
    "https://example.org/feed.xml",
    "https://example.org/rss?page=2&format=rss2",
    "https://example.org/rss?category=world-news-and-politics",
    "https://example.org/feed/?post_type=article&paged=12345",
])
def test_ordinary_urls_are_not_private(url):
    assert not opml.is_private(url)
    assert opml.is_private(url, marked=True)


def test_private_subscriptions_never_appear_in_any_output_file(tmp_path):
    secret_token = "s3cr3tT0kenXYZ"
    secret_path = "members-only-9f8e7d"
    # Four stories with no word in common: the feeds carry each story once, and these
    # stay four stories.
    with local_httpserver() as server:
        def feed(title: str, story: str) -> bytes:
            return rss(title, (story, server.url_for(f"/stories/{story.replace(' ', '-')}")))

        serve(server, "/token.xml", feed("Token feed", "Token harbour"))
        serve(server, f"/{secret_path}/feed.xml", feed("Marked feed", "Marked museum"))
        serve(server, "/auth.xml", feed("Auth feed", "Auth library"))
        serve(server, "/public.xml", feed("Public feed", "Public council"))
        base = server.url_for("/").rstrip("/")
        token_url = f"{base}/token.xml?token={secret_token}"
        marked_url = f"{base}/{secret_path}/feed.xml"
        auth_url = base.replace("http://", "http://reader:pa55word-secret@") + "/auth.xml"
        public_url = f"{base}/public.xml"
        feeds = tmp_path / "feeds.opml"
        feeds.write_text(
            '<opml version="2.0"><head/><body><outline text="Mine" title="Mine">'
            f'<outline text="Token feed" xmlUrl="{token_url}"/>'
            f'<outline text="Marked feed" xmlUrl="{marked_url}" private="true" '
            f'htmlUrl="{base}/site/"/>'
            f'<outline text="Auth feed" xmlUrl="{auth_url}"/>'
            f'<outline text="Public feed" xmlUrl="{public_url}"/>'
            "</outline></body></opml>")
        out = cli(tmp_path, "--feeds", str(feeds), "--db", "x.db", "--output", "out",
                  "update", "--all", "--no-articles")
        assert out.returncode == 0, out.stderr
    assert "4 feeds polled: 4 new items" in out.stdout
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) >= 8
    every = {p: p.read_text(encoding="utf-8") for p in files}
    for secret in (secret_token, secret_path, "pa55word", "reader:", "token="):
        leaks = [str(p) for p, text in every.items() if secret in text]
        assert leaks == [], f"{secret!r} published in {leaks}"
    rss_text = every[tmp_path / "out" / "rss.xml"]
    for story in ("Token harbour", "Marked museum", "Auth library", "Public council"):
        assert story in rss_text  # private feeds' stories are published, their URLs aren't
    assert public_url in every[tmp_path / "out" / "feeds.opml"]  # a public one is listed
    # the source is the feed's title and site link only
    doc = json.loads(every[tmp_path / "out" / "feed.json"])
    sources = {i["title"]: i["_source"] for i in doc["items"]}
    # the site link is the one the feed gives (the rss() helper's), else the outline's htmlUrl
    assert sources["Marked museum"] == {"title": "Marked feed",
                                       "home_page_url": "http://127.0.0.1/"}
    assert sources["Public council"]["feed_url"] == public_url
    assert "feed_url" not in sources["Token harbour"]
    listed = every[tmp_path / "out" / "feeds.opml"]
    assert 'type="link"' in listed and 'url="http://127.0.0.1/"' in listed
