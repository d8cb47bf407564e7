"""JSON Feed 1.0 and 1.1 subscriptions: aggregator.jsonfeed directly, through
aggregator.parse (dispatch by type and by sniffing), hostile shapes and values,
and one real pass against a local server."""

from __future__ import annotations

import codecs
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import (
    DATA,
    assert_no_script,
    feed_row,
    items_of,
    local_httpserver,
    one_pass,
    rows,
    settings_for,
    write_opml,
)
from werkzeug import Response

from aggregator import clean, jsonfeed
from aggregator.errors import ParseError
from aggregator.parse import parse
from aggregator.types import ParsedFeed

NOW = datetime(2026, 11, 1, tzinfo=UTC)
URL = "https://example.org/feed.json"
V11 = "https://jsonfeed.org/version/1.1"


def doc(**fields: Any) -> bytes:
    body: dict[str, Any] = {"version": V11, "title": "T", "items": []}
    body.update(fields)
    return json.dumps(body).encode()


def parse_json(body: bytes, content_type: str = "application/feed+json") -> ParsedFeed:
    return parse(body, {"content-type": content_type}, URL, NOW)


# --- the two versions --------------------------------------------------------------------


def test_json_feed_1_1_maps_onto_the_same_items_as_rss() -> None:
    feed = parse_json((DATA / "jsonfeed-1.1.json").read_bytes())
    assert (feed.title, feed.site_url, feed.language) == (
        "Example & Friends", "https://example.org/", "en-gb")
    first, second, third = feed.items
    assert first.guid == "https://example.org/posts/1"
    assert first.url == "https://example.org/posts/1.html"  # relative: against the feed URL
    assert first.title == "First post"
    assert first.author == "Ann Writer"  # the first of "authors", as plain text
    assert first.published == datetime(2026, 10, 30, 7, 15, tzinfo=UTC)
    assert first.updated == datetime(2026, 10, 31, 10, 0, tzinfo=UTC)
    assert first.categories == ("news", "World")  # repeats and non-strings dropped
    assert first.language == "de"
    content = first.content or ""
    assert "<script" not in content and "alert" not in content
    assert "onclick" not in content and "javascript:" not in content
    assert 'href="https://example.org/about"' in content
    assert 'src="https://example.org/img/a.png"' in content
    assert first.content_text == "Hello about\n\nBye\n\nx"
    # content_text is text: escaped into HTML, paragraphs kept
    assert second.content == (
        "<p>Plain text with &lt;tags&gt; &amp; ampersands.</p><p>Second paragraph.</p>")
    assert second.url == "https://elsewhere.example/story"  # external_url when no url
    assert second.published == datetime(2026, 10, 29, tzinfo=UTC)  # a date alone: midnight UTC
    # file: is no link; a future date and Feb 30 are no dates
    assert (third.url, third.published, third.updated) == (None, None, None)
    assert feed.warning is None


def test_json_feed_1_0_numeric_ids_and_single_author() -> None:
    feed = parse_json((DATA / "jsonfeed-1.0.json").read_bytes(), "application/json")
    assert (feed.title, feed.site_url) == ("Old Style", "https://old.example/")
    one, two = feed.items
    assert (one.guid, two.guid) == ("1001", "1002")  # 1.0 ids may be numbers
    assert one.author == "Carol"
    assert two.author == "Feed Owner"  # the feed's author stands for the item's
    assert one.published == datetime(2026, 10, 1, 17, 0, tzinfo=UTC)
    assert one.content == "<p>Body one.</p>"
    assert two.content == "<p>Only a summary here.</p>"


