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

Private subscriptions (``opml.is_private``: marked ``private="true"``, or a URL with
credentials or a token) never show their feed URL: their entries' source is the feed's
title and site link only, and feeds.opml lists them as a link to the site, not a feed.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import html
import json
import logging
import os
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import jinja2
import nh3
from lxml import etree
from markupsafe import Markup, escape

from aggregator import __version__, media, websub
from aggregator.config import public_url
from aggregator.errors import PublishError
from aggregator.opml import is_private, reveals
from aggregator.types import Enclosure, Entry, Subscription

if TYPE_CHECKING:
    from aggregator.config import Settings
    from aggregator.store import Store

log = logging.getLogger("aggregator.publish")

ATOM_NS = "http://www.w3.org/2005/Atom"
DC_NS = "http://purl.org/dc/elements/1.1/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
RSS_DOCS = "https://www.rssboard.org/rss-specification"
GENERATOR = "aggregator"
FEED_FILES = ("rss.xml", "atom.xml", "feed.json")
PAGE = "index.html"
STORY_DIR = "story"
LATEST_STORIES = 10  # how many of the newest stories a story page lists under Latest News
_STORY_PAGE = re.compile(r"[0-9]+\.html\Z")
SUBFOLDER = " / "  # how opml.py joins nested folder names: "World / Europe"
# The date of an empty feed when nothing dates it (no feed was ever subscribed).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TEMPLATES = Path(__file__).with_name("templates")

