"""Bytes + headers -> ParsedFeed (feedparser), with every piece of item HTML
sanitised (nh3) and every title made plain text.

Pure: no network, no database; ``now`` comes in so future dates can be judged.
XML safety: an internal DTD subset (where entity bombs and external entities
live) is cut out before feedparser sees the document, so no entity declared by
a feed is ever expanded or resolved.
"""

from __future__ import annotations

import calendar
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser
import nh3

from aggregator.errors import ParseError
from aggregator.types import ParsedFeed, ParsedItem

ALLOWED_SCHEMES = {"http", "https", "mailto"}
FUTURE_SLACK = timedelta(days=1)
# bozo reasons that say nothing about the feed's health
_HARMLESS = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)

# <!DOCTYPE name ... [ internal subset ]>: the internal subset goes, the rest stays.
_DOCTYPE_SUBSET = re.compile(rb"(<!DOCTYPE[^\[>]*)\[.*?\]\s*>", re.DOTALL | re.IGNORECASE)
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_BLOCK = re.compile(
    r"</?(?:p|div|br|li|ul|ol|h[1-6]|blockquote|pre|tr|table|section|article|figure|figcaption)"
    r"\b[^>]*>",
    re.IGNORECASE,
)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_NEWLINES = re.compile(r"\n\s*\n\s*")


def defuse(body: bytes) -> bytes:
    """Remove internal DTD subsets and stray entity declarations."""
    head = body[:65536]
    if b"<!" not in head:
        return body
    cleaned = _DOCTYPE_SUBSET.sub(rb"\1>", head, count=1)
    cleaned = _ENTITY_DECL.sub(b"<!-- removed -->", cleaned) if _ENTITY_DECL.search(
        cleaned) else cleaned
    return cleaned + body[65536:]


def sanitize(fragment: str | None) -> str | None:
    if not fragment:
        return None
    cleaned = nh3.clean(
        fragment,
        url_schemes=ALLOWED_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    ).strip()
    return cleaned or None


def to_text(fragment: str | None) -> str | None:
    """Plain text of an HTML fragment, paragraphs apart."""
    if not fragment:
        return None
    marked = _BLOCK.sub("\n\n", fragment)
    text = html.unescape(nh3.clean(marked, tags=set(), strip_comments=True))
    text = html.unescape(text) if "&" in text else text
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = _NEWLINES.sub("\n\n", "\n".join(lines)).strip()
    return text or None


def plain(title: str | None) -> str | None:
    """A title is text: markup goes, entities are decoded, whitespace folds."""
    if not title:
        return None
    text = html.unescape(nh3.clean(title, tags=set()))
    text = _SPACES.sub(" ", text.replace("\n", " ")).strip()
    return text or None


def _date(value: Any, now: datetime) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    if when > now + FUTURE_SLACK or when.year < 1970:
        return None  # a date from the future (or before 1970) is a publisher's mistake
    return when


def _content(entry: Any) -> str | None:
    best = None
    for c in entry.get("content") or ():
        value = c.get("value") or ""
        if c.get("type", "text/html") in ("text/plain",):
            value = html.escape(value)
        if best is None or len(value) > len(best):
            best = value
    summary = entry.get("summary") or ""
    if best is None or len(summary) > len(best):
        best = summary or best
    return best


def _guid(entry: Any) -> str | None:
    guid = entry.get("id") or entry.get("guid")
    return str(guid).strip() or None if guid else None


def _categories(entry: Any) -> tuple[str, ...]:
    out: list[str] = []
    for tag in entry.get("tags") or ():
        term = plain(tag.get("label") or tag.get("term"))
        if term and term not in out:
            out.append(term[:200])
    return tuple(out)


def _link(entry: Any) -> str | None:
    link = (entry.get("link") or "").strip()
    if link.lower().startswith(("http://", "https://")):
        return link
    return None


def parse(body: bytes, headers: dict[str, str], url: str, now: datetime) -> ParsedFeed:
    """Parse one feed document. Raises ParseError when the bytes are not a feed."""
    if not body.strip():
        raise ParseError("empty response body")
    parsed_headers = {k.lower(): v for k, v in headers.items()}
    parsed_headers.setdefault("content-location", url)
    try:
        d = feedparser.parse(
            defuse(body),
            response_headers=parsed_headers,
            sanitize_html=False,  # nh3 does it, faster and stricter
            resolve_relative_uris=True,
        )
    except Exception as e:  # feedparser raising is a bug in it, not a reason to stop
        raise ParseError(f"parser failed: {type(e).__name__}: {e}") from e
    feed = d.get("feed", {})
    entries = d.get("entries", [])
    if not d.get("version") and not entries:
        reason = d.get("bozo_exception")
        looks_html = b"<html" in body[:2048].lower()
        what = "an HTML page" if looks_html else "not a feed"
        raise ParseError(f"{what}: {reason}" if reason and not looks_html else what)
    language = (feed.get("language") or parsed_headers.get("content-language") or "").strip()
    items = []
    for entry in entries:
        content = sanitize(_content(entry))
        author = plain(entry.get("author"))
        items.append(
            ParsedItem(
                guid=_guid(entry),
                url=_link(entry),
                title=plain(entry.get("title")),
                author=author[:500] if author else None,
                published=_date(entry.get("published_parsed"), now),
                updated=_date(entry.get("updated_parsed"), now),
                content=content,
                content_text=to_text(content),
                categories=_categories(entry),
                language=(entry.get("language") or "").strip().lower()[:20] or None,
            )
        )
    ttl = None
    try:
        ttl = int(str(feed.get("ttl", "")).strip() or 0) or None
    except ValueError:
        ttl = None
    warning = None
    exc = d.get("bozo_exception")
    if d.get("bozo") and not isinstance(exc, _HARMLESS):
        warning = f"{type(exc).__name__}: {exc}" if exc else "malformed feed"
    return ParsedFeed(
        title=plain(feed.get("title")),
        site_url=_link(feed),
        language=language.lower()[:20] or None,
        ttl_minutes=ttl,
        items=tuple(items),
        warning=warning,
    )


class _LinkFinder:
    """<link rel="alternate" type="application/rss+xml" href="..."> in a page."""

    TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json",
             "application/rdf+xml", "application/json")


def find_feed_links(page: bytes, base_url: str) -> list[str]:
    """Feed URLs a web page announces, best first (RSS/Atom before JSON)."""
    from html.parser import HTMLParser
    from urllib.parse import urljoin

    found: list[tuple[int, str]] = []

    class Finder(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag != "link":
                return
            a = {k.lower(): (v or "") for k, v in attrs}
            rels = a.get("rel", "").lower().split()
            kind = a.get("type", "").lower().split(";")[0].strip()
            if "alternate" in rels and kind in _LinkFinder.TYPES and a.get("href"):
                found.append((_LinkFinder.TYPES.index(kind), urljoin(base_url, a["href"])))

    finder = Finder(convert_charrefs=True)
    try:
        finder.feed(page[:2_000_000].decode("utf-8", "replace"))
    except Exception:  # a page too broken to scan has no links we can trust
        return []
    return [u for _, u in sorted(found, key=lambda x: x[0])]
