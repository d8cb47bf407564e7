"""One pass of the pipeline, wiring the stages:

    feeds.opml --opml--> subscriptions --store--> due feeds
        --fetch--> bytes + headers --parse--> ParsedFeed
        --decide--> keyed, hashed items + next poll time --store--> rows

Fetching and parsing run on a thread pool; every write happens on the calling
thread, one transaction per feed, so there is one writer and a killed process
loses at most the feed it was writing. A feed's failure is a value (its
outcome), stored on its row and logged once; it never stops the other feeds.
Everything done for one feed runs inside one boundary (``_fetch_and_parse`` on
the worker, ``_record_safely`` here): any exception in it, a bug included,
becomes that feed's error state, and the pass goes on. Only a database that
fails write after write (``_StorageTrouble``) stops a pass.

Summaries (article fetch + extraction + summarising) are a second, separate
stage, ``stages/summaries.summarize_pending``: the daemon runs it on its own thread so it never
delays polling.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator import decide, offload, opml, workers
from aggregator.config import Settings
from aggregator.errors import (
    AggregatorError,
    FetchError,
    HTTPStatusError,
    OPMLError,
    ParseError,
    StorageError,
)
from aggregator.fetch import Fetcher, Limits
from aggregator.guard import Guard, trusted_origin
from aggregator.logs import log_feed_result
from aggregator.store import FeedRow, Store
from aggregator.types import FetchResult, ParsedFeed

if TYPE_CHECKING:
    pass

from aggregator.pools import _parse_pool

log = logging.getLogger("aggregator.update")
fetch_log = logging.getLogger("aggregator.fetch")  # one DEBUG line per fetch (`-v`)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FeedOutcome:
    url: str
    name: str
    result: str  # "new", "not modified", "unchanged", "error", "gone"
    status: int | None = None
    new: int = 0
    changed: int = 0
    error: str | None = None
    moved_to: str | None = None
    seconds: float | None = None  # fetching (and parsing) it took


@dataclass
class PassResult:
    outcomes: list[FeedOutcome] = field(default_factory=list)
    sync: dict[str, int] = field(default_factory=dict)

    @property
    def new(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def changed(self) -> int:
        return sum(o.changed for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(o.result in ("error", "gone") for o in self.outcomes)


def make_fetcher(settings: Settings) -> Fetcher:
    return Fetcher(
        Limits(
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            max_bytes=settings.max_bytes,
            max_redirects=settings.max_redirects,
            per_host=settings.per_host,
            user_agent=settings.user_agent,
            guard=Guard.parse(settings.allow_private),
        ),
        pool_size=max(settings.workers * 2, 8),
    )


def policy(settings: Settings) -> decide.PollPolicy:
    return decide.PollPolicy(
        interval=timedelta(minutes=settings.interval),
        minimum=timedelta(minutes=settings.min_interval),
        maximum=timedelta(minutes=settings.max_interval),
        jitter=settings.jitter,
    )


def poll_slack(settings: Settings) -> timedelta:
    """How early a one-shot ``update`` polls a feed: every feed whose next fetch
    is at most this far off is due now, as long as its last fetch is at least
    ``min_interval`` ago (so no feed is ever polled more often than that).

    The rule: ``interval × jitter + 2 × min_interval``, never more than half the
    interval; 13 minutes with the defaults (30, 0.1, 5). Why: ``aggregator-update.timer``
    starts a pass every 30 minutes; a feed polled at one pass is next due
    ``interval`` minutes later plus its jitter (up to 3), so without slack it
    just misses the next pass and waits for the one after: polled hourly. The
    slack forgives the jitter (it spreads a daemon's polls but only costs a
    timer a pass), one ``min_interval`` covers the timer's random delay
    (RandomizedDelaySec=5min: two passes may start 25 minutes apart) and the
    other systemd's AccuracySec= (1 min) and the pass's own length (a feed
    fetched three minutes into one pass is due three minutes into the next).
    The half-interval cap keeps a feed with the pass nearer its due time. So
    with the shipped timer every feed is polled at every pass, 30 minutes apart
    (24 to 36 when the random delay is drawn anew each time), and a pass run
    by hand polls a 30-minute feed no sooner than 17 minutes after the last.
    The daemon takes no slack: it looks for due feeds every ``min_interval``/4."""
    interval = timedelta(minutes=settings.interval)
    slack = interval * settings.jitter + 2 * timedelta(minutes=settings.min_interval)
    return max(timedelta(0), min(slack, interval / 2))


def sync_subscriptions(settings: Settings, store: Store, now: datetime) -> dict[str, int]:
    counts = store.sync_subscriptions(opml.read(settings.feeds), now)
    if any(counts.values()):
        log.info("subscriptions: %(added)d added, %(deactivated)d removed, "
                 "%(reactivated)d back", counts)
    return counts


@dataclass(frozen=True)
class _Fetched:
    """What a worker thread hands back: the exchange and its parse, or an error."""

    feed: FeedRow
    result: FetchResult | None = None
    parsed: ParsedFeed | None = None
    body_hash: str | None = None
    error: AggregatorError | None = None
    seconds: float | None = None


def _fetch_and_parse(fetcher: Fetcher, feed: FeedRow, now: datetime,
                     pool: Executor | None = None) -> _Fetched:
    start = time.monotonic()
    fetched = _fetch_and_parse_timed(fetcher, feed, now, pool)
    return replace(fetched, seconds=time.monotonic() - start)


def _fetch_and_parse_timed(fetcher: Fetcher, feed: FeedRow, now: datetime,
                           pool: Executor | None) -> _Fetched:
    try:
        result = _get(fetcher, feed.url, etag=feed.etag, last_modified=feed.last_modified,
                      trusted=trusted_origin(feed.url))
        if result.body is None:
            return _Fetched(feed, result)
        body_hash = _body_hash(result.body)
        if body_hash == feed.body_hash:
            return _Fetched(feed, result, None, body_hash)  # same bytes: nothing to parse
        # offload.parse imports the parser when called: a poll that gets only
        # 304s never does, nor this process while the parse pool works
        args = (result.body, result.headers, result.final_url, now)
        if pool is not None:  # this thread waits without the GIL; another core parses
            try:
                parsed = pool.submit(offload.parse, *args).result()
            except BrokenExecutor:  # a parser process died: parse here instead
                parsed = offload.parse(*args)
        else:
            parsed = offload.parse(*args)
        return _Fetched(feed, result, parsed, body_hash)
    except (FetchError, ParseError) as e:
        return _Fetched(feed, error=e)
    except Exception as e:  # a bug: record it on this feed, keep polling the others
        return _Fetched(feed, error=_internal(feed.url, e))


def _get(fetcher: Fetcher, url: str, **kw: Any) -> FetchResult:
    """``fetcher.get``, with one DEBUG line per fetch: URL, status, bytes, seconds."""
    start = time.monotonic()
    try:
        res = fetcher.get(url, **kw)
    except Exception as e:
        fetch_log.debug("GET %s: %s (%.2f s)", url, e, time.monotonic() - start)
        raise
    fetch_log.debug("GET %s: HTTP %d, %d bytes, %.2f s%s", url, res.status, len(res.body or b""),
                    time.monotonic() - start,
                    f" (from {res.final_url})" if res.final_url != url else "")
    return res


def _internal(what: str, e: BaseException) -> AggregatorError:
    """A bug met while working on one feed, item or article, as that unit's error:
    its traceback at DEBUG, its one line where the unit's errors go."""
    log.debug("%s: internal error", what, exc_info=e)
    return AggregatorError(f"internal error: {type(e).__name__}: {e}")


