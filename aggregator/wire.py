"""The values one poll travels as, between the writer that claims a feed and
whoever polls it: a ``PollTask`` out, a ``PollResult`` back.

Embedded, they are handed over in memory on the pass's threads; distributed
(``aggregator/distributed``), they cross the broker as JSON: ``to_json()`` gives
a dict of JSON types only (times as ISO-8601 text, never bytes, a ``"v": 1``
field), ``from_json`` takes it back and refuses anything that is not what it
wrote (``ValueError``). Raw bodies never travel: a result holds parsed items.

    PollTask  --update.poll_feed-->  PollResult  --update.apply_poll-->  the store

A result answers one claim (``poll_seq``): the writer applies it only while that
claim is open, so a late, repeated or superseded result changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aggregator import errors
from aggregator.types import Enclosure, ParsedFeed, ParsedItem

if TYPE_CHECKING:
    from aggregator.store import FeedRow

VERSION = 1

# (title, site_url, language, ttl_minutes, warning) of a parsed document
ParsedMeta = tuple[str | None, str | None, str | None, int | None, str | None]
# (key, item, content_hash), as store.record_feed takes them
KeyedItem = tuple[str, ParsedItem, str]


# --- small codecs ------------------------------------------------------------------------

def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(f"wire: bad {what}")


def _str(value: Any, what: str) -> str:
    _check(isinstance(value, str), what)
    return value  # type: ignore[no-any-return]


def _opt_str(value: Any, what: str) -> str | None:
    _check(value is None or isinstance(value, str), what)
    return value  # type: ignore[no-any-return]


# what SQLite holds (a signed 64-bit integer): a number past it could not be stored
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _int(value: Any, what: str) -> int:
    _check(isinstance(value, int) and not isinstance(value, bool)
           and INT_MIN <= value <= INT_MAX, what)
    return value  # type: ignore[no-any-return]


def _count(value: Any, what: str) -> int:
    """An id, a claim's number, a count: 0 or more."""
    _check(_int(value, what) >= 0, what)
    return value  # type: ignore[no-any-return]


def _opt_count(value: Any, what: str) -> int | None:
    return None if value is None else _count(value, what)


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _opt_float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    _check(isinstance(value, int | float) and not isinstance(value, bool)
           and math.isfinite(value), what)
    return float(value)


def _str_dict(value: Any, what: str) -> dict[str, str]:
    _check(isinstance(value, Mapping), what)
    out = {}
    for k, v in value.items():
        out[_str(k, what)] = _str(v, what)
    return out


def _version(data: Any, what: str) -> Mapping[str, Any]:
    _check(isinstance(data, Mapping), what)
    _check(data.get("v") == VERSION, f"{what} version {data.get('v')!r}")
    return data  # type: ignore[no-any-return]


def datetime_to_json(when: datetime | None) -> str | None:
    """Full precision and the offset kept (a naive time stays naive)."""
    return None if when is None else when.isoformat()


def datetime_from_json(text: Any) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(_str(text, "time"))
    except ValueError as e:
        raise ValueError(f"wire: bad time {text!r:.80}") from e


def enclosure_to_json(e: Enclosure) -> dict[str, Any]:
    return {"url": e.url, "type": e.type, "length": e.length, "kind": e.kind}


def enclosure_from_json(data: Any) -> Enclosure:
    _check(isinstance(data, Mapping), "enclosure")
    return Enclosure(url=_str(data.get("url"), "enclosure url"),
                     type=_opt_str(data.get("type"), "enclosure type"),
                     length=_opt_int(data.get("length"), "enclosure length"),
                     kind=_str(data.get("kind", "enclosure"), "enclosure kind"))


def item_to_json(item: ParsedItem) -> dict[str, Any]:
    return {
        "guid": item.guid, "url": item.url, "title": item.title, "author": item.author,
        "published": datetime_to_json(item.published),
        "updated": datetime_to_json(item.updated),
        "content": item.content, "content_text": item.content_text,
        "categories": list(item.categories), "language": item.language,
        "enclosures": [enclosure_to_json(e) for e in item.enclosures],
    }


def item_from_json(data: Any) -> ParsedItem:
    _check(isinstance(data, Mapping), "item")
    categories = data.get("categories", [])
    enclosures = data.get("enclosures", [])
    _check(isinstance(categories, list), "item categories")
    _check(isinstance(enclosures, list), "item enclosures")
    return ParsedItem(
        guid=_opt_str(data.get("guid"), "item guid"),
        url=_opt_str(data.get("url"), "item url"),
        title=_opt_str(data.get("title"), "item title"),
        author=_opt_str(data.get("author"), "item author"),
        published=datetime_from_json(data.get("published")),
        updated=datetime_from_json(data.get("updated")),
        content=_opt_str(data.get("content"), "item content"),
        content_text=_opt_str(data.get("content_text"), "item content_text"),
        categories=tuple(_str(c, "item category") for c in categories),
        language=_opt_str(data.get("language"), "item language"),
        enclosures=tuple(enclosure_from_json(e) for e in enclosures),
    )


