"""The values rows become: feeds (``FeedRow``), items waiting for their summary
(``PendingItem``), entries to publish (``Entry``), and the ISO-8601 text of times."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggregator.types import Entry


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
    poll_seq: int = 0  # bumped by every claim: fences off the results of older ones
    lease_until: datetime | None = None  # claimed until then (None: not leased)
    lease_holder: str | None = None  # who holds the claim ("embedded:<pid>", a worker)

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
    "next_fetch, error_count, last_error, poll_seq, lease_until, lease_holder"
)
_FEED_WIDTH = 23  # how many columns _FEED_COLUMNS names


def _feed(row: sqlite3.Row | tuple[Any, ...], item_count: int = 0) -> FeedRow:
    (id_, url, title, feed_title, site_url, category, language, active, state, fetch_articles,
     etag, last_modified, body_hash, ttl, last_fetch, last_status, last_success, next_fetch,
     error_count, last_error, poll_seq, lease_until, lease_holder) = tuple(row)[:_FEED_WIDTH]
    return FeedRow(
        id=id_, url=url, title=title, feed_title=feed_title, site_url=site_url,
        category=category, language=language, active=bool(active), state=state,
        fetch_articles=None if fetch_articles is None else bool(fetch_articles),
        etag=etag, last_modified=last_modified, body_hash=body_hash, ttl_minutes=ttl,
        last_fetch=from_iso(last_fetch), last_status=last_status,
        last_success=from_iso(last_success), next_fetch=from_iso(next_fetch),
        error_count=error_count, last_error=last_error, item_count=item_count,
        poll_seq=poll_seq or 0, lease_until=from_iso(lease_until), lease_holder=lease_holder,
    )


# A write of a claim's result applies only while that claim is open: the feed's
# poll_seq is still the one claimed and its lease was not cleared (by an earlier
# write of the same result, a sweep or a release). No poll_seq: no fence.
_FENCE = "(? IS NULL OR (poll_seq = ? AND lease_until IS NOT NULL))"
# ... and every write closes the claim, fenced or not
_CLOSE = "lease_until = NULL, lease_holder = NULL"


def _fence_args(poll_seq: int | None) -> tuple[int | None, int | None]:
    return (poll_seq, poll_seq)


@dataclass(frozen=True)
class ItemCounts:
    new: int = 0
    changed: int = 0
    fenced: bool = False  # the write's claim was no longer open: nothing was written


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