@pytest.mark.parametrize("content_type", [
    "application/feed+json", "application/feed+json; charset=utf-8", "application/json",
    "text/json", "application/x-json", "text/plain", "application/octet-stream",
    "application/rss+xml", "",
])
def test_dispatch_by_type_or_by_the_body(content_type: str) -> None:
    body = doc(items=[{"id": "a", "title": "Hello"}])
    for prefix in (b"", b"  \n\t", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\n "):
        feed = parse_json(prefix + body, content_type)
        assert [i.title for i in feed.items] == ["Hello"], (content_type, prefix)


def test_utf16_json_with_a_bom() -> None:
    text = doc(items=[{"id": "a", "title": "Grüße"}]).decode()
    for codec, bom in (("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE)):
        assert parse_json(bom + text.encode(codec)).items[0].title == "Grüße"


def test_xml_labelled_json_is_still_read_as_xml() -> None:
    rss = (DATA / "feed-good.xml").read_bytes()
    feed = parse_json(rss, "application/json")
    assert feed.title and len(feed.items) == 3


def test_invalid_utf8_keeps_the_rest_of_the_text() -> None:
    text = json.dumps({"version": V11, "items": [{"id": "a", "title": "caf\u00e9 X"}]},
                      ensure_ascii=False)
    body = text.encode().replace("\u00e9".encode(), b"\xe9")
    assert parse_json(body).items[0].title == "caf\ufffd X"


# --- hostile documents -------------------------------------------------------------------

NOT_FEEDS = {
    "not json": b"{not json",
    "truncated": doc(items=[{"id": "a"}])[:-5],
    "a list": b"[1, 2, 3]",
    "null": b"null",
    "a string": b'"https://jsonfeed.org/version/1.1"',
    "no version": b'{"title": "x", "items": []}',
    "another version": b'{"version": "https://example.org/version/1", "items": []}',
    "version a number": b'{"version": 1.1, "items": []}',
    "version null": b'{"version": null, "items": []}',
    "items an object": doc(items={"id": "a"}),
    "items a string": doc(items="abc"),
    "items null": doc(items=None),
    "NaN": b'{"version": "https://jsonfeed.org/version/1", "items": [], "x": NaN}',
    "Infinity": b'{"version": "https://jsonfeed.org/version/1", "items": [-Infinity]}',
    "a 5000-digit number": b'{"version": "https://jsonfeed.org/version/1", "items": [%s]}'
    % (b"9" * 5000),
    "deep arrays": b"[" * 200_000 + b"]" * 200_000,
    "deep objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep inside an item": doc(items=[{"id": "a", "x": "DEEP"}]).replace(
        b'"DEEP"', b"[" * 5000 + b"]" * 5000),
    "unterminated deep": doc()[:-3] + b"[" * 99999,
    "only a brace": b"{",
    "brace and junk": b"{\x00\x00\x00\xff\xfe",
}


@pytest.mark.parametrize("name", list(NOT_FEEDS))
def test_hostile_documents_are_a_parse_error_and_nothing_else(name: str) -> None:
    body = NOT_FEEDS[name]
    for ctype in ("application/feed+json", "text/plain"):
        with pytest.raises(ParseError) as info:
            parse_json(body, ctype)
        assert str(info.value) and "\n" not in str(info.value)


def test_deep_nesting_within_the_limit_is_fine() -> None:
    nested: Any = "leaf"
    for _ in range(jsonfeed.MAX_DEPTH - 3):
        nested = [nested]
    feed = parse_json(doc(items=[{"id": "a", "_ext": nested}]))
    assert feed.items[0].guid == "a"
    # brackets inside strings are text, not depth
    feed = parse_json(doc(items=[{"id": "a", "title": "[" * 10_000}]))
    assert feed.items[0].title == "[" * clean.MAX_TITLE_CHARS


def test_one_bad_item_is_skipped_not_the_feed() -> None:
    feed = parse_json(doc(items=[
        1, "item", None, [], True,
        {"id": {"a": 1}, "title": 5, "url": ["x"], "content_html": {"b": 2}},  # nothing usable
        {"id": "good", "title": "Good", "url": "https://example.org/good"},
    ]))
    assert [(i.guid, i.title) for i in feed.items] == [("good", "Good")]
    assert feed.warning and "5 item(s) skipped" in feed.warning


# what a hostile feed may put in any field
WILD: list[Any] = [
    None, True, False, 0, -1, 2**70, 1.5, -0.0, 1e308, "", " ", "\x00", "\ud800", "x" * 5000,
    "javascript:alert(1)", "file:///etc/passwd", "data:text/html,<script>alert(1)</script>",
    "http://[::1", "http://127.0.0.1:99999999/", "<script>alert(1)</script>", "٣", "+5",
    "2026-02-30T10:00:00Z", "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59", "2026-10-01T12:00:00+24:00", [], [None, 1, "t", {}], {},
    {"name": 5}, {"name": "<b>n</b>"}, [{"name": None}, {"name": "\ud800x"}],
]
FIELDS = ["id", "url", "external_url", "title", "content_html", "content_text", "summary",
          "date_published", "date_modified", "authors", "author", "tags", "language", "image"]
FEED_FIELDS = ["title", "home_page_url", "language", "author", "authors", "feed_url"]


def test_hostile_types_in_every_field_never_raise_anything_but_parse_error() -> None:
    rng = random.Random(1101)
    parsed = 0
    for _ in range(600):
        items = [{f: rng.choice(WILD) for f in rng.sample(FIELDS, rng.randint(0, len(FIELDS)))}
                 for _ in range(rng.randint(0, 4))]
        top: dict[str, Any] = {f: rng.choice(WILD) for f in rng.sample(FEED_FIELDS, 3)}
        top["version"] = rng.choice([V11, "https://jsonfeed.org/version/1", 1, None])
        top["items"] = rng.choice([items, items, items, None, "x", {}])
        body = json.dumps(top).encode("utf-8", "surrogatepass")
        try:
            feed = parse_json(body)
        except ParseError:
            continue
        parsed += 1
        for item in feed.items:
            assert item.url is None or item.url.startswith(("http://", "https://"))
            for text in (item.title, item.content, item.author, *item.categories):
                assert not text or ("<script" not in text and "\ud800" not in text)
            assert item.guid is None or len(item.guid) <= clean.MAX_ID_CHARS
            for when in (item.published, item.updated):
                assert when is None or (1970 <= when.year and when <= NOW + clean.FUTURE_SLACK)
        assert feed.site_url is None or feed.site_url.startswith(("http://", "https://"))
    assert parsed > 100  # the loop reached the item rules, not only the version check


def test_a_million_items_keep_the_first_thousand() -> None:
    body = b'{"version": "https://jsonfeed.org/version/1.1", "items": [' + b",".join(
        b'{"id":%d}' % n for n in range(1_000_000)) + b"]}"
    feed = parse_json(body)
    assert len(feed.items) == clean.MAX_ITEMS
    assert [i.guid for i in feed.items[:3]] == ["0", "1", "2"]
    assert feed.warning and "only the first 1000 kept" in feed.warning


def test_lone_surrogates_become_replacement_characters() -> None:
    body = b'{"version": "https://jsonfeed.org/version/1.1", "title": "a\\ud800b", "items": ' \
           b'[{"id": "\\udfff", "title": "x\\ud83dy", "content_html": "<p>\\ud800</p>"}]}'
    feed = parse_json(body)
    assert feed.title == "a\ufffdb"
    assert (feed.items[0].guid, feed.items[0].title) == ("\ufffd", "x\ufffdy")
    assert feed.items[0].content == "<p>\ufffd</p>"


# --- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-10-01T12:00:00Z", datetime(2026, 10, 1, 12, tzinfo=UTC)),
    ("2026-10-01t12:00:00z", datetime(2026, 10, 1, 12, tzinfo=UTC)),
    ("2026-10-01 12:00:00+02:00", datetime(2026, 10, 1, 10, tzinfo=UTC)),
    ("2026-10-01T12:00:00.123456789-0130", datetime(2026, 10, 1, 13, 30, tzinfo=UTC)),
    ("  2026-10-01T12:00  ", datetime(2026, 10, 1, 12, tzinfo=UTC)),
    ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),  # leap second
    ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ("2026-02-30T10:00:00Z", None),
    ("2026-13-01T10:00:00Z", None),
    ("2026-10-01T24:00:00Z", None),
    ("2026-10-01T12:60:00Z", None),
    ("2026-10-01T12:00:00+24:00", None),
    ("0000-01-01T00:00:00Z", None),
    ("1969-12-31T23:59:59Z", None),
    ("10000-01-01T00:00:00Z", None),
    ("9999-12-31T23:59:59-05:00", None),  # year 10000 in UTC, and the future
    ("2026-11-03T00:00:00Z", None),  # more than a day ahead of NOW
    ("+2026-10-01T12:00:00Z", None),
    ("٢٠٢٦-١٠-٠١T12:00:00Z", None),
    ("99999999999999999999-01-01T00:00:00Z", None),
    ("Thu, 01 Oct 2026 12:00:00 GMT", None),  # not RFC 3339
    ("", None), ("2026", None), ("x" * 1000, None),
])
def test_rfc3339(text: str, expected: datetime | None) -> None:
    assert clean.rfc3339(text, NOW) == expected