# Entry ids are uuid5(namespace, feed_url + "\n" + key): never change this constant, or every
# reader shows every entry a second time.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aggregator:entry-id")

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
_LOOKS_LIKE_MARKUP = re.compile(r"<[A-Za-z/!?]|&[#A-Za-z0-9]+;")
_LANG = re.compile(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*")
_URL_SAFE = "/%:@!$&'()*+,;=-._~?#[]"
EXCERPT_CHARS = 400


# ----------------------------------------------------------------------------- small rules


def entry_id(entry: Entry) -> str:
    """The entry's id in every format: the same on every run and for any base_url."""
    return item_entry_id(entry.feed_origin or entry.feed_url, entry.key)


def item_entry_id(source: str, key: str) -> str:
    """The id of the item ``key`` of the feed first subscribed as ``source``: a story's
    entry takes its first item's (``Store.story_anchors``), so that a story of one item
    keeps the id its item always had."""
    name = source + "\n" + key
    if not name.isascii():  # a lone surrogate can't be UTF-8: U+FFFD, any other text unchanged
        name = name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return f"urn:uuid:{uuid.uuid5(_ID_NAMESPACE, name)}"


_RAW_TEXT_START = re.compile(
    r"<(script|style|textarea|title|xmp|iframe|noembed|noframes|noscript|plaintext)\b",
    re.IGNORECASE,
)
_TAG_LIKE = re.compile(r"<(/?[A-Za-z!?][^<>]*)>")


def _unclosed_raw_text_as_text(value: str) -> str:
    """Escape the "<" of a <script>/<style>/... that is never closed: in a one-line field
    it is a word ("the <script> tag"), and an HTML parser would swallow the rest of the
    line as the element's content."""

    def fix(m: re.Match[str]) -> str:
        end = re.compile(rf"</{m.group(1)}\s*>", re.IGNORECASE)
        return m.group(0) if end.search(value, m.end()) else "&lt;" + m.group(0)[1:]

    return _RAW_TEXT_START.sub(fix, value)


def clean_text(value: str | None) -> str:
    """One line of plain text: no markup, no characters XML can't carry, spaces collapsed.

    Markup is stripped to its text; what only looks like a tag once decoded (a title
    about "the <script> tag") keeps its words, with its angle brackets shown as
    ‹ › so that no reader rendering the line as HTML can take it for markup."""
    if not value:
        return ""
    value = _XML_INVALID.sub("", value)
    if _LOOKS_LIKE_MARKUP.search(value):
        value = html.unescape(nh3.clean(_unclosed_raw_text_as_text(value), tags=set()))
        value = _TAG_LIKE.sub("‹\\1›", value)
        value = _XML_INVALID.sub("", value)
    return " ".join(value.split())


def _plain(value: str | None) -> str:
    """Body text (sentences): kept as written, escaped later; only XML-invalid chars go."""
    return " ".join(_XML_INVALID.sub("", value).split()) if value else ""


@lru_cache(maxsize=8192)
def safe_url(value: str | None) -> str | None:
    """An absolute http(s) URL, percent-encoded where needed, or None for anything else."""
    if not value:
        return None
    value = value.strip()
    if _XML_INVALID.search(value) or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
        port = parts.port  # raises on a bad port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host or parts.username is not None:
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    path, query, fragment = (
        quote(p, safe=_URL_SAFE) for p in (parts.path, parts.query, parts.fragment)
    )
    return urlunsplit((parts.scheme.lower(), netloc, path or "/", query, fragment))


def language_tag(value: str | None) -> str | None:
    """A BCP 47-shaped tag ("en", "en-GB") or None; "en_US" is read as "en-US"."""
    if not value:
        return None
    value = value.strip().replace("_", "-")
    return value if _LANG.fullmatch(value) else None


def slugify(name: str) -> str:
    """ASCII path segment for a category; a short hash when nothing ASCII is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60].strip("-")
    return slug or "c-" + hashlib.sha256(name.encode()).hexdigest()[:10]


def category_slugs(names: Iterable[str]) -> dict[str, str]:
    """Category name -> unique slug, the same whatever order the names come in."""
    slugs: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(set(names), key=lambda n: (n.casefold(), n)):
        base = slug = slugify(name)
        n = 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        taken.add(slug)
        slugs[name] = slug
    return slugs


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC, microsecond=0)
    return value.astimezone(UTC).replace(microsecond=0)


@lru_cache(maxsize=4096)
def rfc3339(value: datetime) -> str:
    v = _utc(value)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


@lru_cache(maxsize=4096)
def rfc822(value: datetime) -> str:
    return format_datetime(_utc(value), usegmt=True)


def dateline(value: datetime) -> str:
    """ "11 May 2025, 09:30 UTC": the page's date of a story. Written out, not "3h ago",
    so that the page stays the same file for as long as its stories do."""
    v = _utc(value)
    return f"{v.day} {_MONTHS[v.month - 1]} {v.year}, {v.hour:02d}:{v.minute:02d} UTC"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.") + "…"


def _sort_key(entry: Entry) -> datetime:
    return _utc(entry.published or entry.first_seen)


def newest_first(entries: Iterable[Entry]) -> list[Entry]:
    """Newest first by published, else first_seen; ties keep their order."""
    return sorted(entries, key=_sort_key, reverse=True)


def newest_first_items(items: Iterable[_Item]) -> list[_Item]:
    return sorted(items, key=lambda i: i.published, reverse=True)


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


# ----------------------------------------------------------------------------- formats


def _sub(
    parent: etree._Element, tag: str, text: str | None = None, /, **attrib: str
) -> etree._Element:
    el = etree.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def render_rss(feed: _Feed, items: Sequence[_Item]) -> bytes:
    """RSS 2.0; the author goes in dc:creator since RSS <author> must be an e-mail address."""
    rss = etree.Element("rss", {"version": "2.0"}, nsmap={"atom": ATOM_NS, "dc": DC_NS})
    ch = _sub(rss, "channel")
    _sub(ch, "title", feed.title)
    _sub(ch, "link", feed.home_url)
    _sub(ch, "description", feed.description)
    self_link = dict(href=feed.self_url("rss.xml"), rel="self", type="application/rss+xml")
    _sub(ch, f"{{{ATOM_NS}}}link", **self_link)
    websub.rss_links(ch, feed.hub)
    if feed.language:
        _sub(ch, "language", feed.language)
    _sub(ch, "lastBuildDate", rfc822(feed.updated))
    _sub(ch, "generator", f"{GENERATOR} {__version__}")
    _sub(ch, "docs", RSS_DOCS)
    _sub(ch, "ttl", str(feed.ttl_minutes))
    for i in items:
        it = _sub(ch, "item")
        _sub(it, "title", i.title)
        if i.url or i.page:
            _sub(it, "link", i.url or i.page)
        _sub(it, "description", i.content_html)
        if (chosen := media.rss_choice(i.enclosures)) is not None:  # RSS allows one
            _sub(it, "enclosure", **media.rss_attributes(chosen))
        if i.author:
            _sub(it, f"{{{DC_NS}}}creator", i.author)
        for c in i.categories:
            _sub(it, "category", c)
        _sub(it, "guid", i.id, isPermaLink="false")
        _sub(it, "pubDate", rfc822(i.published))
        # One <source> (RSS 2.0 has one per item): the feed of the item shown; a story's
        # other sources and related stories are listed in the description.
        if i.source_feed_url or i.source_site_url:  # a private feed: its site stands in
            _sub(it, "source", i.source_name, url=i.source_feed_url or i.source_site_url)
        if (thumb := media.thumbnail(i.enclosures)) is not None:
            _sub(it, f"{{{media.MEDIA_NS}}}thumbnail", url=thumb.url)
    return etree.tostring(rss, xml_declaration=True, encoding="utf-8", pretty_print=True)


def render_atom(feed: _Feed, items: Sequence[_Item]) -> bytes:
    """Atom 1.0 (RFC 4287), each entry with an atom:source naming the feed it came from."""
    a = f"{{{ATOM_NS}}}"
    root = etree.Element(a + "feed", nsmap={None: ATOM_NS})
    if feed.language:
        root.set(XML_LANG, feed.language)
    _sub(root, a + "id", feed.feed_id)
    _sub(root, a + "title", feed.title, type="text")
    _sub(root, a + "subtitle", feed.description, type="text")
    _sub(root, a + "updated", rfc3339(feed.updated))
    _sub(root, a + "link", rel="self", type="application/atom+xml", href=feed.self_url("atom.xml"))
    _sub(root, a + "link", rel="alternate", type="text/html", href=feed.home_url)
    websub.atom_links(root, feed.hub)
    author = _sub(root, a + "author")
    _sub(author, a + "name", feed.title)
    _sub(root, a + "generator", GENERATOR, version=__version__)
    sources = _source_updated(items)
    for i in items:
        e = _sub(root, a + "entry")
        if i.language and i.language.lower() != (feed.language or "").lower():
            e.set(XML_LANG, i.language)
        _sub(e, a + "id", i.id)
        _sub(e, a + "title", i.title, type="text")
        if i.url or i.page:
            _sub(e, a + "link", rel="alternate", type="text/html", href=i.url or i.page)
        for href, text in _related_links(i):
            _sub(e, a + "link", rel="related", type="text/html", href=href, title=text)
        for enc in media.files(i.enclosures):
            _sub(e, a + "link", **media.atom_attributes(enc))
        _sub(e, a + "published", rfc3339(i.published))
        _sub(e, a + "updated", rfc3339(i.updated))
        if i.author:
            _sub(_sub(e, a + "author"), a + "name", i.author)
        for c in i.categories:
            _sub(e, a + "category", term=c)
        if i.context:
            # type="html" holding escaped text: the W3C validator flags markup-like text in a
            # type="text" summary, and a reader shows the same characters either way.
            _sub(e, a + "summary", str(escape(i.context)), type="html")
        _sub(e, a + "content", i.content_html, type="html")
        src = _sub(e, a + "source")
        if i.source_feed_url:
            _sub(src, a + "id", i.source_feed_url)
        _sub(src, a + "title", i.source_name, type="text")
        if i.source_feed_url:
            _sub(src, a + "link", rel="self", href=i.source_feed_url)
        if i.source_site_url:
            _sub(src, a + "link", rel="alternate", type="text/html", href=i.source_site_url)
        _sub(src, a + "updated", rfc3339(sources[i.source_key]))
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)


def _related_links(i: _Item) -> list[tuple[str, str]]:
    """(href, title) of a story entry's Atom rel="related" links: its story page, its
    other sources' articles, its related stories (their page, else their article);
    each address once, none that is the entry's own link."""
    links: list[tuple[str, str]] = []
    seen = {i.url or i.page}
    if i.page and i.page not in seen:
        links.append((i.page, f"All {_plural(i.source_count, 'source')} on one page"))
        seen.add(i.page)
    for o in i.others:
        if o.url and o.url not in seen:
            links.append((o.url, f"{o.source_name}: {o.title}"))
            seen.add(o.url)
    for r in i.related:
        href = r.page or r.url
        if href and href not in seen:
            links.append((href, f"Related: {r.title} ({r.source_name})"))
            seen.add(href)
    return links


def _source_of(m: _Item) -> dict[str, object]:
    out = {"title": m.title, "source": m.source_name, "url": m.url,
           "feed_url": m.source_feed_url, "date_published": rfc3339(m.published)}
    return {k: v for k, v in out.items() if v}


def _story_extension(i: _Item) -> dict[str, object]:
    """The "_aggregator" object of a story's entry: the story, every source (the
    entry's own first), the related stories."""
    related = []
    for r in i.related:
        one = {"story_id": r.story, "title": r.title, "source": r.source_name, "url": r.url,
               "story_url": r.page, "date_published": rfc3339(r.published)}
        related.append({k: v for k, v in one.items() if v})
    out = {"story_id": i.story, "story_url": i.page, "source_count": i.source_count,
           "sources": [_source_of(m) for m in (i, *i.others)], "related": related}
    return {k: v for k, v in out.items() if v is not None}


def render_json_feed(feed: _Feed, items: Sequence[_Item]) -> bytes:
    """JSON Feed 1.1; the source feed goes in the "_source" extension object, a story's
    sources and related stories in "_aggregator"."""
    out_items = []
    for i in items:
        source = {"title": i.source_name, "feed_url": i.source_feed_url,
                  "home_page_url": i.source_site_url}  # fmt: skip
        item = {
            "id": i.id,
            "url": i.url or i.page,
            "title": i.title,
            "content_html": i.content_html,
            "summary": i.context,
            "date_published": rfc3339(i.published),
            "date_modified": rfc3339(i.updated),
            "authors": [{"name": i.author}] if i.author else None,
            "tags": list(i.categories),
            "language": i.language,
            "image": thumb.url if (thumb := media.thumbnail(i.enclosures)) else None,
            "attachments": media.json_attachments(i.enclosures),
            "_source": {k: v for k, v in source.items() if v},
            "_aggregator": _story_extension(i) if i.story is not None else None,
        }
        out_items.append({k: v for k, v in item.items() if v})  # leave out what is unknown
    doc: dict[str, object] = {
        "version": JSONFEED_VERSION,
        "title": feed.title,
        "home_page_url": feed.home_url,
        "feed_url": feed.self_url("feed.json"),
        "description": feed.description,
        "authors": [{"name": feed.title}],
    }
    if feed.hub:
        doc["hubs"] = websub.json_hubs(feed.hub)
    if feed.language:
        doc["language"] = feed.language
    doc["items"] = out_items
    # Compact: json's C encoder only runs without indent (10x faster for a 20-category publish).
    return (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def render_opml(subscriptions: Sequence[Subscription], title: str) -> bytes:
    """OPML 2.0 of the subscriptions, one folder per category (first-seen order)."""
    root = etree.Element("opml", version="2.0")
    head = _sub(root, "head")
    _sub(head, "title", f"{title} subscriptions")
    body = _sub(root, "body")
    folders: dict[str, etree._Element] = {}
    for s in subscriptions:
        private = is_private(s.url, s.private)
        xml_url = None if private else safe_url(s.url)
        html_url = safe_url(s.html_url)
        if private and reveals(html_url, s.url):
            html_url = None
        if private and not html_url:
            continue  # nothing to show but the URL that must stay private
        if not xml_url and not private:
            log.warning("not listing subscription with a non-http(s) URL in feeds.opml: %r", s.url)
            continue
        parent = body
        category = clean_text(s.category)
        if category:
            if category not in folders:
                folders[category] = _sub(body, "outline", text=category)
            parent = folders[category]
        name = clean_text(s.title)
        if private and reveals(name, s.url, name=True):
            name = ""
        if xml_url is None:  # private: OPML 2.0's link outline to the site, not the feed
            assert html_url
            name = name or urlsplit(html_url).hostname or html_url
            _sub(parent, "outline", type="link", text=name, title=name, url=html_url)
            continue
        name = name or xml_url
        outline = _sub(parent, "outline", type="rss", text=name, title=name, xmlUrl=xml_url)
        if html_url:
            outline.set("htmlUrl", html_url)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)


# ----------------------------------------------------------------------------- HTML


@cache
def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(TEMPLATES)
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)  # fmt: skip


