"""A fast reader for the plain case of RSS 2.0: well-formed UTF-8 XML read with
the C ElementTree parser, giving the very ParsedFeed the feedparser path of
parse.py gives, in a fraction of its time.

``parse`` returns None ("decline") for anything but the plain case it reads
exactly as feedparser does: a DOCTYPE, a charset other than UTF-8, a document
expat refuses, Atom/RDF/other roots, xml:base, an element or attribute whose
meaning to feedparser it has not been checked against, a duplicated element,
a relative URI (feedparser resolves those against the base, a second parse),
markup inside a text element. parse.py then hands the document to feedparser.
It never raises: any exception inside is a decline.

Text goes through the steps feedparser applies to element text (strip; the
"looks like HTML" guess for RSS titles; feedparser's HTML re-serialiser for
HTML fields, called only when the text holds markup or an entity; the
double-encoded UTF-8 repair; the windows-1252 code points), dates through
feedparser's own date parser, and then the same rules as the feedparser path
(clean.py, media.py, parse._date/_content/...). tests/test_xmlfeed.py holds
both paths equal on real feeds, feedparser's and the W3C validator's test
files, the farm feeds and mutations of them.

Security: no DOCTYPE is accepted, so no entity is declared, expanded or
fetched; the bytes go to the parser as bytes (XMLParser.feed), never as a
path. Pure: no I/O.
"""

from __future__ import annotations

import html
import html.entities
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from feedparser.datetimes import _parse_date
from feedparser.mixin import _FeedParserMixin
from feedparser.sanitizer import _HTMLSanitizer
from feedparser.urls import resolve_relative_uris

from aggregator import clean, media
from aggregator import parse as _parse
from aggregator.types import ParsedFeed, ParsedItem

_XML_NS = "http://www.w3.org/XML/1998/namespace"
_XML_LANG = f"{{{_XML_NS}}}lang"

# namespace URI (lower case) -> feedparser's standard prefix
_KNOWN_NS: dict[str, str] = {k.lower(): v for k, v in _FeedParserMixin.namespaces.items()}
_STANDARD_PREFIXES = frozenset(v for v in _KNOWN_NS.values() if v)
# feedparser's handlers: an element whose key has one means something to it
_HANDLED = frozenset(
    name.split("_", 2)[2] for name in dir(_FeedParserMixin)
    if name.startswith(("_start_", "_end_"))
)

# the windows-1252 code points feedparser maps (U+0080-U+009F read as cp1252)
_CP1252 = {}
for _c in range(128, 160):
    try:
        _CP1252[_c] = bytes([_c]).decode("cp1252")
    except UnicodeDecodeError:
        pass
_C1 = re.compile("[\x80-\x9f]")
_URIFIX = re.compile(r"^([A-Za-z][A-Za-z0-9+-.]*://)(/*)")
_LINK_REF = re.compile(r"&([A-Za-z0-9_]+);")
_CLOSE_TAG = re.compile(r"</(\w+)>")
_ANY_REF = re.compile(r"&#?\w+;")
_TAG_NAME = re.compile(r"</?(\w+)")
_NAMED_REF = re.compile(r"&(\w+);")
_ACCEPTABLE = frozenset(_HTMLSanitizer.acceptable_elements)

# what an RSS <item> may hold, by feedparser key: "text" elements we read,
# "ignored" ones that feedparser stores under keys we never read
_ITEM_READ = frozenset((
    "title", "link", "description", "guid", "id", "pubdate", "author", "dc_creator", "category",
    "enclosure", "comments", "content_encoded", "dc_date", "media_content",
    "media_thumbnail", "media_group", "source",
))
_MEDIA_NESTED = frozenset(("media_content", "media_thumbnail", "media_group"))
_CHANNEL_READ = frozenset(("title", "link", "description", "language", "ttl", "item"))
# channel elements with a feedparser handler whose effect stays out of our fields
_CHANNEL_HARMLESS = frozenset((
    "lastbuilddate", "pubdate", "copyright", "generator", "managingeditor", "webmaster",
    "category", "image", "cloud", "docs", "rating", "skiphours", "skipdays", "dc_rights",
    "dc_publisher", "dc_date",
))
_IMAGE_CHILDREN = frozenset(("url", "title", "link", "width", "height", "description"))
# handled elements that hold text only (a child element inside is declined)
_SINGLE = frozenset((
    "title", "link", "description", "guid", "pubdate", "content_encoded", "dc_date",
    "comments", "source",
))
_URI_ELEMENTS = frozenset(("link", "comments", "docs", "href", "icon", "logo", "url",
                           "wfw_comment", "wfw_commentrss", "id"))