@pytest.mark.parametrize("value", [None, 20261001, 1.5, [], {}, True])
def test_a_date_of_another_type_is_no_date(value: object) -> None:
    assert clean.rfc3339(value, NOW) is None


# --- a real subscription ---------------------------------------------------------------------


def test_json_feed_subscription_through_a_real_pass(tmp_path: Path) -> None:
    body = (DATA / "jsonfeed-1.1.json").read_bytes()
    with local_httpserver() as server:
        for route, ctype in (("/feed.json", "application/feed+json"),
                             ("/plain.json", "application/json")):
            server.expect_request(route).respond_with_response(
                Response(body, 200, headers={"Content-Type": ctype}))
        urls = [server.url_for("/feed.json"), server.url_for("/plain.json")]
        settings = settings_for(tmp_path)
        write_opml(settings, urls)
        result = one_pass(settings)
    assert [o.result for o in result.outcomes] == ["new", "new"], result.outcomes
    for url in urls:
        row = feed_row(settings, url)
        assert row["state"] == "ok" and row["feed_title"] == "Example & Friends"
        base = url.rsplit("/", 1)[0]
        assert row["site_url"] == base + "/"
        stored = {i["guid"]: i for i in items_of(settings, url)}
        assert set(stored) == {"https://example.org/posts/1", "2", "3"}
        first = stored["https://example.org/posts/1"]
        assert first["url"] == base + "/posts/1.html"
        assert first["title"] == "First post" and first["language"] == "de"
        assert f'href="{base}/about"' in first["content"]
        assert stored["2"]["language"] == "en-gb"  # the feed's language for the rest
        assert stored["3"]["url"] is None  # the file: link was not stored
    assert_no_script(rows(settings, "SELECT * FROM items"))


