"""Attacks on aggregator.xmlfeed, the ElementTree reader, and on the parse()
it sits in front of: each test is a hole found by the attack review (it fails
without its fix) or a guarantee checked end to end (a real pass against a
real HTTP server on 127.0.0.1 into a real SQLite file, fast path against
feedparser's).
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import Clock, local_httpserver, one_pass, rows, settings_for, write_opml

from aggregator import xmlfeed
from aggregator.parse import parse

NOW = datetime(2026, 11, 1, tzinfo=UTC)
URL = "http://127.0.0.1/feed.xml"
HEADERS = {"content-type": "application/rss+xml"}
NS = ('xmlns:content="http://purl.org/rss/1.0/modules/content/" '
      'xmlns:media="http://search.yahoo.com/mrss/" xmlns:dc="http://purl.org/dc/elements/1.1/"')


def _rss(items: str, channel: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" {NS}><channel>'
            f"<title>T</title><link>http://127.0.0.1/</link><description>d</description>"
            f"{channel}{items}</channel></rss>").encode()


ITEM = ('<item><title>A</title><link>http://127.0.0.1/a</link><guid isPermaLink="false">g1</guid>'
        "<pubDate>Sun, 01 Nov 2026 10:00:00 GMT</pubDate><description>x</description>{}</item>")


def test_plain_document_is_read_by_the_fast_path() -> None:
    assert xmlfeed.parse(_rss(ITEM.format("")), HEADERS, URL, NOW) is not None


# --- hole 1: a tree of millions of tiny elements ----------------------------------------


@pytest.mark.parametrize("where", ["item", "channel"])
def test_many_tiny_elements_decline_in_bounded_memory(where: str) -> None:
    """Hole: 10 MB of ``<a/>`` in an item (or the channel) was read into an
    ElementTree of 2.6 million elements, 620 MB (feedparser's stream: 77 MB).
    Fix: the document is fed in chunks and declined past MAX_ELEMENTS."""
    tiny = "<a/>" * 1_000_000  # 4 MB
    body = _rss(ITEM.format(tiny)) if where == "item" else _rss(ITEM.format(""), tiny)
    tracemalloc.start()
    try:
        result = xmlfeed.parse(body, HEADERS, URL, NOW)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result is None
    # the whole tree took 230 MB here; the chunked read stops near MAX_ELEMENTS (some 25 MB)
    assert peak < 64 * 2**20, (peak, len(body))


def test_many_attributes_decline() -> None:
    attrs = " ".join(f'a{i}=""' for i in range(xmlfeed.MAX_ATTRIBUTES + 10))
    body = _rss(ITEM.format(f"<x {attrs}/>"))
    assert xmlfeed.parse(body, HEADERS, URL, NOW) is None


def test_a_big_ordinary_feed_is_still_fast() -> None:
    items = "".join(ITEM.replace("g1", f"g{i}").format(
        '<enclosure url="http://127.0.0.1/a.mp3" length="1" type="audio/mpeg"/>'
        "<category>c</category><dc:creator>d</dc:creator>") for i in range(3000))
    result = xmlfeed.parse(_rss(items), HEADERS, URL, NOW)
    assert result is not None and len(result.items) == 1000 and result.warning


# --- hole 2 (the feedparser path): <links> in an item -------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_links_element_in_an_item_is_not_a_type_error(fast: bool) -> None:
    """Hole (before this change too): ``<links>x</links>`` in an item made
    feedparser's entry.get("enclosures") index a str, and parse() raised
    TypeError, not ParseError. Fix: a non-list ``links`` is dropped."""
    body = _rss(ITEM.format("<links>x</links>"))
    result = parse(body, HEADERS, URL, NOW, fast=fast)
    assert [i.guid for i in result.items] == ["g1"]
    assert result.items[0].enclosures == ()


# --- downstream: one real pass each way, the same rows -------------------------------------

MEDIA = ('<enclosure url="http://127.0.0.1/a.mp3" length="123" type="Audio/MPEG"/>'
         '<media:content url="http://127.0.0.1/v.mp4" fileSize="10" medium="video"/>'
         '<media:thumbnail url="http://127.0.0.1/t.jpg"/>'
         '<media:group><media:content url="http://127.0.0.1/g.mp4"/></media:group>')
DOCS = {
    "plain": _rss(ITEM.format("")),
    "media": _rss(ITEM.format(MEDIA) + ITEM.replace("g1", "g2").format(
        '<enclosure url="javascript:x" length="99999999999999999999"/>')),
    "html": _rss(ITEM.replace("<description>x</description>", "<description>&lt;p onclick="
                              "'x()'&gt;hi&lt;script&gt;bad()&lt;/script&gt;&lt;a href=&quot;"
                              "javascript:y&quot;&gt;l&lt;/a&gt;&lt;/p&gt;</description>")
                 .format("<content:encoded><![CDATA[<p>longer <b>content</b> here</p>]]>"
                         "</content:encoded><category>News</category><category>news</category>"
                         "<dc:creator>Dee</dc:creator><author>a@b.c (A)</author>")),
    "permalinks": _rss(
        '<item><title>t1</title><guid>http://127.0.0.1/p1</guid></item>'
        '<item><title>t2</title><guid isPermaLink="false">http://127.0.0.1/p2</guid></item>'
        '<item><title>t3</title><link>http://127.0.0.1/l3</link></item>'
        '<item><description>only text</description></item>'
        '<item><title xml:lang="fr">t4</title><dc:date>2026-10-30T10:00:00+01:00</dc:date></item>',
        "<language>en-GB</language><ttl>90</ttl>"),
    "dates": _rss("".join(
        f'<item><title>d{i}</title><guid isPermaLink="false">d{i}</guid>'
        f"<pubDate>{d}</pubDate></item>"
        for i, d in enumerate(("Sun, 01 Nov 2026 23:59:60 GMT", "Sun, 01 Nov 2099 10:00:00 GMT",
                               "2026-02-30T10:00:00Z", "Sun, 01 Nov 2026 10:00:00 +9999",
                               "garbage", "Mon, 31 Dec 1969 23:59:59 GMT")))),
}
VOLATILE = {"id", "feed_id", "fetched_at", "first_seen", "last_seen", "created_at", "updated_at",
            "seen_at", "inserted_at", "stored_at"}


def _pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool,
          bodies: dict[str, bytes], server: Any) -> Any:
    """One real pass (fetch, parse, store) of ``bodies`` served by ``server``,
    by the fast path or, ``fast`` False, by feedparser only."""
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(xmlfeed, "parse", lambda *_: None)
        settings = settings_for(tmp_path, parse_processes=0)
        server.clear()
        for name, body in bodies.items():
            server.expect_request(f"/{name}.xml").respond_with_data(
                body, content_type="application/rss+xml")
        write_opml(settings, [server.url_for(f"/{n}.xml") for n in bodies])
        one_pass(settings, clock=Clock(datetime(2026, 11, 2, tzinfo=UTC)))
        return settings


def _snapshot(settings: Any) -> dict[str, list[dict[str, Any]]]:
    def clean(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items()
                if k not in VOLATILE and not k.endswith(("_at", "_id"))}

    items = rows(settings, "SELECT f.url AS feed, i.* FROM items i "
                           "JOIN feeds f ON f.id = i.feed_id "
                           "ORDER BY f.url, i.guid, i.url, i.title")
    tables = {r["name"] for r in rows(settings, "SELECT name FROM sqlite_master "
                                                "WHERE type='table'")}
    out = {"items": [clean(r) for r in items], "feeds": rows(
        settings, "SELECT url, feed_title, site_url, language, ttl_minutes, state, last_error "
                  "FROM feeds ORDER BY url")}
    if "enclosures" in tables:
        out["enclosures"] = [clean(r) for r in rows(
            settings, "SELECT i.guid AS item_guid, i.title AS item_title, e.* FROM enclosures e "
                      "JOIN items i ON i.id = e.item_id ORDER BY i.guid, i.title, e.url")]
    return out


def test_a_real_pass_stores_the_same_rows_either_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for body in DOCS.values():  # each is one the fast path reads
        assert xmlfeed.parse(body, HEADERS, URL, NOW) is not None
    with local_httpserver() as server:
        fast = _pass(tmp_path / "fast", monkeypatch, True, DOCS, server)
        slow = _pass(tmp_path / "slow", monkeypatch, False, DOCS, server)
        a, b = _snapshot(fast), _snapshot(slow)
        assert len(a["items"]) >= 12 and len(a.get("enclosures", ())) >= 3
        assert a == b
        # a feed flipping path (new bytes, same feed) changes no stored item
        flipped = {n: body + b"\n<!-- flip -->\n" for n, body in DOCS.items()}
        for settings, fast_now in ((fast, False), (slow, True)):
            before = rows(settings, "SELECT * FROM items ORDER BY id")
            hashes = rows(settings, "SELECT url, body_hash FROM feeds ORDER BY url")
            _pass(settings.db.parent, monkeypatch, fast_now, flipped, server)
            assert rows(settings, "SELECT * FROM items ORDER BY id") == before
            # the new bytes were read (no "same bytes, nothing to parse")
            after = rows(settings, "SELECT url, body_hash FROM feeds ORDER BY url")
            assert all(x != y for x, y in zip(hashes, after, strict=True))


# --- feedparser's attribute bomb: its time grows with the square of one element's attributes


@pytest.mark.parametrize("codec", ["utf-8", "utf-16", "iso-8859-1"])
def test_an_element_with_too_many_attributes_is_refused(codec: str) -> None:
    from aggregator.errors import ParseError
    from aggregator.parse import MAX_TAG_ATTRIBUTES

    attrs = " ".join(f'a{i}="x"' for i in range(MAX_TAG_ATTRIBUTES + 1))
    doc = _rss(ITEM.format(f"<x {attrs}/>")).decode().replace(
        'encoding="UTF-8"', f'encoding="{codec}"')
    with pytest.raises(ParseError, match="more than 256 attributes"):
        parse(doc.encode(codec), {"content-type": "application/xml"}, URL, NOW)


def test_long_tags_with_few_attributes_are_read() -> None:
    from aggregator.parse import MAX_TAG_ATTRIBUTES

    picture = '<img src="data:image/png;base64,' + "QUJD" * 3000 + '==" alt="a"/>'
    many = " ".join(f'a{i}="x"' for i in range(MAX_TAG_ATTRIBUTES))  # at the limit: read
    body = _rss(ITEM.format(f"<content:encoded><![CDATA[<p>{picture}</p>]]></content:encoded>"
                            f"<x {many}/>"))
    result = parse(body, HEADERS, URL, NOW)
    assert len(result.items) == 1 and result.items[0].title == "A"