@cache
def _style() -> tuple[Markup, str]:
    """The page's CSS and its CSP hash (the page allows no other style and no script)."""
    css = (TEMPLATES / "style.css").read_text(encoding="utf-8")
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return Markup(css), "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@dataclass(frozen=True)
class FeedCounts:
    """How the subscriptions of a page stand: said on a page with no story yet."""

    feeds: int = 0
    failing: int = 0  # the last fetch failed (or the feed is gone)
    unpolled: int = 0  # never fetched yet

    def __add__(self, other: FeedCounts) -> FeedCounts:
        return FeedCounts(self.feeds + other.feeds, self.failing + other.failing,
                          self.unpolled + other.unpolled)  # fmt: skip


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def empty_reason(counts: FeedCounts | None) -> tuple[str, str | None]:
    """Why a page has no story, and the command that shows more: ("9 feeds, 9 failing",
    "aggregator feeds"). ("", None) when the counts are not known."""
    if counts is None:
        return "", None
    if counts.feeds == 0:  # none subscribed, or feeds.opml not read into the database yet
        return "no feeds in the database", "aggregator update"
    parts = [_plural(counts.feeds, "feed")]
    if counts.unpolled:
        parts.append("none polled yet" if counts.unpolled == counts.feeds
                     else f"{counts.unpolled} not polled yet")  # fmt: skip
    if counts.unpolled < counts.feeds:
        parts.append(f"{counts.failing} failing")
    command = "aggregator update" if counts.unpolled == counts.feeds else "aggregator feeds"
    return ", ".join(parts), command


