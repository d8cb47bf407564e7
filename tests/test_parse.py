"""aggregator.parse over every real feed capture and every tricky case in
../shared/data/feeds (see SOURCES.md there), directly and through a full pass
served by a local server. Skipped, with the reason, when /work/shared is absent.
"""

from __future__ import annotations

import re
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

from aggregator.errors import ParseError
from aggregator.parse import defuse, dtd_threat, parse
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