# --- errors ------------------------------------------------------------------------------

# the errors a poll turns into a value (update._record_error stores them)
_ERRORS: dict[str, type[errors.AggregatorError]] = {
    cls.__name__: cls for cls in (
        errors.AggregatorError, errors.FetchError, errors.NetworkError,
        errors.BlockedAddressError, errors.TooLargeError, errors.DecodingError,
        errors.RedirectError, errors.HTTPStatusError, errors.ParseError,
    )
}


@dataclass(frozen=True)
class WireError:
    """A poll's error as a value: ``kind`` is the AggregatorError subclass's name
    (``AggregatorError`` itself for an internal error), so the writer stores and
    logs it exactly as if it had been raised on its own thread."""

    kind: str
    message: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_error(cls, error: errors.AggregatorError) -> WireError:
        kind = type(error).__name__ if type(error).__name__ in _ERRORS else "AggregatorError"
        if isinstance(error, errors.HTTPStatusError):
            return cls(kind, str(error), error.status, dict(error.headers))
        if kind == "AggregatorError" and type(error) is not errors.AggregatorError:
            # an error class that does not travel: named, as _record_error would
            return cls(kind, f"{type(error).__name__}: {error}")
        return cls(kind, str(error))

    def to_error(self) -> errors.AggregatorError:
        cls = _ERRORS.get(self.kind, errors.AggregatorError)
        if cls is errors.HTTPStatusError:
            return errors.HTTPStatusError(self.status or 0, self.message, dict(self.headers))
        return cls(self.message)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "status": self.status,
                "headers": dict(self.headers)}

    @classmethod
    def from_json(cls, data: Any) -> WireError:
        _check(isinstance(data, Mapping), "error")
        return cls(kind=_str(data.get("kind"), "error kind"),
                   message=_str(data.get("message"), "error message"),
                   status=_opt_int(data.get("status"), "error status"),
                   headers=_str_dict(data.get("headers") or {}, "error headers"))


# --- a task ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PollTask:
    """What a poll needs to know of its feed. ``known``: stored key -> content
    hash of the feed's newest items (``store.known_items``); only items not in
    it, or with another hash, travel back. None: every item travels back (the
    embedded pass: no extra query). ``title``: the feed's name in feeds.opml
    (None: the feed's own title names it)."""

    feed_id: int
    url: str
    poll_seq: int | None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    ttl_minutes: int | None = None
    name: str = ""
    error_count: int = 0
    last_error: str | None = None
    known: dict[str, str] | None = None
    title: str | None = None

    @classmethod
    def from_row(cls, feed: FeedRow, known: dict[str, str] | None = None) -> PollTask:
        return cls(feed_id=feed.id, url=feed.url, poll_seq=feed.poll_seq, etag=feed.etag,
                   last_modified=feed.last_modified, body_hash=feed.body_hash,
                   ttl_minutes=feed.ttl_minutes, name=feed.name,
                   error_count=feed.error_count, last_error=feed.last_error,
                   known=known, title=feed.title)

    def to_json(self) -> dict[str, Any]:
        return {"v": VERSION, "feed_id": self.feed_id, "url": self.url,
                "poll_seq": self.poll_seq, "etag": self.etag,
                "last_modified": self.last_modified, "body_hash": self.body_hash,
                "ttl_minutes": self.ttl_minutes, "name": self.name,
                "error_count": self.error_count, "last_error": self.last_error,
                "known": None if self.known is None else dict(self.known),
                "title": self.title}

    @classmethod
    def from_json(cls, data: Any) -> PollTask:
        d = _version(data, "poll task")
        known = d.get("known")
        return cls(
            feed_id=_count(d.get("feed_id"), "feed_id"), url=_str(d.get("url"), "url"),
            poll_seq=_opt_count(d.get("poll_seq"), "poll_seq"),
            etag=_opt_str(d.get("etag"), "etag"),
            last_modified=_opt_str(d.get("last_modified"), "last_modified"),
            body_hash=_opt_str(d.get("body_hash"), "body_hash"),
            ttl_minutes=_opt_int(d.get("ttl_minutes"), "ttl_minutes"),
            name=_str(d.get("name", ""), "name"),
            error_count=_count(d.get("error_count", 0), "error_count"),
            last_error=_opt_str(d.get("last_error"), "last_error"),
            known=None if known is None else _str_dict(known, "known"),
            title=_opt_str(d.get("title"), "title"),
        )


