"""Bytes + headers -> ParsedFeed: RSS, Atom and RDF with feedparser, JSON Feed
with jsonfeed.py, both through the same rules (clean.py): item HTML
sanitised (nh3), titles plain text, links http(s) only, dates, numbers,
strings and item counts checked and bounded where they enter.

Pure: no network, no database; ``now`` comes in so future dates can be judged.
Bytes are bytes: feedparser gets them as a stream, never as a str or bytes it
could take for a file name or URL. Whatever the bytes, parse() raises
ParseError or returns.
XML safety: a document whose internal DTD subset declares an external entity
(XXE) or entities built from other entities (an expansion bomb) is refused
with a ParseError; any other internal subset is cut out before feedparser
sees the document, so no entity declared by a feed is ever expanded or
resolved. UTF-16/32 and EBCDIC documents are turned into UTF-8 first so
that check reads them too.

Charsets: a document that names no charset (no BOM, no XML declaration, none
in Content-Type) and is not UTF-8 gets one guessed (chardet, which feedparser
also uses), so windows-1251 or ISO-8859-1 text comes out readable instead of
being read as Latin-1 by default.
"""

from __future__ import annotations

import codecs
import html
import io
import re
from datetime import datetime
from typing import Any

import feedparser

from aggregator import clean, jsonfeed, media, xmlfeed
from aggregator.clean import plain, sanitize, to_text  # noqa: F401 - their old home
from aggregator.errors import ParseError
from aggregator.types import ParsedFeed, ParsedItem

# bozo reasons that say nothing about the feed's health
_HARMLESS = (feedparser.NonXMLContentType, feedparser.CharacterEncodingOverride)


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
# "<?xm" in EBCDIC (XML 1.0 appendix F): feedparser reads such a document too
_EBCDIC = b"\x4c\x6f\xa7\x94"
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?\?>", re.IGNORECASE)
_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""",
                            re.IGNORECASE)
_ENTITY = re.compile(
    rb"""<!ENTITY\s+(%\s+)?([^\s"']+)\s+(SYSTEM|PUBLIC|"[^"]*"|'[^']*')""", re.IGNORECASE
)
# a reference to another entity inside an entity's value (character references
# and the five predefined entities are fine)
_NESTED_REF = re.compile(rb"[&%](?!#|(?:amp|lt|gt|quot|apos);)[A-Za-z_:]")


def _ebcdic_codec(body: bytes) -> str:
    """The EBCDIC code page the declaration names, if Python has it; cp037 else."""
    decl = _DECL_ENCODING.match(body[:512].decode("cp037", "replace").encode("utf-8"))
    if decl:
        try:
            name = codecs.lookup(decl.group(1).decode("ascii")).name
            if "<?xm".encode(name, "replace") == _EBCDIC:
                return name
        except LookupError:
            pass
    return "cp037"


def _narrow(body: bytes) -> bytes:
    """UTF-16/32 and EBCDIC -> UTF-8 with a matching declaration, so byte-level checks read it."""
    codec = next((c for bom, c in _WIDE_BOMS if body.startswith(bom)), None)
    if codec is None:
        codec = next((c for start, c in _WIDE_NO_BOM if body.startswith(start)), None)
    if codec is None and body.startswith(_EBCDIC):
        codec = _ebcdic_codec(body)
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


# a tag of 1 KB or more (scanned in C, linear: each run ends at the next "<" or ">")
_LONG_TAG = re.compile(rb"<[^<>]{1024,}")
#: Attributes one element may have: feedparser's time grows with their square
#: (10,000 on one element: 1 s; 60,000: 41 s), so a hostile server could hold a
#: parse for minutes with one tag.
MAX_TAG_ATTRIBUTES = 256


def attribute_threat(body: bytes) -> str | None:
    """Why the document is an attribute bomb, or None: a tag holding more than
    MAX_TAG_ATTRIBUTES "=" (raw HTML inside CDATA counts too: no real page has such
    a tag). ``body`` as _narrow hands it back (ASCII-compatible)."""
    for m in _LONG_TAG.finditer(body):
        if m.group().count(b"=") > MAX_TAG_ATTRIBUTES:
            return f"has an element with more than {MAX_TAG_ATTRIBUTES} attributes"
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


# --- character references ----------------------------------------------------------

# numeric references of 4+ hex or 5+ decimal digits: the only ones that can
# name a surrogate (U+D800-DFFF) or lie past U+10FFFF
_BIG_CHARREF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{4,})|([0-9]{5,}));")


