"""What any feed document gives us, made safe and bounded: the rules RSS/Atom
(parse.py) and JSON Feed (jsonfeed.py) share, so an item means the same
whichever format carried it.

- HTML is sanitised (nh3): no script, no event handlers, links only to
  http, https and mailto; titles, authors and categories are plain text.
- Every number and string from outside is checked where it enters and held
  to a bound (the ``MAX_*`` constants): a <ttl> of twenty digits, a guid of a
  megabyte or a million items cost no more than sane ones.
- URLs are web URLs or nothing: an item link ``file:///etc/passwd``,
  ``data:...`` or ``javascript:...`` is not stored.
- Dates are real instants between 1970 and 9999 and not in the future
  (a day of slack); anything else (Feb 30, year 0, hour 99) is no date.

Pure: no network, no disk, no clock.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import itertools
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit

import nh3

ALLOWED_SCHEMES = {"http", "https", "mailto"}
WEB_SCHEMES = ("http", "https")
FUTURE_SLACK = timedelta(days=1)

#: Items kept from one document (the first ones: feeds list the newest first).
MAX_ITEMS = 1000
MAX_TITLE_CHARS = 1000
MAX_AUTHOR_CHARS = 500
MAX_CATEGORY_CHARS = 200
MAX_CATEGORIES = 50
#: Category terms looked at per item: a million repeats of one tag cost no
#: more than this many.
MAX_CATEGORY_TERMS = 4 * MAX_CATEGORIES
MAX_LANGUAGE_CHARS = 20
#: A guid longer than this keeps its start and a hash of the whole, so two
#: long guids sharing a prefix stay two items.
MAX_ID_CHARS = 1024
#: A longer URL is dropped, not cut (a cut URL points somewhere else).
MAX_URL_CHARS = 4096
#: Item HTML beyond this many characters is cut before it is sanitised.
MAX_CONTENT_CHARS = 1_000_000
#: A <ttl> (minutes) above this is read as this: one year.
MAX_TTL_MINUTES = 366 * 24 * 60

FIRST_YEAR, LAST_YEAR = 1970, 9999

_BLOCK = re.compile(
    r"</?(?:p|div|br|li|ul|ol|h[1-6]|blockquote|pre|tr|table|section|article|figure|figcaption)"
    r"\b[^<>]*>",  # not [^>]*: a run of "<p<p<p..." would cost a scan to its end per "<p"
    re.IGNORECASE,
)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_NEWLINES = re.compile(r"\n\s*\n\s*")
# control characters a URL never holds (tab and newlines are left: the URL is
# kept as the feed wrote it, so items keyed by their link keep their key)
_URL_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TTL = re.compile(r"[0-9]+", re.ASCII)
# what no text field keeps: controls XML 1.0 can't carry, DEL and C1 (a terminal
# escape in a title reaches whoever lists the items), lone surrogates, U+FFFE/FFFF
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _text_only(text: str) -> str:
    """Vertical tab and form feed are spaces; other controls go."""
    return _NOT_TEXT.sub("", text.replace("\x0b", " ").replace("\x0c", " "))
# a language tag as feeds write it ("en", "en-GB", "en_us")
_LANGUAGE = re.compile(r"[a-z]{1,8}([-_][a-z0-9]{1,8})*", re.ASCII)


# --- HTML and text ---------------------------------------------------------------------


def sanitize(fragment: str | None, base: str | None = None) -> str | None:
    """Item HTML a reader can show: nh3's allow-list, links to web and mail
    only; with ``base``, relative links and images are made absolute."""
    if not fragment or not isinstance(fragment, str):
        return None
    fragment = fragment[:MAX_CONTENT_CHARS]
    options: dict[str, Any] = dict(
        url_schemes=ALLOWED_SCHEMES, link_rel="noopener noreferrer nofollow", strip_comments=True
    )
    cleaned = None
    if base and web_url(base):
        try:
            cleaned = nh3.clean(fragment, url_relative=("rewrite_with_base", base), **options)
        except (TypeError, ValueError):  # an nh3 without url_relative, or a base it refuses
            cleaned = None
    if cleaned is None:
        cleaned = nh3.clean(fragment, **options)
    return _text_only(cleaned).strip() or None


def to_text(fragment: str | None) -> str | None:
    """Plain text of an HTML fragment, paragraphs apart."""
    if not fragment:
        return None
    marked = _BLOCK.sub("\n\n", fragment)
    text = html.unescape(nh3.clean(marked, tags=set(), strip_comments=True))
    text = _text_only(html.unescape(text) if "&" in text else text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = _NEWLINES.sub("\n\n", "\n".join(lines)).strip()
    return text or None


def text_to_html(text: str | None) -> str | None:
    """Plain text (JSON Feed content_text) as HTML: escaped, blank lines make
    paragraphs, single newlines line breaks."""
    if not text or not isinstance(text, str):
        return None
    paragraphs = [p.strip() for p in _NEWLINES.split(text[:MAX_CONTENT_CHARS].replace("\r", ""))]
    out = ["<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs if p]
    return "".join(out) or None


def plain(title: Any, limit: int = MAX_TITLE_CHARS) -> str | None:
    """A title is text: markup goes, entities are decoded, whitespace folds,
    and it ends at ``limit`` characters."""
    if not title or not isinstance(title, str):
        return None
    text = html.unescape(nh3.clean(_NOT_TEXT.sub("", title[: limit * 8]), tags=set()))
    text = _text_only(text)  # what the entities decoded to
    text = _SPACES.sub(" ", text.replace("\n", " ")).strip()
    return text[:limit].rstrip() or None


def categories(terms: Iterable[Any]) -> tuple[str, ...]:
    """Distinct plain-text categories, in order, each and all bounded."""
    out: list[str] = []
    seen: set[str] = set()
    for term in itertools.islice(terms, MAX_CATEGORY_TERMS):
        if not isinstance(term, str) or term in seen:
            continue
        seen.add(term)
        text = plain(term, MAX_CATEGORY_CHARS)
        if text and text not in out:
            out.append(text)
            if len(out) >= MAX_CATEGORIES:
                break
    return tuple(out)


def language(value: Any) -> str | None:
    """A language tag, lower-cased; anything not shaped like one is none."""
    if not value or not isinstance(value, str):
        return None
    value = value.strip().lower()[:MAX_LANGUAGE_CHARS]
    return value if _LANGUAGE.fullmatch(value) else None


def identifier(value: Any) -> str | None:
    """A guid / id as text: stripped, NULs out (JSON may carry them), bounded;
    nothing else changes, so keys stored before stay the same."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    if len(value) > MAX_ID_CHARS:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        value = f"{value[:MAX_ID_CHARS - 40]}#sha256:{digest}"
    return value or None


