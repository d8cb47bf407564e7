"""Story matching: the pure rules (canonical URLs, tokens, the same-feed title
rule, same event against same topic) and the cluster stage on a real SQLite
file, through `aggregator update` and `aggregator stories`."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.stages.cluster import assign, cluster_pending, features_of
from aggregator.stories import ClusterItem, Params, Window, canonical_url, publisher, title_key

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


# --- pure rules -------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "want"), [
    ("https://www.bbc.co.uk/news/articles/c1?at_medium=RSS&at_campaign=rss",
     "https://www.bbc.co.uk/news/articles/c1"),
    ("HTTPS://WWW.BBC.CO.UK:443/news/x#comments", "https://www.bbc.co.uk/news/x"),
    ("http://Example.com/a?id=3&utm_source=tw&utm_medium=x&fbclid=abc&gclid=1",
     "http://example.com/a?id=3"),
    ("http://example.com:8080/a?b=2&a=1", "http://example.com:8080/a?b=2&a=1"),
    ("http://example.com", "http://example.com/"),
    ("http://[::1]:81/x?mc_cid=1", "http://[::1]:81/x"),
    ("ftp://example.com/a", None),
    ("javascript:alert(1)", None),
    ("", None),
    ("http://example.com:99999/", None),
])
def test_canonical_url_drops_tracking_and_keeps_the_page(url, want):
    assert canonical_url(url) == want


def test_publisher_is_the_registrable_host():
    assert publisher("https://feeds.bbci.co.uk/news/world/rss.xml") == "bbci.co.uk"
    assert publisher("https://rss.nytimes.com/services/x.xml") == "nytimes.com"
    assert publisher("http://127.0.0.1:8000/feed") == "127.0.0.1"


def test_title_key_ignores_case_accents_punctuation_but_not_short_titles():
    want = title_key("cafe owner wins lottery again")
    assert title_key("Café owner wins  LOTTERY, again!") == want
    assert title_key("Letters") is None


def _item(n: int, feed: int, title: str, text: str | None = None, *, url: str | None = None,
          hours: float = 0) -> ClusterItem:
    return ClusterItem(n, feed, f"http://127.0.0.1/feed{feed}.xml", url, url, title, (text,),
                       "en", T0 + timedelta(hours=hours))


def _cluster(items: list[ClusterItem], params: Params | None = None) -> dict[int, int]:
    params = params or Params()
    w = Window()
    assign([(it, features_of(it, params)) for it in items], w, params)
    return dict(w.assigned)


def test_same_feed_same_title_alone_never_merges_other_feeds_do():
    got = _cluster([_item(1, 1, "Weather forecast for the weekend ahead"),
                    _item(2, 1, "Weather forecast for the weekend ahead", hours=1),
                    _item(3, 2, "Weather forecast for the weekend ahead", hours=2)])
    assert got[1] != got[2]
    assert got[3] in (got[1], got[2])


def test_same_canonical_url_is_one_story_whatever_the_title():
    got = _cluster([_item(1, 1, "Quake hits city", url="https://x.org/a?utm_source=rss"),
                    _item(2, 2, "Something else entirely", url="https://x.org/a#top")])
    assert got[1] == got[2]


QUAKE_A = ("A magnitude 6.1 earthquake struck Lorca in southern Spain on Wednesday, killing "
           "nine people. Mayor Francisco Jodar said buildings collapsed in Lorca. The quake "
           "was felt in Murcia. Rescue teams searched the rubble in Lorca for survivors.")
QUAKE_B = ("A magnitude 7.0 earthquake struck Christchurch in New Zealand on Tuesday, killing "
           "dozens of people. Prime Minister John Key said buildings collapsed in "
           "Christchurch. The quake was felt in Canterbury. Rescue teams searched the rubble "
           "in Christchurch for survivors.")


def test_two_earthquakes_are_related_not_the_same_story():
    items = [
        _item(1, 1, "Earthquake kills nine in Lorca, Spain", QUAKE_A),
        _item(2, 2, "Deadly quake hits Lorca", QUAKE_A.replace("Wednesday", "Wednesday night")),
        _item(3, 3, "Earthquake kills dozens in Christchurch", QUAKE_B, hours=1),
        _item(4, 4, "Christchurch quake: dozens dead", QUAKE_B.replace("dozens", "many"),
              hours=2),
        _item(5, 5, "Lorca counts the cost of Spain's earthquake",
              "Residents of Lorca in Spain returned home after the magnitude 6.1 earthquake "
              "that killed nine. Mayor Francisco Jodar thanked rescue teams.", hours=3),
    ]
    got = _cluster(items)
    assert got[1] == got[2] == got[5]
    assert got[3] == got[4]
    assert got[1] != got[3]


def test_three_headlines_sharing_one_generic_word_stay_three_stories():
    """On a young database every word looks rare: "story" in all three headlines
    must not make them one story."""
    got = _cluster([_item(1, 1, "Alpha story"), _item(2, 2, "Beta story", hours=1),
                    _item(3, 3, "Gamma story", hours=2)])
    assert len(set(got.values())) == 3
    got = _cluster([_item(1, 1, "Alpha story"), _item(2, 2, "Beta story", hours=1),
                    _item(3, 3, "Gamma story", hours=2), _item(4, 4, "Alpha story hits", hours=3)])
    assert len({got[1], got[2], got[3]}) == 3
    assert got[4] == got[1]  # the word only one story has still joins


def test_a_rare_shared_word_joins_headlines_of_a_known_story():
    """The generic-word rule counts documents: one shared word that few of the items
    seen carry (a name) is evidence."""
    filler = [_item(10 + k, 10 + k, f"{w} council meeting planned", hours=k * 0.1)
              for k, w in enumerate(("Leeds", "York", "Hull", "Bath", "Ely", "Wells"))]
    got = _cluster([*filler, _item(1, 1, "Sukanya intercepts pirates", hours=1),
                    _item(2, 2, "Sukanya seizes arms", hours=2)])
    assert got[1] == got[2]
    assert got[1] not in {got[k] for k in range(10, 16)}


FORE = [(1, 1, "Deputy governor appointed at the central bank"),
        (2, 2, "Forex trading probe questions trust in traders"),
        (3, 3, "Central bank deputy governor appointed amid forex trading probe"),
        (4, 4, "Forex trading probe: central bank deputy governor appointed")]


def test_two_stories_that_grow_together_merge():
    got = _cluster([_item(n, feed, title, hours=n) for n, feed, title in FORE[:2]])
    assert got[1] != got[2]  # nothing in common yet
    got = _cluster([_item(n, feed, title, hours=n) for n, feed, title in FORE])
    assert len(set(got.values())) == 1


def test_a_story_out_of_the_time_window_is_not_joined():
    got = _cluster([_item(1, 1, "Parliament votes on the budget plan today", "Budget vote."),
                    _item(2, 2, "Parliament votes on the budget plan today", "Budget vote.",
                          hours=24 * 10)])
    assert got[1] != got[2]


# --- the stage on a real SQLite file, through update ------------------------------------


def _rss(title: str, items: list[tuple[str, str, str, str]]) -> bytes:
    when = format_datetime(datetime.now(UTC) - timedelta(hours=1))
    body = "".join(f"<item><title>{t}</title><link>{link.replace('&', '&amp;')}</link>"
                   f"<guid>{g}</guid><description>{d}</description>"
                   f"<pubDate>{when}</pubDate></item>"
                   for t, link, g, d in items)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
            f"<link>http://127.0.0.1/</link>{body}</channel></rss>").encode()


@pytest.fixture
def bbc(tmp_path: Path):
    """The default feeds.opml's BBC overlap: one article in "Top stories" and
    "World" with different at_medium/at_campaign parameters."""
    from hostile_servers import local_httpserver

    art = "https://www.bbc.co.uk/news/articles/c9d8e7f6"
    top = [("Storm closes schools across the north", f"{art}?at_medium=RSS&at_campaign=rss",
            f"{art}#0", "Heavy snow closed hundreds of schools."),
           ("Chancellor sets out spending plans", "https://www.bbc.co.uk/news/articles/c111",
            "https://www.bbc.co.uk/news/articles/c111#0", "The budget was presented.")]
    world = [("Storm closes schools across the north",
              f"{art}?at_medium=RSS&at_campaign=world", f"{art}#2",
              "Heavy snow closed hundreds of schools."),
             ("Volcano erupts in Iceland", "https://www.bbc.co.uk/news/articles/c222",
              "https://www.bbc.co.uk/news/articles/c222#2", "Lava flowed near Grindavik.")]
    with local_httpserver() as server:
        server.expect_request("/news/rss.xml").respond_with_data(
            _rss("BBC News", top), content_type="application/rss+xml")
        server.expect_request("/news/world/rss.xml").respond_with_data(
            _rss("BBC News - World", world), content_type="application/rss+xml")
        opml = tmp_path / "feeds.opml"
        opml.write_text(
            '<opml version="2.0"><head/><body>'
            f'<outline type="rss" text="BBC News" xmlUrl="{server.url_for("/news/rss.xml")}"/>'
            '<outline type="rss" text="BBC News - World" '
            f'xmlUrl="{server.url_for("/news/world/rss.xml")}"/></body></opml>')
        yield ["--db", str(tmp_path / "a.db"), "--feeds", str(opml),
               "--output", str(tmp_path / "out")]


def test_update_clusters_every_item_and_the_bbc_overlap_is_one_story(bbc, capsys):
    assert main([*bbc, "update", "--all", "--no-summaries", "--no-publish"]) == 0
    db = bbc[1]
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM items WHERE story_id IS NULL").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM items").fetchone() == (4,)
        assert c.execute("SELECT count(*) FROM stories").fetchone() == (3,)
        assert c.execute("SELECT title, item_count, source_count FROM stories "
                         "ORDER BY source_count DESC LIMIT 1").fetchone() == (
            "Storm closes schools across the north", 2, 2)
    capsys.readouterr()
    assert main([*bbc, "stories", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    story = json.loads(lines[0])
    assert story["source_count"] == 2
    assert sorted(i["source"] for i in story["items"]) == ["BBC News", "BBC News - World"]
    assert main([*bbc, "stories", "--min-sources", "1"]) == 0
    out = capsys.readouterr().out
    assert "Volcano erupts in Iceland" in out and "2 sources" in out


def test_update_no_stories_leaves_items_unclustered_until_the_stage_runs(bbc):
    from aggregator.store import Store

    assert main([*bbc, "update", "--all", "--no-summaries", "--no-publish",
                 "--no-stories"]) == 0
    db = Path(bbc[1])
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM items WHERE story_id IS NULL").fetchone() == (4,)
    with Store(db) as store:
        assert cluster_pending(store) == 4
        assert cluster_pending(store) == 0  # nothing left: a second run is a no-op
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM items WHERE story_id IS NULL").fetchone() == (0,)
        # the candidate index holds the active stories' terms
        assert c.execute("SELECT count(DISTINCT story_id) FROM story_terms").fetchone() == (3,)


def test_stage_retires_quiet_stories_and_joins_later_items_across_batches(tmp_path):
    from aggregator.store import Store

    db = tmp_path / "s.db"
    with Store(db) as store, store.transaction() as c:
        for f in (1, 2, 3):
            c.execute("INSERT INTO feeds (id, url, origin_url, added_at) VALUES (?, ?, ?, ?)",
                      (f, f"http://127.0.0.1/{f}.xml", f"http://127.0.0.1/{f}.xml", T0.isoformat()))

        def put(n: int, feed: int, title: str, text: str, when: datetime) -> None:
            c.execute("INSERT INTO items (id, feed_id, key, title, content_text, first_seen, "
                      "changed_at, sort_date, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '')",
                      (n, feed, str(n), title, text, when.isoformat(), when.isoformat(),
                       when.isoformat()))

        put(1, 1, "Earthquake kills nine in Lorca, Spain", QUAKE_A, T0)
        put(2, 2, "Deadly quake hits Lorca", QUAKE_A, T0 + timedelta(hours=1))
        put(3, 3, "Lorca earthquake: nine dead", QUAKE_A, T0 + timedelta(hours=2))
        put(4, 3, "Earthquake kills dozens in Christchurch", QUAKE_B, T0 + timedelta(days=5))
    with Store(db) as store:
        assert cluster_pending(store, limit=2, clock=lambda: T0 + timedelta(days=6)) == 4
    with sqlite3.connect(db) as c:
        ids = dict(c.execute("SELECT id, story_id FROM items"))
        assert ids[1] == ids[2] == ids[3] != ids[4]
        rows = dict(c.execute("SELECT id, retired FROM stories"))
        assert rows == {ids[1]: 1, ids[4]: 0}
        assert c.execute("SELECT count(*) FROM story_terms WHERE story_id = ?",
                         (ids[1],)).fetchone() == (0,)


def _store_with_items(db: Path, items: list[tuple[int, int, str, str | None]]) -> None:
    from aggregator.store import Store

    with Store(db) as store, store.transaction() as c:
        for f in sorted({feed for _, feed, _, _ in items}):
            c.execute("INSERT INTO feeds (id, url, origin_url, added_at) VALUES (?, ?, ?, ?)",
                      (f, f"http://127.0.0.1/{f}.xml", f"http://127.0.0.1/{f}.xml", T0.isoformat()))
        for n, feed, title, text in items:
            when = (T0 + timedelta(hours=n)).isoformat()
            c.execute("INSERT INTO items (id, feed_id, key, title, content_text, first_seen, "
                      "changed_at, sort_date, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '')",
                      (n, feed, str(n), title, text, when, when, when))


def test_stories_merged_across_batches_move_their_items_and_keys(tmp_path):
    """One item per batch: the first two items' stories are stored apart, the third
    item brings them together; the story that goes leaves no row, no index terms,
    and its items and keys belong to the one kept."""
    from aggregator.store import Store

    db = tmp_path / "m.db"
    _store_with_items(db, [(n, feed, title, None) for n, feed, title in FORE])
    with Store(db) as store:
        assert cluster_pending(store, limit=1, clock=lambda: T0 + timedelta(days=1)) == 4
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*), min(id) = max(id) FROM stories").fetchone() == (1, 1)
        (sid, count, sources), = c.execute("SELECT id, item_count, source_count FROM stories")
        assert (count, sources) == (4, 4)
        assert c.execute("SELECT DISTINCT story_id FROM items").fetchall() == [(sid,)]
        assert c.execute("SELECT DISTINCT story_id FROM story_keys").fetchall() == [(sid,)]
        assert c.execute("SELECT DISTINCT story_id FROM story_terms").fetchall() == [(sid,)]


def test_three_stories_in_three_feeds_stay_three_through_the_stage(tmp_path):
    from aggregator.store import Store

    db = tmp_path / "g.db"
    _store_with_items(db, [(1, 1, "Alpha story", "Alpha story."),
                           (2, 2, "Beta story", "Beta story."),
                           (3, 3, "Gamma story", None)])
    with Store(db) as store:
        assert cluster_pending(store, clock=lambda: T0 + timedelta(days=1)) == 3
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(DISTINCT story_id), count(*) FROM items").fetchone() == (
            3, 3)
        assert c.execute("SELECT sum(item_count), max(source_count) FROM stories").fetchone() == (
            3, 1)


def test_stories_on_a_missing_database_creates_nothing(tmp_path, capsys):
    db = tmp_path / "none.db"
    assert main(["--db", str(db), "stories"]) != 0
    assert not db.exists()
    assert "no database" in capsys.readouterr().err


def test_stories_refuses_a_bad_since(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--db", str(tmp_path / "x.db"), "stories", "--since", "yesterday"])


def test_the_bbc_overlap_is_one_index_entry_with_a_story_page(bbc, capsys):
    """Through `update --all` and `publish`: the article both BBC feeds carry is one entry
    on index.html, "2 sources" linking its story page, which names both sources and
    has Latest News and Related Stories; no active content; a second publish writes
    nothing."""
    from lxml import html
    from test_publish import vnu_errors

    assert main([*bbc, "update", "--all", "--no-summaries"]) == 0
    out = Path(bbc[5])
    index = html.fromstring((out / "index.html").read_bytes())
    titles = [h.text_content() for h in index.iterfind(".//article/h2")]
    assert sorted(titles) == ["Chancellor sets out spending plans",
                              "Storm closes schools across the north", "Volcano erupts in Iceland"]
    links = {a.text: a.get("href") for a in index.iterfind(".//p[@class='meta']/a")}
    assert "2 sources" in links and list(links).count("2 sources") == 1
    with sqlite3.connect(bbc[1]) as c:
        (sid,) = c.execute("SELECT id FROM stories WHERE source_count = 2").fetchone()
        assert c.execute("SELECT count(*) FROM stories").fetchone() == (3,)
    assert links["2 sources"] == f"story/{sid}.html"
    assert len(list((out / "story").glob("*.html"))) == 3  # every story on the page has one
    page_path = out / "story" / f"{sid}.html"
    page = html.fromstring(page_path.read_bytes())
    assert page.find(".//h1").text_content() == "Storm closes schools across the north"
    assert page.find(".//h1/a").get("href").startswith("https://www.bbc.co.uk/news/articles/c9d8e7f6")
    profile = page.find(".//p[@class='profile']").text
    assert profile in ("BBC News", "BBC News - World")
    latest, related = page.iterfind(".//section")
    assert latest.find("h2").text == "Latest News" and related.find("h2").text == "Related Stories"
    assert sorted(li.find("a").text for li in latest.iterfind(".//li")) == [
        "Chancellor sets out spending plans", "Volcano erupts in Iceland"]
    (other,) = related.iterfind(".//li")
    names = {profile, other.find("span").text.split(" · ")[0]}
    assert names == {"BBC News", "BBC News - World"}
    for p in (out / "story").glob("*.html"):
        doc = html.fromstring(p.read_bytes())
        assert not doc.xpath("//script | //iframe | //object | //embed | //form")
        assert not [a for el in doc.iter() for a, v in el.attrib.items()
                    if a.startswith("on") or "javascript:" in v.lower()]
    assert vnu_errors([out / "index.html", *sorted((out / "story").glob("*.html"))]) == []
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert main([*bbc, "publish"]) == 0
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before


# --- second looks at a batch's end: recheck (small stories rejoin grown ones), refine ---
# (items move to a nearer story), and what neither may do

FERRY = ("The ferry Aegean Star capsized off Lesbos early on Sunday with 212 passengers on "
         "board. The Greek coast guard said 31 people drowned and helicopters from Mytilene "
         "searched the sea for the missing. Captain Nikos Petrou was detained.")
FERRY_SHORT = ("Families waited at the harbour in Mytilene for relatives from the Aegean Star. "
               "Churches rang their bells and shops closed.")
NO_SECOND_LOOKS = Params(recheck_size=0, refine=False)


def _ferry_late_first() -> list[ClusterItem]:
    """A short item names the event before any report of it: the story it would
    join has no centroid yet, and the reports that follow are too long to join it."""
    return [_item(1, 1, "Island in mourning", FERRY_SHORT),
            _item(2, 2, "Ferry capsizes off Lesbos, 31 drowned", FERRY, hours=1),
            _item(3, 3, "Aegean Star disaster: 31 dead",
                  FERRY.replace("Sunday", "Sunday morning"), hours=2),
            _item(4, 4, "Lesbos ferry captain detained",
                  FERRY.replace("early on", "at dawn on"), hours=3)]


def test_recheck_joins_an_item_that_came_before_its_story_had_a_centroid():
    items = _ferry_late_first()
    got = _cluster(items, NO_SECOND_LOOKS)
    assert got[2] == got[3] == got[4] != got[1]  # single pass: the early item alone
    got = _cluster(items, Params(recheck_size=0))  # refine alone does not do it
    assert got[1] != got[2]
    got = _cluster(items, Params(refine=False))
    assert got[1] == got[2] == got[3] == got[4]
    assert _cluster(items) == got


def test_recheck_through_the_stage_leaves_one_story_row(tmp_path):
    from aggregator.store import Store

    db = tmp_path / "r.db"
    _store_with_items(db, [(it.id, it.feed_id, it.title or "", it.texts[0])
                           for it in _ferry_late_first()])
    with Store(db) as store:
        assert cluster_pending(store, clock=lambda: T0 + timedelta(days=1)) == 4
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(DISTINCT story_id) FROM items").fetchone() == (1,)
        assert c.execute("SELECT count(*), item_count, source_count FROM stories").fetchone() == (
            1, 4, 4)


CAMP = ("Fire destroyed most of the Moria migrant camp on Lesbos overnight. Some 12,000 asylum "
        "seekers slept in fields and olive groves, and the Greek government sent tents. "
        "Minister Notis Mitarachi blamed arson by residents of the camp.")
RESCUE = ("Coast guard boats brought survivors of the capsized ferry to Lesbos, where the Greek "
          "government sent tents and blankets for families sleeping in fields.")
ASHORE = " Coast guard boats brought survivors of the capsized ferry ashore in blankets."


def _camp_then_ferry() -> list[tuple[int, int, str, str | None]]:
    """Item 3 (feed 3) is about the ferry but comes while only the camp fire's story
    exists, and its tents and fields join it there; the ferry's reports come after."""
    return [(1, 1, "Fire destroys Moria camp on Lesbos", CAMP),
            (2, 2, "Moria camp burns, 12,000 sleep in fields",
             CAMP.replace("overnight", "on Tuesday night")),
            (3, 3, "Survivors brought to Lesbos", RESCUE),
            (4, 4, "Ferry capsizes off Lesbos, 31 drowned", FERRY + ASHORE),
            (5, 5, "Aegean Star disaster: 31 dead",
             FERRY.replace("Sunday", "Sunday morning") + ASHORE),
            (6, 6, "Ferry captain detained after capsizing",
             FERRY.replace("early on", "at dawn on") + ASHORE)]