def _charref(m: re.Match[bytes]) -> bytes:
    hexa, dec = m.group(1), m.group(2)
    digits = (hexa or dec).lstrip(b"0")
    if len(digits) > 7:
        return b"&#xFFFD;"
    code = int(digits or b"0", 16 if hexa else 10)
    return b"&#xFFFD;" if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF else m.group(0)


def no_bad_charrefs(body: bytes) -> bytes:
    """A reference to a surrogate or past U+10FFFF (``&#55296;``) made
    feedparser raise, and one such reference lost the whole feed: it becomes
    U+FFFD, as an HTML parser reads it."""
    return _BIG_CHARREF.sub(_charref, body) if b"&#" in body else body


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


def _date(entry: Any, key: str, now: datetime) -> datetime | None:
    """feedparser's reading of a date, unless the text names fields that
    don't exist (it rolls 2026-02-30 over to March 2) or a zone of 99 hours."""
    text = dict.get(entry, key)
    if not (clean.iso_fields_valid(text) and clean.zone_valid(text)):
        return None
    return clean.from_struct(dict.get(entry, f"{key}_parsed"), now)


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
    return clean.identifier(str(guid)) if guid else None


def _categories(entry: Any) -> tuple[str, ...]:
    return clean.categories(
        tag.get("label") or tag.get("term") for tag in entry.get("tags") or ()
        if isinstance(tag, dict)
    )


def _link(entry: Any) -> str | None:
    return clean.web_url(entry.get("link"))


def _feedparse(body: bytes, headers: dict[str, str]) -> Any:
    """feedparser on the bytes as a stream: given bytes or str it would first
    try them as a file name (and a str as a URL), so a server answering
    "/etc/..." would have us read that file."""
    try:
        return feedparser.parse(
            io.BytesIO(body),
            response_headers=headers,
            sanitize_html=False,  # nh3 does it, faster and stricter
            resolve_relative_uris=True,
        )
    except Exception as e:  # feedparser raising (RecursionError too) is a bug in it,
        # not a reason to stop
        raise ParseError(f"parser failed: {type(e).__name__}: {str(e)[:200]}") from e


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


def _is_json(body: bytes, headers: dict[str, str]) -> bool:
    """A JSON Feed by its type (unless the body opens like XML: servers
    mislabel), or by a body that opens like a JSON object."""
    if jsonfeed.sniff(body):
        return True
    if jsonfeed.is_json_type(headers.get("content-type")):
        return not _narrow(body).lstrip(codecs.BOM_UTF8 + b" \t\r\n").startswith(b"<")
    return False


def _entry_language(entry: Any) -> str | None:
    """The item's own language: feedparser keeps an ``xml:lang`` on the item (or
    inherited from the document) on each text construct's detail."""
    found = entry.get("language")
    for detail in (*(entry.get("content") or ())[:1], entry.get("summary_detail"),
                   entry.get("title_detail")):
        if found:
            break
        if isinstance(detail, dict):
            found = detail.get("language")
    return clean.language(found)


