"""Full-text search (issue 10, item 4): the items_fts index kept in step with the
items by triggers, `aggregator search` as a user meets it, hostile queries, and
Datasette's search box on the same file."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import decide, search
from aggregator.cli import main
from aggregator.errors import SearchError
from aggregator.store import Store
from aggregator.types import ParsedFeed, ParsedItem, Subscription, Summary
from bench.farm import Farm

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("clean_env")


def item(n: int, title: str, text: str, *, hours_ago: float = 1) -> ParsedItem:
    return ParsedItem(guid=f"g{n}", url=f"http://news.example/{n}", title=title, author=None,
                      published=NOW - timedelta(hours=hours_ago), updated=None,
                      content=f"<p>{text}</p>", content_text=text)


def store_items(store: Store, items: list[ParsedItem], *, feed: str = "http://news.example/rss",
                title: str = "Example News") -> None:
    store.sync_subscriptions([Subscription(feed, title)], NOW)
    feed_id = store.feed(feed).id
    store.record_feed(feed_id, NOW, status=200, headers={}, body_hash=str(len(items)),
                      parsed=ParsedFeed(title, None, "en", None, tuple(items)),
                      items=[(decide.item_key(i), i, decide.content_hash(i)) for i in items],
                      next_fetch=NOW + timedelta(hours=1))


def ids(store: Store, text: str, **kw: object) -> list[int]:
    return [e.item_id for e in store.search(search.fts_query(text), **kw)]


def item_id(store: Store, guid: str) -> int:
    return store.conn.execute("SELECT id FROM items WHERE guid = ?", (guid,)).fetchone()[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "x.db"
    with Store(path) as store:
        store_items(store, [
            item(1, "Plane crash in the Alps", "Rescuers reached the wreck on Tuesday.",
                 hours_ago=30),
            item(2, "Budget talks stall", "Ministers met in Zürich over the deficit.",
                 hours_ago=5),
            item(3, "C++ standard adopted", "The committee voted for modules.", hours_ago=2),
        ])
        one = item_id(store, "g1")
        store.save_article(one, "ok", "The aircraft was a turboprop flying to Geneva.")
        store.save_summary(one, decide.content_hash(item(1, "Plane crash in the Alps",
                                                         "Rescuers reached the wreck on "
                                                         "Tuesday.", hours_ago=30)),
                           Summary(("Investigators blamed icing on the wings.",), (),
                                   "default:english"), NOW, source="article")
    return path


# --- the index -------------------------------------------------------------------------


def test_search_finds_an_item_by_its_title_text_summary_and_article(db):
    with Store(db) as store:
        one = item_id(store, "g1")
        assert ids(store, "alps") == [one]  # title
        assert ids(store, "rescuers wreck") == [one]  # the feed's text
        assert ids(store, "icing") == [one]  # our Context
        assert ids(store, "turboprop") == [one]  # the article page
        assert ids(store, "crashes") == [one]  # stemmed
        assert ids(store, "zurich") == [item_id(store, "g2")]  # accents folded
        assert ids(store, "turboprop budget") == []  # words are ANDed
        # newest first
        assert ids(store, "alps OR budget OR modules") == [
            item_id(store, "g3"), item_id(store, "g2"), one]


def test_updates_and_deletes_keep_the_index_in_step(db):
    with Store(db) as store:
        one = item_id(store, "g1")
        store_items(store, [item(1, "Plane crash in the Pyrenees", "Rescuers found the "
                                 "fuselage.", hours_ago=30)])
        assert ids(store, "pyrenees") == [one] and ids(store, "fuselage") == [one]
        assert ids(store, "alps") == [] and ids(store, "wreck") == []
        store.save_article(one, "ok", "It was a glider flying to Lyon.")
        assert ids(store, "glider") == [one] and ids(store, "turboprop") == []
        assert ids(store, "icing") == [one]  # the Context stays until a new one is written
        with store.transaction() as c:
            c.execute("DELETE FROM items WHERE id = ?", (one,))
        assert ids(store, "pyrenees") == [] and ids(store, "glider") == []
        # a feed deleted with its items (ON DELETE CASCADE) leaves nothing in the index
        with store.transaction() as c:
            c.execute("DELETE FROM feeds")
        assert ids(store, "budget OR modules") == []
        assert store.conn.execute(
            "INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)") is not None


def test_the_index_is_sound_after_writes(db):
    """FTS5's integrity check compares the index with the items table itself:
    it fails if a trigger ever told the index a wrong old value."""
    with Store(db) as store:
        store_items(store, [item(2, "Budget talks resume", "Ministers agreed.", hours_ago=5)])
        store.save_article(item_id(store, "g2"), "ok", "Long article text.")
        store.conn.execute("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)")
        with store.transaction() as c:
            c.execute("UPDATE items SET title = 'x' WHERE guid = 'g3'")
            c.execute("UPDATE items SET article_tries = 5")  # not indexed: the trigger waits
        store.conn.execute("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)")
        assert ids(store, "resume") == [item_id(store, "g2")]


def test_the_migration_fills_the_index_from_the_items_already_stored(tmp_path):
    path = tmp_path / "old.db"
    with Store(path) as store:
        store_items(store, [item(i, f"Story number {i}", f"word{i} text") for i in range(300)])
    with sqlite3.connect(path) as c:  # back to the schema before m006
        c.execute("DROP TABLE items_fts")
        for t in ("items_ai", "items_ad", "items_au"):
            c.execute(f"DROP TRIGGER {t}")
        c.execute("DELETE FROM _sqlite_migrations WHERE name = 'm006_search'")
    with Store(path) as store:
        assert ids(store, "word123") == [item_id(store, "g123")]
        assert len(store.search('"story"', limit=1000)) == 300


def test_since_keeps_only_recent_items(db):
    with Store(db) as store:
        assert ids(store, "alps OR budget", since=NOW - timedelta(hours=6)) == [
            item_id(store, "g2")]


# --- the query language ------------------------------------------------------------------


@pytest.mark.parametrize("typed, match", [
    ("plane crash", '"plane" AND "crash"'),
    ('"plane crash"', '"plane crash"'),
    ("crash OR collision", '("crash" OR "collision")'),
    ("a OR b c", '("a" OR "b") AND "c"'),
    ("OR", '"OR"'),
    ("a OR", '"a" AND "OR"'),
    ("crash*", '"crash"*'),
    ("C++", '"C++"'),
    ('"unbalanced', '"unbalanced"'),
    ('say"what', '"say what"'),
    ("NEAR(", '"NEAR("'),
    ("title:x", '"title:x"'),
])
def test_typed_words_become_quoted_phrases(typed, match):
    assert search.fts_query(typed) == match


@pytest.mark.parametrize("typed", ["+++", '""', "*", "  ", "( )"])
def test_a_query_without_words_is_a_clear_error(typed):
    with pytest.raises(SearchError, match="nothing to search for"):
        search.fts_query(typed)


HOSTILE = ["C++", '"unbalanced', "NEAR(", "NEAR(a b", "a AND", "NOT", "-x", "^x", "x:y",
           "{title}: x", '"""', "a OR OR b", "'; DROP TABLE items; --", "*x", "x**", "\\",
           "\x00", "AND OR NOT", "(((", "crash)", "\u200b", "日本"]


