"""Stored entries -> the published files.

    entries ──> _Item views (escaped text, checked links, dates)
            ──> rss.xml  atom.xml  feed.json  index.html                    (all entries)
            ──> category/<slug>/{rss.xml,atom.xml,feed.json,index.html}      (one set per category)
    stories ──> story/<id>.html      (one page per story on a page: its sources, Latest News)
    subscriptions ──> feeds.opml

A folder's feeds and page hold its subfolders' entries too: ``World`` shows ``World /
Europe``'s stories beside its own (a subfolder also gets its own set).

Every output is a pure function of the arguments and never reads the clock, so the same
database gives byte-identical files: a feed is dated by its newest entry, an empty one by
the stable date its caller knows (its newest item ever, or when its category appeared;
``publish_from_store`` asks the database), and the page writes dates out in UTC
("11 May 2025, 09:30 UTC") instead of "3h ago". A file is rewritten only when its bytes
change, which keeps ETags and Last-Modified stable, and always atomically (temp file in the
same directory, fsync, rename), so a reader never sees half a file.

Safety: every piece of text is escaped by the serialiser (lxml, Jinja2 autoescape, json);
markup in one-line fields (titles, names, categories) is stripped to its text, because many
readers render an RSS <title> as HTML; only http(s) links are kept. The only HTML in any
output is the HTML our templates write.

The pages list each story once (its newest item in the window), with "2 sources" linking
to its page, and so do the feeds: one entry per story, showing the item its page shows,
with the id of the story's first item (so it never changes as the story grows), linking
the original article and, beside it, the story page, its other sources and related
stories (Atom ``rel="related"`` links, JSON Feed ``_aggregator``, listed in the content).
A category's feeds hold a story when any of its items is in the category.

The package, in the order an entry goes through it: ``text`` (small rules: ids, clean
text, safe links, dates), ``views`` (``_Item``: what an entry shows), ``formats`` (RSS,
Atom, JSON Feed, OPML), ``pages`` (the HTML pages), ``files`` (atomic writing under a
lock); this module wires them (``publish``) and reads the store (``publish_from_store``).

Private subscriptions (``opml.is_private``: marked ``private="true"``, or a URL with
credentials or a token) never show their feed URL: their entries' source is the feed's
title and site link only, and feeds.opml lists them as a link to the site, not a feed.
"""


from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from aggregator import websub
from aggregator.config import public_url
from aggregator.publish.files import (
    _fsync,
    _remove_stale_categories,
    _remove_stale_stories,
    write_files,
)
from aggregator.publish.formats import render_atom, render_json_feed, render_opml, render_rss
from aggregator.publish.pages import FeedCounts, _environment, render_page, render_story_page
from aggregator.publish.text import (
    EPOCH,
    FEED_FILES,
    GENERATOR,
    LATEST_STORIES,
    PAGE,
    STORY_DIR,
    SUBFOLDER,
    _utc,
    category_slugs,
    clean_text,
    dateline,
    entry_id,
    item_entry_id,
    language_tag,
    newest_first,
    safe_url,
    slugify,
)
from aggregator.publish.views import (
    _feed,
    _Item,
    _item,
    _story_entry,
    _story_members,
    newest_first_items,
    one_per_story,
)
from aggregator.types import Entry, Subscription

if TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.store import Store


__all__ = [
    "FEED_FILES", "PAGE", "STORY_DIR", "FeedCounts", "category_slugs", "clean_text", "dateline",
    "entry_id", "folder_members", "item_entry_id", "language_tag", "one_per_story", "publish",
    "publish_from_store", "render_atom", "render_json_feed", "render_opml", "render_page",
    "render_rss", "render_story_page", "safe_url", "slugify", "write_files",
]

log = logging.getLogger("aggregator.publish")

# ----------------------------------------------------------------------------- entry point