def render_page(
    items: Sequence[_Item],
    categories: Sequence[Mapping[str, object]],
    *,
    title: str,
    site_title: str | None = None,
    root: str = "",
    current: str | None = None,
    includes: Sequence[str] = (),
    counts: FeedCounts | None = None,
    sources: Mapping[int, int] | None = None,
) -> bytes:
    """The news page of the whole site (``root`` "") or of one category (``current``, its
    slug; ``root`` "../../"): the same template, links relative to the page.
    ``sources``: story id -> its number of sources, for the stories that have a page."""
    css, csp = _style()[0], _csp()
    sources = sources or {}
    stories = [
        {"item": i, "when": dateline(i.published), "iso": rfc3339(i.published),
         "page": f"{root}{STORY_DIR}/{i.story}.html" if i.story in sources else None,
         "sources": _plural(sources[i.story], "source") if i.story in sources else None}
        for i in items
    ]
    reason, command = empty_reason(counts) if not items else ("", None)
    page = _environment().get_template("index.html")
    text = page.render(title=title, site_title=site_title or title, css=css, csp=csp,
                       stories=stories, categories=categories, root=root, current=current,
                       includes=includes, empty_reason=reason, empty_command=command)  # fmt: skip
    return text.encode("utf-8")


def _csp() -> str:
    return (f"default-src 'none'; style-src {_style()[1]}; img-src 'none'; "
            "base-uri 'none'; form-action 'none'")


