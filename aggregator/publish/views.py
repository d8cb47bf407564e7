"""What an entry shows: ``_Item`` (escaped text, checked links, dates; a story's entry
with its other sources and related stories) and ``_Feed``, the metadata of one feed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import jinja2

from aggregator import media
from aggregator.opml import is_private, reveals
from aggregator.publish.text import (
    _ID_NAMESPACE,
    _excerpt,
    _plain,
    _utc,
    clean_text,
    entry_id,
    language_tag,
    safe_url,
)
from aggregator.types import Enclosure, Entry

# ----------------------------------------------------------------------------- views


@dataclass(frozen=True)
class _Item:
    """One entry as every output shows it: text cleaned, links checked, dates settled."""

    id: str
    story: int | None  # stories.id; None until clustered
    title: str
    url: str | None
    author: str
    source_name: str
    source_key: str  # tells sources apart; never written out (it may be a private URL)
    source_feed_url: str | None  # None for a private subscription
    source_site_url: str | None
    category: str | None
    categories: tuple[str, ...]
    context: str
    points: tuple[str, ...]
    excerpt: str
    language: str | None
    published: datetime
    updated: datetime
    content_html: str
    enclosures: tuple[Enclosure, ...] = ()  # checked again (media.for_output)
    # A story's entry in the feeds (``_story_entry``); an item alone keeps the defaults.
    page: str | None = None  # the story page's URL, when it has one
    source_count: int = 1
    others: tuple[_Item, ...] = ()  # the story's other items, newest first
    related: tuple[_Item, ...] = ()  # other stories on the same topic, each by its newest item


# What an item alone shows of the story fields (the content template reads them all).
_NO_STORY: dict[str, object] = {"page": None, "source_count": 1, "others": (), "related": ()}


def _host(url: str | None) -> str | None:
    try:
        return urlsplit(url).hostname if url else None
    except ValueError:
        return None


def _item(entry: Entry, env: jinja2.Environment, *, content: bool = True) -> _Item:
    """``content=False``: no content_html (an item listed by its title, source and date:
    a story's other sources, a related story), which is most of the cost."""
    context = " ".join(s for s in (_plain(x) for x in entry.summary_context) if s)
    points = tuple(s for s in (_plain(x) for x in entry.summary_points) if s)
    excerpt = "" if context or points else _excerpt(_plain(entry.content_text))
    private = is_private(entry.feed_url, entry.feed_private)
    feed_url = None if private else safe_url(entry.feed_url)
    site_url = safe_url(entry.feed_site_url)
    if private and reveals(site_url, entry.feed_url, entry.feed_origin):
        site_url = None  # a site link carrying a token, or pointing into the feed's folder
    host = _host(feed_url or site_url or entry.feed_url)  # a host alone gives no secret away
    source_name = clean_text(entry.feed_title)
    if private and reveals(source_name, entry.feed_url, entry.feed_origin, name=True):
        source_name = ""  # a feed named after its own URL
    source_name = source_name or host or "unknown source"
    title = clean_text(entry.title) or _excerpt(context or excerpt, 80) or "(untitled)"
    published = _utc(entry.published or entry.first_seen)
    updated = max(published, _utc(entry.updated)) if entry.updated else published
    cats: list[str] = []
    for c in (entry.category, *entry.categories):
        c = clean_text(c)
        if c and c not in cats:
            cats.append(c)
    check = safe_url
    if private:  # a member feed's links and files carry its token: the site-link rule applies
        def check(u: str | None) -> str | None:
            out = safe_url(u)
            return None if reveals(out, entry.feed_url, entry.feed_origin) else out
    url = check(entry.url)
    fields = dict(
        id=entry_id(entry),
        story=entry.story_id,
        title=title,
        url=url,
        author=clean_text(entry.author),
        source_name=source_name,
        source_key=entry.feed_origin or entry.feed_url,
        source_feed_url=feed_url,
        source_site_url=site_url,
        category=clean_text(entry.category) or None,
        categories=tuple(cats),
        context=context,
        points=points,
        excerpt=excerpt,
        language=language_tag(entry.language),
        published=published,
        updated=updated,
        enclosures=media.for_output(entry.enclosures, check),
    )
    if not content:
        return _Item(**fields, content_html="")  # type: ignore[arg-type]
    html_ = env.get_template("content.html").render(item={**fields, **_NO_STORY})
    return _Item(**fields, content_html=html_)  # type: ignore[arg-type]


def _story_entry(rep: _Item, members: Sequence[_Item], related: Sequence[_Item], *,
                 entry_id: str, page: str | None, env: jinja2.Environment) -> _Item:
    """A story's one entry in a feed: ``rep`` (its newest item in that feed: the item
    its page shows) with the story's id, first date, newest update, page, other
    sources and related stories, and a content that lists them."""
    everyone = [rep, *(m for m in members if m.id != rep.id)]
    fields = {f: getattr(rep, f) for f in _ITEM_FIELDS}
    fields.update(
        id=entry_id,
        published=min(m.published for m in everyone),
        updated=max(m.updated for m in everyone),
        page=page,
        source_count=max(1, len({m.source_key for m in everyone})),
        others=tuple(newest_first_items(everyone[1:])),
        related=tuple(related),
    )
    content = env.get_template("content.html").render(item=fields)
    return _Item(**fields, content_html=content)  # type: ignore[arg-type]


_ITEM_FIELDS = tuple(f for f in _Item.__dataclass_fields__ if f != "content_html")


@dataclass(frozen=True)
class _Feed:
    """Feed-level metadata shared by the three formats of one feed."""

    title: str
    description: str
    home_url: str
    base: str  # URL of the directory holding this feed's files
    feed_id: str
    ttl_minutes: int
    updated: datetime
    language: str | None
    hub: str | None = None  # WebSub hub (websub.py): rel="hub" links in every format

    def self_url(self, name: str) -> str:
        return urljoin(self.base, name)


def _common_language(items: Sequence[_Item]) -> str | None:
    """The feed's language when every entry that says one says the same."""
    langs = {i.language.lower() for i in items if i.language}
    return next(iter(langs)) if len(langs) == 1 else None


def _feed(items: Sequence[_Item], title: str, description: str, home: str, base: str,
          ttl: int, empty_date: datetime, hub: str | None = None) -> _Feed:  # fmt: skip
    # Entries decide the date, not the clock, so unchanged entries give an unchanged file;
    # an empty feed takes the stable date its caller found (see publish()).
    updated = max((i.updated for i in items), default=_utc(empty_date))
    feed_id = f"urn:uuid:{uuid.uuid5(_ID_NAMESPACE, 'feed:' + base)}"
    return _Feed(title, description, home, base, feed_id, ttl, updated, _common_language(items),
                 hub)


def _source_updated(items: Sequence[_Item]) -> dict[str, datetime]:
    newest: dict[str, datetime] = {}
    for i in items:
        if i.source_key not in newest or i.updated > newest[i.source_key]:
            newest[i.source_key] = i.updated
    return newest

def _story_members(stories: Mapping[int, Sequence[Entry]] | None, *listed: Iterable[Entry] |
                   Mapping[str, Sequence[Entry]]) -> dict[int, list[Entry]]:
    """Story id -> its items: ``stories[id]`` when given, else the listed entries of it."""
    out: dict[int, list[Entry]] = {k: list(v) for k, v in (stories or {}).items()}
    found: dict[int, dict[int, Entry]] = {}
    for group in listed:
        for e in (x for es in group.values() for x in es) if isinstance(group, Mapping) \
                else group:
            if e.story_id is not None and e.story_id not in out:
                found.setdefault(e.story_id, {}).setdefault(e.item_id, e)
    out.update({sid: list(es.values()) for sid, es in found.items()})
    return out


def one_per_story(items: Iterable[_Item]) -> list[_Item]:
    """The first item of each story (the newest, items coming newest first); an item
    not clustered yet stands alone."""
    seen: set[int] = set()
    out: list[_Item] = []
    for i in items:
        if i.story is not None:
            if i.story in seen:
                continue
            seen.add(i.story)
        out.append(i)
    return out


def newest_first_items(items: Iterable[_Item]) -> list[_Item]:
    return sorted(items, key=lambda i: i.published, reverse=True)
