"""Bytes + headers -> ParsedFeed (feedparser), with every piece of item HTML
sanitised (nh3) and every title made plain text.

Pure: no network, no database; ``now`` comes in so future dates can be judged.
XML safety: a document whose internal DTD subset declares an external entity
(XXE) or entities built from other entities (an expansion bomb) is refused
with a ParseError; any other internal subset is cut out before feedparser
sees the document, so no entity declared by a feed is ever expanded or
resolved. UTF-16/32 documents are turned into UTF-8 first so that check
reads them too.

Charsets: a document that names no charset (no BOM, no XML declaration, none
in Content-Type) and is not UTF-8 gets one guessed (chardet, which feedparser
also uses), so windows-1251 or ISO-8859-1 text comes out readable instead of
being read as Latin-1 by default.
"""

from __future__ import annotations

import calendar
import codecs
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
MAX_TTL_MINUTES = 3650 * 24 * 60  # ten years, the longest delay decide.py knows
# bozo reasons that say nothing about the feed's health
_HARMLESS = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)

_BLOCK = re.compile(
    r"</?(?:p|div|br|li|ul|ol|h[1-6]|blockquote|pre|tr|table|section|article|figure|figcaption)"
    r"\b[^>]*>",
    re.IGNORECASE,
)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
# C0 controls but the spaces _SPACES folds, DEL, C1: never text ("&#27;[2J" in a title would
# clear the terminal of whoever lists the items)
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_NEWLINES = re.compile(r"\n\s*\n\s*")


# --- XML safety --------------------------------------------------------------------