# --- a result ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PollResult:
    """What a poll found, for the writer (``update.apply_poll``).

    ``error`` set: the poll failed (nothing else but the feed's fields count).
    Else ``body_hash`` None: a 304 (no body); a ``body_hash`` with
    ``parsed_meta`` None: the same bytes as last time (nothing parsed); else a
    parsed document whose new or changed ``items`` are here (every item when
    the task had no ``known``; then ``document_keys`` is None, else it names
    every item of the document). The last four fields come from the task, so
    the writer needs no read of the feed to apply the result."""

    feed_id: int
    poll_seq: int | None
    url: str
    status: int | None = None
    headers: dict[str, str] | None = None
    final_url: str | None = None
    permanent_url: str | None = None
    body_hash: str | None = None
    parsed_meta: ParsedMeta | None = None
    items: tuple[KeyedItem, ...] = ()
    document_keys: tuple[str, ...] | None = None
    error: WireError | None = None
    seconds: float | None = None
    worker: str | None = None
    name: str = ""  # the feed's name for logs and outcomes (the feed's own title if new)
    error_count: int = 0  # the feed's failures in a row before this poll
    last_error: str | None = None  # and its last error then
    ttl_minutes: int | None = None  # the feed's <ttl> before this poll

    @classmethod
    def failed(cls, task: PollTask, error: errors.AggregatorError | WireError, *,
               seconds: float | None = None, worker: str | None = None) -> PollResult:
        """The result of a poll that could not be made or ended in ``error``."""
        wire = error if isinstance(error, WireError) else WireError.from_error(error)
        return cls(feed_id=task.feed_id, poll_seq=task.poll_seq, url=task.url, error=wire,
                   seconds=seconds, worker=worker, name=task.name,
                   error_count=task.error_count, last_error=task.last_error,
                   ttl_minutes=task.ttl_minutes)

    @property
    def not_modified(self) -> bool:
        return self.error is None and self.body_hash is None

    def parsed(self) -> ParsedFeed | None:
        """The document's metadata as store.record_feed takes it (no items)."""
        if self.parsed_meta is None:
            return None
        title, site_url, language, ttl, warning = self.parsed_meta
        return ParsedFeed(title=title, site_url=site_url, language=language,
                          ttl_minutes=ttl, items=(), warning=warning)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION, "feed_id": self.feed_id, "poll_seq": self.poll_seq, "url": self.url,
            "status": self.status,
            "headers": None if self.headers is None else dict(self.headers),
            "final_url": self.final_url, "permanent_url": self.permanent_url,
            "body_hash": self.body_hash,
            "parsed_meta": None if self.parsed_meta is None else list(self.parsed_meta),
            "items": [[key, item_to_json(item), h] for key, item, h in self.items],
            "document_keys": None if self.document_keys is None else list(self.document_keys),
            "error": None if self.error is None else self.error.to_json(),
            "seconds": self.seconds, "worker": self.worker, "name": self.name,
            "error_count": self.error_count, "last_error": self.last_error,
            "ttl_minutes": self.ttl_minutes,
        }

    @classmethod
    def from_json(cls, data: Any) -> PollResult:
        d = _version(data, "poll result")
        meta = d.get("parsed_meta")
        parsed_meta: ParsedMeta | None = None
        if meta is not None:
            _check(isinstance(meta, list) and len(meta) == 5, "parsed_meta")
            parsed_meta = (_opt_str(meta[0], "feed title"), _opt_str(meta[1], "site_url"),
                           _opt_str(meta[2], "language"), _opt_int(meta[3], "ttl"),
                           _opt_str(meta[4], "warning"))
        raw_items = d.get("items", [])
        _check(isinstance(raw_items, list), "items")
        items = []
        for entry in raw_items:
            _check(isinstance(entry, list) and len(entry) == 3, "item entry")
            items.append((_str(entry[0], "item key"), item_from_json(entry[1]),
                          _str(entry[2], "item hash")))
        keys = d.get("document_keys")
        _check(keys is None or isinstance(keys, list), "document_keys")
        headers = d.get("headers")
        error = d.get("error")
        return cls(
            feed_id=_count(d.get("feed_id"), "feed_id"),
            poll_seq=_opt_count(d.get("poll_seq"), "poll_seq"),
            url=_str(d.get("url"), "url"),
            status=_opt_int(d.get("status"), "status"),
            headers=None if headers is None else _str_dict(headers, "headers"),
            final_url=_opt_str(d.get("final_url"), "final_url"),
            permanent_url=_opt_str(d.get("permanent_url"), "permanent_url"),
            body_hash=_opt_str(d.get("body_hash"), "body_hash"),
            parsed_meta=parsed_meta, items=tuple(items),
            document_keys=None if keys is None else tuple(_str(k, "key") for k in keys),
            error=None if error is None else WireError.from_json(error),
            seconds=_opt_float(d.get("seconds"), "seconds"),
            worker=_opt_str(d.get("worker"), "worker"),
            name=_str(d.get("name", ""), "name"),
            error_count=_count(d.get("error_count", 0), "error_count"),
            last_error=_opt_str(d.get("last_error"), "last_error"),
            ttl_minutes=_opt_int(d.get("ttl_minutes"), "ttl_minutes"),
        )