# --- URLs --------------------------------------------------------------------------------


def web_url(value: Any, base: str | None = None) -> str | None:
    """An http(s) URL with a host, resolved against ``base`` when relative;
    None for anything else (file:, data:, javascript:, no host, too long)."""
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_URL_CHARS or _URL_CONTROL.search(value):
        return None
    try:
        if base and not urlsplit(value).scheme:
            value = urljoin(base, value)
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is no number
    except ValueError:
        return None
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.hostname:
        return None
    return value if len(value) <= MAX_URL_CHARS else None


# --- numbers -------------------------------------------------------------------------------


def ttl_minutes(value: Any) -> int | None:
    """A <ttl>: ASCII digits only (no sign, no "٣", no exponent), 0 is none,
    anything past a year is a year."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    if not _TTL.fullmatch(text):
        return None
    if len(text) > 9:
        return MAX_TTL_MINUTES
    return min(int(text), MAX_TTL_MINUTES) or None


# --- dates -----------------------------------------------------------------------------------


def instant(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
    offset_seconds: int = 0, *, now: datetime,
) -> datetime | None:
    """The UTC instant those fields name, or None when they name none
    (Feb 30, hour 24, year 0 or 10000) or one we refuse: before 1970, or
    later than a day from ``now``."""
    try:
        if not FIRST_YEAR - 1 <= year <= LAST_YEAR:
            return None
        zone = timezone(timedelta(seconds=offset_seconds))
        when = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)
        when = when.astimezone(UTC)
        future = when - FUTURE_SLACK > now
    except (TypeError, ValueError, OverflowError):
        return None
    if when.year < FIRST_YEAR or future:
        return None  # a date from the future (or before 1970) is a publisher's mistake
    return when


def from_struct(value: Any, now: datetime) -> datetime | None:
    """A feedparser struct_time (UTC) as a checked instant."""
    if not value:
        return None
    try:
        fields = [int(v) for v in tuple(value)[:6]]
        if len(fields) < 6:
            return None
        if not FIRST_YEAR - 1 <= fields[0] <= LAST_YEAR:
            return None
        seconds = calendar.timegm((*fields, 0, 0, 0))
        when = datetime.fromtimestamp(seconds, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return instant(when.year, when.month, when.day, when.hour, when.minute, when.second, now=now)


_RFC3339 = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?"
    r"\s*([Zz]|[+-]\d{2}:?\d{2})?)?\s*",
    re.ASCII,
)


def rfc3339(value: Any, now: datetime) -> datetime | None:
    """An RFC 3339 date-time (JSON Feed, Atom) as a checked instant; a date
    without a time is midnight UTC, a time without a zone is UTC."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    m = _RFC3339.fullmatch(value)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in m.groups()[:6])
    zone = m.group(7) or "Z"
    offset = 0
    if zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return None
        offset = (hours * 3600 + minutes * 60) * (-1 if zone[0] == "-" else 1)
    return instant(year, month, day, hour, minute, second, offset, now=now)


# a numeric zone at the end of a date: "+0200", "-05:00"
_ZONE = re.compile(r"[+-]([0-9]{2}):?([0-9]{2})\s*$", re.ASCII)


def zone_valid(value: Any) -> bool:
    """False for a zone no place has ("+9999", "+99:00"): feedparser shifts
    the date by those 99 hours instead of refusing it."""
    if not isinstance(value, str):
        return True
    m = _ZONE.search(value[-64:])
    return not m or (int(m.group(1)) <= 23 and int(m.group(2)) <= 59)


def iso_fields_valid(value: Any) -> bool:
    """False when a date string in ISO form names fields that don't exist
    (2026-02-30, 2026-13-45T99:99): feedparser rolls those over into a real
    but wrong date, so they are checked before its answer is believed."""
    if not isinstance(value, str):
        return True
    m = re.match(r"\s*(\d{4,})-(\d{1,2})-(\d{1,2})(?:[Tt ](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?",
                 value, re.ASCII)
    if not m:
        return True  # not ISO: feedparser's own checks apply
    if len(m.group(1)) > 4:
        return False  # a year past 9999 (and no int() of 5000 digits, which raises)
    year, month, day = (int(g) for g in m.groups()[:3])
    hour, minute, second = (int(g) if g else 0 for g in m.groups()[3:])
    if not FIRST_YEAR - 1 <= year <= LAST_YEAR or hour > 23 or minute > 59 or second > 60:
        return False
    try:
        datetime(year, month, day)
    except ValueError:
        return False
    return True
