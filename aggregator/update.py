"""One pass of the pipeline, wiring the stages:

    feeds.opml --opml--> subscriptions --store--> due feeds
        --fetch--> bytes + headers --parse--> ParsedFeed
        --decide--> keyed, hashed items + next poll time --store--> rows

Fetching and parsing run on a thread pool; every write happens on the calling
thread, one transaction per feed, so there is one writer and a killed process
loses at most the feed it was writing. A feed's failure is a value (its
outcome), stored on its row and logged once; it never stops the other feeds.

Summaries (article fetch + extraction + summarising) are a second, separate
stage, ``summarize_pending``: the daemon runs it on its own thread so it never
delays polling.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator import decide, opml, workers
from aggregator.config import Settings
from aggregator.errors import (
    AggregatorError,
    FetchError,
    HTTPStatusError,
    OPMLError,
    ParseError,
)
from aggregator.fetch import PAGE_ACCEPT, Fetcher, Limits, host_of
from aggregator.logs import log_feed_result
from aggregator.store import FeedRow, PendingItem, Store
from aggregator.types import FetchResult, ParsedFeed

log = logging.getLogger("aggregator.update")

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


def _fetch_and_parse(fetcher: Fetcher, feed: FeedRow, now: datetime,
                     pool: Executor | None = None) -> _Fetched:
    try:
        result = fetcher.get(
            feed.url, etag=feed.etag, last_modified=feed.last_modified,
            trusted_host=host_of(feed.url),
        )
        if result.body is None:
            return _Fetched(feed, result)
        body_hash = hashlib.sha256(result.body).hexdigest()[:32]
        if body_hash == feed.body_hash:
            return _Fetched(feed, result, None, body_hash)  # same bytes: nothing to parse
        from aggregator.parse import parse  # not imported by a poll that gets only 304s

        if pool is not None:  # this thread waits without the GIL; another core parses
            try:
                parsed = pool.submit(parse, result.body, result.headers, result.final_url,
                                     now).result()
            except BrokenProcessPool:  # a parser process died: parse here instead
                parsed = parse(result.body, result.headers, result.final_url, now)
        else:
            parsed = parse(result.body, result.headers, result.final_url, now)
        return _Fetched(feed, result, parsed, body_hash)
    except (FetchError, ParseError) as e:
        return _Fetched(feed, error=e)
    except Exception as e:  # a bug: record it on this feed, keep polling the others
        log.exception("%s: internal error", feed.url)
        return _Fetched(feed, error=AggregatorError(f"internal error: {type(e).__name__}: {e}"))


# a 304 to write: (feed id, when, status, next fetch, headers)
NotModified = tuple[int, datetime, int, datetime, dict[str, str]]

PARSE_POOL_MIN_FEEDS = 40  # below this, starting processes costs more than it saves


@contextmanager
def _parse_pool(due: int, processes: int) -> Iterator[Executor | None]:
    """Processes that parse feeds on the other cores during a big pass (the
    first one, a cold start): parsing is most of a pass's CPU and holds the
    GIL. They live for this pass only, so an idle daemon keeps no memory.
    ``processes`` 0 parses on the fetch threads; below 0, one per core (4 at most)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    if processes < 0:
        processes = min(cpus, 4)
    if due < PARSE_POOL_MIN_FEEDS or cpus < 2 or processes < 1:
        yield None
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["aggregator.parse"])
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=ctx,
                               initializer=workers.exit_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


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
) -> PassResult:
    """Sync subscriptions, poll the due feeds (every active one with
    ``all_feeds``), store what is new or changed. With ``tolerate_bad_opml``
    (the daemon) an unreadable feeds.opml is logged and the feeds already in
    the database are polled; without it (a one-shot update) it is fatal."""
    rng = rng or random.Random()
    try:
        sync = sync_subscriptions(settings, store, clock())
    except OPMLError as e:
        if not tolerate_bad_opml:
            raise
        log.error("%s; polling the subscriptions already in the database", e)
        sync = {}
    result = PassResult(sync=sync)
    store.rewind_schedule(clock())  # the clock went back: no feed waits the jump out
    due = store.due_feeds(clock(), all_feeds=all_feeds)
    moves: list[tuple[str, str]] = []
    pol = policy(settings)
    with _parse_pool(len(due), settings.parse_processes) as pool:
        fetched_all = workers.unordered(
            lambda feed: _fetch_and_parse(fetcher, feed, clock(), pool), due, settings.workers,
            should_stop=should_stop, name="fetch",
        )
        not_modified: list[NotModified] = []
        try:
            for fetched in fetched_all:
                outcome = _record(store, fetched, pol, clock(), rng, not_modified)
                if len(not_modified) >= NOT_MODIFIED_BATCH:
                    store.record_not_modified_many(not_modified)
                    not_modified.clear()
                if outcome.moved_to:
                    moves.append((outcome.url, outcome.moved_to))
                result.outcomes.append(outcome)
                if progress:
                    progress(outcome)
        finally:
            store.record_not_modified_many(not_modified)
    if moves:
        _apply_moves(settings, store, moves)
    return result


