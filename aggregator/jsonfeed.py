"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1) bytes -> ParsedFeed,
beside parse.py for RSS and Atom and held to the same rules (clean.py): item
HTML sanitised, titles plain text, links http(s) only and resolved against
the feed's URL, dates checked, every string and count bounded.

Pure: no network, no disk. Anything that is not a JSON Feed (not JSON, too
deep, a list, no ``version``, ``items`` not a list) raises ParseError and
nothing else; an item of the wrong shape is skipped, not the whole feed.

    feed: title, home_page_url -> site_url, language
    item: id (1.0 allows a number: made text), url (else external_url),
          title, content_html (sanitised) or content_text (escaped) or summary,
          date_published, date_modified, authors[].name (1.1) or author.name
          (1.0), tags, language (1.1), attachments and image (media.py)
"""

from __future__ import annotations

import codecs
import json
import math
import re
from datetime import datetime
from typing import Any

from aggregator import clean, media
from aggregator.errors import ParseError
from aggregator.types import ParsedFeed, ParsedItem

VERSION_PREFIXES = ("https://jsonfeed.org/version/", "http://jsonfeed.org/version/")
#: Content types that say "JSON" (a JSON Feed is often served as plain JSON).
JSON_TYPES = frozenset(("application/feed+json", "application/json", "text/json",
                        "application/x-json", "text/x-json", "application/jsonfeed+json"))
#: A document larger than this is not read (fetch.py caps bodies at 10 MiB).
MAX_BYTES = 16 * 1024 * 1024
#: Deeper nesting than this has no place in a JSON Feed (it needs 4 levels;
#: extensions get the rest) and would cost the decoder its stack.
MAX_DEPTH = 64

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SURROGATES = re.compile("[\ud800-\udfff]")
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def is_json_type(content_type: str | None) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json"))


def _decode(body: bytes) -> str:
    """JSON is UTF-8 (RFC 8259); a BOM may say UTF-16/32. Bytes that are not
    valid UTF-8 keep their text with U+FFFD for the bad bytes."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(codec, "replace")
    if len(body) >= 4 and body[0] == 0 and body[1] != 0:
        return body.decode("utf-16-be", "replace")  # no BOM: RFC 4627 detection
    if len(body) >= 4 and body[0] != 0 and body[1] == 0:
        return body.decode("utf-32-le" if body[2] == 0 else "utf-16-le", "replace")
    return body.decode("utf-8", "replace")


def sniff(body: bytes) -> bool:
    """Does the body open like a JSON object (after a BOM and whitespace)?"""
    return _decode(body[:64]).lstrip().startswith("{")


def _too_deep(text: str) -> bool:
    """Is an array or object nested deeper than MAX_DEPTH (or are the
    brackets unbalanced)? Checked before the decoder recurses, in C: the
    brackets outside strings, then passes that each remove the innermost
    pairs (one or two levels a pass), so a document still holding brackets
    after MAX_DEPTH passes is deeper than MAX_DEPTH, and one that reaches
    the decoder is at most 2 × MAX_DEPTH deep."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    unescaped = _ESCAPE.sub("", text) if "\\" in text else text
    outside = "".join(unescaped.split('"')[::2])  # no escapes left: quotes pair up
    brackets = outside.encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        shorter = brackets.replace(b"{}", b"").replace(b"[]", b"")
        if not shorter:
            return False
        if len(shorter) == len(brackets):
            return True  # unbalanced: no JSON
        brackets = shorter
    return True


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _load(body: bytes) -> Any:
    if len(body) > MAX_BYTES:
        raise ParseError(f"not a feed: a JSON document of {len(body)} bytes is too large")
    text = _decode(body)
    if _too_deep(text):
        raise ParseError(f"not a feed: JSON nested deeper than {MAX_DEPTH} levels, or unbalanced")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError as e:
        raise ParseError("not a feed: JSON nested too deep") from e
    except (ValueError, TypeError, OverflowError, MemoryError) as e:
        # ValueError covers JSONDecodeError and ints of more than 4300 digits
        raise ParseError(f"not a feed: invalid JSON: {str(e)[:200]}") from e


def _text(value: Any) -> str | None:
    """A string field, or None when the field is any other type; lone
    surrogates (valid in JSON, not in UTF-8) become U+FFFD."""
    if not isinstance(value, str):
        return None
    return _SURROGATES.sub("\ufffd", value) if _SURROGATES.search(value) else value


def _id(value: Any) -> str | None:
    """JSON Feed 1.1 ids are strings; 1.0 feeds also use numbers."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value) if value.is_integer() and abs(value) < 2**63 else repr(value)
    return clean.identifier(_text(value) if isinstance(value, str) else value)