def _line(item: _Item, page: str | None = None) -> dict[str, object]:
    """One story in a list: its title linking ``page`` (else the original), source, date."""
    return {"item": item, "href": page or item.url, "when": dateline(item.published),
            "iso": rfc3339(item.published)}


def render_story_page(
    item: _Item,
    members: Sequence[_Item],
    latest: Sequence[_Item],
    *,
    site_title: str,
    sources: int,
    related: Sequence[_Item] = (),
) -> bytes:
    """``story/<id>.html``: the story's newest item (profile line, date, title linking the
    original, Context, Dive deeper), then Latest News (``latest``: other stories, each
    linking its own page) and Related Stories: ``members`` (the story's other items,
    under "Other sources") and ``related`` (other stories on the same topic, each by its
    newest item, linking its page (``page``) or else its original)."""
    page = _environment().get_template("story.html")
    text = page.render(
        title=f"{item.title} · {site_title}", site_title=site_title, css=_style()[0],
        csp=_csp(), story=_line(item), sources=_plural(sources, "source"),
        latest=[_line(i, f"{i.story}.html") for i in latest],
        others=[_line(m) for m in members], related=[_line(r, r.page) for r in related])
    return text.encode("utf-8")


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


# ----------------------------------------------------------------------------- files


def write_files(files: Mapping[Path, bytes]) -> list[Path]:
    """Atomically replace each file whose bytes differ; return those replaced.

    All temp files are written first, then fsynced, then renamed: the fsyncs share journal
    commits (a 20-category publish takes a third of the time of write-fsync-rename per
    file) and the new files appear together. Temp files are dotfiles in the same
    directory (``.rss.xml.XXXX.tmp``: never served), removed on any failure; those a
    killed publisher left behind go at the next publish, which holds a lock on the
    output directory so it never removes another publisher's. A directory that can't be
    written (read-only, full, a file in its place) is a PublishError and every old file
    stays as it was.
    """
    if not files:
        return []
    root = Path(os.path.commonpath([p.parent for p in files]))
    staged: list[tuple[Path, str]] = []
    try:
        with _publish_lock(root):
            for directory in {p.parent for p in files}:
                _remove_leftovers(directory)
            try:
                for path, data in files.items():
                    try:
                        if path.read_bytes() == data:
                            continue
                    except FileNotFoundError:
                        pass
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                               suffix=".tmp")
                    staged.append((path, tmp))
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.chmod(tmp, 0o644)
                for _, tmp in staged:
                    _fsync(tmp)
                for path, tmp in staged:
                    os.replace(tmp, path)
            finally:
                for _, tmp in staged:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
    except OSError as e:
        where = e.filename or root
        raise PublishError(f"cannot write {where}: {e.strerror or e}") from e
    return [path for path, _ in staged]