NOT_MODIFIED_BATCH = 100  # 304s written per transaction


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
    message = f"{type(error).__name__}: {error}"
    gone = status is not None and decide.disables_feed(status)
    next_fetch = decide.next_poll(
        now, pol, headers=headers, error_count=feed.error_count + 1,
        random_fraction=rng.random(),
    )
    if gone:
        message = "HTTP 410 Gone: the publisher removed this feed; polling stopped"
    store.record_error(feed.id, now, status=status, error=message, next_fetch=next_fetch,
                       state="gone" if gone else "error")
    log_feed_result(log, feed.url, feed.last_error, message)  # once per state change
    return FeedOutcome(feed.url, feed.name, "gone" if gone else "error", status, error=message)


def _apply_moves(settings: Settings, store: Store, moves: Sequence[tuple[str, str]]) -> None:
    """301/308: the feed moves in feeds.opml first, then in the database, so the
    two never disagree (a sync would otherwise bring the old URL back)."""
    try:
        tree = opml.load_tree(settings.feeds)
        done = [(old, new) for old, new in moves if opml.rename(tree, old, new)]
        if done:
            opml.write(settings.feeds, tree)
    except AggregatorError as e:
        log.error("cannot record moved feeds in %s, keeping their old URLs: %s",
                  settings.feeds, e)
        return
    for old, new in done:
        store.move_feed(old, new)
        log.info("%s: moved permanently to %s", old, new)


# --- the second stage: articles and summaries -----------------------------------------


def wants_article(item: PendingItem, settings: Settings) -> bool:
    """Fetch the linked page when the item's own text is too short to summarise,
    article fetching is on (globally and for the feed), and it wasn't tried yet."""
    if not settings.fetch_articles or item.fetch_articles is False:
        return False
    if item.article_status is not None or not item.url:
        return False
    words = len((item.content_text or "").split())
    return words < settings.min_content_words


def _fetch_article(fetcher: Fetcher, item: PendingItem) -> tuple[str, str | None]:
    """(status, main text) for an item's linked page. Never raises for the page's faults."""
    from aggregator.extract import extract_main_text

    assert item.url
    try:
        res = fetcher.get(item.url, accept=PAGE_ACCEPT, trusted_host=host_of(item.feed_url))
    except FetchError as e:
        return f"failed: {type(e).__name__}: {e}", None
    text = extract_main_text(res.body or b"", res.final_url, encoding=_charset(res.headers))
    if not text:
        return "too little text", None
    return "ok", text


def _charset(headers: dict[str, str]) -> str | None:
    for part in headers.get("content-type", "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip('"\' ')
    return None


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
) -> int:
    """Work off the backlog of items without an up-to-date summary; returns how
    many were written. Each summary is one small transaction, so stopping
    between two loses nothing. ``progress`` is called after each article fetched
    and each summary written (the daemon's watchdog listens)."""
    from aggregator.summarize import summarize

    done = 0
    failed: set[int] = set()
    while not should_stop() and (limit is None or done < limit):
        pending = [p for p in store.pending_summaries(batch + len(failed))
                   if p.id not in failed][:batch]
        if not pending:
            break
        wanted = [p for p in pending if wants_article(p, settings)]
        wanted_ids = {p.id for p in wanted}
        articles: dict[int, tuple[str, str | None]] = {}
        for item_id, fetched in workers.unordered(
            lambda p: (p.id, _fetch_article(fetcher, p)), wanted, settings.workers,
            should_stop=should_stop, name="article",
        ):
            articles[item_id] = fetched
            progress()
        for item in pending:
            if should_stop():
                break
            text = item.article_text if item.article_status == "ok" else None
            if item.id in articles:
                status, article = articles[item.id]
                store.save_article(item.id, status, article)
                text = article
            elif item.id in wanted_ids:
                continue  # its article fetch was cut short by a stop: next time
            text = text or item.content_text or ""
            try:
                summary = summarize(text, language=item.language, title=item.title)
            except Exception:  # a bug in one summary must not stop the others
                log.exception("cannot summarise item %d (%s)", item.id, item.url)
                failed.add(item.id)
                continue
            if store.save_summary(item.id, item.content_hash, summary, clock()):
                done += 1
            progress()
    return done


def publish_now(settings: Settings, store: Store, *, clock: Clock = utcnow) -> list[Path]:
    """Write every output file from the database."""
    from aggregator.publish import publish

    categories = store.recent_by_category(settings.category_max_entries)
    return publish(
        store.recent_entries(settings.max_entries),
        settings.output,
        subscriptions=store.subscriptions(),
        category_entries=categories,
        base_url=settings.base_url,
        title=settings.title,
        ttl_minutes=int(settings.interval),
        max_entries=settings.max_entries,
        now=clock(),
    )
