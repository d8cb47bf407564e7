"""Every error aggregator raises on purpose, in one tree.

    AggregatorError
    ├── ConfigError          bad config file, environment value or flag
    ├── StorageError         the SQLite file can't be opened, written or migrated
    ├── OPMLError            a subscription list that can't be read or written
    ├── FetchError           one HTTP fetch failed (stored on the feed, never fatal)
    │   ├── NetworkError         DNS, connect, TLS, timeout, reset
    │   ├── BlockedAddressError  the address guard refused the URL
    │   ├── TooLargeError        the body passed the size cap (on the wire or decoded)
    │   ├── DecodingError        a content encoding we don't decode, too many, or bad data
    │   ├── RedirectError        too many redirects, a loop, or a bad Location
    │   └── HTTPStatusError      a 4xx/5xx answer (carries the status)
    ├── ParseError           bytes that are not a feed (stored on the feed)
    ├── PublishError         the output directory can't be written (unwritable, full)
    ├── DiscoveryError       `add` of a page that links to no feed
    └── SearchError          a search with nothing to look for, or a bad --since

Per-feed errors are returned as values and stored on the feed row; only the
CLI turns the user-fixable ones (config, storage, publishing) into a one-line exit.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Base of every error aggregator raises on purpose."""


class ConfigError(AggregatorError):
    pass


class StorageError(AggregatorError):
    pass


class OPMLError(AggregatorError):
    pass


class FetchError(AggregatorError):
    pass


class NetworkError(FetchError):
    pass


class BlockedAddressError(FetchError):
    pass


class TooLargeError(FetchError):
    pass


class DecodingError(FetchError):
    pass


class RedirectError(FetchError):
    pass


class HTTPStatusError(FetchError):
    def __init__(
        self, status: int, message: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.headers = headers or {}


class ParseError(AggregatorError):
    pass


class PublishError(AggregatorError):
    pass


class DiscoveryError(AggregatorError):
    pass


class SearchError(AggregatorError):
    """A search that can't run: nothing to look for, a bad --since, no index."""


class BrokerError(AggregatorError):
    """The distributed mode's broker (Redis) cannot be reached or refuses us."""
