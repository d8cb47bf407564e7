"""The only module that touches SQLite: schema, migrations, every query.

One writer at a time (SQLite's rule); WAL mode so ``sqlite3``, Datasette or a
publisher read the file while the daemon writes it. Each thread opens its own
Store. Every change a pass makes to one feed is one transaction, so a killed
process leaves either the old state or the new one, never half.

Timestamps are ISO-8601 UTC text (``2026-11-25T23:03:00+00:00``), which sorts
as text and reads as a date in any SQL tool.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator import decide, storeretention, storesearch
from aggregator.errors import StorageError
from aggregator.storemedia import MediaMixin
from aggregator.storemetrics import MetricsMixin
from aggregator.storeretention import RetentionMixin
from aggregator.storestories import StoriesMixin
from aggregator.types import Entry, ParsedFeed, ParsedItem, Subscription, Summary

if TYPE_CHECKING:
    import sqlite_utils

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
    """Stories: items telling one story across feeds (``storestories.py``)."""
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
    items already stored (see storesearch.py)."""
    storesearch.create(db.conn)


@migration
def m007_retention(db: sqlite_utils.Database) -> None:
    """Retention: each feed remembers the items of its latest document, and the
    file asks for incremental vacuum (see storeretention.py)."""
    storeretention.migrate(db.conn)


@migration
def m008_media(db: sqlite_utils.Database) -> None:
    """Enclosures, media:content and media:thumbnail of each item: the
    ``enclosures`` table (see storemedia.py)."""
    from aggregator import storemedia

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


def iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds")


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class FeedRow:
    """A feed as stored: subscription plus polling state."""

    id: int
    url: str
    title: str | None
    feed_title: str | None
    site_url: str | None
    category: str | None
    language: str | None
    active: bool
    state: str
    fetch_articles: bool | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    ttl_minutes: int | None
    last_fetch: datetime | None
    last_status: int | None
    last_success: datetime | None
    next_fetch: datetime | None
    error_count: int
    last_error: str | None
    item_count: int = 0

    @property
    def name(self) -> str:
        return self.title or self.feed_title or self.url


@dataclass(frozen=True)
class PendingItem:
    """An item whose summary is missing or out of date."""

    id: int
    feed_id: int
    feed_url: str
    url: str | None
    title: str | None
    content_text: str | None
    content_hash: str
    language: str | None
    fetch_articles: bool | None
    article_status: str | None
    article_text: str | None
    article_tries: int = 0
    article_retry_at: datetime | None = None
    summary_hash: str | None = None
    summary_source: str | None = None
    summarizer: str | None = None  # the feed's own method; None: the setting
    summary_method: str | None = None  # what made the summary there now


_FEED_COLUMNS = (
    "id, url, title, feed_title, site_url, category, language, active, state, fetch_articles, "
    "etag, last_modified, body_hash, ttl_minutes, last_fetch, last_status, last_success, "
    "next_fetch, error_count, last_error"
)


def _feed(row: sqlite3.Row | tuple[Any, ...], item_count: int = 0) -> FeedRow:
    (id_, url, title, feed_title, site_url, category, language, active, state, fetch_articles,
     etag, last_modified, body_hash, ttl, last_fetch, last_status, last_success, next_fetch,
     error_count, last_error) = tuple(row)[:20]
    return FeedRow(
        id=id_, url=url, title=title, feed_title=feed_title, site_url=site_url,
        category=category, language=language, active=bool(active), state=state,
        fetch_articles=None if fetch_articles is None else bool(fetch_articles),
        etag=etag, last_modified=last_modified, body_hash=body_hash, ttl_minutes=ttl,
        last_fetch=from_iso(last_fetch), last_status=last_status,
        last_success=from_iso(last_success), next_fetch=from_iso(next_fetch),
        error_count=error_count, last_error=last_error, item_count=item_count,
    )


@dataclass(frozen=True)
class ItemCounts:
    new: int = 0
    changed: int = 0