_LEFTOVER = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp\Z")  # tempfile.mkstemp's names, above


def _remove_leftovers(directory: Path) -> None:
    try:
        names = [n for n in os.listdir(directory) if _LEFTOVER.match(n)]
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass


@contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    """One publisher at a time per output directory (the daemon, an `aggregator
    publish` beside it): a lock on the directory itself, no lock file; the kernel
    drops the lock of a killed process."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_categories(out_dir: Path, keep: set[str]) -> list[Path]:
    """Drop the files of categories that no longer exist (only files this module writes)."""
    removed: list[Path] = []
    root = out_dir / "category"
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        if d.name in keep or not d.is_dir():
            continue
        for name in (*FEED_FILES, PAGE):
            p = d / name
            if p.exists():
                p.unlink()
                removed.append(p)
        try:
            d.rmdir()
        except OSError:
            pass  # something else lives there: leave it
    return removed


def _remove_stale_stories(out_dir: Path, keep: set[str]) -> list[Path]:
    """Drop the story pages of stories no longer on a page (only ``<id>.html``)."""
    removed: list[Path] = []
    root = out_dir / STORY_DIR
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if _STORY_PAGE.match(p.name) and p.name not in keep and p.is_file():
            p.unlink()
            removed.append(p)
    return removed


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
