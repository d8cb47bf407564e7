"""Small rules shared by the published files: entry ids, clean one-line text, safe links,
language tags, slugs, dates and the newest-first order.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import nh3

from aggregator.types import Entry

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
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

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