# A write waits this long for another writer (an `update` beside the daemon, a
# sqlite3 shell in a transaction) before it fails as a StorageError. The daemon
# retries at its next pass, so a lock held for 30 s costs one failed pass, not a
# pass stuck for as long as the lock lasts (WAL readers never wait at all).
BUSY_TIMEOUT = 10.0

def _check_whole(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not, or no longer, a whole SQLite database before
    SQLite or a migration writes a byte to it: garbage, another kind of file,
    one cut short. An empty file is a new database; a file with a write-ahead
    log beside it is left to SQLite, which replays the log. Everything is read
    through SQLite and os.stat: opening the file ourselves and closing it would
    drop every SQLite lock this process holds on it (POSIX locks die with any
    close of the file), and the daemon keeps connections open."""
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header and schema
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    except sqlite3.DatabaseError as e:
        if "not a database" not in str(e) and "malformed" not in str(e):
            raise  # locked, unreadable: "cannot open database", below
        conn.close()
        raise StorageError(f"not a SQLite database: {path} ({e})") from e
    try:
        size = path.stat().st_size
        wal = Path(f"{path}-wal")
        if size == 0 or (wal.exists() and wal.stat().st_size > 0):
            return
    except FileNotFoundError:
        return
    if size % page or size < pages * page:
        conn.close()
        raise StorageError(f"not a SQLite database: {path} "
                           f"(truncated: {size} of {pages * page} bytes)")


# one article fetch's outcome (status, text, retry_at), as save_article writes it
_ARTICLE_SQL = ("article_status = ?, article_text = ?, article_tries = article_tries + 1, "
                "article_retry_at = ?")


class Store(StoriesMixin, RetentionMixin, MediaMixin, MetricsMixin):
    def __init__(self, path: Path, *, readonly: bool = False,
                 busy_timeout: float | None = None) -> None:
        self.path = path
        self.busy_timeout = BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        existed = path.exists() and path.stat().st_size > 0
        try:
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                f"file:{path}?mode=ro" if readonly else str(path),
                uri=readonly,
                timeout=self.busy_timeout,
                isolation_level=None,  # we open transactions ourselves
                check_same_thread=False,
            )
            _check_whole(conn, path)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not readonly:
                pending = _pending(conn)
                if pending and existed:  # an upgrade: never migrate a damaged file
                    check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                    if check != "ok":
                        conn.close()
                        raise StorageError(f"not a SQLite database: {path} (damaged: {check})")
                if not existed:  # before the first table: no VACUUM needed to set it
                    conn.execute(f"PRAGMA auto_vacuum = {storeretention.INCREMENTAL}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StorageError(f"{path}: cannot switch to WAL mode (got {mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
                if pending:
                    _migrate(conn)
                    storeretention.after_migrate(conn, path)
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e) or "malformed" in str(e):
                raise StorageError(f"not a SQLite database: {path} ({e})") from e
            raise StorageError(f"cannot open database {path}: {e}") from e
        except OSError as e:
            raise StorageError(f"cannot open database {path}: {e.strerror}") from e
        self.conn = conn

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StorageError(f"database {self.path} is locked by another writer "
                                   f"(waited {self.busy_timeout:g} s)") from e
            raise StorageError(f"database {self.path} is busy or read-only: {e}") from e
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as e:
            if self.conn.in_transaction:  # SQLite may have rolled back already (disk full)
                self.conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"cannot write database {self.path}: {e}") from e
            raise

    # --- health ------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            return self.conn.execute("SELECT 1").fetchone() == (1,)
        except sqlite3.Error:
            return False

    # --- subscriptions ---------------------------------------------------------------

    def sync_subscriptions(self, subs: Sequence[Subscription], now: datetime) -> dict[str, int]:
        """Make the feeds table follow feeds.opml: new outlines become feeds,
        removed ones become inactive (their items stay), returning ones wake up."""
        wanted = {s.url: s for s in subs}
        counts = {"added": 0, "deactivated": 0, "reactivated": 0}
        with self.transaction() as c:
            existing = {url: (id_, active) for id_, url, active in
                        c.execute("SELECT id, url, active FROM feeds")}
            for url, sub in wanted.items():
                fetch_articles = None if sub.fetch_articles is None else int(sub.fetch_articles)
                if url not in existing:
                    c.execute(
                        "INSERT INTO feeds (url, origin_url, title, category, site_url, "
                        "fetch_articles, private, added_at, next_fetch, summarizer) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (url, url, sub.title, sub.category, sub.html_url, fetch_articles,
                         int(sub.private), iso(now), iso(now), sub.summarizer),
                    )
                    counts["added"] += 1
                else:
                    id_, active = existing[url]
                    c.execute(
                        "UPDATE feeds SET title = ?, category = ?, fetch_articles = ?, "
                        "private = ?, active = 1, site_url = coalesce(site_url, ?), "
                        "summarizer = ? WHERE id = ?",
                        (sub.title, sub.category, fetch_articles, int(sub.private),
                         sub.html_url, sub.summarizer, id_),
                    )
                    if not active:  # subscribed again: a fresh start, even after a 410
                        counts["reactivated"] += 1
                        self._revive(c, id_, now)
            for url, (id_, active) in existing.items():
                if url not in wanted and active:
                    c.execute("UPDATE feeds SET active = 0 WHERE id = ?", (id_,))
                    counts["deactivated"] += 1
        return counts

    @staticmethod
    def _revive(c: sqlite3.Connection, feed_id: int, now: datetime) -> None:
        c.execute(
            "UPDATE feeds SET state = CASE WHEN state = 'ok' THEN 'ok' ELSE 'new' END, "
            "error_count = 0, last_error = NULL, next_fetch = ? WHERE id = ?",
            (iso(now), feed_id),
        )

    def revive_feed(self, url: str, now: datetime) -> bool:
        """Poll a feed again from now on: a ``gone`` (410) or failing feed goes
        back to ``new`` with no errors counted. False when no feed has that URL."""
        with self.transaction() as c:
            row = c.execute("SELECT id FROM feeds WHERE url = ?", (url,)).fetchone()
            if row is None:
                return False
            self._revive(c, row[0], now)
        return True

    def feeds(self, *, active_only: bool = False) -> list[FeedRow]:
        where = "WHERE f.active = 1" if active_only else ""
        rows = self.conn.execute(
            f"SELECT {', '.join('f.' + c.strip() for c in _FEED_COLUMNS.split(','))}, "
            "(SELECT count(*) FROM items i WHERE i.feed_id = f.id) "
            f"FROM feeds f {where} ORDER BY f.category, coalesce(f.title, f.feed_title, f.url)"
        ).fetchall()
        return [_feed(r, r[20]) for r in rows]

    def feed(self, url: str) -> FeedRow | None:
        row = self.conn.execute(f"SELECT {_FEED_COLUMNS} FROM feeds WHERE url = ?",
                                (url,)).fetchone()
        return _feed(row) if row else None

    def due_feeds(self, now: datetime, *, all_feeds: bool = False,
                  early: timedelta = timedelta(0),
                  min_gap: timedelta = timedelta(0)) -> list[FeedRow]:
        """Active feeds whose next fetch has come (or every active one), minus gone
        ones. With ``early``, also those due within ``early`` of ``now`` whose last
        fetch is at least ``min_gap`` ago (see update.poll_slack)."""
        sql = f"SELECT {_FEED_COLUMNS} FROM feeds WHERE active = 1 AND state != 'gone'"
        args: tuple[Any, ...] = ()
        if not all_feeds:
            sql += (" AND (next_fetch IS NULL OR next_fetch <= ? OR (next_fetch <= ? "
                    "AND (last_fetch IS NULL OR last_fetch <= ?)))")
            args = (iso(now), iso(now + max(early, timedelta(0))), iso(now - min_gap))
        return [_feed(r) for r in self.conn.execute(sql + " ORDER BY next_fetch", args)]

    def next_due(self) -> datetime | None:
        row = self.conn.execute(
            "SELECT min(next_fetch) FROM feeds WHERE active = 1 AND state != 'gone'"
        ).fetchone()
        return from_iso(row[0]) if row else None

    def rewind_schedule(self, now: datetime) -> int:
        """Feeds last fetched "after" ``now`` (the clock went back): move their
        times back by ``decide.after_clock_went_back``; returns how many moved.
        Without a change to make it is one read and no write."""
        from aggregator.decide import after_clock_went_back

        stamp = iso(now)
        rows = self.conn.execute(
            "SELECT id, last_fetch, next_fetch, last_fetch IS NULL FROM feeds "
            "WHERE last_fetch > ? OR (last_fetch IS NULL AND next_fetch > ?)",
            (stamp, stamp)).fetchall()
        changes = []
        for id_, last_fetch, next_fetch, never in rows:
            moved = after_clock_went_back(now, from_iso(last_fetch), from_iso(next_fetch))
            if moved is not None:
                changes.append((None if never else iso(moved[0]), iso(moved[1]), id_))
        if changes:
            with self.transaction() as c:
                c.executemany("UPDATE feeds SET last_fetch = ?, next_fetch = ? WHERE id = ?",
                              changes)
        return len(changes)

    def move_feed(self, old: str, new: str, *, private: bool = False) -> None:
        """A permanent redirect: the feed keeps its id, items and state under ``new``.
        ``private``: the feed stays private under ``new`` (its old URL was)."""
        with self.transaction() as c:
            clash = c.execute("SELECT id FROM feeds WHERE url = ?", (new,)).fetchone()
            if clash:
                # The new URL was followed already: keep that row, retire the old one.
                c.execute("UPDATE feeds SET active = 0 WHERE url = ?", (old,))
                c.execute("UPDATE feeds SET active = 1, private = max(private, ?) "
                          "WHERE url = ?", (int(private), new))
            else:
                c.execute("UPDATE feeds SET url = ?, private = max(private, ?) WHERE url = ?",
                          (new, int(private), old))

    # --- the outcome of one fetch ------------------------------------------------------

    def record_not_modified_many(
        self, rows: Sequence[tuple[int, datetime, int, datetime, dict[str, str]]]) -> None:
        """Several 304s in one transaction: (feed id, now, status, next fetch,
        headers) each. A 304 changes nothing but times and validators, so
        losing a batch to a crash only means those feeds are asked again."""
        if not rows:
            return
        with self.transaction() as c:
            c.executemany(
                "UPDATE feeds SET last_fetch = ?, last_status = ?, last_success = ?, "
                "next_fetch = ?, error_count = 0, last_error = NULL, state = 'ok', "
                "etag = coalesce(?, etag), last_modified = coalesce(?, last_modified) "
                "WHERE id = ?",
                [(iso(now), status, iso(now), iso(next_fetch), headers.get("etag"),
                  headers.get("last-modified"), feed_id)
                 for feed_id, now, status, next_fetch, headers in rows],
            )

    def record_error(self, feed_id: int, now: datetime, *, status: int | None, error: str,
                     next_fetch: datetime | None, state: str = "error") -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE feeds SET last_fetch = ?, last_status = ?, next_fetch = ?, "
                "error_count = error_count + 1, last_error = ?, state = ? WHERE id = ?",
                (iso(now), status, iso(next_fetch), error[:1000], state, feed_id),
            )

    def record_feed(
        self,
        feed_id: int,
        now: datetime,
        *,
        status: int,
        headers: dict[str, str],
        body_hash: str,
        parsed: ParsedFeed | None,
        items: Sequence[tuple[str, ParsedItem, str]],
        next_fetch: datetime,
    ) -> ItemCounts:
        """Store one fetched document: feed metadata, validators and every new or
        changed item, in one transaction. ``items`` are (key, item, content_hash);
        ``parsed`` None means the body was identical to the last one."""
        with self.transaction() as c:
            counts = self._upsert_items(c, feed_id, items, now) if items else ItemCounts()
            meta: tuple[Any, ...] = (None, None, None, None)
            if parsed is not None:
                meta = (parsed.title, parsed.site_url, parsed.language, parsed.ttl_minutes)
            c.execute(
                "UPDATE feeds SET last_fetch = ?, last_status = ?, last_success = ?, "
                "next_fetch = ?, error_count = 0, last_error = ?, state = 'ok', "
                "etag = coalesce(?, etag), last_modified = coalesce(?, last_modified), "
                "body_hash = ?, "
                "feed_title = coalesce(?, feed_title), site_url = coalesce(?, site_url), "
                "language = coalesce(?, language), ttl_minutes = coalesce(?, ttl_minutes) "
                "WHERE id = ?",
                (iso(now), status, iso(now), iso(next_fetch),
                 parsed.warning if parsed is not None else None,
                 headers.get("etag"), headers.get("last-modified"), body_hash, *meta, feed_id),
            )
        return counts

    def _upsert_items(self, c: sqlite3.Connection, feed_id: int,
                      items: Sequence[tuple[str, ParsedItem, str]], now: datetime) -> ItemCounts:
        known, items = self._settle_keys(c, feed_id, items)
        new_rows = []
        changed_rows = []
        new_media: list[tuple[str, ParsedItem]] = []
        changed_media: list[tuple[int, ParsedItem]] = []
        stamp = iso(now)
        for key, item, h in items:
            fields = (
                item.guid, item.url, item.title, item.author, iso(item.published),
                iso(item.updated), item.content, item.content_text,
                json.dumps(list(item.categories), ensure_ascii=False), item.language,
            )
            if key not in known:
                sort_date = iso(item.published or item.updated) or stamp
                new_rows.append((feed_id, key, *fields, stamp, stamp, sort_date, h))
                new_media.append((key, item))
            elif known[key][1] != h:
                changed_rows.append((*fields, stamp, h, known[key][0]))
                changed_media.append((known[key][0], item))
        if new_rows:
            c.executemany(
                "INSERT INTO items (feed_id, key, guid, url, title, author, published, updated, "
                "content, content_text, categories, language, first_seen, changed_at, "
                "sort_date, content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                new_rows,
            )
        if changed_rows:
            # the summary stays until a new one is written; summary_hash tells it is stale
            c.executemany(
                "UPDATE items SET guid = ?, url = ?, title = ?, author = ?, published = ?, "
                "updated = ?, content = ?, content_text = ?, categories = ?, language = ?, "
                "changed_at = ?, content_hash = ? WHERE id = ?",
                changed_rows,
            )
        self._remember_document(c, feed_id, [key for key, _, _ in items])
        self._save_media(c, feed_id, new_media, changed_media)
        return ItemCounts(new=len(new_rows), changed=len(changed_rows))

    @staticmethod
    def _settle_keys(
        c: sqlite3.Connection, feed_id: int, items: Sequence[tuple[str, ParsedItem, str]],
    ) -> tuple[dict[str, tuple[int, str]], list[tuple[str, ParsedItem, str]]]:
        """The stored rows (key -> (id, content_hash)) the items meet, and the items
        under the keys they are stored with (``decide.settle_keys``): a row keeps
        belonging to the story it was first written for."""
        stored: dict[str, tuple[int, str, str | None, str | None]] = {}

        def load(sql: str, args: Sequence[Any]) -> None:
            for id_, key, h, url, title in c.execute(
                    "SELECT id, key, content_hash, url, title FROM items WHERE feed_id = ? "
                    "AND " + sql, (feed_id, *args)):
                stored[key] = (id_, h, url, title)

        bases = {k: decide.item_key(item) for k, item, _ in items}
        wanted = sorted({*bases, *bases.values()})
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            load(f"key IN ({','.join('?' * len(chunk))})", chunk)
        # a guid shared by several stories: also read the suffixed keys of that guid
        shared = {base for key, item, _ in items
                  if key != (base := bases[key])
                  or (base in stored and not decide.same_story(stored[base][2:], item))}
        for base in sorted(shared):
            load("key > ? AND key < ?", (base + "#", base + "$"))  # '$' follows '#'
        settled = decide.settle_keys([(k, item) for k, item, _ in items],
                                     {k: (v[2], v[3]) for k, v in stored.items()})
        hashes = {id(item): h for _, item, h in items}
        return ({k: (v[0], v[1]) for k, v in stored.items()},
                [(k, item, hashes[id(item)]) for k, item in settled])

    # --- summaries -------------------------------------------------------------------

    def pending_summaries(self, limit: int = 100, *, now: datetime | None = None,
                          exclude: Sequence[int] = (), method: str | None = None,
                          window: int = 0) -> list[PendingItem]:
        """Items to work on, newest first: the summary is missing, was made from
        older content, or from the item's own text while the article is now
        there; or (with ``now``) a failed article fetch is due to be retried and
        article fetching is not off for the feed; or (with ``method``) one of the
        newest ``window`` items was summarised by another method than its feed's
        (else ``method``). ``exclude``: ids to skip."""
        return list(self._pending(now, exclude, limit, "i.article_text", method, window))

    def pending_overview(self, *, now: datetime | None = None, method: str | None = None,
                         window: int = 0) -> Iterator[PendingItem]:
        """Every item ``pending_summaries`` would return, in no order, read one at a
        time and without the article text: enough to count the backlog."""
        return self._pending(now, (), None, "NULL", method, window)

    def _pending(self, now: datetime | None, exclude: Sequence[int], limit: int | None,
                 article_text: str, method: str | None, window: int) -> Iterator[PendingItem]:
        where = ("(i.summary_hash IS NULL OR i.summary_hash != i.content_hash "
                 "OR (i.article_status = 'ok' AND i.summary_source IS NOT 'article')")
        args: list[Any] = []
        if method is not None and window > 0:
            # lead:<code> (a language without scoring: "lead:tr", not "lead:english")
            # and none:* (an empty text) come out of any method: not stale.
            where += (" OR (i.summary_method NOT LIKE coalesce(f.summarizer, ?) || ':%' "
                      "AND NOT (i.summary_method LIKE 'lead:%' AND length(i.summary_method) <= 8) "
                      "AND i.summary_method NOT LIKE 'none:%' "
                      "AND i.id IN (SELECT id FROM items ORDER BY sort_date DESC LIMIT ?))")
            args.extend((method, window))
        if now is not None:
            where += (" OR (i.article_retry_at <= ? AND i.url IS NOT NULL "
                      "AND coalesce(f.fetch_articles, 1) != 0)")
            args.append(iso(now))
        where += ")"
        if exclude:
            where += f" AND i.id NOT IN ({','.join('?' * len(exclude))})"
            args.extend(exclude)
        tail = ""
        if limit is not None:
            tail = " ORDER BY i.sort_date DESC LIMIT ?"
            args.append(limit)
        rows = self.conn.execute(
            "SELECT i.id, i.feed_id, f.url, i.url, i.title, i.content_text, i.content_hash, "
            "coalesce(i.language, f.language), f.fetch_articles, i.article_status, "
            f"{article_text}, i.article_tries, i.article_retry_at, i.summary_hash, "
            "i.summary_source, f.summarizer, i.summary_method "
            "FROM items i JOIN feeds f ON f.id = i.feed_id "
            f"WHERE {where}{tail}", args)
        return (
            PendingItem(id=r[0], feed_id=r[1], feed_url=r[2], url=r[3], title=r[4],
                        content_text=r[5], content_hash=r[6], language=r[7],
                        fetch_articles=None if r[8] is None else bool(r[8]),
                        article_status=r[9], article_text=r[10], article_tries=r[11] or 0,
                        article_retry_at=from_iso(r[12]), summary_hash=r[13],
                        summary_source=r[14], summarizer=r[15], summary_method=r[16])
            for r in rows
        )

    def save_article(self, item_id: int, status: str, text: str | None, *,
                     retry_at: datetime | None = None) -> None:
        """One article fetch's outcome; ``retry_at``: when to try a failed one again."""
        with self.transaction() as c:
            c.execute(f"UPDATE items SET {_ARTICLE_SQL} WHERE id = ?",
                      (status[:500], text, iso(retry_at), item_id))

    def save_summary(self, item_id: int, content_hash: str, summary: Summary,
                     now: datetime, *, source: str = "item",
                     article: tuple[str, str | None, datetime | None] | None = None) -> bool:
        """Write a summary unless the item changed meanwhile (then it is redone later).
        ``source``: the text it was made from, ``item`` or ``article``. ``article``
        (status, text, retry_at), when given, is the article fetch it was made
        after, saved in the same statement (as ``save_article`` would, and saved
        even when the summary is not): the search index is rewritten once for
        both, not once for each."""
        summary_sql = ("summary_context = ?, summary_points = ?, summary_method = ?, "
                       "summary_hash = ?, summary_source = ?, summarized_at = ?")
        summary_args = (" ".join(summary.context) or None,
                        json.dumps(list(summary.points), ensure_ascii=False),
                        summary.method, content_hash, source, iso(now))
        with self.transaction() as c:
            if article is None:
                cur = c.execute(f"UPDATE items SET {summary_sql} WHERE id = ? AND content_hash = ?",
                                (*summary_args, item_id, content_hash))
                return cur.rowcount > 0
            status, text, retry_at = article
            article_args = (status[:500], text, iso(retry_at))
            cur = c.execute(f"UPDATE items SET {_ARTICLE_SQL}, {summary_sql} "
                            "WHERE id = ? AND content_hash = ?",
                            (*article_args, *summary_args, item_id, content_hash))
            if cur.rowcount > 0:
                return True
            c.execute(f"UPDATE items SET {_ARTICLE_SQL} WHERE id = ?", (*article_args, item_id))
            return False

    # --- publishing -------------------------------------------------------------------

    def recent_entries(self, limit: int, *, category: str | None = None) -> list[Entry]:
        """The newest items of active feeds, newest first."""
        sql = _ENTRY_SELECT + "WHERE f.active = 1 "
        args: list[Any] = []
        if category is not None:
            sql += "AND f.category = ? "
            args.append(category)
        sql += "ORDER BY i.sort_date DESC, i.id DESC LIMIT ?"
        args.append(limit)
        return self.with_media([_entry(r) for r in self.conn.execute(sql, args)])

    def recent_by_category(self, limit: int) -> dict[str, list[Entry]]:
        """The newest ``limit`` items of every category, in one walk of the
        items from the newest: it stops once every category is full, so it
        costs one pass over the index at most, however many categories."""
        wanted = {c: limit for c in self.categories()}
        ids: dict[str, list[int]] = {c: [] for c in wanted}
        if not wanted or limit <= 0:
            return {c: [] for c in wanted}
        open_ = len(wanted)
        cur = self.conn.execute(
            "SELECT i.id, f.category FROM items i CROSS JOIN feeds f ON f.id = i.feed_id "
            "WHERE f.active = 1 AND f.category IS NOT NULL "
            "ORDER BY i.sort_date DESC, i.id DESC")
        for item_id, category in cur:
            got = ids.get(category)
            if got is None:  # a folder renamed since categories() was read
                continue
            if len(got) < limit:
                got.append(item_id)
                if len(got) == limit:
                    open_ -= 1
                    if not open_:
                        break
        cur.close()
        rows = self._entries([i for got in ids.values() for i in got])
        return {c: [rows[i] for i in got if i in rows] for c, got in ids.items()}

    def _entries(self, ids: Sequence[int]) -> dict[int, Entry]:
        """The entries of these item ids, read 500 at a time (SQLite's variable limit)."""
        rows: dict[int, Entry] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(_ENTRY_SELECT + f"WHERE i.id IN ({marks})", chunk):
                rows[r[0]] = _entry(r)
        return {e.item_id: e for e in self.with_media(list(rows.values()))}

    def categories(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT category FROM feeds WHERE active = 1 AND category IS NOT NULL "
            "ORDER BY category")]

    def subscriptions(self) -> list[Subscription]:
        return [
            Subscription(url=r[0], title=r[1], category=r[2], html_url=r[3], private=bool(r[4]))
            for r in self.conn.execute(
                "SELECT url, coalesce(title, feed_title), category, site_url, private FROM feeds "
                "WHERE active = 1 ORDER BY category, coalesce(title, feed_title, url)")
        ]

    def category_dates(self, categories: Iterable[str]) -> dict[str, datetime]:
        """A stable date for each category ("" for feeds without one) that has nothing to
        publish: its newest item ever (removed feeds' included), else when its first feed
        was added. Categories no feed ever had are left out."""
        wanted = sorted(set(categories))
        out: dict[str, datetime] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                "SELECT coalesce(f.category, ''), "
                "max((SELECT max(i.sort_date) FROM items i WHERE i.feed_id = f.id)), "
                "min(f.added_at) "
                f"FROM feeds f WHERE coalesce(f.category, '') IN ({marks}) GROUP BY 1", chunk)
            for category, newest, added in rows:
                when = from_iso(newest or added)
                if when is not None:
                    out[category] = when
        return out

    def feed_counts(self) -> dict[str, tuple[int, int, int]]:
        """Per category ("" for feeds without one), its active feeds: (how many, how many
        failing or gone, how many never polled)."""
        return {
            r[0]: (r[1], r[2] or 0, r[3] or 0)
            for r in self.conn.execute(
                "SELECT coalesce(category, ''), count(*), sum(state IN ('error', 'gone')), "
                "sum(state = 'new') FROM feeds WHERE active = 1 GROUP BY 1")
        }

    # --- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT count(*), sum(state = 'error'), max(last_success) "
            "FROM feeds WHERE active = 1"
        ).fetchone()
        items = self.conn.execute("SELECT count(*) FROM items").fetchone()[0]
        return {"feeds": row[0] or 0, "failing": row[1] or 0,
                "last_success": from_iso(row[2]), "items": items}

    def count_items(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM items").fetchone()[0])

    # --- search -------------------------------------------------------------------------

    def search(self, match: str, *, since: datetime | None = None,
               limit: int = 50) -> list[Entry]:
        """The items an FTS5 query (``search.fts_query``) matches, newest first."""
        if not storesearch.has_index(self.conn):  # a read-only open of an older file
            raise StorageError(f"{self.path} has no search index yet (any command that "
                               "writes, e.g. `aggregator update`, adds it)")
        try:
            ids = storesearch.matching_ids(self.conn, match, since=iso(since), limit=limit)
        except sqlite3.OperationalError as e:  # fts5 syntax: search.fts_query has a bug
            raise StorageError(f"search failed: {e}") from e
        rows = self._entries(ids)
        return [rows[i] for i in ids if i in rows]


_ENTRY_SELECT = (
    "SELECT i.id, i.key, f.url, coalesce(f.title, f.feed_title, f.url), f.site_url, "
    "f.category, i.title, i.url, i.author, i.published, i.updated, i.first_seen, "
    "coalesce(i.language, f.language), i.categories, i.summary_context, "
    "i.summary_points, i.summary_method, i.content_text, f.origin_url, f.private, i.story_id "
    "FROM items i JOIN feeds f ON f.id = i.feed_id "
)


def _entry(r: tuple[Any, ...]) -> Entry:
    try:
        categories = tuple(json.loads(r[13] or "[]"))
    except ValueError:
        categories = ()
    try:
        points = tuple(json.loads(r[15])) if r[15] else ()
    except ValueError:
        points = ()
    first_seen = from_iso(r[11])
    assert first_seen is not None
    return Entry(
        item_id=r[0], key=r[1], feed_url=r[2], feed_title=r[3], feed_site_url=r[4],
        category=r[5], title=r[6], url=r[7], author=r[8], published=from_iso(r[9]),
        updated=from_iso(r[10]), first_seen=first_seen, language=r[12],
        categories=categories, summary_context=(r[14],) if r[14] else (),
        summary_points=points, summary_method=r[16], content_text=r[17], feed_origin=r[18],
        feed_private=bool(r[19]), story_id=r[20],
    )
