"""The subscriptions' SQL, mixed into ``Store``: syncing feeds.opml, the schedule,
moves, claims on due feeds (leases, poll_seq fencing) and the outcome of a fetch that
stored nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.store.rows import (
    _CLOSE,
    _FEED_COLUMNS,
    _FEED_WIDTH,
    _FENCE,
    FeedRow,
    _feed,
    _fence_args,
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
        return [_feed(r, r[_FEED_WIDTH]) for r in rows]

    def feed(self, url: str) -> FeedRow | None:
        row = self.conn.execute(f"SELECT {_FEED_COLUMNS} FROM feeds WHERE url = ?",
                                (url,)).fetchone()
        return _feed(row) if row else None

    def due_feeds(self, now: datetime, *, all_feeds: bool = False,
                  early: timedelta = timedelta(0),
                  min_gap: timedelta = timedelta(0)) -> list[FeedRow]:
        """Active feeds whose next fetch has come (or every active one), minus gone
        ones. With ``early``, also those due within ``early`` of ``now`` whose last
        fetch is at least ``min_gap`` ago (see update.poll_slack). Leases are not
        looked at: ``claim_due`` is the way to take feeds to poll."""
        where, args = _due_where(now, all_feeds, early, min_gap)
        return [_feed(r) for r in self.conn.execute(
            f"SELECT {_FEED_COLUMNS} FROM feeds WHERE {where} ORDER BY next_fetch", args)]

    # --- claims (leases) ------------------------------------------------------------

    def claim_due(self, now: datetime, *, holder: str, lease: timedelta,
                  limit: int | None = None, all_feeds: bool = False,
                  early: timedelta = timedelta(0), min_gap: timedelta = timedelta(0),
                  ids: Sequence[int] | None = None) -> list[FeedRow]:
        """Take the feeds ``due_feeds`` would return that nobody holds (no lease,
        or an expired one), in one statement: each gets a lease until ``now +
        lease`` held by ``holder`` and its ``poll_seq`` goes up by one, which its
        result must bring back (``record_feed`` and co.). Two processes claiming
        at once never get the same feed. ``ids``: claim only among those feeds
        (still only if due and unleased). Sorted by next fetch, as due_feeds."""
        if ids is not None and not ids:
            return []
        where, args = _due_where(now, all_feeds, early, min_gap)
        where += " AND (lease_until IS NULL OR lease_until <= ?)"
        args += (iso(now),)
        # ids go in chunks far under SQLite's variable limit (32766), one transaction
        chunks: list[tuple[int, ...]] = [()]
        if ids is not None:
            where += " AND id IN ({})"
            unique = tuple(dict.fromkeys(int(i) for i in ids))
            chunks = [unique[i:i + _IDS_CHUNK] for i in range(0, len(unique), _IDS_CHUNK)]
        rows: list[Any] = []
        with self.transaction() as c:
            for chunk in chunks:
                left = None if limit is None else max(0, int(limit)) - len(rows)
                if left is not None and left <= 0:
                    break
                tail = "" if left is None else " LIMIT ?"
                sql = ("UPDATE feeds SET lease_until = ?, lease_holder = ?, "
                       "poll_seq = poll_seq + 1 WHERE id IN (SELECT id FROM feeds WHERE "
                       f"{where.format(','.join('?' * len(chunk)))} ORDER BY next_fetch{tail}) "
                       f"RETURNING {_FEED_COLUMNS}")
                rows += c.execute(sql, (iso(now + lease), holder, *args, *chunk,
                                        *(() if left is None else (left,)))).fetchall()
        feeds = [_feed(r) for r in rows]
        # SQLite sorts NULL first, as the ORDER BY of due_feeds does
        feeds.sort(key=lambda f: (f.next_fetch is not None,
                                  iso(f.next_fetch) or "", f.id))
        return feeds

    def set_lease_holder(self, feed_id: int, poll_seq: int, holder: str,
                         until: datetime | None = None) -> bool:
        """A worker said it started this claim: it holds the lease now, renewed to
        ``until`` when given (the time the task waited in the queue does not count
        against its fetch). False when the claim is no longer open (done, swept,
        claimed again)."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE feeds SET lease_holder = ?, lease_until = coalesce(?, lease_until) "
                "WHERE id = ? AND poll_seq = ? AND lease_until IS NOT NULL",
                (holder, iso(until), feed_id, poll_seq))
        return cur.rowcount > 0

    def sweep_leases(self, now: datetime, longest: timedelta | None = None) -> int:
        """Clear the leases that ran out: those feeds are due again, and the next
        claim bumps their poll_seq, so a late result of the old claim is fenced off.
        ``longest`` (the lease length): a lease ending later than ``now + longest``
        was taken before the clock went back; it is cut to end then (the claim stays
        open, its result still counts) instead of holding the feed for as long as
        the clock jumped. Returns how many leases were cleared."""
        with self.transaction() as c:
            cur = c.execute("UPDATE feeds SET lease_until = NULL, lease_holder = NULL "
                            "WHERE lease_until IS NOT NULL AND lease_until <= ?", (iso(now),))
            if longest is not None:
                c.execute("UPDATE feeds SET lease_until = ? WHERE lease_until IS NOT NULL "
                          "AND lease_until > ?", (iso(now + longest),) * 2)
        return cur.rowcount

    def release_leases(self, holder_prefix: str, *, exact: bool = False) -> int:
        """Clear every lease whose holder starts with ``holder_prefix`` (``exact``:
        is ``holder_prefix``); e.g. the embedded ones, ``"embedded"``, whose
        holders are ``embedded:<pid>``. Nothing to clear: one read, no write."""
        where = "lease_until IS NOT NULL AND "
        if exact:
            where += "lease_holder = ?"
            args: tuple[Any, ...] = (holder_prefix,)
        else:
            where += "substr(lease_holder, 1, ?) = ?"
            args = (len(holder_prefix), holder_prefix)
        if self.conn.execute(f"SELECT 1 FROM feeds WHERE {where} LIMIT 1", args).fetchone() is None:
            return 0
        with self.transaction() as c:
            cur = c.execute(
                f"UPDATE feeds SET lease_until = NULL, lease_holder = NULL WHERE {where}", args)
        return cur.rowcount

    def lease_holders(self, prefix: str = "") -> dict[str, int]:
        """Who holds leases (expired ones included, until swept), and how many each."""
        return dict(self.conn.execute(
            "SELECT lease_holder, count(*) FROM feeds WHERE lease_until IS NOT NULL "
            "AND lease_holder IS NOT NULL AND substr(lease_holder, 1, ?) = ? "
            "GROUP BY lease_holder", (len(prefix), prefix)).fetchall())

    def release_claims(self, claims: Sequence[tuple[int, int]]) -> int:
        """Give back claims (feed id, poll_seq) that were not used (a pass cut
        short, a write that failed): those feeds are due again at once. A claim
        already closed or taken again is left alone."""
        if not claims:
            return 0
        with self.transaction() as c:
            cur = c.executemany(
                "UPDATE feeds SET lease_until = NULL, lease_holder = NULL "
                "WHERE id = ? AND poll_seq = ? AND lease_until IS NOT NULL",
                [(int(i), int(seq)) for i, seq in claims])
        return cur.rowcount

    def leased(self, now: datetime) -> list[FeedRow]:
        """Feeds with a lease that has not run out, soonest to expire first."""
        return [_feed(r) for r in self.conn.execute(
            f"SELECT {_FEED_COLUMNS} FROM feeds WHERE lease_until IS NOT NULL "
            "AND lease_until > ? ORDER BY lease_until, id", (iso(now),))]

    def known_items(self, feed_id: int, limit: int = 500) -> dict[str, str]:
        """Stored key -> content_hash of the feed's newest ``limit`` items: what a
        worker need not send back (see wire.PollTask)."""
        return {key: h for key, h in self.conn.execute(
            "SELECT key, content_hash FROM items WHERE feed_id = ? "
            "ORDER BY sort_date DESC, id DESC LIMIT ?", (feed_id, int(limit)))}

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

    def record_not_modified_many(self, rows: Sequence[NotModifiedRow]) -> int:
        """Several 304s in one transaction: (feed id, now, status, next fetch,
        headers, poll_seq) each; returns how many were written. A 304 changes
        nothing but times and validators, so losing a batch to a crash only means
        those feeds are asked again. A poll_seq fences the row (see ``_FENCE``);
        None (or a 5-tuple) writes it unfenced. Every write closes the claim."""
        if not rows:
            return 0
        with self.transaction() as c:
            cur = c.executemany(
                "UPDATE feeds SET last_fetch = ?, last_status = ?, last_success = ?, "
                "next_fetch = ?, error_count = 0, last_error = NULL, state = 'ok', "
                "etag = coalesce(?, etag), last_modified = coalesce(?, last_modified), "
                f"{_CLOSE} WHERE id = ? AND {_FENCE}",
                [(iso(row[1]), row[2], iso(row[1]), iso(row[3]), row[4].get("etag"),
                  row[4].get("last-modified"), row[0],
                  *_fence_args(row[5] if len(row) > 5 else None))  # type: ignore[misc]
                 for row in rows],
            )
        return cur.rowcount

    def record_error(self, feed_id: int, now: datetime, *, status: int | None, error: str,
                     next_fetch: datetime | None, state: str = "error",
                     poll_seq: int | None = None) -> bool:
        """A failed fetch; False when ``poll_seq`` is given and its claim is no
        longer open (then nothing is written)."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE feeds SET last_fetch = ?, last_status = ?, next_fetch = ?, "
                f"error_count = error_count + 1, last_error = ?, state = ?, {_CLOSE} "
                f"WHERE id = ? AND {_FENCE}",
                (iso(now), status, iso(next_fetch), error[:1000], state, feed_id,
                 *_fence_args(poll_seq)),
            )
        return cur.rowcount > 0


# A 304 to write: (feed id, when, status, next fetch, headers[, poll_seq]).
NotModifiedRow = (tuple[int, datetime, int, datetime, dict[str, str]]
                  | tuple[int, datetime, int, datetime, dict[str, str], int | None])

_IDS_CHUNK = 10_000  # ids bound in one statement of claim_due


def _due_where(now: datetime, all_feeds: bool, early: timedelta,
               min_gap: timedelta) -> tuple[str, tuple[Any, ...]]:
    """The due rule of ``due_feeds`` and ``claim_due``, as a WHERE clause."""
    where = "active = 1 AND state != 'gone'"
    if all_feeds:
        return where, ()
    where += (" AND (next_fetch IS NULL OR next_fetch <= ? OR (next_fetch <= ? "
              "AND (last_fetch IS NULL OR last_fetch <= ?)))")
    return where, (iso(now), iso(now + max(early, timedelta(0))), iso(now - min_gap))
