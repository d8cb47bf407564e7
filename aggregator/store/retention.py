"""Retention and maintenance SQL, mixed into ``Store`` (``aggregator.store.Store``).

Part of the store (all SQL lives in the store package). The rules
of what may go are in retention.py; the stage that applies them in batches is
``stages/prune.py``. Schema (migration ``m007_retention`` in migrations.py):

    feeds.latest_items  JSON list of the ids of the items in the feed's latest
                        fetched document (NULL until a document was parsed
                        after the upgrade): what "still in its feed" means
    auto_vacuum         INCREMENTAL: pages freed by pruning go back to the file
                        system with ``PRAGMA incremental_vacuum``

Deleting an item keeps the rest in step: the FTS index by its delete trigger
(search.py), and here the stories: counts and feeds recomputed from the
members left, a story with none left deleted with its index rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggregator.store.rows import PendingItem

__all__ = ["RetentionMixin", "migrate", "after_migrate", "SMALL_ENOUGH_TO_VACUUM"]

from aggregator.store import search as storesearch

log = logging.getLogger("aggregator.store")

_CHUNK = 500  # host parameters per IN (...)
# An existing database switches to incremental vacuum only through a VACUUM,
# which rewrites the file (and needs as much free disk). Below this size the
# upgrade does it at once (a second or two); a bigger file waits for
# `aggregator vacuum`, run when the operator chooses.
SMALL_ENOUGH_TO_VACUUM = 64 * 1024 * 1024
INCREMENTAL = 2  # PRAGMA auto_vacuum value


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for k in range(0, len(values), _CHUNK):
        yield values[k:k + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


# feeds.latest_items when it is a JSON array, else NULL: a damaged value (not JSON,
# not a list) must neither stop a prune (json_each raises on it) nor count as a
# document that protects nothing; such a feed is treated as one whose document is
# not known. CASE, not AND: SQLite does not promise to skip json_type on bad JSON.
_LATEST = ("CASE WHEN json_valid(f.latest_items) THEN CASE WHEN json_type(f.latest_items) "
           "= 'array' THEN f.latest_items END END")


def migrate(conn: sqlite3.Connection) -> None:
    """m007: remember each feed's latest document; ask for incremental vacuum
    (it takes effect at once on a new file, after a VACUUM on an existing one)."""
    conn.execute("ALTER TABLE feeds ADD COLUMN latest_items TEXT")
    conn.execute(f"PRAGMA auto_vacuum = {INCREMENTAL}")


def after_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """After the migrations committed: a small file still without incremental
    vacuum is rewritten now (VACUUM can't run inside a transaction)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
        return
    size = _file_size(conn)
    if size <= SMALL_ENOUGH_TO_VACUUM:
        try:
            conn.execute(f"PRAGMA auto_vacuum = {INCREMENTAL}")
            conn.execute("VACUUM")
            return
        except sqlite3.OperationalError as e:  # another writer: the next vacuum does it
            log.warning("%s: cannot switch to incremental vacuum now (%s); "
                        "`aggregator vacuum` does it", path, e)
    else:
        log.warning("%s: %d MB; run `aggregator vacuum` once (it rewrites the file) so that "
                    "pruning gives space back to the file system", path, size >> 20)


def _file_size(conn: sqlite3.Connection) -> int:
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(page * conn.execute("PRAGMA page_count").fetchone()[0])


class RetentionMixin:
    conn: sqlite3.Connection
    path: Path

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    # --- the write path: what is in each feed now --------------------------------------

    @staticmethod
    def _remember_document(c: sqlite3.Connection, feed_id: int, keys: Sequence[str]) -> None:
        """Inside a feed's write: the ids of the items of the document just stored."""
        ids: list[int] = []
        wanted = sorted(set(keys))
        for chunk in _chunks(wanted):
            ids.extend(r[0] for r in c.execute(
                f"SELECT id FROM items WHERE feed_id = ? AND key IN ({_marks(len(chunk))})",
                (feed_id, *chunk)))
        c.execute("UPDATE feeds SET latest_items = ? WHERE id = ?",
                  (json.dumps(sorted(ids)), feed_id))

    # --- what a reader can still see ----------------------------------------------------

    def document_item_ids(self, unknown_keep: int) -> set[int]:
        """The items of every active feed's latest fetched document; for a feed
        whose document is not known yet, its newest ``unknown_keep`` items."""
        ids = {r[0] for r in self.conn.execute(
            f"SELECT j.value FROM feeds f, json_each({_LATEST}) j "
            "WHERE f.active = 1 AND j.type = 'integer'")}
        ids.update(r[0] for r in self.conn.execute(
            "SELECT id FROM (SELECT i.id, row_number() OVER (PARTITION BY i.feed_id "
            "ORDER BY i.sort_date DESC, i.id DESC) AS n FROM items i JOIN feeds f "
            f"ON f.id = i.feed_id WHERE f.active = 1 AND ({_LATEST}) IS NULL) WHERE n <= ?",
            (unknown_keep,)))
        return ids

    def story_member_ids(self, story_ids: Sequence[int]) -> set[int]:
        ids: set[int] = set()
        for chunk in _chunks(sorted(set(story_ids))):
            ids.update(r[0] for r in self.conn.execute(
                f"SELECT id FROM items WHERE story_id IN ({_marks(len(chunk))})", chunk))
        return ids

    # --- candidates, oldest first ---------------------------------------------------------

    def prune_candidates(self, before: datetime, *, after: tuple[str, int] | None = None,
                         limit: int = _CHUNK, text_only: bool = False,
                         ) -> list[tuple[int, int, str]]:
        """Items dated before ``before``, oldest first, after the (sort_date, id)
        ``after`` (keyset paging): (id, feed id, sort_date). ``text_only``: only
        those still holding article text or HTML."""
        sql = "SELECT id, feed_id, sort_date FROM items WHERE sort_date < ?"
        args: list[Any] = [_iso(before)]
        if after is not None:
            sql += " AND (sort_date > ? OR (sort_date = ? AND id > ?))"
            args += [after[0], after[0], after[1]]
        if text_only:
            sql += " AND (article_text IS NOT NULL OR content IS NOT NULL)"
        sql += " ORDER BY sort_date, id LIMIT ?"
        args.append(limit)
        return [(r[0], r[1], r[2]) for r in self.conn.execute(sql, args)]

    # --- the writes -----------------------------------------------------------------------

    def delete_items(self, ids: Sequence[int]) -> list[int]:
        """Delete these items in one transaction, except those in their feed's
        latest document (looked at again here: a poll may have just seen one),
        and keep their stories in step: counts and feeds from the members left,
        first item moved on, a story left empty deleted with its index rows. The
        FTS index follows by trigger. Returns the ids deleted."""
        if not ids:
            return []
        with self.transaction() as c:
            done = self._still_prunable(c, ids)
            stories: set[int] = set()
            for chunk in _chunks(done):
                marks = _marks(len(chunk))
                stories.update(r[0] for r in c.execute(
                    f"SELECT DISTINCT story_id FROM items WHERE id IN ({marks}) "
                    "AND story_id IS NOT NULL", chunk))
                c.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
            self._settle_stories(c, sorted(stories))
        return done

    @staticmethod
    def _still_prunable(c: sqlite3.Connection, ids: Sequence[int]) -> list[int]:
        out: list[int] = []
        for chunk in _chunks(list(ids)):
            out.extend(r[0] for r in c.execute(
                f"SELECT i.id FROM items i WHERE i.id IN ({_marks(len(chunk))}) AND NOT EXISTS "
                f"(SELECT 1 FROM feeds f, json_each({_LATEST}) j WHERE f.id = i.feed_id "
                "AND f.active = 1 AND j.value = i.id)", chunk))
        return out

    @staticmethod
    def _settle_stories(c: sqlite3.Connection, story_ids: Sequence[int]) -> None:
        members = "FROM items m WHERE m.story_id = stories.id"
        for chunk in _chunks(story_ids):
            marks = _marks(len(chunk))
            c.execute(
                f"UPDATE stories SET item_count = (SELECT count(*) {members}), "
                f"source_count = (SELECT count(DISTINCT m.feed_id) {members}), "
                "feed_ids = coalesce((SELECT json_group_array(feed_id) FROM (SELECT DISTINCT "
                f"m.feed_id {members} ORDER BY m.feed_id)), '[]') WHERE id IN ({marks})", chunk)
            c.execute(
                f"UPDATE stories SET item_id = (SELECT m.id {members} ORDER BY m.sort_date, "
                f"m.id LIMIT 1), title = coalesce((SELECT m.title {members} ORDER BY "
                f"m.sort_date, m.id LIMIT 1), title) WHERE id IN ({marks}) AND item_count > 0 "
                "AND NOT EXISTS (SELECT 1 FROM items x WHERE x.id = stories.item_id)", chunk)
            empty = [r[0] for r in c.execute(
                f"SELECT id FROM stories WHERE id IN ({marks}) AND item_count = 0", chunk)]
            if empty:
                gone = _marks(len(empty))
                for table in ("story_terms", "story_keys"):
                    c.execute(f"DELETE FROM {table} WHERE story_id IN ({gone})", empty)
                c.execute(f"DELETE FROM stories WHERE id IN ({gone})", empty)

    def drop_article_text(self, ids: Sequence[int]) -> list[int]:
        """Forget the article text and the item HTML of these items (but not of
        those in their feed's latest document), in one transaction; summary,
        title, plain text and links stay. Returns the ids changed."""
        if not ids:
            return []
        with self.transaction() as c:
            done = self._still_prunable(c, ids)
            for chunk in _chunks(done):
                c.execute("UPDATE items SET article_text = NULL, content = NULL "
                          f"WHERE id IN ({_marks(len(chunk))})", chunk)
        return done

    # --- space ------------------------------------------------------------------------------

    def size(self) -> int:
        """Bytes of the database file (pages in use and free), not its -wal."""
        return _file_size(self.conn)

    def free_pages(self) -> int:
        return int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])

    def incremental_vacuum(self, *, compact_search: bool = False) -> bool:
        """Give the free pages back to the file system (when the file is in
        incremental mode), then let SQLite refresh its statistics. False when the
        file is not in incremental mode yet (see ``vacuum``). ``compact_search``:
        first a bounded merge of the search index, which drops what deleted rows
        left in it (else the index grows between its own merges)."""
        incremental = self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL
        try:
            # Both write. Inside BEGIN IMMEDIATE they wait for the write lock like any
            # writer; alone, a pragma reads first and then asks to write, and a poll's
            # commit in between fails it at once ("database is locked", no waiting).
            # (executescript steps each to its end: execute() would free one page)
            try:
                self.conn.executescript(
                    "BEGIN IMMEDIATE; "
                    + (f"{storesearch.merge_sql()}; " if compact_search else "")
                    + ("PRAGMA incremental_vacuum; " if incremental else "")
                    + "PRAGMA optimize; COMMIT;")
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError as e:
            from aggregator.errors import StorageError

            raise StorageError(f"cannot vacuum {self.path}: {e}") from e
        if incremental:
            # the file shrinks once the log is copied back; never wait for readers, and
            # a checkpoint the writer is running already does the same
            with contextlib.suppress(sqlite3.OperationalError):
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return incremental

    def vacuum(self) -> None:
        """Rewrite the whole file (needs as much free disk as the file takes and
        no other writer for its duration), switching it to incremental vacuum."""
        from aggregator.errors import StorageError

        try:
            self.conn.execute(f"PRAGMA auto_vacuum = {INCREMENTAL}")
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self.conn.execute("PRAGMA optimize")
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise StorageError(f"database {self.path} is locked by another writer; "
                                   "VACUUM needs it alone (stop the daemon first)") from e
            raise StorageError(f"cannot vacuum {self.path}: {e}") from e

    # --- operator commands ----------------------------------------------------------------

    def item_ids_by_url(self, url: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM items WHERE url = ? ORDER BY id", (url,))]

    def work_items(self, ids: Sequence[int] = (), *, feed_id: int | None = None,
                   since: datetime | None = None) -> list[PendingItem]:
        """Items as the summaries stage works on them: these ``ids``, or (without
        ids) those of ``feed_id`` and/or dated at or after ``since``, newest first."""
        from aggregator.store.rows import PendingItem, from_iso

        sql = ("SELECT i.id, i.feed_id, f.url, i.url, i.title, i.content_text, i.content_hash, "
               "coalesce(i.language, f.language), f.fetch_articles, i.article_status, "
               "i.article_text, i.article_tries, i.article_retry_at, i.summary_hash, "
               "i.summary_source, f.summarizer, i.summary_method "
               "FROM items i JOIN feeds f ON f.id = i.feed_id WHERE 1")
        args: list[Any] = []
        if ids:
            sql += f" AND i.id IN ({_marks(len(ids))})"
            args += list(ids)
        if feed_id is not None:
            sql += " AND i.feed_id = ?"
            args.append(feed_id)
        if since is not None:
            sql += " AND i.sort_date >= ?"
            args.append(_iso(since))
        sql += " ORDER BY i.sort_date DESC, i.id DESC"
        return [PendingItem(id=r[0], feed_id=r[1], feed_url=r[2], url=r[3], title=r[4],
                            content_text=r[5], content_hash=r[6], language=r[7],
                            fetch_articles=None if r[8] is None else bool(r[8]),
                            article_status=r[9], article_text=r[10], article_tries=r[11] or 0,
                            article_retry_at=from_iso(r[12]), summary_hash=r[13],
                            summary_source=r[14], summarizer=r[15], summary_method=r[16])
                for r in self.conn.execute(sql, args)]