def folder_members(names: Iterable[str]) -> dict[str, set[str]]:
    """Every folder, its parents included (``World`` for ``World / Europe``, even when no
    feed sits in ``World`` itself) -> the categories whose entries it shows: itself and
    every subfolder below it."""
    folders: set[str] = set()
    for name in names:
        parts = name.split(SUBFOLDER)
        folders.update(SUBFOLDER.join(parts[:n]) for n in range(1, len(parts) + 1))
    folders.discard("")
    return {f: {n for n in folders if n == f or n.startswith(f + SUBFOLDER)} for f in folders}


def publish(
    entries: Sequence[Entry],
    out_dir: Path,
    *,
    subscriptions: Sequence[Subscription] = (),
    category_entries: Mapping[str, Sequence[Entry]] | None = None,
    base_url: str = "http://127.0.0.1:8080/",
    title: str = "aggregator",
    description: str | None = None,
    ttl_minutes: int = 30,
    max_entries: int = 100,
    category_max_entries: int | None = None,
    dates: Mapping[str, datetime] | None = None,
    counts: Mapping[str, FeedCounts] | None = None,
    now: datetime | None = None,
    stories: Mapping[int, Sequence[Entry]] | None = None,
    hub: str | None = None,
    related: Mapping[int, Sequence[int]] | None = None,
    anchors: Mapping[int, tuple[str, str]] | None = None,
) -> list[Path]:
    """Write every output file into ``out_dir``; return the files that changed.

    ``entries`` are the newest entries (sorted newest-first and cut to ``max_entries`` here
    too). Category feeds hold, per category, ``category_entries[name]`` when given (so a
    quiet category still gets its own newest ``category_max_entries``), else the entries of
    ``entries`` whose ``category`` is that name; a folder's feeds also hold its subfolders'
    entries. Categories are the union of the subscriptions' categories, the entries', the
    mapping's keys and their parent folders.

    ``dates``: per category ("" for feeds without one), the date of its feeds when they
    have no entry, e.g. its newest item ever or when it appeared; the main feed takes the
    newest of them. Without one, ``now`` when given (a caller without a database), else
    1970-01-01: never the clock, so that an empty feed stays the same file.
    ``counts``: per category (""), how its feeds stand, said on a page with no story.
    ``stories``: story id -> all its items (``Store.story_entries``); each story on a page
    that is found there gets ``story/<id>.html``, and the pages list it once. Without it,
    no story page is written (and none is removed).
    The feeds carry one entry per story: the item the feed's page shows for it, with
    the story's other items (``stories``, else the entries given) and related stories.
    ``related``: story id -> related story ids, best first (``Store.related_stories``;
    their items in ``stories``). ``anchors``: story id -> its first item's (feed origin,
    key) (``Store.story_anchors``), whose id the story's entry takes; without one, the
    id of its known item of the lowest ``item_id``.
    ``hub``: a WebSub hub every feed names (websub.py); pinging it is the caller's.
    """
    base = safe_url(base_url) or "http://127.0.0.1:8080/"
    if not base.endswith("/"):
        base += "/"
    title = clean_text(title) or GENERATOR
    description = (
        clean_text(description) or f"{title}: the newest stories from every source, summarised"
    )
    per_category = max_entries if category_max_entries is None else category_max_entries
    env = _environment()
    views: dict[int, _Item] = {}

    def select(es: Iterable[Entry], limit: int = max_entries) -> list[Entry]:
        """The newest ``limit``, each entry once (one id twice makes a feed invalid)."""
        out: list[Entry] = []
        seen: set[str] = set()
        for e in newest_first(es):
            if len(out) >= limit:
                break
            if id(e) not in views:
                views[id(e)] = _item(e, env)
            item_id = views[id(e)].id
            if item_id not in seen:
                seen.add(item_id)
                out.append(e)
        return out

    main_entries = select(entries)
    main = [views[id(e)] for e in main_entries]
    names = {clean_text(s.category) for s in subscriptions} | {i.category or "" for i in main}
    grouped: dict[str, list[Entry]] = {}
    if category_entries is not None:
        for name, es in category_entries.items():
            grouped.setdefault(clean_text(name), []).extend(es)
        names |= set(grouped)
    mapped = set(grouped)
    for e, i in zip(main_entries, main, strict=True):  # a category the mapping leaves out
        if i.category and i.category not in mapped:
            grouped.setdefault(i.category, []).append(e)
    names.discard("")
    members = folder_members(names)
    by_category: dict[str, list[_Item]] = {}
    for name, inside in members.items():
        chosen = select((e for m in sorted(inside) for e in grouped.get(m, ())), per_category)
        by_category[name] = [views[id(e)] for e in chosen]
    slugs = category_slugs(members)

    known = {clean_text(k): _utc(v) for k, v in (dates or {}).items()}
    fallback = max(known.values(), default=_utc(now) if now else EPOCH)
    tally = {clean_text(k): v for k, v in counts.items()} if counts is not None else None

    def stable_date(inside: Iterable[str]) -> datetime:
        return max((known[m] for m in inside if m in known), default=fallback)

    def counted(inside: Iterable[str]) -> FeedCounts | None:
        if tally is None:
            return None
        return sum((tally[m] for m in inside if m in tally), FeedCounts())

    order = sorted(slugs, key=lambda n: (n.casefold(), n))  # a folder before its subfolders
    page_categories = [  # each category's number of entries: its stories
        {"name": name, "slug": slugs[name], "count": len(one_per_story(by_category[name]))}
        for name in order
    ]
    # The pages: each story once, linking its page when its items are known.
    page_main = one_per_story(main)
    page_items = {name: one_per_story(by_category[name]) for name in order}
    shown: dict[int, _Item] = {}
    for i in (*page_main, *(i for name in order for i in page_items[name])):
        if i.story is not None and stories is not None and i.story in stories:
            shown.setdefault(i.story, i)
    entries_of = _story_members(stories, main_entries, grouped)
    story_items: dict[int, list[_Item]] = {}
    heads: dict[int, _Item] = {}  # a related story's newest item

    def members_of(sid: int) -> list[_Item]:
        if sid not in story_items:
            story_items[sid] = [_item(e, env, content=False) for e in entries_of.get(sid, ())]
        return story_items[sid]

    def page_url(sid: int) -> str | None:
        return urljoin(base, f"{STORY_DIR}/{sid}.html") if sid in shown else None

    def related_of(sid: int, href: Callable[[int], str | None]) -> list[_Item]:
        out = []
        for rid in (related or {}).get(sid, ()):
            newest = newest_first(entries_of.get(rid, ()))[:1]
            if rid != sid and newest:
                if rid not in heads:
                    heads[rid] = _item(newest[0], env, content=False)
                out.append(replace(heads[rid], page=href(rid)))
        return out

    made: dict[tuple[int, str], _Item] = {}

    def entry(i: _Item) -> _Item:
        """The entry of the story ``i`` shows in a feed (``i`` itself when alone)."""
        if i.story is None:
            return i
        if (i.story, i.id) not in made:
            sid = i.story
            anchor = (anchors or {}).get(sid)
            first = min(entries_of.get(sid, ()), key=lambda e: e.item_id, default=None)
            eid = (item_entry_id(*anchor) if anchor
                   else entry_id(first) if first is not None else i.id)  # fmt: skip
            made[(sid, i.id)] = _story_entry(i, members_of(sid) or [i],
                                             related_of(sid, page_url), entry_id=eid,
                                             page=page_url(sid), env=env)  # fmt: skip
        return made[(i.story, i.id)]

    def feed_entries(items: Iterable[_Item]) -> list[_Item]:
        out, seen = [], set()
        for e in map(entry, items):
            if e.id not in seen:  # one id twice makes a feed invalid
                seen.add(e.id)
                out.append(e)
        return out

    sources = {sid: max(1, len({m.source_key for m in members_of(sid)})) for sid in shown}
    files: dict[Path, bytes] = {}
    for sid, item in shown.items():
        others = newest_first_items(m for m in members_of(sid) if m.id != item.id)
        latest = [i for i in page_main if i.story in shown and i.story != sid][:LATEST_STORIES]
        local = related_of(sid, lambda rid: f"{rid}.html" if rid in shown else None)
        files[out_dir / STORY_DIR / f"{sid}.html"] = render_story_page(
            item, others, latest, site_title=title, sources=sources[sid], related=local)
    hub = safe_url(hub) if hub else None
    feed_main = feed_entries(page_main)
    feed = _feed(feed_main, title, description, base, base, ttl_minutes, fallback, hub)
    files[out_dir / "rss.xml"] = render_rss(feed, feed_main)
    files[out_dir / "atom.xml"] = render_atom(feed, feed_main)
    files[out_dir / "feed.json"] = render_json_feed(feed, feed_main)
    files[out_dir / "feeds.opml"] = render_opml(subscriptions, title)
    files[out_dir / PAGE] = render_page(page_main, page_categories, title=title,
                                        counts=counted(tally or ()),
                                        sources=sources)  # fmt: skip
    for name in order:
        slug, items, inside = slugs[name], feed_entries(page_items[name]), members[name]
        cat_base = urljoin(base, f"category/{slug}/")
        cat_title = f"{title}: {name}"
        cat_feed = _feed(items, cat_title, f"{description} ({name})", base, cat_base,
                         ttl_minutes, stable_date(inside), hub)  # fmt: skip
        d = out_dir / "category" / slug
        files[d / "rss.xml"] = render_rss(cat_feed, items)
        files[d / "atom.xml"] = render_atom(cat_feed, items)
        files[d / "feed.json"] = render_json_feed(cat_feed, items)
        files[d / PAGE] = render_page(
            page_items[name], page_categories, title=cat_title, site_title=title,
            root="../../", current=slug, includes=sorted(inside - {name}, key=str.casefold),
            counts=counted(inside), sources=sources)

    changed = write_files(files)
    removed = _remove_stale_categories(out_dir, set(slugs.values()))
    if stories is not None:
        removed += _remove_stale_stories(out_dir, {f"{sid}.html" for sid in shown})
    gone = {p.parent if p.parent.name == STORY_DIR else p.parent.parent for p in removed}
    for directory in {p.parent for p in changed} | gone:
        _fsync(directory)  # the renames themselves survive a crash
    if changed or removed:
        log.info("published %d entries in %s: %d files changed, %d removed",
                 len(feed_main), out_dir, len(changed), len(removed))  # fmt: skip
    return changed