def test_refine_moves_an_item_that_joined_the_wrong_young_story():
    items = [_item(n, feed, title, text, hours=n) for n, feed, title, text in _camp_then_ferry()]
    got = _cluster(items, Params(refine=False))
    assert got[1] == got[2] == got[3] != got[4]  # single pass: the rescue with the fire
    assert got[4] == got[5] == got[6]
    got = _cluster(items)
    assert got[1] == got[2] != got[3]
    assert got[3] == got[4] == got[5] == got[6]


def test_refine_through_the_stage_keeps_counts_and_the_same_feed_rule(tmp_path):
    """After the move the stored counts are those of the items' story_id: the fire's
    story lost feed 3, the ferry's gained it. Headlines of one feed with one title
    (items 7 and 8) stay apart though each is the other's nearest story."""
    from aggregator.store import Store

    db = tmp_path / "f.db"
    weather = "Weather: storms and heavy rain for the weekend"
    _store_with_items(db, [*_camp_then_ferry(), (7, 1, weather, None), (8, 1, weather, None),
                           (9, 2, "Storms and heavy rain forecast for the weekend", None)])
    with Store(db) as store:
        assert cluster_pending(store, clock=lambda: T0 + timedelta(days=1)) == 9
    with sqlite3.connect(db) as c:
        ids = dict(c.execute("SELECT id, story_id FROM items"))
        assert ids[1] == ids[2] != ids[3]
        assert ids[3] == ids[4] == ids[5] == ids[6]
        assert ids[7] != ids[8]
        stored = {sid: (n, s) for sid, n, s in
                  c.execute("SELECT id, item_count, source_count FROM stories")}
        members = {sid: (n, s) for sid, n, s in c.execute(
            "SELECT story_id, count(*), count(DISTINCT feed_id) FROM items GROUP BY story_id")}
        assert stored == members
        assert stored[ids[1]] == (2, 2)
        assert stored[ids[3]] == (4, 4)
        feeds = dict(c.execute("SELECT id, feed_ids FROM stories"))
        assert json.loads(feeds[ids[1]]) == [1, 2]
        assert json.loads(feeds[ids[3]]) == [3, 4, 5, 6]