_HTML_ELEMENTS = frozenset(("content", "copyright", "description", "info", "rights",
                            "subtitle", "summary", "tagline", "title"))
#: Elements and attributes a document read here may hold: an ElementTree
#: element costs some 250 bytes, so this bounds the tree near 25 MB (the
#: largest real feed captured has 1,300 elements; 1,000 items of 30 is 30,000).
#: More declines: feedparser streams such a document instead of keeping it.
MAX_ELEMENTS = 100_000
MAX_ATTRIBUTES = 100_000
_CHUNK = 1 << 16


class _Decline(Exception):
    pass


def _no(why: str = "") -> None:
    raise _Decline(why)


def _looks_like_html(s: str) -> bool:
    """feedparser's guess whether RSS "plain" text is HTML (same test)."""
    if not (_CLOSE_TAG.search(s) or _ANY_REF.search(s)):
        return False
    if any(t.lower() not in _ACCEPTABLE for t in _TAG_NAME.findall(s)):
        return False
    return all(e in html.entities.entitydefs for e in _NAMED_REF.findall(s))


def _finish(s: str) -> str:
    """The last two steps feedparser applies to all element text."""
    if not s.isascii():
        try:
            s = s.encode("iso-8859-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
        if _C1.search(s):
            s = s.translate(_CP1252)
    return s


def _text(raw: str | None, element: str, htmlish: bool | None = None) -> str:
    """Element text as feedparser hands it on: ``element`` is its name for
    feedparser (title, description, link, id...), ``htmlish`` True for
    text/html, None for text/plain (guessed), False for no content type."""
    s = (raw or "").strip()
    if s and element in _URI_ELEMENTS:
        s = _URIFIX.sub(r"\1", s)
    if htmlish is None:
        htmlish = _looks_like_html(s)
    if htmlish and element in _HTML_ELEMENTS and ("<" in s or "&" in s):
        s = resolve_relative_uris(s, "", "utf-8", "text/html")
    s = _finish(s)
    if element in _HTML_ELEMENTS and "=" in s and _parse._RELATIVE_ATTR.search(s):
        _no()  # feedparser would parse again with the base
    if element in _URI_ELEMENTS and element != "id" and _parse._relative(s):
        _no()
    return s


def _attrs(el: ET.Element) -> dict[str, str]:
    """Attributes as feedparser keys them (lower-case names; rel and type values
    lower-case); a namespaced one (but xml:lang), xml:base or base declines."""
    out: dict[str, str] = {}
    for k, v in el.attrib.items():
        if k.startswith("{"):
            if k != _XML_LANG:
                _no(f"attribute {k}")
            continue
        name = k.lower()
        if name in out or name in ("base", "lang"):
            _no(f"attribute {name}")
        out[name] = v.lower() if name in ("rel", "type") else v
        if name in _parse._URI_KEYS and _parse._relative(v):
            _no()
        if name in _parse._HTML_KEYS and "=" in v and _parse._RELATIVE_ATTR.search(v):
            _no()
    return out


class _Keys:
    """feedparser's name for each element: its standard prefix + local name."""

    def __init__(self, declared: list[tuple[str, str]]) -> None:
        by_uri: dict[str, str] = {}
        seen: dict[str, str] = {}
        for prefix, uri in declared:
            if not uri or any(c.isspace() for c in uri):
                _no()  # expat's SAX reader splits names at a space: feedparser fails
            if prefix in seen and seen[prefix] != uri:
                _no()  # one prefix, two namespaces
            seen[prefix] = uri
            low = uri.lower()
            if "backend.userland.com/rss" in low:
                low = "http://backend.userland.com/rss"
            std = _KNOWN_NS.get(low)
            if std is not None:
                if prefix and prefix != std and prefix in _STANDARD_PREFIXES:
                    _no()  # xmlns:dc="...mrss/": feedparser's map would mix them
                continue
            if not prefix or prefix in _STANDARD_PREFIXES or uri in by_uri:
                _no()
            by_uri[uri] = prefix
        self.unknown = by_uri
        self.cache: dict[str, str] = {}

    def key(self, tag: str) -> str:
        found = self.cache.get(tag)
        if found is not None:
            return found
        if tag.startswith("{"):
            uri, local = tag[1:].split("}", 1)
            low = uri.lower()
            if "backend.userland.com/rss" in low:
                low = "http://backend.userland.com/rss"
            std = _KNOWN_NS.get(low)
            if std is None:
                std = self.unknown.get(uri)
                if std is None:
                    _no()
            key = f"{std}_{local.lower()}" if std else local.lower()
        else:
            key = tag.lower()
        self.cache[tag] = key
        return key


def _lang(el: ET.Element, parent: str | None) -> str | None:
    if _XML_LANG in el.attrib:
        return el.attrib[_XML_LANG] or None
    return parent


def _charset_ok(body: bytes, headers: dict[str, str]) -> bool:
    """Would feedparser read these bytes as UTF-8 (the only charset we read)?"""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    ascii_body = body.isascii()
    decl = _parse._DECL_ENCODING.match(body[:512])
    xml_enc = decl.group(1).decode("ascii").lower() if decl else ""
    if xml_enc not in ("", "utf-8", "utf8") and not (ascii_body and xml_enc in (
            "us-ascii", "ascii", "iso-8859-1", "latin-1", "windows-1252")):
        return False
    ctype = headers.get("content-type")
    m = _parse._HEADER_CHARSET.search(ctype or "")
    http_enc = m.group(1).lower() if m else ""
    if http_enc:
        return http_enc in ("utf-8", "utf8") or (ascii_body and http_enc in (
            "us-ascii", "ascii", "iso-8859-1", "latin-1", "windows-1252"))
    if ascii_body:
        return True
    # no charset in the header: feedparser's RFC 3023 default must be UTF-8,
    # or fail on these non-ASCII bytes and fall to a declared UTF-8
    media_type = (ctype or "").split(";", 1)[0].strip().lower()
    if media_type.startswith("application/") and (media_type == "application/xml"
                                                 or media_type.endswith("+xml")
                                                 or media_type in (
            "application/xml-dtd", "application/xml-external-parsed-entity")):
        return True  # http charset, else the declared one, else utf-8
    if media_type.startswith("text/"):
        return xml_enc in ("utf-8", "utf8")  # us-ascii fails, then the declared one
    if headers and "content-type" not in headers:
        return False  # feedparser's default is then iso-8859-1
    return True


def parse(body: bytes, headers: dict[str, str], base: str, now: datetime) -> ParsedFeed | None:
    """The ParsedFeed of a plain RSS 2.0 document, or None to let feedparser
    read it. ``headers``: lower-case names, as parse.py hands them to feedparser
    (no content-location); ``base``: the document's URL."""
    try:
        return _parse_rss(body, headers, base, now)
    except Exception:  # _Decline, and anything we did not foresee: feedparser decides
        return None


def _parse_rss(body: bytes, headers: dict[str, str], base: str, now: datetime) -> ParsedFeed:
    if _parse._doctype(body) is not None or b"<!ENTITY" in body:
        _no()
    if not _charset_ok(body, headers):
        _no()
    declared: list[tuple[str, str]] = []
    parser = ET.XMLPullParser(events=("start-ns", "start"))
    root = None
    elements = attributes = 0
    # fed in chunks, counting as it goes: a tree of millions of tiny elements
    # would take some 60 times the document's size (feedparser streams them)
    for at in range(0, len(body), _CHUNK):
        parser.feed(body[at:at + _CHUNK])
        for event, value in parser.read_events():
            if event == "start-ns":
                declared.append(value)  # type: ignore[arg-type]
            else:
                if root is None:
                    root = value
                elements += 1
                attributes += len(value.attrib)  # type: ignore[union-attr]
        if elements > MAX_ELEMENTS or attributes > MAX_ATTRIBUTES:
            _no(f"{elements} elements, {attributes} attributes")
    parser.close()
    for event, value in parser.read_events():
        if event == "start-ns":
            declared.append(value)  # type: ignore[arg-type]
    if root is None:
        _no()
    keys = _Keys(declared)
    if keys.key(root.tag) != "rss":
        _no()
    rss_attrs = _attrs(root)
    version = rss_attrs.pop("version", "")
    if not (version.startswith("2.") or version in ("0.91", "0.92")):
        _no()
    if rss_attrs:
        _no()
    header_lang = headers.get("content-language")
    root_lang = _lang(root, header_lang)
    feed_language = header_lang.replace("_", "-") if header_lang else None
    if root_lang:
        feed_language = root_lang.replace("_", "-")
    if len(root) != 1 or keys.key(root[0].tag) != "channel":
        _no()
    channel = root[0]
    if _attrs(channel):
        _no()
    channel_lang = _lang(channel, root_lang)
    seen: set[str] = set()
    title = link = ttl = None
    language_text = None
    items: list[ET.Element] = []
    for child in channel:
        key = keys.key(child.tag)
        if key == "item":
            items.append(child)
            continue
        if key == "link" and child.get("href") is not None:
            attrs = _attrs(child)
            if attrs.get("rel", "alternate") == "alternate" or len(child):
                _no("a link element that may set the feed's link")
            continue
        if key in ("title", "link", "description", "language", "ttl", "dc_language"):
            if key in seen or len(child) or _attrs(child):
                _no()
            seen.add(key)
            if key == "title":
                title = _text(child.text, "title")
            elif key == "link":
                link = _LINK_REF.sub(r"&\1", _text(child.text, "link", False))
            elif key == "description":
                _text(child.text, "description", True)
            elif key == "ttl":
                ttl = _text(child.text, "ttl", False)
            else:  # <language> and <dc:language>: the last one wins
                language_text = _text(child.text, "language", False)
            continue
        if key == "image":
            if key in seen or _attrs(child):
                _no()
            seen.add(key)
            for sub in child:
                sk = keys.key(sub.tag)
                if sk not in _IMAGE_CHILDREN or len(sub) or _attrs(sub):
                    _no()
                name = "href" if sk == "url" else sk
                _text(sub.text, name, None if sk == "title" else
                      (True if sk == "description" else False))
            continue
        _harmless(child, key, keys, _CHANNEL_HARMLESS)
    if language_text is not None:
        feed_language = language_text
    parsed = [_item(el, keys, channel_lang, base, now) for el in items]
    kept = [p for p in parsed[: clean.MAX_ITEMS] if p is not None]
    warning = (f"{len(parsed)} items, only the first {clean.MAX_ITEMS} kept"
               if len(parsed) > clean.MAX_ITEMS else None)
    return ParsedFeed(
        title=clean.plain(title),
        site_url=clean.web_url(link),
        language=clean.language(feed_language or headers.get("content-language")),
        ttl_minutes=clean.ttl_minutes(ttl),
        items=tuple(kept),
        warning=warning,
    )


# keys of the entry/feed dicts parse.py reads: an unknown element stored under one declines
_READ_KEYS = frozenset((
    "content", "summary", "title", "id", "guid", "link", "links", "tags", "author", "authors",
    "author_detail", "published", "published_parsed", "updated", "updated_parsed", "language",
    "summary_detail", "title_detail", "enclosures", "media_content", "media_thumbnail",
    "guidislink", "ttl", "image", "textinput", "subtitle", "subtitle_detail", "source",
    "license", "category",
))
_ITEM_VETTED = frozenset(("media_credit", "media_rating", "media_restriction"))


def _harmless(el: ET.Element, key: str, keys: _Keys, vetted: frozenset[str]) -> None:
    """An element feedparser stores under a key we never read: fine when it has
    no handler at all (or one we checked), holds none of the elements we read
    and no relative URI; declines otherwise."""
    if key in _HANDLED:
        if key not in vetted:
            _no(f"element {key}")
    elif key in _READ_KEYS:
        _no(f"element {key}")
    _attrs(el)
    for sub in el:
        _harmless(sub, keys.key(sub.tag), keys, vetted)
    text = el.text
    if text:
        if key in _URI_ELEMENTS and _parse._relative(text):
            _no()
        if "=" in text and _parse._RELATIVE_ATTR.search(text):
            _no()


def _item(el: ET.Element, keys: _Keys, parent_lang: str | None, base: str,
          now: datetime) -> ParsedItem | None:
    if _attrs(el):
        _no()
    item_lang = _lang(el, parent_lang)
    seen: set[str] = set()
    values: dict[str, Any] = {}
    langs: dict[str, str | None] = {}
    terms: list[str] = []
    enclosures: list[dict[str, str]] = []
    media_content: list[dict[str, str]] = []
    thumbnails: list[dict[str, str]] = []
    guid_is_link = False

    def walk(node: ET.Element, lang: str | None, nested: bool) -> None:
        nonlocal guid_is_link
        for child in node:
            key = keys.key(child.tag)
            clang = _lang(child, lang)
            if key not in _ITEM_READ or nested and key not in _MEDIA_NESTED:
                _harmless(child, key, keys, _ITEM_VETTED)
                continue
            attrs = _attrs(child)
            if key == "id":
                key = "guid"  # feedparser reads <id> as <guid>
            if key == "link" and attrs.keys() & {"href", "url", "uri"}:
                if attrs.get("rel", "alternate") in ("alternate", "enclosure") or len(child):
                    _no("a link element that may set the item's link or enclosures")
                continue  # <atom:link rel="standout" href=...>: only in entry.links
            if key in _SINGLE:
                if key in seen:
                    _no(f"duplicate {key}")
                seen.add(key)
            if len(child) and key not in _MEDIA_NESTED:
                _no(f"{key} holds elements")
            if key == "title":
                if attrs:
                    _no()
                values["title"] = _text(child.text, "title")
                langs["title"] = clang
            elif key == "description":
                if attrs:
                    _no()
                values["summary"] = _text(child.text, "description", True)
                langs["summary"] = clang
            elif key == "content_encoded":
                if attrs:
                    _no()
                values["content"] = _text(child.text, "content", True)
                langs["content"] = clang
            elif key == "link":
                if attrs.keys() & {"href", "url", "uri"}:
                    _no("item link with a URL attribute")
                value = _text(child.text, "link", False).replace("&amp;", "&")
                values["link"] = _LINK_REF.sub(r"&\1", value)
            elif key == "guid":
                if set(attrs) - {"ispermalink"}:
                    _no()
                guid_is_link = attrs.get("ispermalink", "true") == "true"
                value = _text(child.text, "id" if guid_is_link else "guid", False)
                if guid_is_link and _parse._relative(value):
                    _no()
                values["id"] = value
            elif key in ("pubdate", "dc_date"):
                if attrs:
                    _no()
                name = "published" if key == "pubdate" else "updated"
                text = _text(child.text, name, False)
                values[name] = text
                values[f"{name}_parsed"] = _parse_date(text)
            elif key in ("author", "dc_creator"):
                if attrs:
                    _no()
                values["author"] = _text(child.text, "author", False)  # the last one wins
            elif key == "category":
                if set(attrs) - {"domain"} or len(child):
                    _no()
                term = _text(child.text, "category", False)
                if term:
                    terms.append(term)
            elif key == "comments":
                if attrs:
                    _no()
                _text(child.text, "comments", False)
            elif key == "source":
                if set(attrs) - {"url"}:
                    _no()
                _text(child.text, "source", False)
            elif key == "enclosure":
                if len(child):
                    _no()
                enclosures.append(_enforce_href(attrs))
            elif key == "media_content":
                media_content.append(attrs)
                walk(child, clang, True)
            elif key == "media_thumbnail":
                if len(child):
                    _no()
                url = _text(child.text, "url", False)
                if url and "url" not in attrs:
                    attrs["url"] = url
                thumbnails.append(attrs)
            elif key == "media_group":
                if attrs:
                    _no()
                walk(child, clang, True)

    walk(el, item_lang, False)
    if "link" not in values and guid_is_link and "id" in values:
        values["link"] = values["id"]
    summary = values.get("summary")
    if summary is None and "content" in values:
        summary = values["content"]
    entry: dict[str, Any] = {"summary": summary}
    if "content" in values:
        entry["content"] = [{"type": "text/html", "value": values["content"]}]
    content = clean.sanitize(_parse._content(entry))
    title = clean.plain(values.get("title"))
    guid = clean.identifier(values["id"]) if values.get("id") else None
    link = clean.web_url(values.get("link"))
    if not (content or title or guid or link):
        return None
    found = None
    for name in ("content", "summary", "title"):
        if found:
            break
        if name in langs:
            found = langs[name]
    language = clean.language(found.replace("_", "-") if found else None)
    return ParsedItem(
        guid=guid,
        url=link,
        title=title,
        author=clean.plain(values.get("author"), clean.MAX_AUTHOR_CHARS),
        published=_parse._date(values, "published", now),
        updated=_parse._date(values, "updated", now),
        content=content,
        content_text=clean.to_text(content),
        categories=clean.categories(terms),
        language=language,
        enclosures=media.from_feedparser({"enclosures": enclosures,
                                          "media_content": media_content,
                                          "media_thumbnail": thumbnails}, base),
    )


def _enforce_href(attrs: dict[str, str]) -> dict[str, str]:
    href = attrs.get("url", attrs.get("uri", attrs.get("href")))
    if href:
        attrs.pop("url", None)
        attrs.pop("uri", None)
        attrs["href"] = href
    return attrs
