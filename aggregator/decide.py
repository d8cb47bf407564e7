"""Pure rules: item identity, "changed?", and when to poll a feed next.

No database, no network, no clock: time comes in as an argument.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from aggregator.types import ParsedItem

# --- item identity -----------------------------------------------------------


def _digest(*parts: str | None) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update((p or "").encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def item_key(item: ParsedItem) -> str:
    """The guid, else the link, else a hash of title and content."""
    if item.guid and item.guid.strip():
        return item.guid.strip()
    if item.url and item.url.strip():
        return item.url.strip()
    return "sha256:" + _digest(item.title, item.content)[:32]


def assign_keys(items: tuple[ParsedItem, ...] | list[ParsedItem]) -> list[tuple[str, ParsedItem]]:
    """Keys for one document's items. A key shared by different stories (their
    links or titles differ) stays with one of them, chosen by content, not by
    position, so a feed that reorders its items doesn't swap them; the others
    get a suffix from their link and title, so they are stored apart, not merged.
    True repeats (same key, same story) are dropped."""
    stories: dict[str, set[tuple[str | None, str | None]]] = {}
    for item in items:
        stories.setdefault(item_key(item), set()).add((item.url, item.title))
    # one story under a key (the usual case) owns it without hashing
    owner = {key: next(iter(found)) if len(found) == 1
             else min(found, key=lambda story: _digest(*story))
             for key, found in stories.items()}
    out: list[tuple[str, ParsedItem]] = []
    taken: set[str] = set()
    for item in items:
        key = item_key(item)
        if (item.url, item.title) != owner[key]:
            key = f"{key}#{_digest(item.url, item.title)[:12]}"
        if key in taken:
            continue  # the same story listed twice
        taken.add(key)
        out.append((key, item))
    return out


def content_hash(item: ParsedItem) -> str:
    """Changes when anything a reader would see changes. Enclosures count only when
    there are some, so an item without any keeps the hash it had before they were
    stored (no summary goes stale for them)."""
    parts = [
        item.title,
        item.url,
        item.author,
        item.content,
        json.dumps(list(item.categories)),
        item.published.isoformat() if item.published else None,
        item.updated.isoformat() if item.updated else None,
    ]
    if item.enclosures:
        parts.append(json.dumps([(e.url, e.type, e.length, e.kind) for e in item.enclosures]))
    return _digest(*parts)[:32]


# --- when to poll next -----------------------------------------------------------

# Every duration read from outside is bounded by this before it becomes a
# timedelta (a "Retry-After: 99999999999999999999" would overflow one); the
# policy maximum then bounds it again.
_LONGEST = timedelta(days=3650)
_LONGEST_SECONDS = int(_LONGEST.total_seconds())
# a <ttl> above this (a year, in minutes) means "a year"
MAX_TTL_MINUTES = 366 * 24 * 60
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)
_MAX_AGE = re.compile(r"(?:s-)?max-age\s*=\s*\"?([0-9]+)\"?", re.ASCII)


def _seconds(digits: str) -> timedelta:
    """ASCII digits -> a duration of at most _LONGEST (no int() of a
    megabyte of digits either)."""
    if len(digits) > 12:
        return _LONGEST
    return timedelta(seconds=min(int(digits), _LONGEST_SECONDS))


@dataclass(frozen=True)
class PollPolicy:
    interval: timedelta
    minimum: timedelta
    maximum: timedelta
    jitter: float  # fraction of the delay, added


def _header(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= 4096 else None


def max_age(cache_control: str | None) -> timedelta | None:
    """Cache-Control (s-)max-age in delta-seconds: ASCII digits, nothing else
    ("+5", "1e3", "٣" and "-1" are no max-age)."""
    cache_control = _header(cache_control)
    if not cache_control:
        return None
    for d in cache_control.split(","):
        m = _MAX_AGE.fullmatch(d.strip().lower())
        if m:
            return _seconds(m.group(1))
    return None


def http_date(value: str | None) -> datetime | None:
    """An HTTP date (RFC 9110: IMF-fixdate and the obsolete forms), aware;
    None when unreadable or outside what a datetime holds."""
    value = _header(value)
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": the sender's zone is unknown; UTC is the usual meaning
        when = when.replace(tzinfo=UTC)
    return when


def _until(when: datetime | None, base: datetime) -> timedelta | None:
    if when is None:
        return None
    try:
        return min(max(when - base, timedelta(0)), _LONGEST)
    except OverflowError:
        return _LONGEST if when > base else timedelta(0)


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Retry-After is either delta-seconds (ASCII digits) or an HTTP date."""
    value = _header(value)
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return _seconds(value)
    return _until(http_date(value), now)


