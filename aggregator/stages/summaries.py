"""The second stage: each item's article page fetched when its feed gave too little
text, its main text extracted, and its summary written (Context and Dive deeper);
one item at a time, each its own boundary, in batches, on a pool of processes for
a big backlog."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aggregator import decide, offload, workers
from aggregator.config import Settings
from aggregator.errors import (
    BlockedAddressError,
    FetchError,
    StorageError,
)
from aggregator.fetch import PAGE_ACCEPT, Fetcher
from aggregator.guard import trusted_origin
from aggregator.store import PendingItem, Store
from aggregator.types import Summary

if TYPE_CHECKING:
    from aggregator.metrics import Metrics

from aggregator.pools import SUMMARY_POOL_MIN_ITEMS, _summary_pool
from aggregator.update import Clock, _get, _internal, _StorageTrouble, utcnow

log = logging.getLogger("aggregator.update")


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


def _make_summary(text: str, item: PendingItem, method: str | None,
                  ahead: Future[Summary] | None = None) -> Summary:
    """The item's summary (from ``ahead`` when a pool made it); a bug in one
    summary is recorded on it ("none:error") and not retried until it changes."""
    try:
        try:
            return ahead.result() if ahead is not None else \
                offload.summary(*_summary_args(text, item, method))
        except BrokenExecutor:  # a summary process died: make it here instead
            return offload.summary(*_summary_args(text, item, method))
    except Exception as e:
        log.error("item %d (%s): cannot summarise: %s", item.id, item.url,
                  _internal(f"item {item.id}", e))
        return Summary((), (), "none:error")


def _summarize_item(store: Store, item: PendingItem, article: _Article | None,
                    now: datetime, method: str | None = None,
                    ahead: Future[Summary] | None = None,
                    made: Summary | None = None) -> bool:
    """Record the article fetch (if one was made) and write the summary when it
    is out of date; True when a summary was written. A failed fetch is tried
    again later (``decide.article_retry_at``); meanwhile the item is summarised
    from its own text, and again from the article once that arrives. ``made``:
    the summary an extract worker already made of this item as it is."""
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
    summary = made if made is not None else _make_summary(text, item, method, ahead)
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
class ArticleWork:
    """One item's article work done away from the store (an extract worker): the
    article fetch when one was wanted, and the summary when one was due, both of
    the item as it was sent (``content_hash``). JSON-safe both ways; written by
    ``apply_article``."""

    item_id: int
    content_hash: str
    article: _Article | None
    summary: Summary | None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        a, m = self.article, self.summary
        return {
            "v": 1, "item_id": self.item_id, "content_hash": self.content_hash,
            "article": None if a is None else {"status": a.status, "text": a.text,
                                                "retryable": a.retryable},
            "summary": None if m is None else {"context": list(m.context),
                                                "points": list(m.points), "method": m.method},
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ArticleWork:
        a, m = d.get("article"), d.get("summary")
        return cls(
            item_id=int(d["item_id"]), content_hash=str(d["content_hash"]),
            article=None if a is None else _Article(str(a["status"]), a.get("text"),
                                                    bool(a.get("retryable"))),
            summary=None if m is None else Summary(tuple(m["context"]), tuple(m["points"]),
                                                   str(m["method"])),
            seconds=d.get("seconds"))

    @classmethod
    def gave_up(cls, item: PendingItem, why: str) -> ArticleWork:
        """The item whose work stopped its worker again and again: its article is a
        failure not retried, its summary an error, until its content changes."""
        return cls(item.id, item.content_hash,
                   _Article(f"failed: {why}") if item.url else None,
                   Summary((), (), "none:error"))


def item_to_json(item: PendingItem) -> dict[str, Any]:
    """A PendingItem for an extract task (JSON-safe)."""
    out = dict(item.__dict__)
    out["article_retry_at"] = item.article_retry_at.isoformat() if item.article_retry_at \
        else None
    return out


def item_from_json(d: dict[str, Any]) -> PendingItem:
    values = {k: v for k, v in d.items() if k in PendingItem.__dataclass_fields__}
    when = values.get("article_retry_at")
    values["article_retry_at"] = datetime.fromisoformat(when) if when else None
    return PendingItem(**values)


def work_article(settings: Settings, fetcher: Fetcher, item: PendingItem,
                 now: datetime) -> ArticleWork:
    """One item's article fetch (when ``wants_article``), extraction and summary
    (when one is due), without the store: what an extract worker does. Never
    raises: the page's faults and the summary's are the result."""
    started = time.monotonic()
    article = _fetch_article(fetcher, item) if wants_article(item, settings, now) else None
    plan = _summary_input(item, article, settings.summarizer)
    summary = _make_summary(plan[0], item, settings.summarizer) if plan is not None else None
    return ArticleWork(item.id, item.content_hash, article, summary,
                       time.monotonic() - started)


def apply_article(store: Store, work: ArticleWork, settings: Settings, now: datetime) -> bool:
    """Write an extract worker's result: the item is read again first, and the
    result is a no-op when it is no longer pending or its content changed since
    (it is then sent again as it is now). True when a summary was written."""
    found = store.pending_summaries(1, now=now if settings.fetch_articles else None,
                                    method=settings.summarizer, window=settings.max_entries,
                                    ids=[work.item_id])
    if not found or found[0].content_hash != work.content_hash:
        return False
    return _summarize_item(store, found[0], work.article, now, settings.summarizer,
                           made=work.summary)


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


