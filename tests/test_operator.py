"""Operator commands (issue 13, item 6), as a user meets them: `refetch`,
`resummarize`, `vacuum`, `feeds --json`, against a real HTTP server on
127.0.0.1 and a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aggregator import opml
from aggregator.cli import main
from aggregator.types import Subscription

FIRST = ("The harbour authority opened a new ferry terminal on Monday. Officials said the "
         "terminal would serve two million passengers a year. Local traders welcomed the "
         "news after years of delays. The old terminal will close next spring. Engineers "
         "spent three years building the new quay. The ferry company plans four new routes. ")
SECOND = ("Zebrafinch researchers counted birds along the river valley this week. The survey "
          "found twice as many nests as last year. Volunteers walked forty kilometres of the "
          "bank. The council will publish the full zebrafinch report in June. Farmers said "
          "the wet spring helped the insects the birds eat. The count will be repeated. ")


def page(text: str) -> bytes:
    paragraphs = "".join(f"<p>{text}</p>" for _ in range(3))
    return (f"<!doctype html><html><head><title>Story</title></head><body><article>"
            f"<h1>Story</h1>{paragraphs}</article></body></html>").encode()


class Site:
    """A feed and its article pages on 127.0.0.1; ``pages`` can be changed live."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits.append(self.path)
                found = site.pages.get(self.path)
                if found is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", found[0])
                self.send_header("Content-Length", str(len(found[1])))
                self.end_headers()
                self.wfile.write(found[1])

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    thread = threading.Thread(target=s.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.server.shutdown()
        s.server.server_close()


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def world(site: Site, tmp_path: Path) -> dict[str, object]:
    """A feed of two items: one linking to its article on the feed's server, one to
    another loopback address (which the address guard refuses), stored by `update`."""
    other = site.url("/a/2.html").replace("127.0.0.1", "127.0.0.2")
    feed = site.url("/feed.xml")
    items = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{link}</guid>"
        f"<description>{t}.</description></item>"
        for t, link in (("Ferry terminal opens", site.url("/a/1.html")),
                        ("Elsewhere", other)))
    site.pages["/feed.xml"] = ("application/rss+xml", (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour News</title>'
        f"<link>{site.base}/</link>{items}</channel></rss>").encode())
    site.pages["/a/1.html"] = ("text/html; charset=utf-8", page(FIRST))
    feeds = tmp_path / "feeds.opml"
    opml.write(feeds, opml.build([Subscription(feed, "Harbour News")]))
    common = ["--db", str(tmp_path / "x.db"), "--feeds", str(feeds),
              "--output", str(tmp_path / "out")]
    assert main([*common, "update", "--all"]) == 0
    return {"common": common, "feed": feed, "article": site.url("/a/1.html"), "other": other,
            "db": tmp_path / "x.db"}


def rows(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql, args).fetchall()


def test_refetch_fetches_the_article_again_and_summarises_it(world, site, capsys):
    common, db = world["common"], world["db"]
    [(item_id, text, status)] = rows(db, "SELECT id, article_text, article_status FROM items "
                                     "WHERE url = ?", world["article"])
    assert status == "ok" and "ferry terminal" in text
    capsys.readouterr()
    site.pages["/a/1.html"] = ("text/html; charset=utf-8", page(SECOND))
    hits = len(site.hits)
    assert main([*common, "refetch", world["article"]]) == 0
    out = capsys.readouterr().out
    assert f"item {item_id}: article ok; summarised again" in out
    assert site.hits[hits:] == ["/a/1.html"]  # the article, once
    [(text, context, source)] = rows(db, "SELECT article_text, summary_context, "
                                     "summary_source FROM items WHERE id = ?", item_id)
    assert "zebrafinch" in text.lower() and "zebrafinch" in context.lower()
    assert source == "article"
    # by id too; the published page carries the new summary
    assert main([*common, "refetch", "--item", str(item_id)]) == 0
    assert "zebrafinch" in (Path(common[-1]) / "index.html").read_text().lower()


def test_refetch_keeps_the_address_guard_and_names_unknown_items(world, site, capsys):
    common, db = world["common"], world["db"]
    capsys.readouterr()
    assert main([*common, "refetch", world["other"]]) == 1
    out = capsys.readouterr().out
    assert "article failed: BlockedAddressError" in out and "summary unchanged" in out
    assert rows(db, "SELECT article_status FROM items WHERE url = ?",
                world["other"])[0][0].startswith("failed: BlockedAddressError")
    assert main([*common, "refetch", "--item", "9999"]) == 1
    assert "error: no item 9999" in capsys.readouterr().err
    assert main([*common, "refetch", "http://127.0.0.1:9/nothing"]) == 1
    assert "no item with the URL http://127.0.0.1:9/nothing" in capsys.readouterr().err
    assert main([*common, "refetch"]) == 1
    assert "give an item's URL or --item ID" in capsys.readouterr().err


def test_resummarize_by_feed_and_age_with_another_method(world, capsys, monkeypatch):
    common, db = world["common"], world["db"]
    before = rows(db, "SELECT id, summary_method FROM items ORDER BY id")
    assert all(m.startswith("default:") for _, m in before)
    monkeypatch.setenv("AGGREGATOR_SUMMARIZER", "lead")
    capsys.readouterr()
    assert main([*common, "resummarize", "--feed", world["feed"], "--since", "2d"]) == 0
    assert "2 items summarised again" in capsys.readouterr().out
    after = rows(db, "SELECT id, summary_method FROM items ORDER BY id")
    assert [i for i, _ in after] == [i for i, _ in before]
    assert all(m.startswith("lead:") for _, m in after)
    # items dated long ago are outside --since
    with sqlite3.connect(db) as c:
        c.execute("UPDATE items SET sort_date = '2001-01-01T00:00:00+00:00'")
    assert main([*common, "resummarize", "--since", "1d"]) == 0
    assert "0 items summarised again" in capsys.readouterr().out
    assert main([*common, "resummarize", "--feed", "http://127.0.0.1:9/none.xml"]) == 1
    assert "no such feed: http://127.0.0.1:9/none.xml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*common, "resummarize", "--since", "soon"])
    assert e.value.code == 2


def test_vacuum_rewrites_the_file_and_switches_to_incremental(world, capsys):
    common, db = world["common"], world["db"]
    with sqlite3.connect(db, isolation_level=None) as c:
        c.execute("PRAGMA auto_vacuum = NONE")
        c.execute("VACUUM")
        c.execute("CREATE TABLE junk (x)")
        c.execute("INSERT INTO junk SELECT randomblob(4000) FROM "
                  "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                  "WHERE i < 500) SELECT i FROM n)")
        c.execute("DROP TABLE junk")
        assert c.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    big = db.stat().st_size
    capsys.readouterr()
    assert main([*common, "vacuum"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"vacuumed {db}: ") and " MB -> " in out
    assert db.stat().st_size < big - 1_000_000
    assert rows(db, "PRAGMA auto_vacuum") == [(2,)]
    assert rows(db, "SELECT count(*) FROM items") == [(2,)]
    assert main(["--db", str(db.parent / "missing.db"), "vacuum"]) == 1
    assert "no database at" in capsys.readouterr().err


def test_feeds_json_prints_one_object_per_feed(world, capsys):
    capsys.readouterr()
    assert main([*world["common"], "feeds", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    feed = json.loads(lines[0])
    assert feed["url"] == world["feed"] and feed["name"] == "Harbour News"
    assert (feed["state"], feed["last_status"], feed["item_count"]) == ("ok", 200, 2)
    assert feed["active"] is True and feed["error_count"] == 0
    assert feed["last_fetch"].endswith("+00:00")