def expires_in(expires: str | None, date: str | None, now: datetime) -> timedelta | None:
    # compare with the server's clock when it sent one
    return _until(http_date(expires), http_date(date) or now)


def _bounded(value: timedelta, low: timedelta, high: timedelta) -> timedelta:
    return min(max(value, low), high)


def _backoff(interval: timedelta, error_count: object, ceiling: timedelta) -> timedelta:
    """interval × 2^(errors-1), never past ``ceiling`` (and never an overflow)."""
    if not isinstance(error_count, int) or isinstance(error_count, bool) or error_count <= 0:
        return interval
    factor = 2 ** min(error_count - 1, 16)
    if interval > ceiling / factor:
        return ceiling
    return interval * factor


def _ttl(ttl_minutes: object) -> timedelta | None:
    if not isinstance(ttl_minutes, int) or isinstance(ttl_minutes, bool) or ttl_minutes <= 0:
        return None
    return timedelta(minutes=min(ttl_minutes, MAX_TTL_MINUTES))


def _fraction(value: object, high: float) -> float:
    """A float in [0, high]; NaN, infinities and non-numbers are 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    value = float(value)
    if not math.isfinite(value):
        return 0.0
    return min(max(value, 0.0), high)


def next_poll(
    now: datetime,
    policy: PollPolicy,
    *,
    headers: dict[str, str] | None = None,
    ttl_minutes: int | None = None,
    error_count: int = 0,
    random_fraction: float = 0.0,
) -> datetime:
    """The largest of: the interval (grown by error backoff), the feed's <ttl>,
    Cache-Control max-age or Expires, and Retry-After; clamped to
    [minimum, maximum] (Retry-After too: a server asking for a week waits the
    maximum), then jittered so a restart doesn't poll every feed at once.

    ``random_fraction`` in [0, 1) comes from the caller's random source.
    Never raises for any headers, ttl or error count: the answer is always in
    [now + minimum, now + maximum × (1 + jitter)] (jitter held to [0, 1]).
    """
    headers = headers if isinstance(headers, dict) else {}
    low = _bounded(policy.minimum, timedelta(0), _LONGEST)
    high = _bounded(policy.maximum, low, _LONGEST)
    candidates = [_backoff(_bounded(policy.interval, timedelta(0), _LONGEST), error_count, high)]
    ttl = _ttl(ttl_minutes)
    if ttl is not None:
        candidates.append(ttl)
    age = max_age(headers.get("cache-control"))
    if age is not None:
        candidates.append(age)
    elif "expires" in headers:
        exp = expires_in(headers.get("expires"), headers.get("date"), now)
        if exp is not None:
            candidates.append(exp)
    ra = retry_after(headers.get("retry-after"), now)
    if ra is not None:
        candidates.append(ra)
    delay = _bounded(max(candidates), low, high)
    delay += delay * (_fraction(policy.jitter, 1.0) * _fraction(random_fraction, 1.0))
    try:
        return now + delay
    except OverflowError:  # a clock at the end of time: as late as a datetime goes
        return datetime.max.replace(tzinfo=now.tzinfo)


# --- what a fetch outcome means for the feed ----------------------------------------


def disables_feed(status: int) -> bool:
    """410 Gone: the publisher says the feed is gone for good."""
    return status == 410


# --- recovery: an item's identity across documents, article fetch retries -----------
# (kept together at the end of the module)


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def same_story(stored: tuple[str | None, str | None], item: ParsedItem) -> bool:
    """Whether ``item``, arriving under the key of a stored story (its link and
    title), is that story again or another story reusing its guid. An edit changes
    the title or the link, rarely both at once: the same link, or the same title,
    is the same story; with neither a link nor a title on either side there is
    nothing to tell them apart, so it is the same story too."""
    old_url, old_title = (_norm(s) for s in stored)
    new_url, new_title = _norm(item.url), _norm(item.title)
    if old_url and old_url == new_url:
        return True
    if old_title and old_title == new_title:
        return True
    return not (old_url or old_title or new_url or new_title)


def _is(stored: tuple[str | None, str | None], item: ParsedItem) -> bool:
    return (_norm(stored[0]), _norm(stored[1])) == (_norm(item.url), _norm(item.title))


def _bases(key: str) -> Iterator[str]:
    """The guids a stored key may belong to: itself and what precedes each "#"."""
    yield key
    at = key.find("#")
    while at != -1:
        yield key[:at]
        at = key.find("#", at + 1)


def settle_keys(
    items: list[tuple[str, ParsedItem]] | tuple[tuple[str, ParsedItem], ...],
    stored: dict[str, tuple[str | None, str | None]],
) -> list[tuple[str, ParsedItem]]:
    """The keys under which one document's items (keyed by ``assign_keys``) are
    stored, given the stories already stored (key -> (link, title)) under their
    keys and the suffixed variants of them. A stored row keeps belonging to the
    story it was first written for: an item that is that story (``same_story``)
    gets its key, whatever key ``assign_keys`` gave it; a different story with a
    key already in use gets a new, suffixed key instead of overwriting it.

    The stored rows of a guid are indexed by link and by title, so a feed giving
    one guid to thousands of stories costs time in proportion to them, not to
    their product."""
    keys: list[str | None] = [None] * len(items)
    taken: set[str] = set()

    # 1. the key assign_keys gave, when it is stored for this very story
    for n, (key, item) in enumerate(items):
        if key in stored and key not in taken and same_story(stored[key], item):
            keys[n] = key
            taken.add(key)
    # 2. another stored key of this story: same link and title first, then an edit.
    # Each index lists keys in the order of ``stored``; the first free one wins.
    wanted = {item_key(item) for n, (_, item) in enumerate(items) if keys[n] is None}
    exact: dict[tuple[str, str, str], list[str]] = {}
    edits: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for position, (k, (url, title)) in enumerate(stored.items()):
        u, t = _norm(url), _norm(title)
        for base in _bases(k):
            if base not in wanted or not (k == base or k.startswith(base + "#")):
                continue
            exact.setdefault((base, u, t), []).append(k)
            for index in ([("u", u)] if u else []) + ([("t", t)] if t else []) \
                    or [("", "")]:
                edits.setdefault((base, *index), []).append((position, k))

    def first_free(found: Iterable[str]) -> str | None:
        return next((k for k in found if k not in taken), None)

    for n, (_, item) in enumerate(items):
        if keys[n] is None and exact:
            base, u, t = item_key(item), _norm(item.url), _norm(item.title)
            keys[n] = first_free(exact.get((base, u, t), ()))
            if keys[n] is not None:
                taken.add(keys[n])
    for n, (_, item) in enumerate(items):
        if keys[n] is None and edits:
            base, u, t = item_key(item), _norm(item.url), _norm(item.title)
            lists = [edits.get((base, "u", u), []) if u else [],
                     edits.get((base, "t", t), []) if t else [],
                     edits.get((base, "", ""), []) if not (u or t) else []]
            keys[n] = first_free(k for _, k in heapq.merge(*lists))
            if keys[n] is not None:
                taken.add(keys[n])
    # 3. a new story: its assigned key when free, else a suffixed one
    for n, (key, item) in enumerate(items):
        if keys[n] is not None:
            continue
        base = item_key(item)
        choice = next((k for k in (key, base) if k not in stored and k not in taken), None)
        if choice is not None:  # the usual case: no suffix to hash
            keys[n] = choice
            taken.add(choice)
            continue
        suffixed = f"{base}#{_digest(item.url, item.title)[:12]}"
        choice = suffixed if suffixed not in stored and suffixed not in taken else None
        extra = 2
        while choice is None:
            k = f"{suffixed}-{extra}"
            choice = k if k not in stored and k not in taken else None
            extra += 1
        keys[n] = choice
        taken.add(choice)
    return [(k, item) for k, (_, item) in zip(keys, items, strict=True) if k is not None]


# A failed article fetch is tried again after these delays (counted from the
# failure), then given up: 5 tries in all over about 17 hours.
ARTICLE_RETRY_DELAYS = (
    timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4), timedelta(hours=12),
)


def article_retry_at(tries: int, failed_at: datetime) -> datetime | None:
    """When to fetch a failed article again, ``tries`` fetches having been made
    (the failed one included); None once every retry is spent."""
    if tries < 1 or tries > len(ARTICLE_RETRY_DELAYS):
        return None
    return failed_at + ARTICLE_RETRY_DELAYS[tries - 1]


# --- when the clock went back ---------------------------------------------------------


def after_clock_went_back(now: datetime, last_fetch: datetime | None,
                          next_fetch: datetime | None) -> tuple[datetime, datetime] | None:
    """(last fetch, next fetch) to store when the clock went back, else None.

    A last fetch later than ``now`` can only mean the clock was set back since.
    Left alone, the feed would wait its delay plus the whole jump (an hour's jump:
    an hour without news). Instead both times move back together: the last fetch
    becomes ``now`` and the feed waits its own delay (``next_fetch - last_fetch``:
    the interval with its jitter, a backoff, a server's Retry-After) from now,
    never more. A feed never fetched (no last fetch) whose next fetch is ahead of
    ``now`` was added "in the future": it is due now. A jump forward needs no rule:
    every feed whose time has come is due, and each is polled once.
    """
    if last_fetch is None:
        if next_fetch is not None and next_fetch > now:
            return now, now
        return None
    if last_fetch <= now:
        return None
    delay = max((next_fetch or last_fetch) - last_fetch, timedelta(0))
    return now, now + delay