def test_hostile_queries_give_results_or_one_clear_line(db, capsys):
    with Store(db) as store:
        for typed in HOSTILE:
            try:
                match = search.fts_query(typed)
            except SearchError:
                continue
            store.search(match)  # no sqlite3 error
        assert ids(store, "C++") == [item_id(store, "g3")]
        assert ids(store, "NEAR(") == []
    for typed in HOSTILE:
        code = main(["--db", str(db), "search", "--", typed])  # "-x" is a word, not a flag
        out = capsys.readouterr()
        assert "Traceback" not in out.err and "sqlite" not in out.err.lower(), (typed, out.err)
        assert code in (0, 1) and len(out.err.splitlines()) <= 1, (typed, out.err)
    assert main(["--db", str(db), "search", "C++"]) == 0
    assert "C++ standard adopted" in capsys.readouterr().out
    assert main(["--db", str(db), "search", "+++"]) == 1
    assert capsys.readouterr().err == ("aggregator: error: nothing to search for in '+++' "
                                       "(no letters or digits)\n")


@pytest.mark.parametrize("text, delta", [("30m", timedelta(minutes=30)),
                                         ("12h", timedelta(hours=12)),
                                         ("2d", timedelta(days=2)), ("1w", timedelta(weeks=1)),
                                         ("2D", timedelta(days=2))])
def test_since_durations(text, delta):
    assert search.parse_since(text) == delta


@pytest.mark.parametrize("text", ["2", "d", "2 days", "-2d", "1.5h", "2y", ""])
def test_a_bad_since_is_an_error(text):
    with pytest.raises(SearchError, match="--since"):
        search.parse_since(text)


def test_age_reads_like_a_news_page():
    assert search.age(NOW, NOW) == "now"
    assert search.age(NOW + timedelta(hours=1), NOW) == "now"
    assert search.age(NOW - timedelta(minutes=5), NOW) == "5m ago"
    assert search.age(NOW - timedelta(hours=19, minutes=59), NOW) == "19h ago"
    assert search.age(NOW - timedelta(days=3, hours=2), NOW) == "3d ago"


# --- the command -------------------------------------------------------------------------


def recent_db(tmp_path: Path) -> Path:
    """Items dated relative to the real clock, for --since and ages."""
    path = tmp_path / "recent.db"
    now = datetime.now(UTC)
    with Store(path) as store:
        store.sync_subscriptions([Subscription("http://news.example/rss", "Example News")], now)
        parsed = [
            ParsedItem(guid="old", url="http://news.example/old", title="Harbour storm",
                       author=None, published=now - timedelta(days=3), updated=None,
                       content=None, content_text="The storm closed the harbour."),
            ParsedItem(guid="new", url="http://news.example/new", title="Harbour reopens",
                       author=None, published=now - timedelta(hours=3), updated=None,
                       content=None, content_text="Ferries sail again."),
        ]
        store.record_feed(store.feed("http://news.example/rss").id, now, status=200,
                          headers={}, body_hash="h", parsed=ParsedFeed("Example News", None,
                                                                      "en", None,
                                                                      tuple(parsed)),
                          items=[(decide.item_key(i), i, decide.content_hash(i))
                                 for i in parsed], next_fetch=now)
        new = item_id(store, "new")
        store.save_summary(new, decide.content_hash(parsed[1]),
                           Summary(("Ferries sail again after the storm.",), (), "x"), now)
    return path


