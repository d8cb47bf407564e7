"""Retention (issue 13, item 1): old items and old article text go, in small
transactions, and nothing a reader can still see is lost: the items of each
feed's latest document, the published window and the stories shown there.
On a real SQLite file, through the store's own write path."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import config, decide, retention
from aggregator.cli import main
from aggregator.config import Settings
from aggregator.errors import ConfigError
from aggregator.stages.cluster import cluster_pending
from aggregator.stages.prune import protected_items, prune
from aggregator.store import Store
from aggregator.types import ParsedFeed, ParsedItem, Subscription, Summary
from bench.retention import fill_day

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("clean_env")


# --- the pure rules ---------------------------------------------------------------------


def test_cutoffs_and_zero_keeps_forever():
    cut = retention.cutoffs(NOW, 90, 14)
    assert cut.items_before == NOW - timedelta(days=90)
    assert cut.text_before == NOW - timedelta(days=14)
    assert retention.cutoffs(NOW, 0, 0) == retention.Cutoffs(None, None)
    assert retention.cutoffs(NOW, 0, 14).items_before is None
    # text is never kept longer than its item
    assert retention.cutoffs(NOW, 7, 30).text_before == NOW - timedelta(days=7)
    old = NOW - timedelta(days=100)
    assert retention.prunable(1, old, cut.items_before, keep=set())
    assert not retention.prunable(1, old, cut.items_before, keep={1})
    assert not retention.prunable(1, NOW - timedelta(days=10), cut.items_before, keep=set())
    assert not retention.prunable(1, old, None, keep=set())


@pytest.mark.parametrize("key, value", [("keep_days", "-1"), ("keep_article_text_days", "x"),
                                        ("keep_days", "99999999")])
def test_nonsense_retention_settings_are_one_line_errors(key, value):
    with pytest.raises(ConfigError) as e:
        config.load(None, env={f"AGGREGATOR_{key.upper()}": value})
    assert key in str(e.value) and "\n" not in str(e.value)
    assert config.load(None, env={}).keep_days == 90
    assert config.load(None, env={}).keep_article_text_days == 14


# --- a database over 120 days -------------------------------------------------------------

SUBS = [Subscription(f"http://feed{k}.example/rss", f"Feed {k}", "News") for k in range(3)]


def _settings(**kw: object) -> Settings:
    return Settings(**{"max_entries": 10, "category_max_entries": 5, **kw})  # type: ignore[arg-type]


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """120 days, 3 feeds, 4 items a day each (a document holds the newest 20),
    each with article text and a summary, clustered into stories."""
    path = tmp_path / "month.db"
    history: dict[str, list[ParsedItem]] = {}
    with Store(path) as store:
        for day in range(120):
            fill_day(store, day, SUBS, 4, history, article_words=300, distinct_days=True)
        cluster_pending(store)
    return path


def _rows(store: Store, sql: str, *args: object) -> list[tuple]:
    return store.conn.execute(sql, args).fetchall()


def test_prune_keeps_what_readers_see_and_the_rest_in_step(filled, tmp_path):
    from bench.retention import START

    now = START + timedelta(days=120)
    settings = _settings(output=tmp_path / "out")
    with Store(filled) as store:
        from aggregator.publish import publish_from_store

        publish_from_store(settings, store)
        before_files = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
        keep = protected_items(settings, store)
        latest = {i for (v,) in _rows(store, "SELECT latest_items FROM feeds")
                  for i in json.loads(v)}
        assert len(latest) == 60 and latest <= keep  # 3 documents of 20
        published = {e.item_id for e in store.recent_entries(10)}
        assert published <= keep
        total = store.count_items()
        old = {r[0] for r in _rows(store, "SELECT id FROM items WHERE sort_date < ?",
                                   (now - timedelta(days=90)).isoformat())}
        # an old item still in its feed's document: a feed carrying an old story
        oldest = min(old)
        feed_id = _rows(store, "SELECT feed_id FROM items WHERE id = ?", oldest)[0][0]
        ids = json.loads(_rows(store, "SELECT latest_items FROM feeds "
                                             "WHERE id = ?", feed_id)[0][0])
        store.conn.execute("UPDATE feeds SET latest_items = ? WHERE id = ?",
                           (json.dumps([*ids, oldest]), feed_id))
        word = _rows(store, "SELECT title FROM items WHERE id = ?", oldest)[0][0]
        size_before = store.size()

        dry = prune(settings, store, now=now, dry_run=True)
        assert store.count_items() == total  # a dry run changes nothing
        assert dry.items == len(old) - 1 and sum(dry.items_by_feed.values()) == dry.items

        done = prune(settings, store, now=now, batch=50)
        assert (done.items, done.texts) == (dry.items, dry.texts)
        assert done.items_by_feed == dry.items_by_feed
        assert store.count_items() == total - done.items
        left = {r[0] for r in _rows(store, "SELECT id FROM items")}
        assert keep <= left and oldest in left
        assert not (old - {oldest}) & left
        # article text of items older than 14 days is gone, their summaries stay
        text_cut = (now - timedelta(days=14)).isoformat()
        assert _rows(store, "SELECT count(*) FROM items WHERE sort_date < ? AND "
                     "(article_text IS NOT NULL OR content IS NOT NULL) AND id NOT IN "
                     f"({','.join(map(str, keep | {oldest}))})", text_cut) == [(0,)]
        assert _rows(store, "SELECT count(*) FROM items WHERE summary_context IS NULL") == [(0,)]
        assert _rows(store, "SELECT count(*) FROM items WHERE sort_date >= ? "
                     "AND article_text IS NULL", text_cut) == [(0,)]
        # stories: counts match their members, none is empty, the index keys live stories
        assert _rows(store, "SELECT count(*) FROM stories s WHERE item_count != (SELECT "
                     "count(*) FROM items i WHERE i.story_id = s.id) OR source_count != "
                     "(SELECT count(DISTINCT feed_id) FROM items i WHERE i.story_id = s.id) "
                     "OR item_count = 0 OR item_id NOT IN (SELECT id FROM items)") == [(0,)]
        for table in ("story_terms", "story_keys"):
            assert _rows(store, f"SELECT count(*) FROM {table} WHERE story_id NOT IN "
                         "(SELECT id FROM stories)") == [(0,)]
        # the search index followed the deletes
        store.conn.execute("INSERT INTO items_fts(items_fts) VALUES ('integrity-check')")
        fts = {r[0] for r in _rows(store, "SELECT rowid FROM items_fts WHERE items_fts "
                                   "MATCH ?", '"' + word.split(":")[0] + '"')}
        assert fts and fts <= left
        assert store.size() < size_before * 0.8  # pages went back to the file system
        # what was published is still published, byte for byte
        publish_from_store(settings, store)
        after_files = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
        assert after_files == before_files
        # a second prune finds nothing more
        again = prune(settings, store, now=now)
        assert (again.items, again.texts) == (0, 0)


def test_a_story_loses_its_first_item_and_an_empty_story_goes(tmp_path):
    path = tmp_path / "s.db"
    days = {0: [("Volcano erupts near the town", 100.5), ("Earthquake shakes the capital", 91),
                ("Unrelated local news today", 0)],
            1: [("Volcano erupts near the town", 99.5), ("Earthquake shakes the capital", 89)]}
    with Store(path) as store:
        store.sync_subscriptions(SUBS[:2], NOW)
        for k, sub in enumerate(SUBS[:2]):
            items = [ParsedItem(f"g{k}-{n}", f"http://x{k}.example/{n}", title, None,
                                NOW - timedelta(days=age), None, None,
                                "Residents left their homes as officials warned.")
                     for n, (title, age) in enumerate(days[k])]
            store.record_feed(store.feed(sub.url).id, NOW, status=200, headers={},
                              body_hash="x", parsed=ParsedFeed(None, None, "en", None, ()),
                              items=[(decide.item_key(i), i, decide.content_hash(i))
                                     for i in items], next_fetch=NOW)
        cluster_pending(store, clock=lambda: NOW)
        store.conn.execute("UPDATE feeds SET latest_items = '[]'")  # nothing in the feeds now
        stories = dict(_rows(store, "SELECT title, story_id FROM items"))
        shared = _rows(store, "SELECT story_id, count(*), count(DISTINCT feed_id) FROM items "
                       "GROUP BY story_id ORDER BY story_id")
        assert sorted(n for _, n, _ in shared) == [1, 2, 2]  # a headline in two feeds: a story
        volcano = stories["Volcano erupts near the town"]
        quake = stories["Earthquake shakes the capital"]
        prune(_settings(max_entries=1, category_max_entries=0), store, now=NOW)
        left = _rows(store, "SELECT id, feed_id, story_id, title FROM items ORDER BY id")
        assert [t for *_, t in left] == ["Unrelated local news today",
                                         "Earthquake shakes the capital"]
        quake_item = left[1]
        assert _rows(store, "SELECT item_count, source_count, feed_ids, item_id FROM stories "
                     "WHERE id = ?", quake) == [(1, 1, f"[{quake_item[1]}]", quake_item[0])]
        assert _rows(store, "SELECT count(*) FROM stories WHERE id = ?", volcano) == [(0,)]
        for table in ("story_keys", "story_terms"):
            assert _rows(store, f"SELECT count(*) FROM {table} WHERE story_id = ?",
                         volcano) == [(0,)]


def test_cli_prune_dry_run_shows_counts_per_feed_then_prune_deletes(tmp_path, capsys,
                                                                  monkeypatch):
    db = tmp_path / "cli.db"
    now = datetime.now(UTC)
    with Store(db) as store:
        store.sync_subscriptions(SUBS[:1], now)
        fid = store.feed(SUBS[0].url).id
        old = [ParsedItem(f"o{n}", None, f"Old {n}", None, now - timedelta(days=200 + n), None,
                          "<p>old</p>", "old") for n in range(30)]
        store.record_feed(fid, now, status=200, headers={}, body_hash="1",
                          parsed=ParsedFeed(None, None, None, None, ()),
                          items=[(decide.item_key(i), i, decide.content_hash(i)) for i in old],
                          next_fetch=now)
        new = [ParsedItem("n", None, "New", None, now, None, "<p>new</p>", "new")]
        store.record_feed(fid, now, status=200, headers={}, body_hash="2",
                          parsed=ParsedFeed(None, None, None, None, ()),
                          items=[(decide.item_key(i), i, decide.content_hash(i)) for i in new],
                          next_fetch=now)
    args = ["--db", str(db), "prune"]
    monkeypatch.setenv("AGGREGATOR_MAX_ENTRIES", "5")
    monkeypatch.setenv("AGGREGATOR_CATEGORY_MAX_ENTRIES", "0")
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete 26 items" in out and "kept 4 old items" in out
    assert re.search(r"^26\s+0\s+Feed 0$", out, re.M)  # per feed
    with Store(db) as store:
        assert store.count_items() == 31
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "deleted 26 items" in out and "database" in out
    with Store(db) as store:  # the 5 published: the new one (its feed's document) and 4 old
        assert [r[0] for r in _rows(store, "SELECT title FROM items ORDER BY sort_date DESC")] \
            == ["New", "Old 0", "Old 1", "Old 2", "Old 3"]
    assert main(["--db", str(tmp_path / "none.db"), "prune"]) == 1
    assert "no database at" in capsys.readouterr().err


def test_an_existing_database_is_switched_to_incremental_vacuum(tmp_path):
    path = tmp_path / "old.db"
    with Store(path) as store:
        pass
    conn = sqlite3.connect(path, isolation_level=None)  # as a database made before m007
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    conn.execute("ALTER TABLE feeds DROP COLUMN latest_items")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm007_retention'")
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    conn.close()
    with Store(path) as store:  # the upgrade: small enough to VACUUM at once
        assert store.conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
        assert store.document_item_ids(100) == set()


def test_the_daemon_prunes_on_its_own_executor(filled, monkeypatch):
    from aggregator import daemon as daemon_module
    from bench.retention import START

    monkeypatch.setattr(daemon_module, "utcnow", lambda: START + timedelta(days=120))
    d = daemon_module.Daemon(_settings(db=filled, serve=False, publish=False))
    try:
        before = d.store.count_items()
        d._prune()  # the job as the scheduler runs it
        assert d.store.count_items() < before
        assert "prune" in d._jobs
    finally:
        d.fetcher.close()
        d.store.close()


def test_unknown_document_keeps_the_newest_of_each_feed(tmp_path):
    path = tmp_path / "u.db"
    with Store(path) as store:
        store.sync_subscriptions(SUBS[:1], NOW)
        fid = store.feed(SUBS[0].url).id
        items = [ParsedItem(f"u{n}", None, f"U {n}", None, NOW - timedelta(days=300 + n), None,
                            None, "t") for n in range(150)]
        store.record_feed(fid, NOW, status=200, headers={}, body_hash="1",
                          parsed=ParsedFeed(None, None, None, None, ()),
                          items=[(decide.item_key(i), i, decide.content_hash(i)) for i in items],
                          next_fetch=NOW)
        store.conn.execute("UPDATE feeds SET latest_items = NULL")  # from before m007
        prune(_settings(max_entries=1, category_max_entries=0), store, now=NOW)
        assert store.count_items() == retention.UNKNOWN_DOCUMENT_KEEP
        assert _rows(store, "SELECT min(title) FROM items WHERE title = 'U 0'") == [("U 0",)]


def test_summary_text_is_kept_when_article_text_goes(tmp_path):
    path = tmp_path / "t.db"
    with Store(path) as store:
        store.sync_subscriptions(SUBS[:1], NOW)
        fid = store.feed(SUBS[0].url).id
        items = [ParsedItem(f"t{n}", f"http://t.example/{n}", f"T {n}", None,
                            NOW - timedelta(days=20 + n), None, "<p>html</p>", "text")
                 for n in range(3)]
        store.record_feed(fid, NOW, status=200, headers={}, body_hash="1",
                          parsed=ParsedFeed(None, None, None, None, ()),
                          items=[(decide.item_key(i), i, decide.content_hash(i)) for i in items],
                          next_fetch=NOW)
        store.conn.execute("UPDATE feeds SET latest_items = '[]'")
        for (item_id, h) in _rows(store, "SELECT id, content_hash FROM items"):
            store.save_article(item_id, "ok", "article words")
            store.save_summary(item_id, h, Summary(("Context.",), ("Point.",), "default:x"),
                               NOW, source="article")
        report = prune(_settings(max_entries=1, category_max_entries=0), store, now=NOW)
        assert (report.items, report.texts) == (0, 2)
        rows = _rows(store, "SELECT title, article_text, content, content_text, "
                     "summary_context FROM items ORDER BY title")
        assert rows == [("T 0", "article words", "<p>html</p>", "text", "Context."),
                        ("T 1", None, None, "text", "Context."),
                        ("T 2", None, None, "text", "Context.")]
        # and they are not summarised again for it
        assert store.pending_summaries(10) == []


def test_prune_merges_the_search_index_so_it_shrinks_with_the_items(filled, monkeypatch):
    """Deleting rows leaves their entries in the FTS5 index until segments merge;
    prune's bounded merge drops them, so the index shrinks with what is left (without
    it, the index of a database kept at a steady size grows day after day). Searching
    still finds what is left and nothing that went."""
    from bench.retention import START

    def index_bytes(store: Store) -> int:
        return _rows(store, "SELECT coalesce(sum(length(block)), 0) FROM items_fts_data")[0][0]

    now = START + timedelta(days=120)
    with Store(filled) as store:
        before = index_bytes(store)
        report = prune(_settings(keep_days=30, keep_article_text_days=10), store, now=now)
        assert report.items > 1000
        after = index_bytes(store)
        left = _rows(store, "SELECT count(*) FROM items")[0][0]
        assert after < before * 0.6, (before, after)
        assert _rows(store, "INSERT INTO items_fts(items_fts) VALUES ('integrity-check')") == []
        some = _rows(store, "SELECT id, title FROM items ORDER BY id DESC LIMIT 1")[0]
        word = max(some[1].split(), key=len)
        found = {r[0] for r in store.conn.execute(
            "SELECT rowid FROM items_fts WHERE items_fts MATCH ?", (f'"{word}"',))}
        assert some[0] in found and found <= {r[0] for r in _rows(store, "SELECT id FROM items")}
        assert left == len(_rows(store, "SELECT id FROM items"))