VAN = ("A magnitude 7.2 earthquake struck Van in eastern Turkey on Sunday, killing 217 people. "
       "Governor Mustafa Tutulmaz said 970 buildings collapsed in Ercis and Van. Rescue teams "
       "dug through the rubble through the night as aftershocks shook the region.")
ICA = ("A magnitude 6.8 earthquake struck Ica in southern Peru on Sunday, killing 40 people. "
       "President Alan Garcia said 300 homes collapsed in Pisco and Ica. Rescue teams dug "
       "through the rubble through the night as aftershocks shook the region.")


def test_twin_earthquakes_stay_two_stories_after_the_second_looks():
    """Two quakes told in the same words but for names and figures: the smaller
    story (two reports, as small as recheck weighs again) never joins the larger,
    while the short item ahead of the larger's reports does join it."""
    items = [
        _item(1, 1, "Ercis buries its dead", "Families waited outside the hospital in Ercis for "
              "relatives pulled from the rubble in Van. Schools and shops closed."),
        _item(2, 2, "Peru earthquake kills 40 in Ica", ICA, hours=0.5),
        _item(3, 3, "Turkey earthquake kills 217 in Van", VAN, hours=1),
        _item(4, 4, "Ica quake: 40 dead in Peru", ICA.replace("Sunday", "Sunday evening"),
              hours=1.5),
        _item(5, 5, "Van quake: 217 dead, 970 buildings down",
              VAN.replace("Sunday", "Sunday afternoon"), hours=2),
        _item(6, 6, "Aftershocks hit Van after deadly quake", VAN.replace("night", "day"), hours=3),
    ]
    got = _cluster(items, NO_SECOND_LOOKS)
    assert got[1] != got[3]  # the short item alone in one pass
    assert got[2] == got[4] != got[3]
    got = _cluster(items)
    assert got[1] == got[3] == got[5] == got[6]
    assert got[2] == got[4]
    assert got[1] != got[2]


def test_a_story_whose_first_item_moved_takes_its_next_items_title(tmp_path):
    """The rescue report comes first and begins the story the camp fire's reports
    join; refine then moves it to the ferry's story. The story it began is the fire's
    now: its title and first item are the fire's first report, not the rescue's."""
    from aggregator.store import Store

    camp, ferry = _camp_then_ferry()[:2], _camp_then_ferry()[3:]
    rescue = _camp_then_ferry()[2]
    db = tmp_path / "t.db"
    _store_with_items(db, [(1, rescue[1], rescue[2], rescue[3]),
                           *((n + 1, feed, title, text) for n, feed, title, text in camp),
                           *ferry])
    with Store(db) as store:
        assert cluster_pending(store, clock=lambda: T0 + timedelta(days=1)) == 6
    with sqlite3.connect(db) as c:
        ids = dict(c.execute("SELECT id, story_id FROM items"))
        assert ids[2] == ids[3] != ids[1]
        assert ids[1] == ids[4] == ids[5] == ids[6]
        titles = {sid: (title, item) for sid, title, item in
                  c.execute("SELECT id, title, item_id FROM stories")}
        assert titles[ids[2]] == ("Fire destroys Moria camp on Lesbos", 2)