def test_search_prints_source_age_title_context_and_link_newest_first(tmp_path, capsys):
    db = recent_db(tmp_path)
    assert main(["search", "harbour", "--db", str(db)]) == 0  # global option after the command
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "3h ago  Example News  Harbour reopens",
        "    Ferries sail again after the storm.",
        "    http://news.example/new",
        "3d ago  Example News  Harbour storm",
        "    http://news.example/old",
    ]
    assert main(["search", "harbour", "--since", "2d", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "Harbour reopens" in out and "Harbour storm" not in out
    assert main(["search", "harbour", "--since", "2 days", "--db", str(db)]) == 1
    assert capsys.readouterr().err.startswith("aggregator: error: --since: '2 days' is not")
    assert main(["search", "volcano", "--db", str(db)]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == "no items match 'volcano'\n"


def test_search_json_is_one_object_per_line(tmp_path, capsys):
    db = recent_db(tmp_path)
    assert main(["--db", str(db), "search", "--json", "ferries"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["title"], r["source"], r["age"], r["context"], r["url"]) for r in rows] == [
        ("Harbour reopens", "Example News", "3h ago", "Ferries sail again after the storm.",
         "http://news.example/new")]
    assert datetime.fromisoformat(rows[0]["date"]) < datetime.now(UTC)


def test_search_never_creates_a_database(tmp_path, capsys):
    assert main(["search", "anything", "--db", "typo.db"]) == 1
    assert capsys.readouterr().err == ("aggregator: error: no database at typo.db (check --db, "
                                       "or run `aggregator update` to create it)\n")
    assert list(tmp_path.iterdir()) == []


def test_search_does_not_change_the_items(tmp_path, capsys):
    db = recent_db(tmp_path)

    def rows() -> list[tuple[object, ...]]:
        with sqlite3.connect(db) as c:  # what a user stored (not SQLite's own statistics)
            return [*c.execute("SELECT * FROM items ORDER BY id"),
                    *c.execute("SELECT * FROM feeds ORDER BY id")]

    before = rows()
    assert main(["--db", str(db), "search", "harbour"]) == 0
    assert rows() == before


def test_update_then_search_finds_an_item_by_a_word_of_its_article(tmp_path):
    """As a user would: feeds served locally, `update --all` fetches the
    articles, `aggregator search` finds an item by a word only its article has."""
    empty = tmp_path / "home"
    empty.mkdir()
    env = dict(os.environ, HOME=str(empty), NLTK_DATA=str(empty), AGGREGATOR_PUBLISH="false")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aggregator", "--db", "x.db", *args],
                              capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=120)

    with Farm(2, 3).serve() as farm:
        feeds = farm.write_opml(tmp_path / "feeds.opml")
        out = run("--feeds", str(feeds), "update", "--all")
        assert out.returncode == 0, out.stderr
    with sqlite3.connect(tmp_path / "x.db") as c:
        rows = c.execute("SELECT id, title, content_text, summary_context, article_text "
                         "FROM items WHERE article_status = 'ok'").fetchall()
    assert rows

    def words(*texts: str | None) -> set[str]:
        return {w.lower() for t in texts if t for w in re.findall(r"[^\W\d_]{6,}", t)}

    others = words(*(t for r in rows for t in r[1:4]))
    target, word = None, None
    for r in rows:
        rest = words(*(t for o in rows if o is not r for t in o[1:]))
        only = sorted(words(r[4]) - others - rest)
        if only:
            target, word = r, only[0]
            break
    assert target is not None, "no article has a word of its own"
    out = run("search", word, "--json")
    assert out.returncode == 0, out.stderr
    found = [json.loads(line) for line in out.stdout.splitlines()]
    assert [f["id"] for f in found] == [target[0]]
    assert found[0]["title"] == target[1]


# --- Datasette ---------------------------------------------------------------------------


def test_datasette_sees_the_search_index(db):
    app = pytest.importorskip("datasette.app", reason="datasette not installed "
                              "(pip install datasette)")
    ds = app.Datasette([str(db)], immutables=[])

    async def get(path: str) -> dict[str, object]:
        response = await ds.client.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    async def check() -> None:
        page = await ds.client.get("/x/items")
        assert page.status_code == 200
        assert 'name="_search"' in page.text  # the search box
        found = await get("/x/items.json?_search=turboprop&_shape=array")
        assert [r["guid"] for r in found] == ["g1"]
        found = await get("/x/items.json?_search=icing&_shape=array")
        assert [r["guid"] for r in found] == ["g1"]
        assert await get("/x/items.json?_search=nothinglikethis&_shape=array") == []

    asyncio.run(check())