_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
# no BOM: the first "<" tells (XML starts with "<", maybe after a BOM)
_WIDE_NO_BOM = (
    (b"<\x00\x00\x00", "utf-32-le"), (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00", "utf-16-le"), (b"\x00<", "utf-16-be"),
)
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?\?>", re.IGNORECASE)
_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""",
                            re.IGNORECASE)
_ENTITY = re.compile(
    rb"""<!ENTITY\s+(%\s+)?([^\s"']+)\s+(SYSTEM|PUBLIC|"[^"]*"|'[^']*')""", re.IGNORECASE
)
# a reference to another entity inside an entity's value (character references
# and the five predefined entities are fine)
_NESTED_REF = re.compile(rb"[&%](?!#|(?:amp|lt|gt|quot|apos);)[A-Za-z_:]")


def _narrow(body: bytes) -> bytes:
    """UTF-16/32 -> UTF-8 with a matching declaration, so byte-level checks read it."""
    codec = next((c for bom, c in _WIDE_BOMS if body.startswith(bom)), None)
    if codec is None:
        codec = next((c for start, c in _WIDE_NO_BOM if body.startswith(start)), None)
    if codec is None:
        return body
    try:
        text = body.decode(codec)
    except UnicodeDecodeError:
        text = body.decode(codec, "replace")
    out = text.lstrip("\ufeff").encode("utf-8")
    out = _XML_DECL.sub(b"", out, count=1)
    return b'<?xml version="1.0" encoding="utf-8"?>' + out


def _doctype(body: bytes) -> tuple[int, int, int, int] | None:
    """(start, subset start, subset end, end) of a DOCTYPE in the prolog, the
    subset positions equal when it has none; None without a DOCTYPE. Quotes,
    comments and processing instructions are skipped, so a "]>" inside an
    entity value doesn't end the subset early."""
    n = len(body)
    i = 3 if body.startswith(codecs.BOM_UTF8) else 0
    while i < n:  # the prolog: whitespace, <?...?>, <!--...-->
        while i < n and body[i] in b" \t\r\n":
            i += 1
        if body.startswith(b"<?", i):
            j = body.find(b"?>", i + 2)
        elif body.startswith(b"<!--", i):
            j = body.find(b"-->", i + 4)
            j = j + 1 if j >= 0 else j
        elif body[i:i + 9].upper() == b"<!DOCTYPE":
            break
        else:
            return None  # the root element (or junk): no DOCTYPE
        if j < 0:
            return None
        i = j + 2
    else:
        return None
    start = i
    i += 9
    sub_start = sub_end = -1
    while i < n:
        c = body[i:i + 1]
        if c in (b'"', b"'"):
            j = body.find(c, i + 1)
            if j < 0:
                break
            i = j + 1
        elif sub_start >= 0 and sub_end < 0 and body.startswith(b"<!--", i):
            j = body.find(b"-->", i + 4)
            if j < 0:
                break
            i = j + 3
        elif sub_start >= 0 and sub_end < 0 and body.startswith(b"<?", i):
            j = body.find(b"?>", i + 2)
            if j < 0:
                break
            i = j + 2
        elif c == b"[" and sub_start < 0:
            sub_start = i + 1
            i += 1
        elif c == b"]" and sub_start >= 0 and sub_end < 0:
            sub_end = i
            i += 1
        elif c == b">" and (sub_start < 0 or sub_end >= 0):
            if sub_start < 0:
                sub_start = sub_end = i
            return start, sub_start, sub_end, i + 1
        else:
            i += 1
    raise ParseError("not a feed: unterminated DOCTYPE declaration")


# a numeric character reference long enough to name a surrogate or pass U+10FFFF
_BIG_CHARREF = re.compile(rb"&#(?:[xX]0*([0-9a-fA-F]{4,})|0*([0-9]{5,}));")


def _no_char(m: re.Match[bytes]) -> bytes:
    hex_digits, digits = m.group(1), m.group(2)
    if len(hex_digits or b"") > 6 or len(digits or b"") > 7:
        return b"&#xFFFD;"
    n = int(hex_digits, 16) if hex_digits else int(digits)
    return b"&#xFFFD;" if 0xD800 <= n <= 0xDFFF or n > 0x10FFFF else m.group(0)


def fix_charrefs(body: bytes) -> bytes:
    """"&#xD800;" or "&#x110000;" -> U+FFFD: feedparser's loose parser raises on a
    reference to no character, which made a whole feed unreadable for one of them."""
    return _BIG_CHARREF.sub(_no_char, body) if b"&#" in body else body


def dtd_threat(body: bytes) -> str | None:
    """Why the document's DTD is an attack, or None. External general entities
    (file:///etc/passwd, an intranet URL) and entities made of other entities
    (billion laughs) have no use in a news feed."""
    body = _narrow(body)
    span = _doctype(body)
    if span is None or span[1] == span[2]:
        return None
    subset = body[span[1]:span[2]]
    for m in _ENTITY.finditer(subset):
        parameter, name, value = m.group(1), m.group(2).decode("ascii", "replace"), m.group(3)
        if parameter:
            continue  # only used inside the DTD, which is dropped whole
        if value.upper() in (b"SYSTEM", b"PUBLIC"):
            return f"declares the external entity {name[:40]} (XXE)"
        if _NESTED_REF.search(value):
            return f"declares the entity {name[:40]} in terms of others (entity expansion bomb)"
    return None


def defuse(body: bytes) -> bytes:
    """Remove the internal DTD subset, so no entity a feed declares is expanded
    or resolved; the DOCTYPE itself stays (feedparser reads RSS 0.91 from it)."""
    body = _narrow(body)
    span = _doctype(body)
    if span is None or span[1] == span[2]:
        return body
    start, sub_start, sub_end, end = span
    # "<!DOCTYPE rss [ ... ]>" -> "<!DOCTYPE rss >"
    return body[:sub_start - 1] + b">" + body[end:]


# --- charsets ------------------------------------------------------------------------


_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
# single-byte charsets a server or template names by habit, not by knowledge
_SINGLE_BYTE = re.compile(r"(us-)?ascii|iso[-_]?8859[-_]?\d+|latin[-_]?\d|(windows|cp)[-_]?125\d")


def _declared_charset(body: bytes, headers: dict[str, str]) -> str | None:
    """The charset the document names: BOM, then Content-Type, then XML declaration."""
    if body.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    m = _HEADER_CHARSET.search(headers.get("content-type", ""))
    if m:
        return m.group(1).lower()
    decl = _DECL_ENCODING.match(body[:512])
    return decl.group(1).decode("ascii").lower() if decl else None


def guess_charset(body: bytes) -> str:
    """A charset for bytes that are not UTF-8 and name none."""
    try:
        import chardet
    except ImportError:  # pragma: no cover - chardet comes with feedparser's extras
        return "windows-1252"
    guess = chardet.detect(body[:262144])
    name = (guess.get("encoding") or "").lower()
    if not name or name == "ascii" or (guess.get("confidence") or 0) < 0.2:
        return "windows-1252"
    # what browsers do: a page labelled Latin-1 is read as windows-1252, its superset
    return "windows-1252" if name in ("iso-8859-1", "latin-1", "latin1") else name


def _with_charset(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """Headers that make feedparser read ``body`` right: a guessed charset when
    none is named and the bytes are not UTF-8; UTF-8 when a single-byte charset
    is named but the bytes are valid UTF-8 with non-ASCII text in them (text in
    a Latin charset almost never forms valid UTF-8 by chance, while feeds that
    say ISO-8859-1 out of habit and send UTF-8 are common)."""
    declared = _declared_charset(body, headers)
    try:
        body.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    if utf8 and declared and _SINGLE_BYTE.fullmatch(declared) and not body.isascii():
        return {**headers, "content-type": "application/xml; charset=utf-8"}
    if declared or utf8:
        return headers
    return {**headers, "content-type": f"application/xml; charset={guess_charset(body)}"}


def sanitize(fragment: str | None) -> str | None:
    if not fragment:
        return None
    cleaned = nh3.clean(
        fragment,
        url_schemes=ALLOWED_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    cleaned = _CONTROLS.sub("", cleaned.replace("\x0b", " ").replace("\x0c", " ")).strip()
    return cleaned or None


def to_text(fragment: str | None) -> str | None:
    """Plain text of an HTML fragment, paragraphs apart."""
    if not fragment:
        return None
    marked = _BLOCK.sub("\n\n", fragment)
    text = html.unescape(nh3.clean(marked, tags=set(), strip_comments=True))
    text = html.unescape(text) if "&" in text else text
    text = _CONTROLS.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = _NEWLINES.sub("\n\n", "\n".join(lines)).strip()
    return text or None


def plain(title: str | None) -> str | None:
    """A title is text: markup goes, entities are decoded, whitespace folds."""
    if not title:
        return None
    text = _CONTROLS.sub("", html.unescape(nh3.clean(title, tags=set())))
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


def _feedparse(body: bytes, headers: dict[str, str]) -> Any:
    try:
        return feedparser.parse(
            body,
            response_headers=headers,
            sanitize_html=False,  # nh3 does it, faster and stricter
            resolve_relative_uris=True,
        )
    except Exception as e:  # feedparser raising is a bug in it, not a reason to stop
        raise ParseError(f"parser failed: {type(e).__name__}: {e}") from e


_ABSOLUTE = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*:")
# an HTML attribute feedparser resolves, whose value starts with no scheme
_RELATIVE_ATTR = re.compile(
    r"""\b(?:href|src|cite|codebase|background|longdesc|action|profile|usemap|classid|data"""
    r"""|poster)\s*=\s*(?!["']?\s*[A-Za-z][A-Za-z0-9+.-]*:)""",
    re.IGNORECASE,
)
# feedparser's can_be_relative_uri, and where it resolves URIs inside HTML
_URI_KEYS = frozenset(("link", "comments", "docs", "href", "icon", "logo", "url",
                       "wfw_comment", "wfw_commentrss", "license"))
_HTML_KEYS = frozenset(("content", "summary", "title", "subtitle", "rights", "info",
                        "value", "description", "copyright", "tagline"))


def _relative(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and not _ABSOLUTE.match(value)


def _has_relative_uri(d: Any) -> bool:
    """Does a document parsed without a base URL hold a URI that a base would
    change: a link, enclosure, permalink guid or HTML attribute with no scheme?"""

    def walk(node: Any, depth: int) -> bool:
        if depth > 5:
            return False
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _URI_KEYS and _relative(value):
                    return True
                if key == "id" and node.get("guidislink") and _relative(value):
                    return True
                if key in _HTML_KEYS and isinstance(value, str) and "=" in value \
                        and _RELATIVE_ATTR.search(value):
                    return True
                if isinstance(value, (dict, list)) and walk(value, depth + 1):
                    return True
        elif isinstance(node, list):
            return any(walk(v, depth + 1) for v in node)
        return False

    return walk(d.get("feed", {}), 0) or any(walk(e, 0) for e in d.get("entries", []))


def parse(body: bytes, headers: dict[str, str], url: str, now: datetime) -> ParsedFeed:
    """Parse one feed document. Raises ParseError when the bytes are not a feed."""
    if not body.strip():
        raise ParseError("empty response body")
    parsed_headers = {k.lower(): v for k, v in headers.items()}
    base = parsed_headers.pop("content-location", None) or url
    threat = dtd_threat(body)
    if threat:
        raise ParseError(f"refused: the document {threat}")
    if _narrow(body) is not body:  # UTF-16/32: defuse hands back UTF-8
        parsed_headers["content-type"] = "application/xml; charset=utf-8"
    body = fix_charrefs(defuse(body))
    parsed_headers = _with_charset(body, parsed_headers)
    # Without a base URL feedparser skips a urljoin per element (a quarter of
    # its time); a document that turns out to hold a relative URI is parsed
    # again with the base, so every URI comes out resolved as before.
    d = _feedparse(body, parsed_headers)
    if _has_relative_uri(d):
        d = _feedparse(body, {**parsed_headers, "content-location": base})
    feed = d.get("feed", {})
    entries = d.get("entries", [])
    if not d.get("version") and not entries:
        reason = d.get("bozo_exception")
        if isinstance(reason, _HARMLESS):
            reason = None  # "no Content-type specified" is not why it isn't a feed
        looks_html = b"<html" in body[:2048].lower()
        what = "an HTML page" if looks_html else "not a feed"
        raise ParseError(f"{what}: {reason}" if reason and not looks_html else what)
    broken = d.get("bozo") and not isinstance(d.get("bozo_exception"), _HARMLESS)
    if broken and not entries and not plain(feed.get("title")):
        # a root element was seen, but nothing else survived the errors
        raise ParseError(f"not a feed: {d.get('bozo_exception') or 'malformed'}")
    language = (feed.get("language") or parsed_headers.get("content-language") or "").strip()
    items = []
    for entry in entries:
        content = sanitize(_content(entry))
        title = plain(entry.get("title"))
        guid, link = _guid(entry), _link(entry)
        if not (content or title or guid or link):
            continue  # nothing a reader could see or we could tell apart: not a story
        author = plain(entry.get("author"))
        items.append(
            ParsedItem(
                guid=guid,
                url=link,
                title=title,
                author=author[:500] if author else None,
                published=_date(dict.get(entry, "published_parsed"), now),
                updated=_date(dict.get(entry, "updated_parsed"), now),
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
    if ttl is not None and not 0 < ttl <= MAX_TTL_MINUTES:
        ttl = None  # "-1" or twenty digits: no advice (and no INTEGER overflow in SQLite)
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


# <link rel="alternate" type=...> types that announce a feed, best first
FEED_LINK_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json",
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
            if "alternate" in rels and kind in FEED_LINK_TYPES and a.get("href"):
                found.append((FEED_LINK_TYPES.index(kind), urljoin(base_url, a["href"])))

    finder = Finder(convert_charrefs=True)
    try:
        finder.feed(page[:2_000_000].decode("utf-8", "replace"))
    except Exception:  # a page too broken to scan has no links we can trust
        return []
    return [u for _, u in sorted(found, key=lambda x: x[0])]