def _author(item: dict[str, Any]) -> str | None:
    authors = item.get("authors")
    candidates = authors if isinstance(authors, list) else []
    if isinstance(item.get("author"), dict):
        candidates = [*candidates, item["author"]]
    for author in candidates[:20]:
        if isinstance(author, dict):
            name = clean.plain(_text(author.get("name")), clean.MAX_AUTHOR_CHARS)
            if name:
                return name
    return None


def _item(raw: dict[str, Any], base: str, now: datetime,
          feed_author: str | None) -> ParsedItem | None:
    url = (clean.web_url(_text(raw.get("url")), base)
           or clean.web_url(_text(raw.get("external_url")), base))
    html = _text(raw.get("content_html"))
    content = (clean.sanitize(html, base) if html else None) \
        or clean.text_to_html(_text(raw.get("content_text"))) \
        or clean.text_to_html(_text(raw.get("summary")))
    title = clean.plain(_text(raw.get("title")))
    guid = _id(raw.get("id"))
    if not (content or title or guid or url):
        return None
    tags = raw.get("tags")
    return ParsedItem(
        guid=guid,
        url=url,
        title=title,
        author=_author(raw) or feed_author,  # the feed's author stands for its items'
        published=clean.rfc3339(raw.get("date_published"), now),
        updated=clean.rfc3339(raw.get("date_modified"), now),
        content=content,
        content_text=clean.to_text(content),
        categories=clean.categories(_text(t) for t in tags) if isinstance(tags, list) else (),
        language=clean.language(_text(raw.get("language"))),
        enclosures=media.from_json_feed(raw, base),
    )


def parse(body: bytes, url: str, now: datetime) -> ParsedFeed:
    """Parse one JSON Feed document; ``url`` is its address (the base for
    relative URLs). Raises ParseError when the bytes are not a JSON Feed."""
    doc = _load(body)
    if not isinstance(doc, dict):
        raise ParseError(f"not a feed: JSON {type(doc).__name__}, not a JSON Feed object")
    version = _text(doc.get("version"))
    if not version or not version.startswith(VERSION_PREFIXES):
        raise ParseError("not a feed: JSON without a JSON Feed version")
    raw_items = doc.get("items", [])
    if not isinstance(raw_items, list):
        raise ParseError("not a feed: JSON Feed items is not a list")
    language = clean.language(_text(doc.get("language")))
    feed_author = _author(doc)
    items: list[ParsedItem] = []
    skipped = 0
    for raw in raw_items[: clean.MAX_ITEMS]:
        if not isinstance(raw, dict):
            skipped += 1
            continue
        item = _item(raw, url, now, feed_author)
        if item is not None:  # an item with nothing to show or tell apart is no story
            items.append(item)
    warnings = []
    if len(raw_items) > clean.MAX_ITEMS:
        warnings.append(f"{len(raw_items)} items, only the first {clean.MAX_ITEMS} kept")
    if skipped:
        warnings.append(f"{skipped} item(s) skipped: not a JSON object")
    return ParsedFeed(
        title=clean.plain(_text(doc.get("title"))),
        site_url=clean.web_url(_text(doc.get("home_page_url")), url),
        language=language,
        ttl_minutes=None,
        items=tuple(items),
        warning="; ".join(warnings) or None,
    )
