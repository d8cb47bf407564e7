"""aggregator.xmlfeed, the ElementTree reader for plain RSS 2.0, against the
feedparser path it stands in for: whenever it accepts a document, the
ParsedFeed must be the one ``parse(..., fast=False)`` gives, field by field.

Differential over every real capture in ../shared/data/feeds and every file of
feedparser's and the W3C validator's test suites in ../shared/data/fuzz (skipped
when absent, a failure under CI=true), over the farm's feeds, and over
mutations of a farm-like feed with hostile and odd values. Declines: DOCTYPE
and external entities (nothing read), xml:base, elements it does not know,
other charsets, documents expat refuses, absurd nesting.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hostile_servers import SHARED

from aggregator import parse as parse_mod
from aggregator import xmlfeed
from aggregator.errors import ParseError
from aggregator.parse import parse
from aggregator.types import ParsedFeed

FEEDS = SHARED / "feeds"
FUZZ = SHARED / "fuzz"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
URL = "http://127.0.0.1/feed.xml"
HEADER_SETS: tuple[dict[str, str], ...] = (
    {},
    {"content-type": "application/rss+xml"},
    {"content-type": "text/xml"},
    {"content-type": "text/html; charset=utf-8", "content-language": "de_DE"},
)
# real captures that must take the fast path (ordinary, well-formed RSS 2.0)
MUST_BE_FAST = ("bbc-news-frontpage-2023-11-24.xml", "bbc-news-home-2018-06-23.xml",
                "bbc-news-world-2026-09-25.xml", "npr-news-2023-11-24.xml",
                "guardian-world-2018-06-23.xml", "reuters-topnews-2018-06-23.xml",
                "cnn-hp-hero-2018-06-23.xml", "japantimes-2023-11-24.xml")
FAST_FLOOR = 18  # real captures (not tricky/) read by xmlfeed: 18 of 41 when written


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        pytest.skip(f"{root} absent (test data lives beside the project, not in it)")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "LICENSE")


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ParsedFeed | None]]:
    """What xmlfeed.parse answered inside parse.parse, call by call."""
    seen: list[ParsedFeed | None] = []
    real = xmlfeed.parse

    def recording(*args: Any, **kwargs: Any) -> ParsedFeed | None:
        result = real(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(xmlfeed, "parse", recording)
    yield seen


def _outcome(body: bytes, headers: dict[str, str], fast: bool) -> ParsedFeed | str:
    try:
        return parse(body, headers, URL, NOW, fast=fast)
    except ParseError as e:
        return f"ParseError: {e}"


def _diff(fast: Any, slow: Any) -> str:
    if not (isinstance(fast, ParsedFeed) and isinstance(slow, ParsedFeed)):
        return f"fast path: {fast!r:.300}\nfeedparser: {slow!r:.300}"
    lines = []
    for f in dataclasses.fields(ParsedFeed):
        a, b = getattr(fast, f.name), getattr(slow, f.name)
        if f.name == "items":
            if len(a) != len(b):
                lines.append(f"items: {len(a)} != {len(b)}")
            for i, (x, y) in enumerate(zip(a, b, strict=False)):
                for g in dataclasses.fields(x):
                    u, v = getattr(x, g.name), getattr(y, g.name)
                    if u != v:
                        lines.append(f"item {i} {g.name}: fast {u!r:.300} != "
                                     f"feedparser {v!r:.300}")
        elif a != b:
            lines.append(f"{f.name}: fast {a!r:.300} != feedparser {b!r:.300}")
    return "\n".join(lines[:20])


def _check(body: bytes, headers: dict[str, str], spy: list[ParsedFeed | None],
           what: str) -> bool:
    """Both paths on one document; True when the fast path took it."""
    spy.clear()
    fast = _outcome(body, headers, True)
    took = any(r is not None for r in spy)
    if took:
        slow = _outcome(body, headers, False)
        assert fast == slow, f"{what} {headers}: the fast path differs\n{_diff(fast, slow)}"
    return took


def test_real_feeds_equal_and_mostly_fast(spy: list[ParsedFeed | None]) -> None:
    fast: set[str] = set()
    files = _files(FEEDS)
    for path in files:
        body = path.read_bytes()
        for headers in HEADER_SETS:
            if _check(body, headers, spy, path.name) and headers == HEADER_SETS[1]:
                fast.add(path.name)
    real = {p.name for p in files if p.parent == FEEDS}
    print(f"\nfast path: {len(fast & real)} of {len(real)} real captures, "
          f"{len(fast - real)} of {len(files) - len(real)} tricky cases")
    assert set(MUST_BE_FAST) <= fast, sorted(set(MUST_BE_FAST) - fast)
    assert len(fast & real) >= FAST_FLOOR, sorted(fast & real)


def test_fuzz_corpus_equal(spy: list[ParsedFeed | None]) -> None:
    took = total = 0
    for path in _files(FUZZ):
        body = path.read_bytes()
        for headers in HEADER_SETS[:2]:
            total += 1
            took += _check(body, headers, spy, str(path.relative_to(FUZZ)))
    print(f"\nfast path: {took} of {total} fuzz-corpus parses")
    assert took > 100  # the corpus has hundreds of plain RSS 2.0 files


def test_farm_feeds_take_the_fast_path(spy: list[ParsedFeed | None]) -> None:
    if not (SHARED / "bbc-news-summary").is_dir():
        pytest.skip(f"{SHARED}/bbc-news-summary absent (the farm's articles)")
    from bench.farm import Farm

    farm = Farm(feeds=8, items=30)
    for feed in farm.feeds:
        headers = {"content-type": "application/rss+xml"}
        assert _check(feed.body, headers, spy, f"farm feed {feed.index}")
        result = spy[0]
        assert result is not None and len(result.items) == 30
        assert all(i.published and i.guid and i.url for i in result.items)


# --- mutations ------------------------------------------------------------------------

ITEM = ("<item><title>{title}</title><link>{link}</link>"
        '<guid isPermaLink="false">{guid}</guid><pubDate>{date}</pubDate>'
        "<description>{description}</description>{extra}</item>")
SAFE = {"title": "A title", "link": "http://127.0.0.1/a/1.html", "guid": "farm-1",
        "date": "Sun, 01 Nov 2026 10:00:00 GMT", "description": "Some text.", "extra": ""}
ODD = {
    "title": ["Tom &amp;amp; Jerry", "&lt;b&gt;bold&lt;/b&gt; move", "<![CDATA[<i>x</i> & y]]>",
              "&lt;script&gt;alert(1)&lt;/script&gt;", "  spaced \n\t out  ", "",
              "caf\u00e9 \u2014 \u65e5\u672c", "\u00c3\u00a9t\u00c3\u00a9", "\u0093quoted\u0094",
              "&#128;uro &#x9d; &#150;", "x" * 5000, "&lt;p&gt;para&lt;/p&gt;&amp;nbsp;",
              "&lt;a href=&quot;/rel&quot;&gt;rel&lt;/a&gt;",
              "&lt;unknowntag&gt;x&lt;/unknowntag&gt;",
              "a &lt; b &amp;&amp; c &gt; d", "&amp;bogus; &amp;hellip;", "ctrl\x7f\u0085chars"],
    "link": ["javascript:alert(1)", "/relative/path", "http:///triple.example/x",
             "http://127.0.0.1/a?x=1&amp;y=2", "http://127.0.0.1/a?x=1&amp;amp;y=2", "",
             "  http://127.0.0.1/spaced  ", "ftp://127.0.0.1/file", "http://127.0.0.1/%zz",
             "HTTP://127.0.0.1/UPPER", "http://[::1]:99999/", "data:text/html,hi"],
    "guid": ["", "  padded  ", "g" * 3000, "http://127.0.0.1/guid", "\u00e9\u00e8",
             "relative/guid"],
    "date": ["", "garbage", "Sun, 01 Nov 2026 10:00:00 +0200", "Sun, 01 Nov 2026 10:00:00 EST",
             "2026-11-01T10:00:00Z", "2026-02-30T10:00:00Z", "Sun, 01 Nov 2026 10:00:00 +9999",
             "01 Nov 2026 10:00 PDT", "Mon, 31 Dec 1969 23:59:59 GMT",
             "Sun, 01 Nov 2099 10:00:00 GMT",
             "Sun, 1 Nov 26 10:00:00 GMT", "Sun, 01 Nov 2026 25:61:61 GMT", "1 Nov 2026",
             "Sun, 01 Nov 2026 10:00:00 +05:30", "Sun, 01 Nov 2026 10:00:00 Z",
             "Sun, 01 Nov 2026 10:00:00 +0000"],
    "description": ["&lt;p&gt;Hello &lt;b&gt;world&lt;/b&gt;&lt;/p&gt;",
                    "<![CDATA[<p onclick='x()'>hi<script>alert(1)</script></p>]]>",
                    "&lt;img src=&quot;http://127.0.0.1/i.png&quot; alt=&quot;i&quot;&gt;",
                    "&lt;a title=&quot;t&quot; href=&quot;http://127.0.0.1/&quot;&gt;l&lt;/a&gt;",
                    "&lt;img src=&quot;/relative.png&quot;&gt;", "&amp;nbsp;&amp;copy;&amp;bogus;",
                    "&lt;p&gt;unclosed &lt;b&gt;tags", "&lt;!-- comment --&gt;text",
                    "&lt;![CDATA[nested]]&gt;", "&amp;#128;&amp;#150;", "", "  ",
                    "&lt;a href=&quot;javascript:alert(1)&quot;&gt;js&lt;/a&gt;",
                    "&lt;br/&gt;&lt;hr&gt;&lt;p/&gt;", "&lt;P CLASS=x&gt;UPPER&lt;/P&gt;",
                    "&lt;a href=http://127.0.0.1/unquoted&gt;u&lt;/a&gt;", "d" * 20000],
    "extra": ["<category>News</category><category>News</category><category> </category>",
              '<category domain="http://127.0.0.1/d">Dom</category><category>&lt;b&gt;x</category>',
              '<enclosure url="http://127.0.0.1/a.mp3" length="123" type="Audio/MPEG"/>',
              '<enclosure url="http://127.0.0.1/a.mp3" length="-5" type="bogus"/>',
              '<enclosure url="javascript:x" length="99999999999999999999"/>',
              '<enclosure url="/relative.mp3"/>', '<enclosure URL="http://127.0.0.1/b.mp3"/>',
              "<author>me@example.com (Me Myself)</author>",
              "<author>a</author><author>b</author>",
              "<comments>http://127.0.0.1/c</comments>", "<comments>/c</comments>",
              "<content:encoded>&lt;p&gt;Longer content here&lt;/p&gt;</content:encoded>",
              "<content:encoded></content:encoded>",
              '<media:thumbnail url="http://127.0.0.1/t.jpg"/>',
              '<media:content url="http://127.0.0.1/v.mp4" fileSize="10" medium="video"/>',
              '<media:content url="http://127.0.0.1/i" medium="image"/>',
              '<media:group><media:content url="http://127.0.0.1/g.mp4"/></media:group>',
              "<dc:creator>Dee Cee</dc:creator>", "<dc:date>2026-10-30T10:00:00+01:00</dc:date>",
              '<source url="http://127.0.0.1/s">Src</source>', "<itunes:summary>x</itunes:summary>",
              "<foo:bar>unknown</foo:bar>", '<foo:bar href="/rel"/>', "<pubDate>dup</pubDate>",
              '<guid isPermaLink="true">http://127.0.0.1/p</guid>', "<ttl>5</ttl>",
              '<atom:link rel="alternate" href="http://127.0.0.1/alt"/>',
              '<title xml:lang="fr">Titre</title>', "<language>fr</language>"],
}
NS = ('xmlns:content="http://purl.org/rss/1.0/modules/content/" '
      'xmlns:media="http://search.yahoo.com/mrss/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
      'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" xmlns:foo="http://127.0.0.1/foo" '
      'xmlns:atom="http://www.w3.org/2005/Atom"')


def _doc(items: list[dict[str, str]], channel: str = "", root: str = "") -> bytes:
    body = "".join(ITEM.format(**i) for i in items)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" {NS}{root}>'
            f"<channel><title>Farm &amp; co</title><link>http://127.0.0.1/</link>"
            f"<description>d</description><language>en-gb</language>{channel}{body}"
            "</channel></rss>").encode()


def _mutations() -> Iterator[tuple[str, bytes]]:
    for field, values in ODD.items():
        for value in values:
            yield f"{field}={value[:40]!r}", _doc([{**SAFE, field: value}, SAFE])
    # pairs of odd values in one item, a sample
    fields = list(ODD)
    for a, b in itertools.combinations(fields, 2):
        for x, y in zip(ODD[a], ODD[b][3:], strict=False):
            yield f"{a}={x[:20]!r},{b}={y[:20]!r}", _doc([{**SAFE, a: x, b: y}])
    for channel in ("<ttl>60</ttl>", "<ttl>99999999999999999999</ttl>", "<ttl>-1</ttl>",
                    '<atom:link rel="self" type="application/rss+xml" href="http://127.0.0.1/f"/>',
                    '<atom:link href="http://127.0.0.1/alt"/>', "<language>xx_YY</language>",
                    "<dc:language>de</dc:language>", "<title>second</title>",
                    "<image><url>http://127.0.0.1/i.png</url><title>i</title></image>",
                    "<image><url>/i.png</url></image>", "<docs>/docs</docs>",
                    "<lastBuildDate>garbage</lastBuildDate>",
                    "<textInput><title>t</title></textInput>",
                    "<itunes:author>x</itunes:author>"):
        yield f"channel {channel[:40]}", _doc([SAFE], channel)
    for root in (' xml:lang="fr-CA"', ' xml:lang=""', ' xml:base="http://127.0.0.1/b/"'):
        yield f"root {root}", _doc([SAFE], root=root)
    yield "no items", _doc([])
    yield "1001 items", _doc([{**SAFE, "guid": f"g{i}"} for i in range(1001)])


def test_mutations_equal_or_declined(spy: list[ParsedFeed | None]) -> None:
    took = total = 0
    for what, body in _mutations():
        for headers in HEADER_SETS[1:4:2]:
            total += 1
            took += _check(body, headers, spy, what)
    print(f"\nfast path: {took} of {total} mutations")
    assert took > total // 3


# --- declines --------------------------------------------------------------------------


def _declines(body: bytes, headers: dict[str, str] | None = None) -> bool:
    return xmlfeed.parse(body, headers or {"content-type": "application/rss+xml"}, URL, NOW) is None


def test_plain_document_is_accepted() -> None:
    assert not _declines(_doc([SAFE]))  # so each decline below is the rule's doing


def test_doctype_and_external_entities_decline_and_read_nothing(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<rss version="2.0"><channel><title>&x;</title></channel></rss>').encode()
    external_dtd = (f'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "file://{secret}">'
                    '<rss version="2.0"><channel><title>t</title></channel></rss>').encode()
    plain_doctype = b'<?xml version="1.0"?><!DOCTYPE rss>' + _doc([SAFE]).split(b"?>", 1)[1]
    for body in (xxe, external_dtd, plain_doctype):
        assert _declines(body)
    # and the parser itself never reads the file, whatever it is handed
    for body in (xxe, external_dtd):
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            continue
        assert "TOPSECRET" not in "".join(root.itertext())
    # through parse(): refused (XXE) or the title is empty, never the file
    with pytest.raises(ParseError):
        parse(xxe, {}, URL, NOW)
    assert "TOPSECRET" not in repr(parse(external_dtd, {}, URL, NOW))


@pytest.mark.parametrize("body", [
    _doc([SAFE], root=' xml:base="http://127.0.0.1/b/"'),
    _doc([{**SAFE, "extra": "<itunes:summary>longer summary</itunes:summary>"}]),
    _doc([{**SAFE, "extra": "<foo:bar><title>hidden</title></foo:bar>"}]),
    _doc([{**SAFE, "extra": '<atom:link rel="enclosure" href="http://127.0.0.1/e.mp3"/>'}]),
    _doc([{**SAFE, "link": "/relative"}]),
    _doc([{**SAFE, "description": "&lt;a href=&quot;rel.html&quot;&gt;x&lt;/a&gt;"}]),
    _doc([SAFE]).replace(b"<channel>", b'<channel><title xmlns="http://127.0.0.1/x">t</title>'),
    _doc([{**SAFE, "title": "caf\u00e9"}]).replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"'),
    _doc([{**SAFE, "title": "caf\u00e9"}]).replace("é".encode(), b"\xe9"),
    _doc([SAFE]).replace(b"</channel>", b"</channel><bad>"),
    _doc([{**SAFE, "title": "&nbsp;"}]),
    b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title></feed>',
    b'<rss version="3.0"><channel><title>t</title></channel></rss>',
])
def test_declines(body: bytes) -> None:
    assert _declines(body)


def test_non_utf8_header_charset_declines() -> None:
    body = _doc([{**SAFE, "title": "caf\u00e9"}])
    assert not _declines(body, {"content-type": "application/rss+xml; charset=utf-8"})
    assert _declines(body, {"content-type": "application/rss+xml; charset=windows-1252"})
    assert _declines(body, {"etag": '"x"'})  # no content-type: feedparser reads ISO-8859-1


def test_deep_and_big_documents_decline_without_harm() -> None:
    deep = (b'<rss version="2.0"><channel><item>' + b"<x>" * 100_000 + b"</x>" * 100_000
            + b"</item></channel></rss>")
    assert _declines(deep)
    big = _doc([{**SAFE, "guid": f"g{i}", "description": "w " * 5000} for i in range(1000)])
    assert len(big) > 10_000_000
    result = xmlfeed.parse(big, {"content-type": "application/rss+xml"}, URL, NOW)
    assert result is not None and len(result.items) == 1000


def test_internal_errors_decline(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(xmlfeed, "_item", boom)
    assert _declines(_doc([SAFE]))
    assert parse(_doc([SAFE]), {}, URL, NOW).items  # feedparser answers instead


def test_same_sanitising_as_feedparser_path() -> None:
    hostile = "<p onclick='x()'>hi</p><script>bad()</script>"
    body = _doc([{**SAFE, "description": html.escape(hostile)}])
    result = xmlfeed.parse(body, {}, URL, NOW)
    assert result is not None
    content = result.items[0].content or ""
    assert "script" not in content and "onclick" not in content and "hi" in content
    assert parse_mod.parse(body, {}, URL, NOW, fast=False) == result
