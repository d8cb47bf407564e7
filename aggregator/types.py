"""Domain values, frozen. "What the feed said" (ParsedFeed, ParsedItem) is kept
apart from "what we stored" (FeedRow, Entry)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Subscription:
    """One outline of feeds.opml."""

    url: str
    title: str | None = None
    category: str | None = None
    html_url: str | None = None
    fetch_articles: bool | None = None  # None: use the global switch
    private: bool = False  # marked private="true": its URL is never published
    summarizer: str | None = None  # summarizer="lexrank": its own method; None: the setting


@dataclass(frozen=True)
class FetchResult:
    """One HTTP exchange for a feed, after redirects."""

    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int  # final status (200, 304, ...)
    headers: dict[str, str]  # lower-case names
    body: bytes | None  # None on 304
    permanent_url: str | None = None  # set when every hop was 301/308
    elapsed: float = 0.0


@dataclass(frozen=True)
class Enclosure:
    """A media file an item carries (podcast audio, an image): checked by media.py.

    ``kind``: ``enclosure`` (RSS <enclosure>, Atom link rel="enclosure", JSON Feed
    attachment), ``content`` (media:content) or ``thumbnail`` (media:thumbnail)."""

    url: str  # http(s) only
    type: str | None = None  # a MIME type, lower-case; None when not said
    length: int | None = None  # bytes; None when not said or not believable
    kind: str = "enclosure"


@dataclass(frozen=True)
class ParsedItem:
    guid: str | None
    url: str | None
    title: str | None
    author: str | None
    published: datetime | None
    updated: datetime | None
    content: str | None  # sanitised HTML
    content_text: str | None  # plain text of content
    categories: tuple[str, ...] = ()
    language: str | None = None
    enclosures: tuple[Enclosure, ...] = ()


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    site_url: str | None
    language: str | None
    ttl_minutes: int | None
    items: tuple[ParsedItem, ...]
    warning: str | None = None  # feedparser's bozo message on a feed that still parsed


@dataclass(frozen=True)
class Summary:
    """Context paragraph + Dive deeper points, every sentence from the text."""

    context: tuple[str, ...]
    points: tuple[str, ...]
    method: str  # e.g. "default:english", "lead:xx", "none:empty"


@dataclass(frozen=True)
class Entry:
    """One stored item as the publisher sees it (items joined with feeds)."""

    item_id: int
    key: str  # stable identity inside its feed
    feed_url: str
    feed_title: str  # the source's name, e.g. "BBC News"
    feed_site_url: str | None
    category: str | None
    title: str | None
    url: str | None
    author: str | None
    published: datetime | None
    updated: datetime | None
    first_seen: datetime
    language: str | None
    categories: tuple[str, ...] = ()
    summary_context: tuple[str, ...] = ()
    summary_points: tuple[str, ...] = ()
    summary_method: str | None = None
    content_text: str | None = None
    feed_origin: str | None = None  # the feed's first URL: ids stay put when it moves
    feed_private: bool = False  # marked private in feeds.opml: its URL is never published
    story_id: int | None = None  # stories.id once clustered (see aggregator/stories.py)
    enclosures: tuple[Enclosure, ...] = ()  # the enclosures table (store/media.py)
