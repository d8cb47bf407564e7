"""Hostile publisher and hostile server against the parse side (parse.py,
clean.py, jsonfeed.py): each test names the input that once got past it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hostile_servers import (
    assert_no_script,
    feed_row,
    items_of,
    local_httpserver,
    one_pass,
    rows,
    settings_for,
    write_opml,
)
from lxml import etree, html
from werkzeug import Response

from aggregator import clean
from aggregator.errors import ParseError
from aggregator.parse import parse
from aggregator.store import Store
from aggregator.update import publish_now

NOW = datetime(2026, 11, 1, tzinfo=UTC)
URL = "http://feeds.example.org/feed"


def rss_item(item: bytes) -> bytes:
    return (b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item>'
            + item + b"</item></channel></rss>")


def test_a_date_with_a_year_of_five_thousand_digits_is_no_date() -> None:
    # int() of more than 4300 digits raises ValueError, which escaped parse()
    for tag in (b"pubDate", b"updated", b"published"):
        body = rss_item(b"<title>x</title><" + tag + b">" + b"9" * 5000
                        + b"-01-01T00:00:00Z</" + tag + b">")
        feed = parse(body, {}, URL, NOW)
        assert feed.items[0].title == "x"
        assert feed.items[0].published is None and feed.items[0].updated is None


EBCDIC_DOC = ('<?xml version="1.0" encoding="{cp}"?><!DOCTYPE rss [<!ENTITY x "PWNED">]>'
              '<rss version="2.0"><channel><title>&x; T</title>'
              '<item><title>&x; story</title></item></channel></rss>')


def test_an_ebcdic_document_has_its_internal_subset_cut_too() -> None:
    # feedparser reads EBCDIC (it sniffs "<?xm" in cp037); the subset check
    # read only ASCII-like bytes, so the feed's entity was expanded
    for cp in ("cp037", "cp500", "cp1026", "cp1140"):
        feed = parse(EBCDIC_DOC.format(cp=cp).encode(cp), {}, URL, NOW)
        assert feed.items[0].title is not None
        assert "PWNED" not in (feed.title or "") + feed.items[0].title, cp
        assert "story" in feed.items[0].title


def test_an_ebcdic_document_declaring_an_external_entity_is_refused() -> None:
    doc = EBCDIC_DOC.replace('"PWNED"', 'SYSTEM "file:///etc/hostname"')
    with pytest.raises(ParseError, match="XXE"):
        parse(doc.format(cp="cp037").encode("cp037"), {}, URL, NOW)


def test_to_text_of_a_run_of_unclosed_block_tags_is_linear() -> None:
    # "<p<p<p..." (raw HTML, as a caller of the public to_text may pass) made
    # the block-tag pattern scan to the end of the run for every "<p": a
    # megabyte took minutes. A block tag now ends at the first "<" or ">", so
    # each "<p" is looked at once:
    assert clean._BLOCK.match("<p<p>") is None
    assert clean.to_text("<p" * 200_000 + " end") is None  # an unclosed tag: no text
    # tags nh3 wrote still break paragraphs (it escapes < and > in attributes)
    assert clean.to_text(clean.sanitize('<p title="a<p>b">one</p><p title="q>r">two')) \
        == "one\n\ntwo"


def test_a_million_repeated_tags_are_not_each_cleaned() -> None:
    # every term went through nh3 until 50 distinct ones were found: 1000
    # items of 2500 "a" tags (a 10 MB JSON Feed) cost 2.5 million cleanings
    seen: list[object] = []

    def terms() -> Iterator[object]:
        for n in range(1_000_000):
            seen.append(n)
            yield "a" if n % 2 else "<b>a</b>"

    assert clean.categories(terms()) == ("a",)
    assert len(seen) <= clean.MAX_CATEGORY_TERMS
    many = [f"tag {n}" for n in range(clean.MAX_CATEGORIES + 10)]
    assert clean.categories(many) == tuple(many[: clean.MAX_CATEGORIES])
    assert clean.categories([5, None, "x", "x", "<i>x</i>", "y"]) == ("x", "y")


BAD_REFS = [b"&#55296;", b"&#xD800;", b"&#x0000dfff;", b"&#1114112;", b"&#x110000;",
            b"&#99999999999999999999;", b"&#x" + b"f" * 5000 + b";"]


@pytest.mark.parametrize("ref", BAD_REFS)
def test_a_character_reference_to_no_character_costs_one_character_not_the_feed(ref: bytes) -> None:
    # feedparser raised (UnicodeEncodeError, ValueError, OverflowError) on a
    # reference to a surrogate or past U+10FFFF: the whole feed was lost
    body = (b'<rss version="2.0"><channel><title>L</title><item><title>a' + ref
            + b"b</title><guid>g</guid></item><item><title>next &#x2019;&#8217;&#128512;</title>"
            b"</item></channel></rss>")
    feed = parse(body, {}, URL, NOW)
    assert [i.title for i in feed.items] == ["a\ufffdb", "next \u2019\u2019\U0001f600"]


# --- the same inputs from a real server, through a pass, the store and publish -------------


def test_hostile_feeds_from_a_real_server_end_well_formed_and_inert(tmp_path: Path) -> None:
    tags = json.dumps([{"id": str(n), "title": f"tagged {n}", "tags": ["a"] * 2000}
                       for n in range(50)])
    xss = ('<a href="jav&#x09;ascript:alert(1)">x</a><img src=x onerror=alert(1)>'
           "<svg><script>alert(1)</script></svg><math><mtext><table><mglyph><style>"
           "<img src=x onerror=alert(1)>")
    json_feed = ('{"version":"https://jsonfeed.org/version/1.1","title":"J","items":'
                 + json.dumps([{"id": "x1", "title": "xss story", "content_html": xss}])[:-1]
                 + "," + tags[1:] + "}").encode()
    rss = rss_item(b"<title>refs a&#55296;b</title><guid>r1</guid><pubDate>" + b"9" * 5000
                   + b"-01-01</pubDate>")
    feeds = {
        "/ebcdic": (EBCDIC_DOC.format(cp="cp500").encode("cp500"), "application/xml"),
        "/refs": (rss, "application/rss+xml"),
        "/json": (json_feed, "application/feed+json"),
    }
    settings = settings_for(tmp_path)
    with local_httpserver() as web:
        for path, (body, ctype) in feeds.items():
            web.expect_request(path).respond_with_response(
                Response(body, 200, content_type=ctype))
        urls = {path: web.url_for(path) for path in feeds}
        write_opml(settings, list(urls.values()))
        one_pass(settings)
    for url in urls.values():
        assert feed_row(settings, url)["state"] == "ok", feed_row(settings, url)
    titles = {url: sorted(i["title"] for i in items_of(settings, url)) for url in urls.values()}
    assert titles[urls["/ebcdic"]] == ["&x; story"]
    assert titles[urls["/refs"]] == ["refs a\ufffdb"]
    assert len(titles[urls["/json"]]) == 51
    assert_no_script(rows(settings, "select * from items"))
    with Store(settings.db) as store:
        publish_now(settings, store)
    for name in ("rss.xml", "atom.xml"):
        etree.fromstring((settings.output / name).read_bytes(),
                         etree.XMLParser(resolve_entities=False, no_network=True))
    json.loads((settings.output / "feed.json").read_bytes())
    page = (settings.output / "index.html").read_bytes()
    assert b"PWNED" not in page and b"refs a\xef\xbf\xbdb" in page
    doc = html.fromstring(page)
    assert not [el for el in doc.iter("script", "iframe", "svg", "math", "object", "embed")]
    assert not [(k, v) for el in doc.iter() for k, v in el.attrib.items()
                if k.startswith("on") or "javascript:" in "".join(v.lower().split())]


def test_text_fields_hold_no_control_characters_and_languages_are_tags() -> None:
    # "\x01", "\x1b" and lone surrogates reached the store in titles, authors and
    # categories, and '\x01en"><script>' as a language
    doc = {"version": "https://jsonfeed.org/version/1.1", "language": "en\"><script>",
           "items": [{"id": "1", "title": "a\u0001b\u001b\ud800c\ufffe", "language": "\u0001en",
                      "authors": [{"name": "\u0000Jane\u0007"}], "tags": ["\u0001t"]},
                     {"id": "2", "title": "two", "language": "en_US"}]}
    feed = parse(json.dumps(doc).encode(), {}, URL, NOW)
    one, two = feed.items
    assert (one.title, one.author, one.categories) == ("ab\ufffdc", "Jane", ("t",))
    assert (feed.language, one.language, two.language) == (None, None, "en_us")
    rss = rss_item(b"<title>&#1;x&#x1b;y</title><author>&#11;A</author><category>&#1;c</category>")
    item = parse(rss.replace(b"<rss", b"<!-- --><rss").replace(b'<?xml version="1.0"?>', b""),
                 {}, URL, NOW).items[0]
    assert (item.title, item.author, item.categories) == ("xy", "A", ("c",))


@pytest.mark.parametrize(("text", "expected"), [
    ("Sun, 11 May 2025 12:00:00 +9999", None),
    ("2025-05-11T12:00:00+99:00", None),
    ("Sun, 11 May 2025 12:00:00 -2400", None),
    ("Sun, 11 May 2025 12:00:00 +0160", None),
    ("Sun, 11 May 2025 12:00:00 +0200", datetime(2025, 5, 11, 10, tzinfo=UTC)),
    ("2025-05-11T12:00:00-05:30", datetime(2025, 5, 11, 17, 30, tzinfo=UTC)),
    ("2025-05-11", datetime(2025, 5, 11, tzinfo=UTC)),
])
def test_a_zone_of_ninety_nine_hours_is_no_date(text: str, expected: datetime | None) -> None:
    # feedparser read "+9999" as 99 h 99 min and moved the date four days
    body = rss_item(b"<title>x</title><pubDate>" + text.encode() + b"</pubDate>")
    assert parse(body, {}, URL, NOW).items[0].published == expected
