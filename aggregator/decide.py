"""Pure rules: item identity, "changed?", and when to poll a feed next.

No database, no network, no clock: time comes in as an argument.
"""

from __future__ import annotations

import hashlib
import json
import re
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
    owner = {key: min(found, key=lambda story: _digest(*story))
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
    """Changes when anything a reader would see changes."""
    return _digest(
        item.title,
        item.url,
        item.author,
        item.content,
        json.dumps(list(item.categories)),
        item.published.isoformat() if item.published else None,
        item.updated.isoformat() if item.updated else None,
    )[:32]


# --- when to poll next -----------------------------------------------------------

# A header asking for more than this is treated as asking for this much; it also
# keeps a "Retry-After: 99999999999999999999" from overflowing a timedelta.
_LONGEST = timedelta(days=3650)


def _seconds(digits: str) -> timedelta:
    return min(timedelta(seconds=min(int(digits), 10**10)), _LONGEST)


@dataclass(frozen=True)
class PollPolicy:
    interval: timedelta
    minimum: timedelta
    maximum: timedelta
    jitter: float  # fraction of the delay, added


def max_age(cache_control: str | None) -> timedelta | None:
    if not cache_control:
        return None
    directives = [d.strip().lower() for d in cache_control.split(",")]
    for d in directives:
        m = re.fullmatch(r"(?:s-)?max-age\s*=\s*\"?(\d+)\"?", d)
        if m:
            return _seconds(m.group(1))
    return None


def http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": the sender's zone is unknown; UTC is the usual meaning
        when = when.replace(tzinfo=UTC)
    return when


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return _seconds(value)
    when = http_date(value)
    if when is None:
        return None
    return min(max(when - now, timedelta(0)), _LONGEST)


def expires_in(expires: str | None, date: str | None, now: datetime) -> timedelta | None:
    when = http_date(expires)
    if when is None:
        return None
    base = http_date(date) or now  # compare with the server's clock when it sent one
    return min(max(when - base, timedelta(0)), _LONGEST)


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
    [minimum, maximum], then jittered so a restart doesn't poll every feed at once.

    ``random_fraction`` in [0, 1) comes from the caller's random source.
    """
    headers = headers or {}
    delay = policy.interval
    if error_count > 0:
        delay = policy.interval * (2 ** min(error_count - 1, 16))
    candidates = [delay]
    if ttl_minutes and ttl_minutes > 0:
        candidates.append(timedelta(minutes=ttl_minutes))
    age = max_age(headers.get("cache-control"))
    if age is not None:
        candidates.append(age)
    elif "expires" in headers:
        exp = expires_in(headers.get("expires"), headers.get("date"), now)
        if exp is not None:
            candidates.append(exp)
    ra = retry_after(headers.get("retry-after"), now)
    hard_floor = timedelta(0)
    if ra is not None:
        candidates.append(ra)
        hard_floor = min(ra, timedelta(days=7))  # a server's explicit wish beats our maximum
    delay = max(candidates)
    delay = min(max(delay, policy.minimum), max(policy.maximum, hard_floor))
    delay += delay * policy.jitter * random_fraction
    return now + delay


# --- what a fetch outcome means for the feed ----------------------------------------


def disables_feed(status: int) -> bool:
    """410 Gone: the publisher says the feed is gone for good."""
    return status == 410


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
