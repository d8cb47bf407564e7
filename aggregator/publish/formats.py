"""The feed formats: RSS 2.0, Atom 1.0 (RFC 4287), JSON Feed 1.1 and OPML, written by
lxml and json from ``_Item`` views, never by string concatenation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

from lxml import etree
from markupsafe import escape

from aggregator import __version__, media, websub
from aggregator.opml import is_private, reveals
from aggregator.publish.pages import _plural
from aggregator.publish.text import (
    ATOM_NS,
    DC_NS,
    GENERATOR,
    JSONFEED_VERSION,
    RSS_DOCS,
    XML_LANG,
    clean_text,
    rfc822,
    rfc3339,
    safe_url,
)
from aggregator.publish.views import _Feed, _Item, _source_updated
from aggregator.types import Subscription

log = logging.getLogger("aggregator.publish")

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