def publish_from_store(settings: Settings, store: Store) -> list[Path]:
    """Every output file from the database: the newest entries, each category's, and for
    what has no entry the stable date and the feed counts its page states."""
    entries = store.recent_entries(settings.max_entries)
    categories = store.recent_by_category(settings.category_max_entries)
    # Only a category with no entry of its own needs a date from the database (a folder
    # whose subfolders have entries is dated by them: asking costs nothing then).
    quiet = [c for c, es in categories.items() if not es]
    if not entries:
        quiet.append("")  # the main feed and the feeds without a folder
    dates = store.category_dates(quiet) if quiet else {}
    counts = {c: FeedCounts(*n) for c, n in store.feed_counts().items()}
    listed = {e.story_id for es in (entries, *categories.values()) for e in es}
    listed.discard(None)
    story_ids: list[int] = sorted(listed)  # type: ignore[arg-type]
    related = store.related_stories(story_ids)
    more = {r for rs in related.values() for r in rs} - listed
    stories = store.story_entries(sorted({*story_ids, *more}))
    base_url = settings.base_url or public_url(settings.host, settings.port)
    changed = publish(
        entries,
        settings.output,
        subscriptions=store.subscriptions(),
        category_entries=categories,
        base_url=base_url,
        title=settings.title,
        ttl_minutes=int(settings.interval),
        max_entries=settings.max_entries,
        category_max_entries=settings.category_max_entries,
        dates=dates,
        counts=counts,
        stories=stories,
        hub=settings.websub_hub or None,
        related=related,
        anchors=store.story_anchors(story_ids),
    )
    websub.announce(settings.websub_hub or None, changed, settings.output,
                    safe_url(base_url) or base_url, settings.user_agent)
    return changed
