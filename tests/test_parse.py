"""aggregator.parse over every real feed capture and every tricky case in
../shared/data/feeds (see SOURCES.md there), directly and through a full pass
served by a local server. Skipped, with the reason, when /work/shared is absent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hostile_servers import (
    SHARED,
    assert_no_script,
    feed_row,
    items_of,
    local_httpserver,
    one_pass,
    rows,
    settings_for,
    write_opml,
)
from pytest_httpserver import HTTPServer
from werkzeug import Response

from aggregator import clean
from aggregator.errors import ParseError
from aggregator.parse import defuse, dtd_threat, find_feed_links, parse
from aggregator.types import ParsedFeed

FEEDS = SHARED / "feeds"
TRICKY = FEEDS / "tricky"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
ABSENT = f"{FEEDS} absent (real feed captures live beside the project, not in it)"
# what double decoding leaves behind: "Ã©" for é, "â€™" for ’, U+FFFD
MOJIBAKE = re.compile("Ã[\u0080-\u00bf]|â€|\ufffd")


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []


def params(folder: Path) -> list[object]:
    found = files(folder)
    if not found:
        return [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT))]
    return [pytest.param(p, id=p.name) for p in found]


def parse_file(path: Path, content_type: str = "application/rss+xml") -> ParsedFeed:
    return parse(
        path.read_bytes(), {"content-type": content_type}, "http://127.0.0.1/dir/feed", NOW
    )


# --- real captures -----------------------------------------------------------------------

# file -> a title that must come out exactly (encodings, entities, CDATA)
KNOWN_TITLES = {
    "ibash-org-ru-windows-1251.xml": "Цитата #17703",
    "jn-pt-iso-8859-1.xml": "Mãe de utente é a nova presidente da Raríssimas",
    "bbc-chinese-simplified-2013-01-23.atom": "白宫提名艾伦为北约最高司令官",
    "golem-de-iso-8859-1.xml": (
        "Red Dead Redemption 2: Hinweise auf PC-Umsetzung in App von Rockstar Games"
    ),
    "heise-online-rss09-rdf.xml": "OLED-TVs: Vorsichtsmaßnahmen gegen Einbrennen",
    "aljazeera-america-2016-02-26.xml": "Goodnight, and good luck",
    "bbc-brasil-videos-fotos-2015-11-05.xml": None,  # checked by the accent rule below
}
# file -> characters some title must contain (the text was decoded right)
SCRIPTS = {
    "bbc-urdu.xml": "\u0627",  # Arabic alef
    "le-cercle-psy-no-xml-declaration-iso-8859-1.xml": "é",
    "uol-noticias-no-xml-declaration-latin1.xml": "ã",
    "bbc-brasil-videos-fotos-2015-11-05.xml": "â",
    "ilgiornale-it.xml": "è",
}


@pytest.mark.parametrize("path", params(FEEDS))
def test_real_feed_parses_with_titles(path: Path) -> None:
    feed = parse_file(path)
    assert feed.title, "a real feed has a title"
    assert feed.items, "a real feed has items"
    titled = [i.title for i in feed.items if i.title]
    assert len(titled) >= 0.9 * len(feed.items)
    for title in titled:
        assert "<" not in title and "\n" not in title and title == title.strip()
        assert not MOJIBAKE.search(title), title
    assert all(i.url is None or i.url.startswith(("http://", "https://")) for i in feed.items)
    if path.name in KNOWN_TITLES and KNOWN_TITLES[path.name]:
        assert KNOWN_TITLES[path.name] in titled
    if path.name in SCRIPTS:
        assert any(SCRIPTS[path.name] in t for t in titled), titled[:5]


def test_undeclared_latin1_reads_right_even_with_a_misleading_type() -> None:
    path = FEEDS / "le-cercle-psy-no-xml-declaration-iso-8859-1.xml"
    if not path.exists():
        pytest.skip(ABSENT)
    for ctype in ("application/rss+xml", "text/xml", "text/plain", ""):
        titles = [i.title or "" for i in parse_file(path, ctype).items]
        assert any("é" in t for t in titles), (ctype, titles[:3])
        assert not any(MOJIBAKE.search(t) for t in titles), ctype


# --- tricky cases --------------------------------------------------------------------------


def first(feed: ParsedFeed) -> object:
    return feed.items[0]


def content_of(feed: ParsedFeed) -> str:
    return feed.items[0].content or ""


# file -> a check on the parsed feed, or ParseError when refusing it is right
TRICKY_EXPECT: dict[str, Callable[[ParsedFeed], object] | type[ParseError]] = {
    "feedparser-empty-document.xml": ParseError,
    "feedparser-undeclared-namespace.xml": ParseError,  # nothing but a broken element
    "feedparser-rss-incomplete-cdata.xml": lambda f: f.title == "can feedparser read this xml",
    "feedparser-rss-corrupted-ampersands.xml": lambda f: (
        f.items[0].url == "http://link/get?a=1&b=2"
    ),
    "feedparser-cp1252-smart-quote.xml": lambda f: content_of(f) == "don\u2019t",
    "feedparser-double-encoded-html.xml": lambda f: content_of(f) == "\u2026",
    "feedparser-html-entity-hellip.xml": lambda f: f.title == "testing \u2026 entity",
    "feedparser-no-encoding-koi8r.xml": lambda f: (
        f.items[0].title == "Как пережить новогоднюю ночь"
    ),
    "feedparser-no-encoding-shiftjis.xml": lambda f: (
        f.items[0].title == "DrecomRSSに記事投稿が反映されない…"
    ),
    "feedparser-sanitize-entry-content-crazy.xml": lambda f: (
        "Did The Javascript Execute?" in content_of(f)
    ),
    "feedparser-sanitize-entry-summary-script.xml": lambda f: content_of(f) == "safe description",
    "feedparser-xml-base-inherit.xml": lambda f: (
        'href="http://example.com/parent/test.html"' in content_of(f)
    ),
    "miniflux-utf8-declared-iso-8859-1.xml": lambda f: (
        (f.title, f.items[0].title) == ("테스트 피드", "Café")
    ),
    "miniflux-windows-1252-incorrect-prolog.xml": lambda f: f.title == "Euro €",
    "miniflux-invalid-encoding-name.xml": lambda f: (
        (f.title, f.items[0].title) == ("테스트 피드", "Café")
    ),
    "w3c-double-encoded-utf8.xml": lambda f: content_of(f) == "é",
    "w3c-bad-encoding-declaration-cp1252-as-latin1.xml": lambda f: (
        "\u201ctest.\u201d" in content_of(f)
    ),
    "w3c-rss091-netscape-doctype-entities.xml": lambda f: (
        (f.title, f.items[0].title) == ("Sockenbärs Logbuch", "Und tschüss.")
    ),
    "reader-relative.atom": lambda f: (
        (f.items[0].url, 'href="http://127.0.0.1/dir/target"' in content_of(f))
        == ("http://127.0.0.1/dir/entries/entry.html", True)
    ),
    "reader-full.rss": lambda f: f.title == "RSS Title" and len(f.items) == 5,
    "reader-full.atom": lambda f: f.title == "Example Feed" and len(f.items) == 5,
    "reader-empty.rss": lambda f: (
        [i.guid for i in f.items] == ["7bd204c6-1655-4c27-aeee-53f933c5395f"]
    ),
    "reuters-most-read-2020-03-21-truncated.xml": lambda f: (
        f.title == "Reuters: Most Read Articles" and f.warning
    ),
}


@pytest.mark.parametrize("path", params(TRICKY))
def test_tricky_feed_gives_a_sensible_result_or_a_clear_error(path: Path) -> None:
    expect = TRICKY_EXPECT.get(path.name)
    if expect is ParseError:
        with pytest.raises(ParseError) as info:
            parse_file(path)
        assert str(info.value) and "\n" not in str(info.value)
        return
    feed = parse_file(path)
    for item in feed.items:
        for text in (item.title, item.content):
            assert not text or "<script" not in text.lower()
    if expect is not None:
        assert expect(feed), (feed.title, feed.items[:2])  # type: ignore[operator]


def test_utf16_with_bom_and_http_charset() -> None:
    path = TRICKY / "feedparser-utf-16le-bom.xml"
    if not path.exists():
        pytest.skip(ABSENT)
    for ctype in ("application/rss+xml", "application/rss+xml; charset=utf-16"):
        feed = parse(path.read_bytes(), {"content-type": ctype}, "http://127.0.0.1/", NOW)
        assert feed.items == () and feed.warning is None


# --- XML safety, directly --------------------------------------------------------------------


def test_threats_in_every_disguise() -> None:
    xxe = (
        '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        '<rss version="2.0"><channel><title>&x;</title></channel></rss>'
    )
    bomb = (
        '<!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        '<rss version="2.0"><channel><title>&b;</title></channel></rss>'
    )
    padded = '<?xml version="1.0"?>\n<!--' + "x" * 100_000 + "-->\n" + xxe
    quoted = (
        '<!DOCTYPE r [<!ENTITY a "]>"><!ENTITY x PUBLIC "-//x" "http://127.0.0.1:9/">]>'
        '<rss version="2.0"><channel><title>&x;</title></channel></rss>'
    )
    for doc, why in ((xxe, "XXE"), (bomb, "bomb"), (padded, "XXE"), (quoted, "XXE")):
        for data in (doc.encode(), doc.encode("utf-16"), doc.encode("utf-16-be")):
            assert why in (dtd_threat(data) or ""), (doc[:60], data[:4])
            with pytest.raises(ParseError, match="refused"):
                parse(data, {}, "http://127.0.0.1/", NOW)


def test_harmless_internal_subset_is_dropped_not_refused() -> None:
    doc = (
        b'<!DOCTYPE rss [<!ENTITY copy "&#169;"><!ENTITY who "Tom &amp; Jerry">'
        b'<!ENTITY % lat1 PUBLIC "-//W3C//ENTITIES Latin 1//EN" "http://127.0.0.1:9/l.ent">'
        b"%lat1;]>\n"
        b'<rss version="2.0"><channel><title>Fine</title><item><title>Caf&eacute;</title>'
        b"<link>http://127.0.0.1/1</link></item></channel></rss>"
    )
    assert dtd_threat(doc) is None
    assert defuse(doc).startswith(b"<!DOCTYPE rss >\n<rss")
    feed = parse(doc, {}, "http://127.0.0.1/", NOW)
    assert feed.title == "Fine" and feed.items[0].title == "Café"


def test_cdata_about_xxe_is_not_a_threat() -> None:
    doc = (
        b'<rss version="2.0"><channel><title>Security blog</title><item><title>On XXE</title>'
        b"<link>http://127.0.0.1/xxe</link><description><![CDATA[<pre>&lt;!ENTITY x SYSTEM "
        b'"file:///etc/passwd"&gt;</pre> <!ENTITY y SYSTEM "file:///etc/shadow">]]>'
        b"</description></item></channel></rss>"
    )
    assert dtd_threat(doc) is None
    feed = parse(doc, {}, "http://127.0.0.1/", NOW)
    assert feed.items[0].title == "On XXE"


# --- a full pass over every capture --------------------------------------------------------------


@pytest.fixture(scope="module")
def web() -> Iterator[HTTPServer]:
    with local_httpserver() as server:
        yield server


def test_full_pass_over_every_capture(web: HTTPServer, tmp_path: Path) -> None:
    real, tricky = files(FEEDS), files(TRICKY)
    if not real:
        pytest.skip(ABSENT)
    urls: dict[str, Path] = {}
    for n, path in enumerate(real + tricky):
        route = f"/{n}/{path.name}"
        ctype = "application/rss+xml"
        if path.name == "feedparser-http-charset-overrides-encoding.xml":
            ctype = "text/xml;charset = us-ascii"  # the header its test case asks for
        web.expect_request(route).respond_with_response(
            Response(path.read_bytes(), 200, headers={"Content-Type": ctype})
        )
        urls[web.url_for(route)] = path
    settings = settings_for(tmp_path, workers=4)
    write_opml(settings, list(urls))
    result = one_pass(settings)
    assert len(result.outcomes) == len(urls)
    assert len(web.log) == len(urls)  # one request each
    for url, path in urls.items():
        row = feed_row(settings, url)
        if path.parent == FEEDS:
            assert row["state"] == "ok", (path.name, row["last_error"])
            items = items_of(settings, url)
            assert items and sum(bool(i["title"]) for i in items) >= 0.9 * len(items), path.name
            assert not any(MOJIBAKE.search(i["title"] or "") for i in items), path.name
        elif TRICKY_EXPECT.get(path.name) is ParseError:
            assert row["state"] == "error" and row["last_error"].startswith("ParseError:")
        else:
            assert row["state"] == "ok", (path.name, row["last_error"])
    assert_no_script(rows(settings, "SELECT * FROM items"))
    assert_no_script(rows(settings, "SELECT * FROM feeds"))


# --- bytes are bytes --------------------------------------------------------------------------

GOOD_FEED = (Path(__file__).parent / "data" / "feed-good.xml").resolve()
# bodies that a library taking bytes for a name would open or fetch
NAMES = {
    "absolute path": str(GOOD_FEED).encode(),
    "absolute path and newline": str(GOOD_FEED).encode() + b"\n",
    "relative path": b"tests/data/feed-good.xml",
    "file URL": GOOD_FEED.as_uri().encode(),
    "http URL": b"http://127.0.0.1:9/x",
    "feed URL": b"feed://127.0.0.1:9/x",
}


@pytest.mark.parametrize("name", list(NAMES))
def test_a_body_naming_a_file_or_url_is_not_read(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(GOOD_FEED.parents[2])  # where the relative path names the feed
    assert parse(GOOD_FEED.read_bytes(), {}, "http://127.0.0.1/", NOW).items  # the file is a feed
    for ctype in ("application/rss+xml", "text/plain", "application/json", ""):
        with pytest.raises(ParseError):
            parse(NAMES[name], {"content-type": ctype}, "http://127.0.0.1/feed", NOW)


def test_a_server_answering_with_a_file_name_gets_nothing_stored(tmp_path: Path) -> None:
    with local_httpserver() as server:
        urls = []
        for n, body in enumerate(NAMES.values()):
            server.expect_request(f"/{n}").respond_with_response(
                Response(body, 200, headers={"Content-Type": "application/rss+xml"}))
            urls.append(server.url_for(f"/{n}"))
        settings = settings_for(tmp_path)
        write_opml(settings, urls)
        result = one_pass(settings)
    assert [o.result for o in result.outcomes] == ["error"] * len(urls)
    for url in urls:
        row = feed_row(settings, url)
        assert row["state"] == "error" and row["last_error"].startswith("ParseError:"), row
    assert rows(settings, "SELECT * FROM items") == []


def test_article_html_and_opml_bytes_are_never_taken_for_a_path(tmp_path: Path) -> None:
    from aggregator import opml
    from aggregator.errors import OPMLError
    from aggregator.extract import extract_main_text, html_to_text

    page = (Path(__file__).parent / "data" / "extract-news-article.html").resolve()
    assert extract_main_text(page.read_bytes())  # the file is an article
    for given in (str(page).encode(), str(page), page.as_uri()):
        assert extract_main_text(given) is None
        assert html_to_text(given) == str(given if isinstance(given, str) else given.decode())
    saved = tmp_path / "feeds.opml"
    opml.write(saved, opml.build([]))
    assert opml.parse_bytes(saved.read_bytes()) is not None  # the file is an OPML document
    with pytest.raises(OPMLError):
        opml.parse_bytes(str(saved).encode())


def test_links_that_are_not_web_links_are_not_stored() -> None:
    doc = (
        b'<rss version="2.0"><channel><title>Links</title><link>file:///etc/passwd</link>'
        b"<item><title>file</title><link>file:///etc/passwd</link></item>"
        b"<item><title>data</title><link>data:text/html;base64,PHNjcmlwdD4=</link></item>"
        b"<item><title>js</title><link>javascript:alert(1)</link></item>"
        b"<item><title>ftp</title><link>ftp://127.0.0.1/x</link></item>"
        b"<item><title>relative</title><link>/x/y</link></item>"
        b"<item><title>body</title><link>http://127.0.0.1/ok</link><description>"
        b"&lt;a href='file:///etc/passwd'&gt;f&lt;/a&gt;&lt;img src='data:image/png;base64,AA'&gt;"
        b"&lt;a href='javascript:x()'&gt;j&lt;/a&gt;&lt;img src='/local.png'&gt;"
        b"&lt;enclosure url='file:///etc/shadow'/&gt;</description>"
        b"<enclosure url='file:///etc/shadow' type='audio/mpeg' length='1'/></item>"
        b"</channel></rss>"
    )
    feed = parse(doc, {}, "http://127.0.0.1/dir/feed", NOW)
    assert feed.site_url is None
    links = {i.title: i.url for i in feed.items}
    assert links == {"file": None, "data": None, "js": None, "ftp": None,
                     "relative": "http://127.0.0.1/x/y", "body": "http://127.0.0.1/ok"}
    content = feed.items[-1].content or ""
    for bad in ("file:", "data:", "javascript:", "shadow"):
        assert bad not in content, content
    assert 'src="http://127.0.0.1/local.png"' in content


# --- numbers, dates and strings from outside ---------------------------------------------------


def test_extreme_values_are_bounded() -> None:
    path = Path(__file__).parent / "data" / "feed-extreme-values.xml"
    feed = parse(path.read_bytes(), {}, "http://127.0.0.1/feed", NOW)
    assert feed.ttl_minutes == clean.MAX_TTL_MINUTES  # twenty digits: a year, not an overflow
    by_title = {(i.title or "")[:20]: i for i in feed.items}
    dated = {t: i.published or i.updated for t, i in by_title.items()}
    assert dated.pop("a fine date") == datetime(2026, 10, 31, 10, tzinfo=UTC)
    assert not any(dated.values()), dated  # year 0, 10000, Feb 30, hour 99, 1969, 9999-12-31-5
    for name in ("file link", "data link", "javascript link", "long link"):
        assert by_title[name].url is None, name
    no_host = by_title["no host"].url
    assert no_host is None or no_host.startswith("http://etc/")  # a web URL, not a file
    long_guid = by_title["long guid"].guid or ""
    assert len(long_guid) == clean.MAX_ID_CHARS and long_guid.startswith("urn:long:ggg")
    assert "#sha256:" in long_guid
    title = next(i.title for i in feed.items if (i.title or "").startswith("TTT"))
    assert title == "T" * clean.MAX_TITLE_CHARS
    cats = by_title["many categories"].categories
    assert len(cats) == clean.MAX_CATEGORIES and cats[0] == "C" * clean.MAX_CATEGORY_CHARS


def test_two_long_guids_sharing_a_prefix_stay_two_items() -> None:
    a, b = "urn:" + "x" * 3000 + "a", "urn:" + "x" * 3000 + "b"
    assert clean.identifier(a) != clean.identifier(b)
    assert clean.identifier(a) == clean.identifier(a)


@pytest.mark.parametrize(("text", "expected"), [
    ("60", 60), (" 60 ", 60), ("\t60\n", 60), ("0", None), ("", None), ("   ", None),
    ("9" * 20, clean.MAX_TTL_MINUTES), ("9" * 5000, clean.MAX_TTL_MINUTES),
    (str(clean.MAX_TTL_MINUTES + 1), clean.MAX_TTL_MINUTES), ("-5", None), ("+60", None),
    ("60.0", None), ("1e400", None), ("1e3", None), ("NaN", None), ("inf", None),
    ("٣", None), ("６０", None), ("0x3c", None), ("6_0", None), ("60 min", None),
])
def test_ttl_from_the_feed(text: str, expected: int | None) -> None:
    assert clean.ttl_minutes(text) == expected
    doc = f'<rss version="2.0"><channel><title>T</title><ttl>{text}</ttl></channel></rss>'
    assert parse(doc.encode(), {}, "http://127.0.0.1/", NOW).ttl_minutes == expected


@pytest.mark.parametrize("fields", [
    (10000, 1, 1, 0, 0, 0), (0, 1, 1, 0, 0, 0), (-1, 1, 1, 0, 0, 0), (2**63, 1, 1, 0, 0, 0),
    (10**20, 1, 1, 0, 0, 0), (9999, 12, 31, 23, 59, 59), (1969, 12, 31, 23, 59, 59),
    (2026, 13, 1, 0, 0, 0), (2026, 1, 1, 10**20, 0, 0), ("x", 1, 1, 0, 0, 0), (2026, 1),
    (2026, 11, 3, 0, 0, 0),  # the future
])
def test_struct_times_that_are_no_date(fields: tuple[object, ...]) -> None:
    value = (*fields, 0, 0, 0) if len(fields) == 6 else fields
    assert clean.from_struct(value, NOW) is None


def test_struct_time_that_is_a_date() -> None:
    assert clean.from_struct(time.gmtime(0), NOW) == datetime(1970, 1, 1, tzinfo=UTC)
    # feedparser rolls days over; what it hands back is believed unless the text was ISO
    assert clean.from_struct((2026, 2, 30, 10, 0, 0, 0, 0, 0), NOW) == datetime(
        2026, 3, 2, 10, tzinfo=UTC)
    assert clean.from_struct((2026, 10, 1, 12, 0, 61, 0, 0, 0), NOW) == datetime(
        2026, 10, 1, 12, 1, 1, tzinfo=UTC)


def test_a_million_entries_keep_the_first_thousand() -> None:
    entries = b"".join(b"<item><guid>urn:%d</guid><title>n%d</title></item>" % (n, n)
                       for n in range(1500))
    doc = b'<rss version="2.0"><channel><title>Big</title>' + entries + b"</channel></rss>"
    feed = parse(doc, {}, "http://127.0.0.1/", NOW)
    assert len(feed.items) == clean.MAX_ITEMS
    assert [i.guid for i in feed.items[:2]] == ["urn:0", "urn:1"]
    assert feed.warning == f"1500 items, only the first {clean.MAX_ITEMS} kept"


# --- parse() is total ---------------------------------------------------------------------------

ODD_BODIES = [
    b"\x00" * 64, b"{", b"[" * 100_000, b"<" * 100_000, b"<rss" * 10_000, b"\xff\xfe\x00\x00",
    b"\xef\xbb\xbf", b"\xfe\xff\x00<\x00r", b"<?xml version='1.0' encoding='x-unknown'?><rss/>",
    b'<rss version="2.0"><channel><title>&#xD800;</title></channel></rss>',  # feedparser raises
    b'<rss version="2.0"><channel><title>t</title>' + b"<x>" * 50_000 + b"</channel></rss>",
    b'{"version": "https://jsonfeed.org/version/1.1", "items": [' + b"[" * 50_000,
    b"<!DOCTYPE rss [" + b"<!ENTITY a 'b'>" * 1000,
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
def test_parse_returns_or_raises_parse_error_and_nothing_else(body: bytes) -> None:
    for ctype in ("application/rss+xml", "application/feed+json", "text/html; charset=x-bogus"):
        try:
            feed = parse(body, {"content-type": ctype, "content-location": "javascript:x"},
                         "http://127.0.0.1/", NOW)
        except ParseError as e:
            assert str(e)
        else:
            assert isinstance(feed, ParsedFeed)


# --- discovery order ------------------------------------------------------------------------------


def test_feed_links_come_in_the_stated_order() -> None:
    page = b"""<html><head>
    <link rel="alternate" type="application/json" href="/generic.json">
    <link rel="alternate" type="application/rdf+xml" href="/feed.rdf">
    <link rel="alternate" type="application/feed+json" href="/feed.json">
    <link rel="alternate" type="application/atom+xml" href="/atom.xml">
    <link rel="alternate" type="application/rss+xml; charset=utf-8" href="/rss.xml">
    <link rel="alternate" type="application/rss+xml" href="/second-rss.xml">
    <link rel="alternate" type="application/rss+xml" href="/rss.xml">
    <link rel="alternate" type="application/rss+xml" href="file:///etc/passwd">
    <link rel="alternate" type="application/atom+xml" href="javascript:alert(1)">
    <link rel="stylesheet" type="application/rss+xml" href="/not-alternate.xml">
    <link rel="alternate" type="text/html" href="/page.html">
    </head><body></body></html>"""
    found = find_feed_links(page, "http://127.0.0.1/blog/")
    assert found == [
        "http://127.0.0.1/rss.xml", "http://127.0.0.1/second-rss.xml",
        "http://127.0.0.1/atom.xml", "http://127.0.0.1/feed.json", "http://127.0.0.1/feed.rdf",
        "http://127.0.0.1/generic.json",
    ]
    assert find_feed_links(b"<link rel=alternate type=application/rss+xml href=/a>" * 100,
                           "http://127.0.0.1/") == ["http://127.0.0.1/a"]


def test_feedparser_given_a_stream_still_reads_the_headers() -> None:
    # Content-Location is the base for relative links, Content-Type's charset names the bytes
    doc = ('<rss version="2.0"><channel><title>Новости</title><item><title>Привет</title>'
           '<link>item/1</link><description>&lt;a href="../x"&gt;x&lt;/a&gt;</description>'
           "</item></channel></rss>").encode("koi8-r")
    headers = {"Content-Type": "application/rss+xml; charset=koi8-r",
               "Content-Location": "http://127.0.0.1/moved/feed.xml"}
    feed = parse(doc, headers, "http://127.0.0.1/asked/feed.xml", NOW)
    assert (feed.title, feed.items[0].title) == ("Новости", "Привет")
    assert feed.items[0].url == "http://127.0.0.1/moved/item/1"
    assert 'href="http://127.0.0.1/x"' in (feed.items[0].content or "")
    # without Content-Location, the URL asked for
    feed = parse(doc, {"Content-Type": headers["Content-Type"]}, "http://127.0.0.1/a/f", NOW)
    assert feed.items[0].url == "http://127.0.0.1/a/item/1"


def test_an_items_xml_lang_is_its_language() -> None:
    """xml:lang on an item (RSS) or entry (Atom) beats the document's language, so its
    summary gets the right stemmer and stop words; an item without one has none of its own
    (the feed's applies)."""
    now = datetime.now(UTC)
    rss_doc = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
               b'<link>http://a.example/</link><language>en</language>'
               b'<item xml:lang="de"><title>Hochwasser</title><link>http://a.example/1</link>'
               b'<description>Der Fluss ist gestiegen.</description></item>'
               b'<item><title>Plain</title><link>http://a.example/2</link>'
               b'<description>Words.</description></item></channel></rss>')
    feed = parse(rss_doc, {}, "http://a.example/feed", now)
    assert feed.language == "en"
    assert [i.language for i in feed.items] == ["de", None]
    atom_doc = (b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">'
                b'<title>T</title><id>x</id><updated>2026-01-01T00:00:00Z</updated>'
                b'<entry xml:lang="fr-FR"><title>Crue</title><id>u1</id>'
                b'<link href="http://a.example/1"/><updated>2026-01-01T00:00:00Z</updated>'
                b'<content type="text">Le fleuve monte.</content></entry></feed>')
    assert [i.language for i in parse(atom_doc, {}, "http://a.example/f", now).items] == ["fr-fr"]