@pytest.mark.parametrize(("text", "deep"), [
    ("[" * 64 + "]" * 64, False),
    ("[" * 65 + "]" * 65, True),
    ('{"a": ' * 70 + "1" + "}" * 70, True),
    ('["' + "[" * 100 + '"]', False),  # brackets in a string are text
    ('["\\"' + "[" * 100 + '"]', False),  # after an escaped quote too
    ('["\\\\"' + ", 1" * 100 + "]", False),  # an escaped backslash ends no string early
    ("[" * 100, True),  # unbalanced
    ("[]" * 10_000, False),  # wide is not deep
])
def test_depth_guard(text: str, deep: bool) -> None:
    assert jsonfeed._too_deep(text) is deep


def test_add_of_a_page_finds_its_json_feed(tmp_path: Path) -> None:
    from aggregator.discover import feed_url
    from aggregator.update import make_fetcher

    page = (b'<html><head><link rel="alternate" type="application/feed+json" href="feed.json">'
            b'<link rel="alternate" type="application/json" href="other.json"></head></html>')
    with local_httpserver() as server:
        server.expect_request("/blog/").respond_with_response(
            Response(page, 200, headers={"Content-Type": "text/html"}))
        server.expect_request("/blog/feed.json").respond_with_response(Response(
            (DATA / "jsonfeed-1.0.json").read_bytes(), 200,
            headers={"Content-Type": "application/feed+json"}))
        with make_fetcher(settings_for(tmp_path)) as fetcher:
            found = feed_url(fetcher, server.url_for("/blog/"))
    assert (found.url, found.title) == (server.url_for("/blog/feed.json"), "Old Style")
    assert found.parsed is not None and found.parsed.items  # the fetch add made is kept
