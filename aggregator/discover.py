"""`add` of a web page: find the feed it announces with <link rel="alternate">."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregator.errors import AggregatorError, DiscoveryError, ParseError
from aggregator.fetch import FEED_ACCEPT, Fetcher
from aggregator.guard import trusted_origin
from aggregator.parse import find_feed_links, parse


def feed_url(fetcher: Fetcher, url: str) -> tuple[str, str | None]:
    """(feed URL, feed title) for a feed URL or a page that links to its feed.
    The URL typed on the command line is the user's choice, like a feeds.opml
    row: its origin is trusted when it names an IP address or localhost."""
    trusted = trusted_origin(url)
    res = fetcher.get(url, accept=FEED_ACCEPT + ", text/html;q=0.5", trusted=trusted)
    body = res.body or b""
    now = datetime.now(UTC)
    try:
        return res.final_url, parse(body, res.headers, res.final_url, now).title
    except ParseError:
        pass
    problems = []
    for link in find_feed_links(body, res.final_url):
        try:
            found = fetcher.get(link, trusted=trusted)
            parsed = parse(found.body or b"", found.headers, found.final_url, now)
        except AggregatorError as e:
            problems.append(str(e))
            continue  # try the next candidate
        return found.final_url, parsed.title
    if problems:
        raise DiscoveryError(f"{url} is not a feed and no feed it links to could be read: "
                             + "; ".join(problems[:3]))
    raise DiscoveryError(f"{url} is not a feed and links to no feed")
