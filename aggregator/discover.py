"""`add` of a web page: find the feed it announces with <link rel="alternate">."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregator.errors import AggregatorError, DiscoveryError, ParseError
from aggregator.fetch import FEED_ACCEPT, Fetcher, host_of
from aggregator.parse import find_feed_links, parse


def feed_url(fetcher: Fetcher, url: str) -> tuple[str, str | None]:
    """(feed URL, feed title) for a feed URL or a page that links to its feed."""
    res = fetcher.get(url, accept=FEED_ACCEPT + ", text/html;q=0.5", trusted_host=host_of(url))
    body = res.body or b""
    now = datetime.now(UTC)
    try:
        return res.final_url, parse(body, res.headers, res.final_url, now).title
    except ParseError:
        pass
    for link in find_feed_links(body, res.final_url):
        try:
            found = fetcher.get(link, trusted_host=host_of(url))
            parsed = parse(found.body or b"", found.headers, found.final_url, now)
        except AggregatorError:
            continue  # try the next candidate
        return found.final_url, parsed.title
    raise DiscoveryError(f"{url} is not a feed and links to no feed")