def parse(body: bytes, headers: dict[str, str], url: str, now: datetime, *,
          fast: bool = True) -> ParsedFeed:
    """Parse one feed document (RSS, Atom, RDF or JSON Feed). Raises
    ParseError, and nothing else, when the bytes are not a feed. Plain RSS 2.0
    is read by xmlfeed.py (the same result, faster) unless ``fast`` is False."""
    if not body.strip():
        raise ParseError("empty response body")
    parsed_headers = {str(k).lower(): str(v) for k, v in headers.items()}
    base = parsed_headers.pop("content-location", None) or url
    base = clean.web_url(base, url) or url
    if _is_json(body, parsed_headers):
        return jsonfeed.parse(body, base, now)
    narrow = _narrow(body)
    threat = dtd_threat(narrow) or attribute_threat(narrow)
    if threat:
        raise ParseError(f"refused: the document {threat}")
    if narrow is not body:  # UTF-16/32, EBCDIC: defuse hands back UTF-8
        parsed_headers["content-type"] = "application/xml; charset=utf-8"
    body = no_bad_charrefs(defuse(narrow))
    parsed_headers = _with_charset(body, parsed_headers)
    quick = xmlfeed.parse(body, parsed_headers, base, now) if fast else None
    if quick is not None:
        return quick
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
    if broken and not entries and not clean.plain(feed.get("title")):
        # a root element was seen, but nothing else survived the errors
        raise ParseError(f"not a feed: {d.get('bozo_exception') or 'malformed'}")
    items = []
    for entry in entries[: clean.MAX_ITEMS]:
        if not isinstance(dict.get(entry, "links", []), list):
            # an item's own <links>x</links> element: feedparser's "enclosures"
            # (read from the links) would raise TypeError
            dict.pop(entry, "links")
        content = clean.sanitize(_content(entry))
        title = clean.plain(entry.get("title"))
        guid, link = _guid(entry), _link(entry)
        if not (content or title or guid or link):
            continue  # nothing a reader could see or we could tell apart: not a story
        items.append(
            ParsedItem(
                guid=guid,
                url=link,
                title=title,
                author=clean.plain(entry.get("author"), clean.MAX_AUTHOR_CHARS),
                published=_date(entry, "published", now),
                updated=_date(entry, "updated", now),
                content=content,
                content_text=clean.to_text(content),
                categories=_categories(entry),
                language=_entry_language(entry),
                enclosures=media.from_feedparser(entry, base),
            )
        )
    warnings = []
    exc = d.get("bozo_exception")
    if d.get("bozo") and not isinstance(exc, _HARMLESS):
        warnings.append(f"{type(exc).__name__}: {str(exc)[:200]}" if exc else "malformed feed")
    if len(entries) > clean.MAX_ITEMS:
        warnings.append(f"{len(entries)} items, only the first {clean.MAX_ITEMS} kept")
    return ParsedFeed(
        title=clean.plain(feed.get("title")),
        site_url=_link(feed),
        language=clean.language(feed.get("language") or parsed_headers.get("content-language")),
        ttl_minutes=clean.ttl_minutes(feed.get("ttl")),
        items=tuple(items),
        warning="; ".join(warnings) or None,
    )


# <link rel="alternate" type=...> types that announce a feed, in the order
# find_feed_links prefers them
FEED_LINK_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json",
                   "application/rdf+xml", "application/json")
#: Candidates handed back at most (discovery fetches each in turn).
MAX_FEED_LINKS = 10


def find_feed_links(page: bytes, base_url: str) -> list[str]:
    """Feed URLs a web page announces with <link rel="alternate">, best first:
    RSS (application/rss+xml), then Atom (application/atom+xml), then JSON
    Feed (application/feed+json), then RDF/RSS 1.0 (application/rdf+xml),
    then generic JSON (application/json) last, as it may be any JSON; in page
    order within one type. Only http(s) URLs, each once, at most
    MAX_FEED_LINKS."""
    from html.parser import HTMLParser

    found: list[tuple[int, int, str]] = []

    class Finder(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag != "link":
                return
            a = {k.lower(): (v or "") for k, v in attrs}
            rels = a.get("rel", "").lower().split()
            kind = a.get("type", "").lower().split(";")[0].strip()
            href = clean.web_url(a.get("href"), base_url)
            if "alternate" in rels and kind in FEED_LINK_TYPES and href:
                found.append((FEED_LINK_TYPES.index(kind), len(found), href))

    finder = Finder(convert_charrefs=True)
    try:
        finder.feed(page[:2_000_000].decode("utf-8", "replace"))
        finder.close()
    except Exception:  # a page too broken to scan further: keep what was found
        pass
    out: list[str] = []
    for _, _, url in sorted(found):
        if url not in out:
            out.append(url)
    return out[:MAX_FEED_LINKS]
