"""The schema and its migrations (sqlite-utils ``Migrations``): every change to the
file's tables goes through one of these, recorded in ``_sqlite_migrations``."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils
from aggregator.store import retention as storeretention
from aggregator.store import search as storesearch

# sqlite-utils (and numpy, which it imports when installed) costs a CLI run
# 0.05-0.15 s of start-up; it is imported only when a migration is pending
# never on the polling path.
MIGRATION_SET = "aggregator"
MIGRATIONS: list[Any] = []


def migration(fn: Any) -> Any:
    """Register a schema migration; they run in the order they are defined."""
    MIGRATIONS.append(fn)
    return fn


def _sqlite_utils() -> Any:
    """sqlite-utils, for migrations only (a new or older database). It imports
    numpy and pandas when installed, only to convert their values on insert,
    which the aggregator never hands it: about 0.2 s of every cold start (a
    summary's dependencies bring numpy in anyway). They stay importable."""
    from aggregator._imports import load_without

    load_without(("numpy", "pandas"), ("sqlite_utils",))
    import sqlite_utils

    return sqlite_utils


def migration_set() -> Any:
    """The registered migrations as a sqlite-utils ``Migrations`` set."""
    migrations = _sqlite_utils().Migrations(MIGRATION_SET)
    for fn in MIGRATIONS:
        migrations()(fn)
    return migrations


def _pending(conn: sqlite3.Connection) -> bool:
    try:
        applied = {r[0] for r in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", (MIGRATION_SET,))}
    except sqlite3.OperationalError:  # no table: a new database
        return True
    return any(fn.__name__ not in applied for fn in MIGRATIONS)


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the pending migrations in one write transaction: a second process
    opening the same new database waits for it (busy timeout), then finds
    nothing left to do, instead of racing it to create the tables."""
    sqlite_utils = _sqlite_utils()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _pending(conn):
            migration_set().apply(sqlite_utils.Database(conn))  # savepoints inside ours
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE feeds (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL UNIQUE,
            origin_url TEXT NOT NULL,
            title TEXT,
            feed_title TEXT,
            site_url TEXT,
            category TEXT,
            language TEXT,
            active INTEGER NOT NULL DEFAULT 1,
            state TEXT NOT NULL DEFAULT 'new',
            fetch_articles INTEGER,
            etag TEXT,
            last_modified TEXT,
            body_hash TEXT,
            ttl_minutes INTEGER,
            added_at TEXT NOT NULL,
            last_fetch TEXT,
            last_status INTEGER,
            last_success TEXT,
            next_fetch TEXT,
            error_count INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            feed_id INTEGER NOT NULL REFERENCES feeds(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            guid TEXT,
            url TEXT,
            title TEXT,
            author TEXT,
            published TEXT,
            updated TEXT,
            content TEXT,
            content_text TEXT,
            categories TEXT NOT NULL DEFAULT '[]',
            language TEXT,
            first_seen TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            sort_date TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            article_status TEXT,
            article_text TEXT,
            summary_context TEXT,
            summary_points TEXT,
            summary_method TEXT,
            summary_hash TEXT,
            summarized_at TEXT,
            UNIQUE (feed_id, key)
        )
        """
    )
    db.execute("CREATE INDEX items_sort_date ON items (sort_date DESC)")
    db.execute("CREATE INDEX items_to_summarize ON items (summary_hash) WHERE summary_hash IS NULL")
    db.execute("CREATE INDEX feeds_next_fetch ON feeds (active, next_fetch)")
    db.execute("CREATE INDEX feeds_category ON feeds (category)")


@migration
def m002_items_newest_first(db: sqlite_utils.Database) -> None:
    """Publishing reads items "sort_date DESC, id DESC". An ascending index
    read backwards gives exactly that order (the rowid is its last column), so
    SQLite stops after the first N rows; the DESC index it replaces ran rowid
    the other way and every publish sorted every item (0.15 s per query at
    100,000 items)."""
    db.execute("DROP INDEX IF EXISTS items_sort_date")
    db.execute("CREATE INDEX items_sort_date ON items (sort_date)")


@migration
def m003_article_retries_private_feeds(db: sqlite_utils.Database) -> None:
    """Failed article fetches are tried again (how often so far, when next); a
    summary records what text it was made from (``item`` or ``article``), so an
    article that arrives after a teaser's summary makes it stale; a feed can be
    marked private in feeds.opml (its URL is never published)."""
    db.execute("ALTER TABLE items ADD COLUMN article_tries INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE items ADD COLUMN article_retry_at TEXT")
    db.execute("ALTER TABLE items ADD COLUMN summary_source TEXT")
    db.execute("ALTER TABLE feeds ADD COLUMN private INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE items SET article_tries = 1 WHERE article_status IS NOT NULL")
    db.execute("UPDATE items SET summary_source = CASE WHEN article_status = 'ok' "
               "THEN 'article' ELSE 'item' END WHERE summary_hash IS NOT NULL")
    db.execute("CREATE INDEX items_article_retry ON items (article_retry_at) "
               "WHERE article_retry_at IS NOT NULL")


@migration
def m004_feed_summarizer(db: sqlite_utils.Database) -> None:
    """A feed's outline may name its own summary method (``summarizer="lexrank"``)."""
    db.execute("ALTER TABLE feeds ADD COLUMN summarizer TEXT")


@migration
def m005_stories(db: sqlite_utils.Database) -> None:
    """Stories: items telling one story across feeds (``stories.py``)."""
    db.execute(
        """
        CREATE TABLE stories (
            id INTEGER PRIMARY KEY,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            title TEXT,
            item_id INTEGER,
            item_count INTEGER NOT NULL DEFAULT 0,
            source_count INTEGER NOT NULL DEFAULT 0,
            feed_ids TEXT NOT NULL DEFAULT '[]',
            centroid TEXT NOT NULL DEFAULT '{}',
            has_text INTEGER NOT NULL DEFAULT 0,
            retired INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX stories_last_seen ON stories (last_seen)")
    db.execute("ALTER TABLE items ADD COLUMN story_id INTEGER REFERENCES stories(id)")
    db.execute("CREATE INDEX items_story ON items (story_id)")
    db.execute("CREATE INDEX items_unclustered ON items (sort_date, id) WHERE story_id IS NULL")
    db.execute("CREATE TABLE story_terms (term TEXT NOT NULL, story_id INTEGER NOT NULL, "
               "PRIMARY KEY (term, story_id)) WITHOUT ROWID")
    db.execute("CREATE INDEX story_terms_story ON story_terms (story_id)")
    db.execute("CREATE TABLE story_keys (key TEXT PRIMARY KEY, story_id INTEGER NOT NULL) "
               "WITHOUT ROWID")
    db.execute("CREATE TABLE story_df (term TEXT PRIMARY KEY, df REAL NOT NULL) WITHOUT ROWID")


@migration
def m006_search(db: sqlite_utils.Database) -> None:
    """Full-text search: ``items_fts``, an FTS5 index over the items' title,
    text, Context and article, kept in step by triggers and filled from the
    items already stored (see search.py)."""
    storesearch.create(db.conn)


@migration
def m007_retention(db: sqlite_utils.Database) -> None:
    """Retention: each feed remembers the items of its latest document, and the
    file asks for incremental vacuum (see retention.py)."""
    storeretention.migrate(db.conn)


@migration
def m008_media(db: sqlite_utils.Database) -> None:
    """Enclosures, media:content and media:thumbnail of each item: the
    ``enclosures`` table (see media.py)."""
    from aggregator.store import media as storemedia

    storemedia.create(db.conn)


@migration
def m009_story_names(db: sqlite_utils.Database) -> None:
    """``stories.names``: the centroid of the members' names and numbers (JSON
    term -> weight), which an item with text must agree with to join a story
    (stories.py: same event against same topic); story_keys by story, for
    merging stories."""
    db.execute("ALTER TABLE stories ADD COLUMN names TEXT NOT NULL DEFAULT '{}'")
    # two stories that grow together merge: the gone story's keys move to the kept one
    db.execute("CREATE INDEX story_keys_story ON story_keys (story_id)")



@migration
def m010_leases(db: sqlite_utils.Database) -> None:
    """The schedule's claims (store/feeds.py ``claim_due``): a feed being polled
    is leased (``lease_until``, ``lease_holder``) so no other pass or worker
    polls it too, and ``poll_seq`` counts the claims, so the result of a claim
    that expired and was claimed again is told apart and changes nothing."""
    db.execute("ALTER TABLE feeds ADD COLUMN poll_seq INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE feeds ADD COLUMN lease_until TEXT")
    db.execute("ALTER TABLE feeds ADD COLUMN lease_holder TEXT")
    # few feeds are leased at once: sweeps and `leased` read only those
    db.execute("CREATE INDEX feeds_leased ON feeds (lease_until) WHERE lease_until IS NOT NULL")