class _StorageTrouble:
    """Writes that failed in a row. One failed write (a StorageError) costs only
    that feed or item this time: its transaction rolled back, its row is as it
    was, so it is due again next pass and nothing is lost. ``LIMIT`` in a row
    say the database itself is unusable (locked by another writer, read-only,
    corrupt, disk full): the pass stops with that error instead of logging it
    for every feed, so ``update`` exits 1 and the daemon's health turns stalled.
    So does a pass whose every write failed, however few."""

    LIMIT = 3

    def __init__(self) -> None:
        self.count = 0
        self.written = False
        self.last: StorageError | None = None

    def failed(self, e: StorageError) -> None:
        self.count += 1
        self.last = e
        if self.count >= self.LIMIT:
            raise StorageError(f"{e} ({self.count} writes in a row failed; stopping)") from e

    def ok(self) -> None:
        self.count = 0
        self.written = True

    def finish(self) -> None:
        if self.last is not None and not self.written:
            raise StorageError(f"{self.last} (no write of this pass succeeded)") from self.last


# a 304 to write: (feed id, when, status, next fetch, headers)
NotModified = tuple[int, datetime, int, datetime, dict[str, str]]

def run_pass(
    settings: Settings,
    store: Store,
    fetcher: Fetcher,
    *,
    all_feeds: bool = False,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
    progress: Callable[[FeedOutcome], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    tolerate_bad_opml: bool = False,
    early: timedelta = timedelta(0),
    on_due: Callable[[int], None] | None = None,
) -> PassResult:
    """Sync subscriptions, poll the due feeds (every active one with
    ``all_feeds``), store what is new or changed. With ``tolerate_bad_opml``
    (the daemon) an unreadable feeds.opml is logged and the feeds already in
    the database are polled; without it (a one-shot update) it is fatal.
    ``early``: also poll the feeds due that soon (``poll_slack``, for ``update``).
    ``on_due`` hears how many feeds this pass polls, before the first one.
    A pass starts with no DNS failures remembered (see fetch.DNSFailures)."""
    rng = rng or random.Random()
    failures = getattr(fetcher, "dns_failures", None)
    if failures is not None:
        failures.clear()
    try:
        sync = sync_subscriptions(settings, store, clock())
    except OPMLError as e:
        if not tolerate_bad_opml:
            raise
        log.error("%s; polling the subscriptions already in the database", e)
        sync = {}
    result = PassResult(sync=sync)
    store.rewind_schedule(clock())  # the clock went back: no feed waits the jump out
    due = store.due_feeds(clock(), all_feeds=all_feeds, early=early,
                          min_gap=timedelta(minutes=settings.min_interval))
    if on_due:
        on_due(len(due))
    moves: list[tuple[str, str]] = []
    pol = policy(settings)
    # the forkserver the parse pool starts serves the summaries' pool too: with
    # summaries to follow, it imports their modules once, not every worker
    preload = ("aggregator.parse", *(offload.PRELOAD if settings.summaries else ()))
    with _parse_pool(len(due), settings.parse_processes, preload) as pool:
        fetched_all = workers.unordered(
            lambda feed: _fetch_and_parse(fetcher, feed, clock(), pool), due, settings.workers,
            should_stop=should_stop, name="fetch",
        )
        not_modified: list[NotModified] = []
        trouble = _StorageTrouble()
        try:
            for fetched in fetched_all:
                outcome = _record_safely(store, fetched, pol, clock(), rng, not_modified,
                                         trouble)
                if len(not_modified) >= NOT_MODIFIED_BATCH:
                    _flush_not_modified(store, not_modified, trouble)
                if outcome.moved_to:
                    moves.append((outcome.url, outcome.moved_to))
                result.outcomes.append(outcome)
                if progress:
                    progress(outcome)
            _flush_not_modified(store, not_modified, trouble)
            trouble.finish()
        finally:
            if not_modified:  # the pass was cut short: keep what can be kept
                try:
                    store.record_not_modified_many(not_modified)
                except StorageError as e:
                    log.error("%d unchanged feeds not recorded, asked again next pass: %s",
                              len(not_modified), e)
    if moves:
        _apply_moves(settings, store, moves)
    return result


def _flush_not_modified(store: Store, rows: list[NotModified], trouble: _StorageTrouble) -> None:
    if not rows:
        return
    try:
        store.record_not_modified_many(rows)
    except StorageError as e:  # those feeds are still due: asked again next pass
        log.error("%d unchanged feeds not recorded, asked again next pass: %s", len(rows), e)
        rows.clear()
        trouble.failed(e)
        return
    rows.clear()
    trouble.ok()


def _record_safely(store: Store, fetched: _Fetched, pol: decide.PollPolicy, now: datetime,
                   rng: random.Random, not_modified: list[NotModified],
                   trouble: _StorageTrouble) -> FeedOutcome:
    """``_record`` inside the feed's boundary: a bug becomes the feed's error
    state ("internal error: Type: message"), a failed write leaves the feed as
    it was (due again next pass); neither stops the pass."""
    feed = fetched.feed
    try:
        outcome = _record(store, fetched, pol, now, rng, not_modified)
    except StorageError as e:
        return _not_stored(feed, e, trouble)
    except Exception as e:
        try:
            outcome = _record_error(store, feed, _internal(feed.url, e), pol, now, rng)
        except StorageError as e2:
            return _not_stored(feed, e2, trouble)
        except Exception as e2:  # even recording the error failed: say so, go on
            error = _internal(feed.url, e2)
            log.error("feed %s: %s (cannot even record it)", feed.url, error)
            return FeedOutcome(feed.url, feed.name, "error", error=str(error))
    if outcome.result != "not modified":  # a 304 is written later, in a batch
        trouble.ok()
    return replace(outcome, seconds=fetched.seconds)


def _not_stored(feed: FeedRow, e: StorageError, trouble: _StorageTrouble) -> FeedOutcome:
    log.error("feed %s: not stored, tried again next pass: %s", feed.url, e)
    trouble.failed(e)  # raises when the database keeps failing
    return FeedOutcome(feed.url, feed.name, "error", error=f"StorageError: {e}")


NOT_MODIFIED_BATCH = 100  # 304s written per transaction


def _body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def record_first_fetch(settings: Settings, store: Store, feed: FeedRow, result: FetchResult,
                       parsed: ParsedFeed | None, *, clock: Clock = utcnow) -> None:
    """Store a fetch made outside a pass (``add`` finding a feed) as a poll would:
    items, validators, body hash and next poll time, so the next pass asks
    "changed since?" instead of fetching it again."""
    if result.body is None:
        return
    fetched = _Fetched(feed, result, parsed, _body_hash(result.body))
    _record(store, fetched, policy(settings), clock(), random.Random(), [])


def _record(store: Store, fetched: _Fetched, pol: decide.PollPolicy, now: datetime,
            rng: random.Random,
            not_modified: list[NotModified],
            ) -> FeedOutcome:
    feed = fetched.feed
    if fetched.error is not None:
        return _record_error(store, feed, fetched.error, pol, now, rng)
    res = fetched.result
    assert res is not None
    next_fetch = decide.next_poll(
        now, pol, headers=res.headers,
        ttl_minutes=(fetched.parsed.ttl_minutes if fetched.parsed else feed.ttl_minutes),
        random_fraction=rng.random(),
    )
    log_feed_result(log, feed.url, feed.last_error if feed.error_count else None, None)
    if res.body is None:
        not_modified.append((feed.id, now, res.status, next_fetch, res.headers))
        return FeedOutcome(feed.url, feed.name, "not modified", res.status,
                           moved_to=res.permanent_url)
    items = []
    if fetched.parsed is not None:
        items = [(key, item, decide.content_hash(item))
                 for key, item in decide.assign_keys(fetched.parsed.items)]
        language = fetched.parsed.language
        if language:
            items = [(k, i if i.language else replace(i, language=language), h)
                     for k, i, h in items]
    counts = store.record_feed(
        feed.id, now, status=res.status, headers=res.headers,
        body_hash=fetched.body_hash or "", parsed=fetched.parsed, items=items,
        next_fetch=next_fetch,
    )
    kind = "new" if counts.new or counts.changed else "unchanged"
    name = (fetched.parsed.title if fetched.parsed and not feed.title else None) or feed.name
    return FeedOutcome(feed.url, name, kind, res.status, counts.new, counts.changed,
                       moved_to=res.permanent_url)


def _record_error(store: Store, feed: FeedRow, error: AggregatorError,
                  pol: decide.PollPolicy, now: datetime, rng: random.Random) -> FeedOutcome:
    status = error.status if isinstance(error, HTTPStatusError) else None
    headers = error.headers if isinstance(error, HTTPStatusError) else {}
    # an internal error names its own type: "internal error: OverflowError: ..."
    message = str(error) if type(error) is AggregatorError else f"{type(error).__name__}: {error}"
    gone = status is not None and decide.disables_feed(status)
    try:
        next_fetch = decide.next_poll(
            now, pol, headers=headers, error_count=feed.error_count + 1,
            random_fraction=rng.random(),
        )
    except Exception as e:  # a bug in the rule must not lose the error itself
        _internal(feed.url, e)
        next_fetch = now + pol.interval
    if gone:
        message = "HTTP 410 Gone: the publisher removed this feed; polling stopped"
    store.record_error(feed.id, now, status=status, error=message, next_fetch=next_fetch,
                       state="gone" if gone else "error")
    log_feed_result(log, feed.url, feed.last_error, message)  # once per state change
    return FeedOutcome(feed.url, feed.name, "gone" if gone else "error", status, error=message)


def _apply_moves(settings: Settings, store: Store, moves: Sequence[tuple[str, str]]) -> None:
    """301/308: the feed moves in feeds.opml first, then in the database, so the
    two never disagree (a sync would otherwise bring the old URL back). A move
    onto an IP address or localhost is not recorded unless the feed was already
    there: feeds.opml trusts such a URL, and a server's redirect must not earn it
    that trust (the fetch itself only got through because allow_private let it)."""
    done: list[tuple[str, str]] = []
    kept = [(old, new) for old, new in moves
            if trusted_origin(new) not in (None, trusted_origin(old))]
    for old, new in kept:
        log.warning("%s: moved permanently to %s, an internal address: keeping the old URL",
                    old, new)
    moves = [m for m in moves if m not in kept]
    if not moves:
        return

    def rename(tree: ET.Element) -> bool:
        done[:] = [(old, new) for old, new in moves if opml.rename(tree, old, new)]
        return bool(done)

    try:
        opml.edit(settings.feeds, rename)  # under the lock the CLI's edits take too
    except AggregatorError as e:
        log.error("cannot record moved feeds in %s, keeping their old URLs: %s",
                  settings.feeds, e)
        return
    for old, new in done:
        try:
            store.move_feed(old, new, private=opml.is_private(old))
        except StorageError as e:  # the next sync follows feeds.opml: a new row for `new`
            log.error("%s: moved permanently to %s, but the database kept the old URL: %s",
                      old, new, e)
            continue
        log.info("%s: moved permanently to %s", old, new)


def publish_now(settings: Settings, store: Store, *, clock: Clock = utcnow) -> list[Path]:
    """Write every output file from the database (no clock in them: ``clock`` is unused)."""
    from aggregator.publish import publish_from_store

    return publish_from_store(settings, store)
