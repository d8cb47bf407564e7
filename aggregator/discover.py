"""`add` of a web page: find the feed it announces with <link rel="alternate">.

What the user types is read generously: surrounding spaces are dropped, a
bare host or path (``www.bbc.co.uk/news``) is tried as ``https://`` and a
``feed:`` prefix is read as the URL it wraps. A URL that does not answer (no
DNS, no connection, a timeout, a 5xx or 429) can still be subscribed: the
first ``update`` polls it like any other feed. A URL whose server answers no
(a 4xx) or whose page is not a feed is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus

from aggregator.errors import (
    AggregatorError,
    BlockedAddressError,
    DiscoveryError,
    FetchError,
    HTTPStatusError,
    NetworkError,
    ParseError,
)
from aggregator.fetch import FEED_ACCEPT, Fetcher
from aggregator.guard import trusted_origin
from aggregator.parse import find_feed_links, parse
from aggregator.types import FetchResult, ParsedFeed

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# "javascript:", "mailto:a@b", "data:...": a scheme, not a host (a host's ":" is its port's)
_OTHER_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?![0-9]|//)")
_BLANK = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Found:
    """The feed a typed URL leads to, with the fetch that found it (kept, so the
    first update asks with its validators instead of fetching it again)."""

    url: str
    title: str | None = None
    result: FetchResult | None = None
    parsed: ParsedFeed | None = None
    problem: str | None = None  # why it could not be fetched (subscribed anyway)


def typed_url(text: str) -> tuple[str, bool]:
    """(the URL meant by ``text``, whether a scheme was guessed)."""
    url = text.strip()
    if _BLANK.search(url):  # else "http://a b/" is subscribed "anyway", as a DNS failure
        raise DiscoveryError(f"{url!r}: a URL has no spaces or control characters "
                             "(write a space in a path as %20)")
    if url.lower().startswith("feed:"):  # feed://host/rss, feed:https://host/rss
        url = url[5:]
        url = url if _SCHEME.match(url) else "https:" + ("" if url.startswith("//") else "//") + url
    if _SCHEME.match(url) or _OTHER_SCHEME.match(url):
        if not url.lower().startswith(("http://", "https://")):
            raise DiscoveryError(f"{url}: only http:// and https:// URLs can be followed")
        return url, False
    return "https://" + url.lstrip("/"), True


def reason(e: AggregatorError) -> str:
    """What went wrong, in words: ``HTTP 404 Not Found``."""
    if isinstance(e, HTTPStatusError):
        try:
            return f"HTTP {e.status} {HTTPStatus(e.status).phrase}"
        except ValueError:
            return f"HTTP {e.status}"
    return str(e)


def problem(url: str, e: AggregatorError) -> str:
    """One line naming the URL and the reason: ``cannot fetch URL: HTTP 404 Not Found``."""
    if isinstance(e, BlockedAddressError):
        return str(e)  # "refused URL: why" names it already
    return f"cannot fetch {url}: {reason(e)}"


def not_answering(e: AggregatorError) -> bool:
    """A failure that may pass by itself (offline, server trouble), as opposed
    to an answer that says no (4xx) or a refusal of ours."""
    if isinstance(e, HTTPStatusError):
        return e.status >= 500 or e.status in (408, 429)
    return isinstance(e, NetworkError)


def feed_url(fetcher: Fetcher, url: str, *, check: bool = True) -> Found:
    """The feed of a feed URL or of a page that links to its feed. The URL typed
    on the command line is the user's choice, like a feeds.opml row: its origin
    is trusted when it names an IP address or localhost. Without ``check`` a URL
    that does not answer comes back with its ``problem`` instead of raising."""
    trusted = trusted_origin(url)
    try:
        res = fetcher.get(url, accept=FEED_ACCEPT + ", text/html;q=0.5", trusted=trusted)
    except FetchError as e:
        if not check and not_answering(e):
            return Found(url, problem=problem(url, e))
        raise DiscoveryError(problem(url, e)) from e
    body = res.body or b""
    now = datetime.now(UTC)
    try:
        parsed = parse(body, res.headers, res.final_url, now)
        return Found(res.final_url, parsed.title, res, parsed)
    except ParseError:
        pass
    problems = []
    for link in find_feed_links(body, res.final_url):
        try:
            found = fetcher.get(link, trusted=trusted)
            parsed = parse(found.body or b"", found.headers, found.final_url, now)
        except FetchError as e:
            problems.append(problem(link, e))
            continue  # try the next candidate
        except AggregatorError as e:
            problems.append(f"{link}: {e}")
            continue
        return Found(found.final_url, parsed.title, found, parsed)
    if problems:
        raise DiscoveryError(f"{url} is not a feed and no feed it links to could be read: "
                             + "; ".join(problems[:3]))
    raise DiscoveryError(f"{url} is not a feed and links to no feed")
