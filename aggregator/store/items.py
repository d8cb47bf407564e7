"""The items' SQL, mixed into ``Store``: a fetched feed's items stored (new, changed,
settled keys), articles and summaries, what publishing reads, status and search."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from aggregator import decide
from aggregator.errors import StorageError
from aggregator.store import search as storesearch
from aggregator.store.rows import (
    _CLOSE,
    _ENTRY_SELECT,
    _FENCE,
    ItemCounts,
    PendingItem,
    _entry,
    _fence_args,
    from_iso,
    iso,
)
from aggregator.types import Entry, ParsedFeed, ParsedItem, Subscription, Summary

# one article fetch's outcome (status, text, retry_at), as save_article writes it
_ARTICLE_SQL = ("article_status = ?, article_text = ?, article_tries = article_tries + 1, "
                "article_retry_at = ?")


_INSERT_ITEMS = ("INSERT INTO items (feed_id, key, guid, url, title, author, published, "
                 "updated, content, content_text, categories, language, first_seen, "
                 "changed_at, sort_date, content_hash) VALUES ")
_ITEM_VALUES = "(" + ", ".join("?" * 16) + ")"
_ROWS_PER_INSERT = 999 // 16  # within SQLite's oldest limit of 999 parameters a statement


class ItemsMixin:
    conn: sqlite3.Connection
    path: Path

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

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
        poll_seq: int | None = None,
        document_keys: Sequence[str] | None = None,
    ) -> ItemCounts:
        """Store one fetched document: feed metadata, validators and every new or
        changed item, in one transaction. ``items`` are (key, item, content_hash);
        ``parsed`` None means the body was identical to the last one.

        ``poll_seq``: the claim this result answers (``claim_due``); the write
        happens only while that claim is open, else nothing changes and the
        counts say ``fenced``. None: unfenced (``add``'s first fetch). Either
        way the write closes the claim. ``document_keys``: the keys of every
        item of the document when ``items`` holds only the new or changed ones
        (the feed's latest document, for retention); None: the keys of ``items``."""
        meta: tuple[Any, ...] = (None, None, None, None)
        if parsed is not None:
            meta = (parsed.title, parsed.site_url, parsed.language, parsed.ttl_minutes)
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE feeds SET last_fetch = ?, last_status = ?, last_success = ?, "
                "next_fetch = ?, error_count = 0, last_error = ?, state = 'ok', "
                "etag = coalesce(?, etag), last_modified = coalesce(?, last_modified), "
                "body_hash = ?, "
                "feed_title = coalesce(?, feed_title), site_url = coalesce(?, site_url), "
                f"language = coalesce(?, language), ttl_minutes = coalesce(?, ttl_minutes), "
                f"{_CLOSE} WHERE id = ? AND {_FENCE}",
                (iso(now), status, iso(now), iso(next_fetch),
                 parsed.warning if parsed is not None else None,
                 headers.get("etag"), headers.get("last-modified"), body_hash, *meta, feed_id,
                 *_fence_args(poll_seq)),
            )
            if poll_seq is not None and cur.rowcount == 0:
                return ItemCounts(fenced=True)
            counts = ItemCounts()
            if items:
                counts = self._upsert_items(c, feed_id, items, now, document_keys)
            elif document_keys is not None:
                self._remember_document(c, feed_id, document_keys)
        return counts

    def _upsert_items(self, c: sqlite3.Connection, feed_id: int,
                      items: Sequence[tuple[str, ParsedItem, str]], now: datetime,
                      document_keys: Sequence[str] | None = None) -> ItemCounts:
        sent = {key for key, _, _ in items}
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
        # Many rows per INSERT, not executemany's one statement per row: each statement
        # that fires the search index's trigger makes FTS5 flush what it holds
        # (a savepoint), so row by row the index cost 45 µs an item, half of storing it.
        for start in range(0, len(new_rows), _ROWS_PER_INSERT):
            chunk = new_rows[start:start + _ROWS_PER_INSERT]
            c.execute(_INSERT_ITEMS + ", ".join([_ITEM_VALUES] * len(chunk)),
                      [value for row in chunk for value in row])
        if changed_rows:
            # the summary stays until a new one is written; summary_hash tells it is stale
            c.executemany(
                "UPDATE items SET guid = ?, url = ?, title = ?, author = ?, published = ?, "
                "updated = ?, content = ?, content_text = ?, categories = ?, language = ?, "
                "changed_at = ?, content_hash = ? WHERE id = ?",
                changed_rows,
            )
        document = [key for key, _, _ in items]  # under the keys they were stored with
        if document_keys is not None:  # and the items that did not travel: stored as is
            document += [key for key in document_keys if key not in sent]
        self._remember_document(c, feed_id, document)
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
                          window: int = 0, ids: Sequence[int] | None = None
                          ) -> list[PendingItem]:
        """Items to work on, newest first: the summary is missing, was made from
        older content, or from the item's own text while the article is now
        there; or (with ``now``) a failed article fetch is due to be retried and
        article fetching is not off for the feed; or (with ``method``) one of the
        newest ``window`` items was summarised by another method than its feed's
        (else ``method``). ``exclude``: ids to skip; ``ids``: only among these
        (a distributed result re-reads its item)."""
        return list(self._pending(now, exclude, limit, "i.article_text", method, window, ids))

    def pending_overview(self, *, now: datetime | None = None, method: str | None = None,
                         window: int = 0) -> Iterator[PendingItem]:
        """Every item ``pending_summaries`` would return, in no order, read one at a
        time and without the article text: enough to count the backlog."""
        return self._pending(now, (), None, "NULL", method, window)

    def _pending(self, now: datetime | None, exclude: Sequence[int], limit: int | None,
                 article_text: str, method: str | None, window: int,
                 ids: Sequence[int] | None = None) -> Iterator[PendingItem]:
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
        if ids is not None:
            where += f" AND i.id IN ({','.join('?' * len(ids)) or 'NULL'})"
            args.extend(ids)
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


