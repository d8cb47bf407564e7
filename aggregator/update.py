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
stage, ``summarize_pending``: the daemon runs it on its own thread so it never
delays polling.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator import decide, offload, opml, workers
from aggregator.config import Settings
from aggregator.errors import (
    AggregatorError,
    BlockedAddressError,
    FetchError,
    HTTPStatusError,
    OPMLError,
    ParseError,
    StorageError,
)
from aggregator.fetch import PAGE_ACCEPT, Fetcher, Limits
from aggregator.guard import Guard, trusted_origin
from aggregator.logs import log_feed_result
from aggregator.store import FeedRow, PendingItem, Store
from aggregator.types import FetchResult, ParsedFeed, Summary

if TYPE_CHECKING:
    from aggregator.metrics import Metrics

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

PARSE_POOL_MIN_FEEDS = 40  # below this, starting processes costs more than it saves


def _pool_size(processes: int) -> int:
    """How many worker processes ``processes`` (the ``parse_processes`` setting)
    means here: below 0, one per core (4 at most); 0 on a single core."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    if processes < 0:
        processes = min(cpus, 4)
    return processes if cpus >= 2 else 0


@contextmanager
def _parse_pool(due: int, processes: int,
                preload: Sequence[str] = ("aggregator.parse",)) -> Iterator[Executor | None]:
    """Processes that parse feeds on the other cores during a big pass (the
    first one, a cold start): parsing is most of a pass's CPU and holds the
    GIL. They live for this pass only, so an idle daemon keeps no memory.
    ``processes`` 0 parses on the fetch threads; below 0, one per core (4 at most)."""
    processes = _pool_size(processes)
    if due < PARSE_POOL_MIN_FEEDS or processes < 1:
        yield None
        return
    pool = _LazyPool(processes, preload)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


SUMMARY_POOL_MIN_ITEMS = 50  # a first batch this full: summaries made on the other cores


@contextmanager
def _summary_pool(processes: int) -> Iterator[Executor | None]:
    """Processes that make summaries (pure Python, most of the pipeline's CPU)
    on the other cores while this one fetches pages and writes, for a big
    backlog; the same ``parse_processes`` setting (none in the daemon). Started
    by the first submit only."""
    processes = _pool_size(processes)
    if processes < 1:
        yield None
        return
    pool = _LazyPool(processes, offload.PRELOAD)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class _LazyPool(Executor):
    """The parse pool, started by the first feed that has a body to parse: a
    pass whose every feed answers 304 (or the same bytes) starts no process
    (not even multiprocessing's resource tracker) and imports none of it."""

    def __init__(self, processes: int, preload: Sequence[str] = ("aggregator.parse",)) -> None:
        self.processes = processes
        self.preload = list(preload)  # imported once, by the forkserver, if it starts it
        self._pool: Executor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._closed:  # as ProcessPoolExecutor says it
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(self.preload)
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes, mp_context=ctx,
                    initializer=workers.exit_with_parent, initargs=(os.getpid(),))
            pool = self._pool
        return pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


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


# --- the second stage: articles and summaries -----------------------------------------


def wants_article(item: PendingItem, settings: Settings, now: datetime | None = None) -> bool:
    """Fetch the linked page when article fetching is on (globally and for the
    feed) and either it wasn't tried yet and the item's own text is too short to
    summarise, or an earlier fetch failed and its retry time (``now``) has come."""
    if not settings.fetch_articles or item.fetch_articles is False or not item.url:
        return False
    if item.article_status is None:
        words = len((item.content_text or "").split())
        return words < settings.min_content_words
    return (now is not None and item.article_retry_at is not None
            and item.article_retry_at <= now and item.article_status.startswith("failed"))


@dataclass(frozen=True)
class _Article:
    """One article fetch: ``ok`` with its text, ``too little text``, or ``failed: ...``
    (``retryable`` unless the address guard refused it)."""

    status: str
    text: str | None = None
    retryable: bool = False


def _fetch_article(fetcher: Fetcher, item: PendingItem,
                   pool: Executor | None = None) -> _Article:
    """An item's linked page and its main text (extracted by ``pool`` when
    given: this thread waits without the GIL). Never raises: the page's faults
    and our own bugs (in fetching or extracting) are this article's failure."""
    assert item.url
    try:
        res = _get(fetcher, item.url, accept=PAGE_ACCEPT, trusted=trusted_origin(item.feed_url))
        args = (res.body or b"", res.final_url, _charset(res.headers))
        try:
            text = pool.submit(offload.main_text, *args).result() if pool is not None \
                else offload.main_text(*args)
        except BrokenExecutor:  # a worker process died: extract here instead
            text = offload.main_text(*args)
    except BlockedAddressError as e:  # asking again gets the same answer
        return _Article(f"failed: {type(e).__name__}: {e}")
    except FetchError as e:
        return _Article(f"failed: {type(e).__name__}: {e}", retryable=True)
    except Exception as e:
        return _Article(f"failed: {_internal(item.url, e)}", retryable=True)
    if not text:  # the page answered; what it holds is not an article (not retried)
        return _Article("too little text")
    return _Article("ok", text)


def _charset(headers: dict[str, str]) -> str | None:
    for part in headers.get("content-type", "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip('"\' ')
    return None


def _stale(item: PendingItem, method: str | None = None) -> bool:
    """The summary is missing, made from older content, from the item's own
    text while its article is there, or by another method than wanted."""
    return (item.summary_hash != item.content_hash
            or (item.article_status == "ok" and item.summary_source != "article")
            or _other_method(item, method))


def _other_method(item: PendingItem, method: str | None) -> bool:
    """The summary was made by another method than the item's feed wants."""
    made, _, language = (item.summary_method or "").partition(":")
    want = item.summarizer or method
    if not want or made in ("", want, "none") or (made == "lead" and len(language) <= 3):
        return False  # lead:<code>, none:*: what any method gives such a text
    return True


def _summary_input(item: PendingItem, article: _Article | None,
                   method: str | None) -> tuple[str, str] | None:
    """The text to summarise and where it is from (``item`` or ``article``), or
    None when the summary stored is up to date: a fresh article is always
    summarised, else only a stale summary (``_stale``) is made again."""
    text, source = None, "item"
    if item.article_status == "ok":
        text, source = item.article_text, "article"
    if article is not None and article.status == "ok" and article.text:
        text, source = article.text, "article"
    elif not _stale(item, method):
        return None
    return text or item.content_text or "", source


def _summary_args(text: str, item: PendingItem, method: str | None) -> tuple[Any, ...]:
    """What ``offload.summary`` needs of an item: only that goes to a process."""
    return (text, item.language, item.title, item.summarizer or method or "default")


def _summarize_item(store: Store, item: PendingItem, article: _Article | None,
                    now: datetime, method: str | None = None,
                    ahead: Future[Summary] | None = None) -> bool:
    """Record the article fetch (if one was made) and write the summary when it
    is out of date; True when a summary was written. A failed fetch is tried
    again later (``decide.article_retry_at``); meanwhile the item is summarised
    from its own text, and again from the article once that arrives."""
    plan = _summary_input(item, article, method)
    fetch: tuple[str, str | None, datetime | None] | None = None
    if article is not None:
        retry_at = (decide.article_retry_at(item.article_tries + 1, now)
                    if article.retryable else None)
        fetch = (article.status, article.text, retry_at)
        if plan is None:
            store.save_article(item.id, article.status, article.text, retry_at=retry_at)
            return False  # a retry that failed again: the teaser's summary stands
    if plan is None:
        return False
    text, source = plan
    try:
        try:
            summary = ahead.result() if ahead is not None else \
                offload.summary(*_summary_args(text, item, method))
        except BrokenExecutor:  # a summary process died: make it here instead
            summary = offload.summary(*_summary_args(text, item, method))
    except Exception as e:  # a bug in one summary: recorded on it, not retried until it changes
        log.error("item %d (%s): cannot summarise: %s", item.id, item.url,
                  _internal(f"item {item.id}", e))
        summary = Summary((), (), "none:error")
    if fetch is None:
        return store.save_summary(item.id, item.content_hash, summary, now, source=source)
    try:  # the article and its summary in one write (the search index rewritten once)
        return store.save_summary(item.id, item.content_hash, summary, now, source=source,
                                  article=fetch)
    except StorageError:
        # the fetch is kept even when its summary cannot be: not fetched again
        store.save_article(item.id, fetch[0], fetch[1], retry_at=fetch[2])
        raise


@dataclass(frozen=True)
class SummaryProgress:
    """How far ``summarize_pending`` is: article pages fetched and summaries
    written, each out of the backlog counted when it started (``summary_backlog``).
    A total is a count at the start: retries that succeed can take ``done`` past it."""

    articles: int
    articles_total: int
    summarised: int
    summaries_total: int


def summary_backlog(settings: Settings, store: Store, now: datetime) -> tuple[int, int]:
    """(article pages to fetch, summaries to write) for the backlog as it is now,
    by the rules ``summarize_pending`` follows; read one item at a time."""
    articles = summaries = 0
    for item in store.pending_overview(now=now if settings.fetch_articles else None,
                                       method=settings.summarizer, window=settings.max_entries):
        articles += wants_article(item, settings, now)
        summaries += _stale(item, settings.summarizer)
    return articles, summaries


def summarize_pending(
    settings: Settings,
    store: Store,
    fetcher: Fetcher,
    *,
    limit: int | None = None,
    batch: int = 50,
    clock: Clock = utcnow,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Callable[[], None] = lambda: None,
    counts: Callable[[SummaryProgress], None] | None = None,
    metrics: Metrics | None = None,
) -> int:
    """Work off the backlog of items without an up-to-date summary, and the
    failed article fetches due again; returns how many summaries were written.
    Each item is one boundary: any failure in fetching its article, extracting,
    summarising or saving is that item's alone. Each summary is one small
    transaction, so stopping between two loses nothing. ``progress`` is called
    after each article fetched and each item done (the daemon's watchdog listens);
    ``counts``, when given, hears a SummaryProgress at the start and after each
    article and each summary (``update``'s progress line; counting the backlog
    first costs one read of it). ``metrics`` hears each article's result and each
    summary's time (the daemon's /metrics)."""
    totals = summary_backlog(settings, store, clock()) if counts else (0, 0)
    if counts:
        counts(SummaryProgress(0, totals[0], 0, totals[1]))
    with _summary_pool(settings.parse_processes) as pool:
        return _summarize_batches(settings, store, fetcher, pool, limit=limit, batch=batch,
                                  clock=clock, should_stop=should_stop, progress=progress,
                                  metrics=metrics, totals=totals, counts=counts)


def _summarize_batches(settings: Settings, store: Store, fetcher: Fetcher,
                       pool: Executor | None, *, limit: int | None, batch: int, clock: Clock,
                       should_stop: Callable[[], bool], progress: Callable[[], None],
                       metrics: Metrics | None, totals: tuple[int, int],
                       counts: Callable[[SummaryProgress], None] | None) -> int:
    """summarize_pending's loop; with ``pool``, each batch's summaries are
    asked of it as soon as its pages are in, and written here in turn."""
    done = 0
    fetched_pages = 0

    def tell_counts() -> None:
        if counts:
            counts(SummaryProgress(fetched_pages, max(totals[0], fetched_pages),
                                   done, max(totals[1], done)))

    skip: set[int] = set()  # failed in this call: not picked again by it
    written: set[int] = set()
    trouble = _StorageTrouble()
    use_pool = pool is not None
    first = True
    while not should_stop() and (limit is None or done < limit):
        now = clock()
        pending = store.pending_summaries(
            batch, now=now if settings.fetch_articles else None, exclude=sorted(skip),
            method=settings.summarizer, window=settings.max_entries)
        if not pending:
            break
        wanted = [p for p in pending if wants_article(p, settings, now)]
        wanted_ids = {p.id for p in wanted}
        if first:  # a small backlog is worked off here: starting processes costs more
            use_pool = use_pool and len(pending) >= min(batch, SUMMARY_POOL_MIN_ITEMS)
            first = False
        helpers = pool if use_pool else None
        articles: dict[int, _Article] = {}
        for item_id, fetched in workers.unordered(
            lambda p, h=helpers: (p.id, _fetch_article(fetcher, p, h)), wanted, settings.workers,
            should_stop=should_stop, name="article",
        ):
            articles[item_id] = fetched
            fetched_pages += 1
            if metrics is not None:
                metrics.article(fetched.status)
            progress()
            tell_counts()
        ahead: dict[int, Future[Summary]] = {}
        if helpers is not None:
            for item in pending:
                if item.id in wanted_ids and item.id not in articles:
                    continue
                plan = _summary_input(item, articles.get(item.id), settings.summarizer)
                if plan is not None:
                    ahead[item.id] = helpers.submit(
                        offload.summary, *_summary_args(plan[0], item, settings.summarizer))
        for item in pending:
            if should_stop():
                break
            if item.id in wanted_ids and item.id not in articles:
                continue  # its article fetch was cut short by a stop: next time
            if item.id in written and item.id not in articles:
                skip.add(item.id)  # written once already and still pending: not again now
                continue
            started = time.monotonic()
            try:
                wrote = _summarize_item(store, item, articles.get(item.id), clock(),
                                        settings.summarizer, ahead.pop(item.id, None))
            except StorageError as e:
                log.error("item %d (%s): not saved, tried again later: %s", item.id, item.url,
                          e)
                skip.add(item.id)
                trouble.failed(e)  # raises when the database keeps failing
                continue
            except Exception as e:  # a bug outside the summary itself
                log.error("item %d (%s): %s", item.id, item.url,
                          _internal(f"item {item.id}", e))
                skip.add(item.id)
                continue
            trouble.ok()
            if wrote:
                done += 1
                written.add(item.id)
                if metrics is not None:
                    metrics.summarized(time.monotonic() - started)
                tell_counts()
            elif item.id not in articles:
                skip.add(item.id)  # nothing to do after all (e.g. changed meanwhile)
            progress()
        for left in ahead.values():  # stopped: what was asked ahead is not waited for
            left.cancel()
    return done


def publish_now(settings: Settings, store: Store, *, clock: Clock = utcnow) -> list[Path]:
    """Write every output file from the database (no clock in them: ``clock`` is unused)."""
    from aggregator.publish import publish_from_store

    return publish_from_store(settings, store)
