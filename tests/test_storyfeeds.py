"""Stories in the feeds and on the story page, through `aggregator update` on a real SQLite
file with feeds served on 127.0.0.1:

- the default feeds.opml's BBC overlap (one article in "Top stories" and "World", its URL
  differing in the ``at_medium`` tracking parameter; from the real BBC World feed in
  ../shared/data/feeds) is one story with two sources in the database, on the index and
  in rss.xml, atom.xml and feed.json;
- a story's entry keeps its id when it gains a source and another item comes to show it;
- ``Store.related_stories`` finds stories sharing top terms of the candidate index and
  not those sharing fewer; the feeds and the story page list them apart from the sources;
- the story page of a multi-source story in headless Chromium (Debian ``chromium`` +
  ``chromium-driver``): Latest News and Related Stories visible, no active content.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest
from lxml import etree, html

from aggregator.cli import main
from aggregator.publish import entry_id, publish
from aggregator.store import Store
from aggregator.stories import canonical_url
from aggregator.types import Entry
from tests.browsers import chromium

SHARED = Path(__file__).resolve().parents[2] / "shared"
BBC_WORLD = SHARED / "data" / "feeds" / "bbc-news-world-2026-09-25.xml"
ARTICLE = "https://www.bbc.co.uk/news/articles/cxq63dqp93n1o"  # its first item
ATOM = "{http://www.w3.org/2005/Atom}"
ACTIVE = "//script | //iframe | //object | //embed | //form | //frame | //input | //button"


def _bbc_world() -> bytes:
    if not BBC_WORLD.is_file():
        pytest.skip(f"{BBC_WORLD} absent (see ../shared/data/SOURCES.md)")
    return BBC_WORLD.read_bytes()


def _top_stories(world: bytes) -> bytes:
    """"Top stories" as BBC serves it beside "World": the same article under another
    channel, its link with another ``at_medium``, its guid another fragment (so the
    canonical URL, not the guid, makes them one)."""
    doc = etree.fromstring(world, etree.XMLParser(resolve_entities=False, no_network=True))
    channel = doc.find("channel")
    channel.find("title").text = "BBC News"
    channel.find("link").text = "https://www.bbc.co.uk/news"
    items = channel.findall("item")
    for extra in items[1:]:
        channel.remove(extra)
    first = items[0]
    assert first.findtext("link").startswith(ARTICLE + "?at_medium=RSS")
    first.find("link").text = ARTICLE + "?at_medium=RSS_TOP&at_campaign=rss"
    first.find("guid").text = ARTICLE + "#1"
    return etree.tostring(doc, xml_declaration=True, encoding="utf-8")


def _opml(path: Path, feeds: list[tuple[str, str, str]]) -> None:
    body = "".join(f'<outline text="{folder}"><outline type="rss" text="{name}" '
                   f'xmlUrl="{url}"/></outline>' for folder, name, url in feeds)
    path.write_text(f'<?xml version="1.0"?><opml version="2.0"><head/><body>{body}'
                    "</body></opml>", encoding="utf-8")


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Only IP literals resolve: a name (an article on www.bbc.co.uk) would fail, and is
    recorded, never handed to the system resolver."""
    from hostile_servers import fake_dns

    def answer(host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            return []

    asked = fake_dns(monkeypatch, answer)
    yield asked
    assert all(_is_ip(h) for h in asked), asked


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@pytest.fixture
def bbc(tmp_path: Path, no_dns: list[str]) -> Iterator[dict[str, Any]]:
    from hostile_servers import local_httpserver

    world = _bbc_world()
    with local_httpserver() as server:
        server.expect_request("/news/rss.xml").respond_with_data(
            _top_stories(world), content_type="application/rss+xml")
        server.expect_request("/news/world/rss.xml").respond_with_data(
            world, content_type="application/rss+xml")
        feeds = {"top": ("Top stories", "BBC News", server.url_for("/news/rss.xml")),
                 "world": ("World", "BBC News - World", server.url_for("/news/world/rss.xml"))}
        opml = tmp_path / "feeds.opml"
        args = ["--db", str(tmp_path / "a.db"), "--feeds", str(opml),
                "--output", str(tmp_path / "out")]
        yield {"args": args, "opml": opml, "feeds": feeds, "db": tmp_path / "a.db",
               "out": tmp_path / "out"}


def _update(bbc: dict[str, Any], *names: str) -> None:
    _opml(bbc["opml"], [bbc["feeds"][n] for n in names])
    assert main([*bbc["args"], "update", "--all", "--no-summaries", "--no-articles"]) == 0


def _entries_about(out: Path, url: str) -> dict[str, list[Any]]:
    """The entries of each main feed whose link is ``url`` (tracking parameters aside)."""
    want = canonical_url(url)
    rss = etree.parse(str(out / "rss.xml")).getroot()
    atom = etree.parse(str(out / "atom.xml")).getroot()
    doc = json.loads((out / "feed.json").read_text(encoding="utf-8"))
    return {
        "rss": [i for i in rss.iter("item") if canonical_url(i.findtext("link")) == want],
        "atom": [e for e in atom.iter(f"{ATOM}entry")
                 if canonical_url(e.find(f"{ATOM}link[@rel='alternate']").get("href")) == want],
        "json": [i for i in doc["items"] if canonical_url(i.get("url")) == want],
    }


def _listed(fragment: Any, label: str) -> list[Any]:
    """The links of the list an entry's content introduces with ``label``."""
    (p,) = [p for p in fragment.iterfind(".//p") if p.text_content() == label]
    return list(p.getnext().iterfind("li/a"))


def test_the_bbc_overlap_is_one_story_with_two_sources_everywhere(bbc: dict[str, Any]) -> None:
    from test_publish import validate_all

    _update(bbc, "top", "world")
    with sqlite3.connect(bbc["db"]) as c:
        rows = c.execute("SELECT i.story_id, f.url FROM items i JOIN feeds f ON f.id = i.feed_id "
                         "WHERE i.url LIKE ?", (ARTICLE + "%",)).fetchall()
        assert len(rows) == 2 and rows[0][0] == rows[1][0] is not None
        sid = rows[0][0]
        assert c.execute("SELECT source_count FROM stories WHERE id = ?", (sid,)).fetchone() == (2,)
    out = bbc["out"]
    index = html.fromstring((out / "index.html").read_bytes())
    shown = [a for a in index.iterfind(".//article/h2/a")
             if canonical_url(a.get("href")) == ARTICLE]
    assert len(shown) == 1  # the article once, with its sources linking its page
    meta = shown[0].getparent().getnext()
    assert [(a.text, a.get("href")) for a in meta.iterfind("a")] == [
        ("2 sources", f"story/{sid}.html")]

    found = _entries_about(out, ARTICLE)
    assert {k: len(v) for k, v in found.items()} == {"rss": 1, "atom": 1, "json": 1}
    (rss,), (atom,), (item,) = found["rss"], found["atom"], found["json"]
    ids = {rss.findtext("guid"), atom.findtext(f"{ATOM}id"), item["id"]}
    assert len(ids) == 1
    page = f"http://127.0.0.1:8080/story/{sid}.html"  # base_url: host and port by default
    # RSS: one <source> (the feed of the item shown), the other source in the description
    assert len(rss.findall("source")) == 1
    other = {"BBC News", "BBC News - World"} - {rss.findtext("source")}
    description = html.fromstring(rss.findtext("description"))
    also = _listed(description, "Also reported by:")
    assert [a.text.split(":")[0] for a in also] == list(other)
    assert canonical_url(also[0].get("href")) == ARTICLE
    assert page in [a.get("href") for a in description.iterfind(".//a")]
    # Atom: rel="related" links to the story page and the other source's copy
    related = {ln.get("href"): ln.get("title")
               for ln in atom.iterfind(f"{ATOM}link[@rel='related']")}
    assert related[page] == "All 2 sources on one page"
    copies = [h for h in related if canonical_url(h) == ARTICLE]
    assert len(copies) == 1 and related[copies[0]].startswith(f"{other.pop()}: ")
    # JSON Feed: the _aggregator extension names the story, both sources, its page
    ext = item["_aggregator"]
    assert (ext["story_id"], ext["story_url"], ext["source_count"]) == (sid, page, 2)
    assert sorted(s["source"] for s in ext["sources"]) == ["BBC News", "BBC News - World"]
    assert all(canonical_url(s["url"]) == ARTICLE for s in ext["sources"])
    assert {s["feed_url"] for s in ext["sources"]} == {url for _, _, url in bbc["feeds"].values()}
    # a category feed holds the story when any of its items is in it: both do here
    for slug in ("top-stories", "world"):
        entries = feedparser.parse((out / "category" / slug / "atom.xml").read_bytes()).entries
        about = [e for e in entries if canonical_url(e.link) == ARTICLE]
        assert [e.id for e in about] == list(ids)
    # every story once in every feed: five articles, five entries
    assert len(feedparser.parse((out / "rss.xml").read_bytes()).entries) == 5
    validate_all(out, "http://127.0.0.1:8080/")


def test_a_story_keeps_its_entry_id_when_it_gains_a_source(bbc: dict[str, Any]) -> None:
    """World alone first; then Top stories carries the article too, and (newer) comes
    to show the story: the story's entry keeps the id its first item gave it."""
    _update(bbc, "world")
    before = _entries_about(bbc["out"], ARTICLE)
    (item,) = before["json"]
    assert item["_aggregator"]["source_count"] == 1
    first_id = item["id"]
    with Store(bbc["db"], readonly=True) as store:
        (alone,) = [e for e in store.recent_entries(100) if (e.url or "").startswith(ARTICLE)]
    assert first_id == entry_id(alone)  # a story of one item: its item's id, as before

    with sqlite3.connect(bbc["db"]) as c:  # Top stories' copy is the newer one
        c.execute("UPDATE items SET sort_date = '2026-09-25T10:00:00+00:00', "
                  "published = '2026-09-25T10:00:00+00:00' WHERE url LIKE ?", (ARTICLE + "%",))
    _update(bbc, "top", "world")
    with sqlite3.connect(bbc["db"]) as c:
        c.execute("UPDATE items SET sort_date = '2026-09-25T12:00:00+00:00', "
                  "published = '2026-09-25T12:00:00+00:00' WHERE url LIKE ? AND feed_id = "
                  "(SELECT id FROM feeds WHERE url LIKE '%/news/rss.xml')", (ARTICLE + "%",))
    assert main([*bbc["args"], "publish"]) == 0
    after = _entries_about(bbc["out"], ARTICLE)
    (rss,), (atom,), (item,) = after["rss"], after["atom"], after["json"]
    assert item["_aggregator"]["source_count"] == 2
    assert rss.findtext("source") == "BBC News"  # the newer item shows the story now ...
    assert rss.findtext("guid") == atom.findtext(f"{ATOM}id") == item["id"] == first_id  # same id
    assert atom.findtext(f"{ATOM}published") == "2026-09-25T10:00:00Z"  # the story's first date
    assert atom.findtext(f"{ATOM}updated") >= "2026-09-25T12:00:00Z"


# ----------------------------------------------------------------------------- related


def _story_db(path: Path, terms: dict[int, list[str]]) -> None:
    """Stories with the candidate-index terms given (what the cluster stage writes)."""
    with Store(path) as store, store.transaction() as c:
        for sid, ts in terms.items():
            c.execute("INSERT INTO stories (id, first_seen, last_seen, title, item_count, "
                      "source_count, feed_ids, centroid, has_text) VALUES "
                      "(?, ?, ?, ?, 1, 1, '[]', ?, 0)",
                      (sid, "2026-03-01T00:00:00+00:00", f"2026-03-0{sid}T00:00:00+00:00",
                       f"story {sid}", json.dumps({t: 1.0 / (n + 1) for n, t in enumerate(ts)})))
            c.executemany("INSERT INTO story_terms (term, story_id) VALUES (?, ?)",
                          [(t, sid) for t in ts])


def test_related_stories_share_top_terms_and_never_include_the_story(tmp_path: Path) -> None:
    quake = ["quak", "magnitud", "kill", "lorca", "spain", "rescu"]
    _story_db(tmp_path / "r.db", {
        1: quake,
        2: ["quak", "magnitud", "kill", "christchurch", "zealand", "rescu"],  # 4 shared
        3: ["quak", "magnitud", "kill", "chile", "tsunami"],  # 3 shared, newer
        4: ["quak", "budget", "parliament", "vote"],  # 1 shared: unrelated
        5: ["lorca", "footbal", "club", "win"],  # 1 shared
    })
    with Store(tmp_path / "r.db") as store:
        got = store.related_stories([1, 4, 9])
        assert got == {1: [2, 3], 4: [], 9: []}  # most shared first; none below 3
        assert store.related_stories([1], limit=1) == {1: [2]}
        assert store.related_stories([1], min_shared=4) == {1: [2]}
        # a retired story has left the index: it is looked up by its stored centroid
        with store.transaction() as c:
            c.execute("DELETE FROM story_terms WHERE story_id = 1")
        assert store.related_stories([1]) == {1: [2, 3]}
        assert 1 not in store.related_stories([2])[2]  # ... and is no longer found


def _entry(n: int, story: int, title: str, feed: str, **kw: Any) -> Entry:
    when = datetime(2026, 3, 1, 12, tzinfo=UTC) - timedelta(hours=n)
    fields: dict[str, Any] = dict(
        item_id=n, key=f"k{n}", feed_url=f"https://{feed}.example/rss", feed_title=feed.upper(),
        feed_site_url=None, category=None, title=title, url=f"https://{feed}.example/{n}",
        author=None, published=when, updated=None, first_seen=when, language="en",
        story_id=story)
    fields.update(kw)
    return Entry(**fields)


def test_feeds_and_story_page_list_related_stories_apart_from_sources(tmp_path: Path) -> None:
    from test_publish import validate_all, vnu_errors

    a1 = _entry(1, 10, "Quake kills nine in Lorca", "bbc")
    a2 = _entry(2, 10, "Lorca earthquake: nine dead", "dw")
    b = _entry(3, 20, "Quake hits Christchurch", "npr")
    c = _entry(4, 30, "Quake <b>aftershocks</b> in Chile", "aljazeera")  # not on any page
    out = tmp_path / "out"
    publish([a1, a2, b], out, base_url="http://news.test/", now=a1.published,
            stories={10: [a1, a2], 20: [b], 30: [c]}, related={10: [20, 30], 20: [10]},
            anchors={10: (a2.feed_url, a2.key)})
    page = html.fromstring((out / "story" / "10.html").read_bytes())
    latest, related = page.iterfind(".//section")
    assert [h.text for h in related.iterfind("h3")] == ["Other sources", "On the same topic"]
    others, same_topic = related.iterfind("ul")
    assert [li.find("a").text for li in others] == ["Lorca earthquake: nine dead"]
    assert [(li.find("a").text, li.find("a").get("href")) for li in same_topic] == [
        ("Quake hits Christchurch", "20.html"), ("Quake aftershocks in Chile", c.url)]
    doc = json.loads((out / "feed.json").read_text(encoding="utf-8"))
    (item,) = [i for i in doc["items"] if i["_aggregator"]["story_id"] == 10]
    assert item["id"] == entry_id(a2)  # the anchor's id, whichever item shows the story
    assert item["url"] == a1.url and item["title"] == a1.title  # the newest item shows it
    assert [(r["story_id"], r.get("story_url")) for r in item["_aggregator"]["related"]] == [
        (20, "http://news.test/story/20.html"), (30, None)]
    assert [s["title"] for s in item["_aggregator"]["sources"]] == [a1.title, a2.title]
    atom = etree.parse(str(out / "atom.xml")).getroot()
    (entry,) = [e for e in atom.iter(f"{ATOM}entry") if e.findtext(f"{ATOM}id") == item["id"]]
    assert [ln.get("href") for ln in entry.iterfind(f"{ATOM}link[@rel='related']")] == [
        "http://news.test/story/10.html", a2.url, "http://news.test/story/20.html", c.url]
    rss = feedparser.parse((out / "rss.xml").read_bytes())
    assert [e.id for e in rss.entries] == [item["id"], entry_id(b)]
    assert "Related stories:" in rss.entries[0].description
    assert vnu_errors(validate_all(out, "http://news.test/")) == []


# ----------------------------------------------------------------------------- Chromium

SPY = """
window.__dialogs = [];
for (const name of ['alert', 'confirm', 'prompt', 'print']) {
  window[name] = function (...args) { window.__dialogs.push([name, String(args[0])]); };
}
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium", "390,844") as driver:
        yield driver


def test_story_page_in_chromium_shows_latest_news_and_related_stories(
        bbc: dict[str, Any], browser: Any) -> None:
    from aggregator.serve import serve_in_thread

    _update(bbc, "top", "world")
    with sqlite3.connect(bbc["db"]) as c:
        (sid,) = c.execute("SELECT id FROM stories WHERE source_count = 2").fetchone()
    raw = (bbc["out"] / "story" / f"{sid}.html").read_bytes()
    doc = html.fromstring(raw)
    assert not doc.xpath(ACTIVE)  # nothing active in the file itself
    assert not [a for el in doc.iter() for a, v in el.attrib.items()
                if a.startswith("on") or "javascript:" in v.lower()]
    server = serve_in_thread(bbc["out"], port=0)
    try:
        browser.execute_cdp_cmd("Page.enable", {})
        spy = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SPY})
        browser.get(f"{server.url.rstrip('/')}/story/{sid}.html")
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                                {"identifier": spy["identifier"]})  # fmt: skip
        seen = browser.execute_script("""
            const section = id => {
              const h = document.getElementById(id);
              const s = h.closest('section'), r = s.getBoundingClientRect();
              return {heading: h.innerText.trim(), visible: r.width > 0 && r.height > 0,
                      items: [...s.querySelectorAll('li')].map(li => li.innerText.trim()),
                      subheads: [...s.querySelectorAll('h3')].map(x => x.innerText.trim())};
            };
            return {
              latest: section('latest'), related: section('related'),
              title: document.querySelector('h1').innerText.trim(),
              scripts: document.scripts.length,
              active: document.querySelectorAll('iframe, object, embed, form, frame').length,
              handlers: [...document.querySelectorAll('*')].filter(
                el => [...el.attributes].some(a => a.name.startsWith('on'))).length,
              resources: performance.getEntriesByType('resource').map(r => r.name),
              sideways: document.documentElement.scrollWidth > window.innerWidth,
              dialogs: window.__dialogs,
            };
        """)
    finally:
        server.stop()
    titles = {t.split(" BBC News")[0] for t in seen["latest"]["items"]}
    assert seen["latest"]["heading"] == "Latest News" and seen["latest"]["visible"]
    assert seen["related"]["heading"] == "Related Stories" and seen["related"]["visible"]
    assert seen["latest"]["items"] and seen["title"] not in titles  # other stories only
    assert seen["related"]["subheads"] == ["Other sources", "On the same topic"]
    other_sources = [t for t in seen["related"]["items"] if t.startswith(seen["title"])]
    assert len(other_sources) == 1 and "BBC News" in other_sources[0]  # the other copy
    assert (seen["scripts"], seen["active"], seen["handlers"]) == (0, 0, 0)
    assert seen["resources"] == []  # nothing loaded, from this site or another
    assert not seen["sideways"]  # readable on a phone
    assert seen["dialogs"] == []
