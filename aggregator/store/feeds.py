"""The subscriptions' SQL, mixed into ``Store``: syncing feeds.opml, the schedule,
moves, and the outcome of a fetch that stored nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.store.rows import (
    _FEED_COLUMNS,
    FeedRow,
    _feed,
    from_iso,
    iso,
)
from aggregator.types import Subscription


class FeedsMixin:
    conn: sqlite3.Connection
    path: Path

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

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

