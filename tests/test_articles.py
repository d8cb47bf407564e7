"""Summaries from the full article, fetched politely and never from an internal
address: a feed server whose items carry one-line teasers and link to full
pages, run through `aggregator update --all` as a user would, offline."""

from __future__ import annotations

import html
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from hostile_servers import local_httpserver, rss

from aggregator import opml
from aggregator.sentences import split_sentences
from aggregator.types import Subscription
from bench.farm import Farm


def update(tmp_path: Path, feeds: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "empty-home"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(empty), NLTK_DATA=str(empty), AGGREGATOR_PUBLISH="false")
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--feeds", str(feeds), "--db",
         str(tmp_path / "x.db"), "update", "--all", *extra],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )


def items(tmp_path: Path) -> list[dict[str, object]]:
    with sqlite3.connect(tmp_path / "x.db") as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute(
            "SELECT i.*, f.url AS feed_url FROM items i JOIN feeds f ON f.id = i.feed_id")]


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text))


def test_every_item_is_summarised_from_its_full_article_and_fetched_once(tmp_path):
    with Farm(3, 4).serve() as farm:
        feeds = farm.write_opml(tmp_path / "feeds.opml")
        out = update(tmp_path, feeds)
        assert out.returncode == 0, out.stderr
        assert "12 summarised" in out.stdout
        rows = items(tmp_path)
        assert len(rows) == 12
        for row in rows:
            feed, serial = re.search(r"/article/(\d+)/(\d+)\.html", str(row["url"])).groups()
            page = farm.article_page(int(feed), int(serial))
            assert page is not None
            article = words(html.unescape(re.sub(r"<[^>]+>", " ", page.decode())))
            assert row["article_status"] == "ok"
            assert str(row["summary_method"]).startswith("default:")
            points = json.loads(str(row["summary_points"]))
            sentences = [*split_sentences(str(row["summary_context"])), *points]
            # more than the teaser could give, and every sentence from the article
            assert len(points) >= 2
            for sentence in sentences:
                assert words(sentence) in article
            assert words(str(row["content_text"])) in words(str(row["summary_context"]))
        fetched = sum(n for path, n in farm.requests.items() if path.startswith("/article/"))
        assert fetched == 12  # each article once

        farm.add_item()
        assert update(tmp_path, feeds).returncode == 0
        fetched_again = sum(n for p, n in farm.requests.items() if p.startswith("/article/"))
        assert fetched_again == 12 + 3  # only the three new stories' pages
        assert len(items(tmp_path)) == 15


def test_links_to_internal_addresses_cause_no_request(tmp_path):
    """The feed at http://127.0.0.1:PORT/ (an address the user chose) may have
    its articles fetched from that origin; links to any other internal origin
    -- another port on the same address, another name for it, the metadata
    service, a private network -- are refused and recorded as failed."""
    with local_httpserver() as feed_host, local_httpserver() as internal:
        other_name = feed_host.url_for("/other-name.html").replace("127.0.0.1", "localhost")
        feed_host.expect_request("/feed.xml").respond_with_data(rss(
            "Mixed links",
            ("Own origin", feed_host.url_for("/story.html")),
            ("Metadata", "http://169.254.169.254/latest/meta-data/"),
            ("Private", "http://10.0.0.1/admin"),
            ("Other port", internal.url_for("/secret")),
            ("Other name", other_name),
            ("Odd spelling", feed_host.url_for("/odd.html").replace("127.0.0.1", "127.1")),
            ("File", "file:///etc/passwd"),
        ), content_type="application/rss+xml")
        feed_host.expect_request("/story.html").respond_with_data(
            "<html><body><article><h1>Own origin</h1>"
            + "".join(f"<p>Paragraph {n} of the story on the feed's own host says something "
                      f"new about the bridge and the river crossing plans.</p>" for n in range(8))
            + "</article></body></html>", content_type="text/html")
        internal.expect_request("/secret").respond_with_data("internal secret")
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([Subscription(feed_host.url_for("/feed.xml"))]))

        out = update(tmp_path, feeds)
        assert out.returncode == 0, out.stderr
        assert internal.log == []  # no request reached the internal server
        asked = [request.path for request, _ in feed_host.log]
        assert sorted(asked) == ["/feed.xml", "/story.html"]  # nothing under other names
        by_title = {r["title"]: r for r in items(tmp_path)}
        assert by_title["Own origin"]["article_status"] == "ok"  # same origin as the feed
        for title in ("Metadata", "Private", "Other port", "Other name", "Odd spelling"):
            status = str(by_title[title]["article_status"])
            assert status.startswith("failed: BlockedAddressError: refused http"), (title, status)
            assert "internal address" in status, status
        assert f":{internal.port}/secret" in str(by_title["Other port"]["article_status"])
        # a file: link is not a link we keep at all, so nothing is fetched for it
        assert by_title["File"]["url"] is None and by_title["File"]["article_status"] is None
        # every item still has a summary: its own text when the article can't be had
        assert all(r["summary_method"] for r in by_title.values())


def test_allow_private_opens_another_internal_origin(tmp_path):
    with local_httpserver() as feed_host, local_httpserver() as internal:
        feed_host.expect_request("/feed.xml").respond_with_data(rss(
            "Intranet", ("Elsewhere inside", internal.url_for("/story.html"))),
            content_type="application/rss+xml")
        internal.expect_request("/story.html").respond_with_data(
            "<html><body><article><h1>Inside</h1>"
            + "".join(f"<p>Paragraph {n} of the intranet story tells the staff about the "
                      f"new canteen and the opening hours of the library.</p>" for n in range(8))
            + "</article></body></html>", content_type="text/html")
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([Subscription(feed_host.url_for("/feed.xml"))]))
        (tmp_path / "aggregator.toml").write_text('allow_private = ["127.0.0.0/8"]\n')

        out = update(tmp_path, feeds)
        assert out.returncode == 0, out.stderr
        assert [request.path for request, _ in internal.log] == ["/story.html"]
        assert [r["article_status"] for r in items(tmp_path)] == ["ok"]


def test_article_switches_global_and_per_feed(tmp_path):
    with Farm(2, 2).serve() as farm:
        feeds = tmp_path / "feeds.opml"
        opml.write(feeds, opml.build([
            Subscription(f"{farm.base}/feed/0.xml", "On"),
            Subscription(f"{farm.base}/feed/1.xml", "Off", fetch_articles=False),
        ]))
        assert update(tmp_path, feeds).returncode == 0
        fetched = {p for p in farm.requests if p.startswith("/article/")}
        assert fetched and all(p.startswith("/article/0/") for p in fetched)

        farm.requests.clear()
        (tmp_path / "x.db").unlink()
        assert update(tmp_path, feeds, "--no-articles").returncode == 0
        assert not any(p.startswith("/article/") for p in farm.requests)
        rows = items(tmp_path)
        assert rows and all(r["article_status"] is None for r in rows)
        assert all(r["summary_method"] for r in rows)  # summarised from the teaser
