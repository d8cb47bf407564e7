"""One pass of the pipeline, wiring the stages:

    feeds.opml --opml--> subscriptions --store--> due feeds
        --fetch--> bytes + headers --parse--> ParsedFeed
        --decide--> keyed, hashed items + next poll time --store--> rows

The due feeds are claimed in one statement (``store.claim_due``: a lease and a
new ``poll_seq`` each), so no other pass or worker polls them meanwhile. Per
feed, the work is two functions any runtime calls: ``poll_feed`` (a
``wire.PollTask`` in, a ``wire.PollResult`` out; no store) and ``apply_poll``
(the result written, fenced by its ``poll_seq``). Here, polls run on a thread
pool; every write happens on the calling thread, one transaction per feed, so
there is one writer and a killed process loses at most the feed it was writing.
A feed's failure is a value (its outcome), stored on its row and logged once; it
never stops the other feeds.
Everything done for one feed runs inside one boundary (``poll_feed`` on
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
import os
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
from aggregator.wire import KeyedItem, PollResult, PollTask

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
    result: str  # "new", "not modified", "unchanged", "error", "gone", "fenced"
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


POOL_SIZE = 128  # HTTP connections held at most (at least 2 per worker)


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
        # room to keep a connection to each of 128 hosts: feeds sharing a host
        # reuse it within a pass (httppool keeps a large pool cheap)
        pool_size=max(settings.workers * 2, POOL_SIZE),
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


def poll_feed(fetcher: Fetcher, task: PollTask, now: datetime,
              pool: Executor | None = None) -> PollResult:
    """Poll one feed without the store (the worker side): fetch it conditionally,
    hash the body (the same bytes as last time: nothing to parse), parse, key and
    hash the items. Only items new to ``task.known`` come back (all of them when
    it is None). Never raises: an error is the result's value."""
    start = time.monotonic()
    try:
        return _poll(fetcher, task, now, pool, start)
    except (FetchError, ParseError) as e:
        return PollResult.failed(task, e, seconds=time.monotonic() - start)
    except Exception as e:  # a bug: record it on this feed, keep polling the others
        return PollResult.failed(task, _internal(task.url, e), seconds=time.monotonic() - start)


def _poll(fetcher: Fetcher, task: PollTask, now: datetime, pool: Executor | None,
          start: float) -> PollResult:
    result = _get(fetcher, task.url, etag=task.etag, last_modified=task.last_modified,
                  trusted=trusted_origin(task.url))
    if result.body is None:
        return _result_of(task, result, None, None, start)
    body_hash = _body_hash(result.body)
    if body_hash == task.body_hash:
        return _result_of(task, result, None, body_hash, start)  # same bytes: nothing to parse
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
    return _result_of(task, result, parsed, body_hash, start)


def _result_of(task: PollTask, res: FetchResult, parsed: ParsedFeed | None,
               body_hash: str | None, start: float | None = None) -> PollResult:
    """One exchange (and its parse) as the result of ``task``: items keyed and
    hashed, the feed's language filled in, those ``task.known`` has left out."""
    items: list[KeyedItem] = []
    document_keys: tuple[str, ...] | None = None
    meta = None
    name = task.name
    if parsed is not None:
        items = [(key, item, decide.content_hash(item))
                 for key, item in decide.assign_keys(parsed.items)]
        language = parsed.language
        if language:
            items = [(k, i if i.language else replace(i, language=language), h)
                     for k, i, h in items]
        if task.known is not None:
            known = task.known
            document_keys = tuple(k for k, _, _ in items)
            items = [(k, i, h) for k, i, h in items if known.get(k) != h]
        meta = (parsed.title, parsed.site_url, parsed.language, parsed.ttl_minutes,
                parsed.warning)
        name = (parsed.title if not task.title else None) or task.name
    return PollResult(
        feed_id=task.feed_id, poll_seq=task.poll_seq, url=task.url, status=res.status,
        headers=res.headers, final_url=res.final_url, permanent_url=res.permanent_url,
        body_hash=body_hash, parsed_meta=meta, items=tuple(items),
        document_keys=document_keys, name=name, error_count=task.error_count,
        last_error=task.last_error, ttl_minutes=task.ttl_minutes,
        seconds=None if start is None else time.monotonic() - start,
    )


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


# a 304 to write: (feed id, when, status, next fetch, headers, poll_seq)
NotModified = tuple[int, datetime, int, datetime, dict[str, str], int | None]

EMBEDDED = "embedded"  # the holder of an embedded pass's claims: "embedded:<pid>"


def embedded_holder() -> str:
    return f"{EMBEDDED}:{os.getpid()}"


def release_stale_leases(store: Store, *, own: bool = True) -> int:
    """Give back the claims of embedded passes that are over: those of processes
    no longer running (a killed daemon or ``update``), and with ``own`` those of
    this process (its passes run one at a time, so any claim it still holds is
    left from one cut short). A running process's claims stay: a one-shot
    ``update`` beside the daemon does not poll what the daemon holds. Nothing
    to give back costs one read of the (few) leased rows and no write."""
    released = 0
    for holder in store.lease_holders(EMBEDDED + ":"):
        pid = holder[len(EMBEDDED) + 1:]
        if (own and holder == embedded_holder()) or not _running(pid):
            released += store.release_leases(holder, exact=True)
    return released


def _running(pid: str) -> bool:
    if not pid.isdigit() or int(pid) == os.getpid():
        return True  # not a pid (not ours to judge), or this very process
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or not a pid we can ask about
    return True


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
    """Sync subscriptions, claim the due feeds (every active one with
    ``all_feeds``) that no other pass holds, poll them, store what is new or
    changed. With ``tolerate_bad_opml``
    (the daemon) an unreadable feeds.opml is logged and the feeds already in
    the database are polled; without it (a one-shot update) it is fatal.
    ``early``: also poll the feeds due that soon (``poll_slack``, for ``update``).
    ``on_due`` hears how many feeds this pass polls, before the first one.
    A pass starts with no DNS failures remembered (see fetch.DNSFailures).
    Claims the pass did not use (cut short, a failed write) are given back at
    its end, so those feeds are due again at once, as before there were claims."""
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
    release_stale_leases(store)
    due = store.claim_due(clock(), holder=embedded_holder(),
                          lease=timedelta(seconds=settings.lease_seconds),
                          all_feeds=all_feeds, early=early,
                          min_gap=timedelta(minutes=settings.min_interval))
    if on_due:
        on_due(len(due))
    claims = {feed.id: feed.poll_seq for feed in due}  # not written yet
    moves: list[tuple[str, str]] = []
    pol = policy(settings)
    # the forkserver the parse pool starts serves the summaries' pool too: with
    # summaries to follow, it imports their modules once, not every worker
    preload = ("aggregator.parse", *(offload.PRELOAD if settings.summaries else ()))
    try:
        with _parse_pool(len(due), settings.parse_processes, preload) as pool:
            polled_all = workers.unordered(
                lambda feed: poll_feed(fetcher, PollTask.from_row(feed), clock(), pool), due,
                settings.workers, should_stop=should_stop, name="fetch",
            )
            not_modified: list[NotModified] = []
            trouble = _StorageTrouble()
            try:
                for polled in polled_all:
                    outcome, stored = _record_safely(store, polled, pol, clock(), rng,
                                                     not_modified, trouble)
                    if stored and outcome.result != "not modified":
                        claims.pop(polled.feed_id, None)
                    if len(not_modified) >= NOT_MODIFIED_BATCH:
                        _flush_not_modified(store, not_modified, trouble, claims)
                    if outcome.moved_to:
                        moves.append((outcome.url, outcome.moved_to))
                    result.outcomes.append(outcome)
                    if progress:
                        progress(outcome)
                _flush_not_modified(store, not_modified, trouble, claims)
                trouble.finish()
            finally:
                if not_modified:  # the pass was cut short: keep what can be kept
                    try:
                        store.record_not_modified_many(not_modified)
                        for row in not_modified:
                            claims.pop(row[0], None)
                    except StorageError as e:
                        log.error("%d unchanged feeds not recorded, asked again next pass: %s",
                                  len(not_modified), e)
    finally:
        _give_back(store, claims)
    if moves:
        _apply_moves(settings, store, moves)
    return result


def _give_back(store: Store, claims: dict[int, int | None]) -> None:
    """The claims a pass took and wrote no result for: due again at once."""
    rows = [(i, seq) for i, seq in claims.items() if seq is not None]
    if not rows:
        return
    try:
        store.release_claims(rows)
    except StorageError as e:  # they run out by themselves (lease_seconds)
        log.error("%d feeds stay claimed until their lease ends: %s", len(rows), e)


def _flush_not_modified(store: Store, rows: list[NotModified], trouble: _StorageTrouble,
                        claims: dict[int, int | None] | None = None) -> None:
    if not rows:
        return
    try:
        applied = store.record_not_modified_many(rows)
    except StorageError as e:  # those feeds are still due: asked again next pass
        log.error("%d unchanged feeds not recorded, asked again next pass: %s", len(rows), e)
        rows.clear()
        trouble.failed(e)
        return
    if applied < len(rows):
        log.info("%d unchanged feeds not recorded: claimed again meanwhile, or recorded "
                 "already", len(rows) - applied)
    if claims is not None:
        for row in rows:
            claims.pop(row[0], None)
    rows.clear()
    trouble.ok()


def apply_poll(store: Store, result: PollResult, pol: decide.PollPolicy, now: datetime,
               rng: random.Random, not_modified: list[NotModified] | None) -> FeedOutcome:
    """Write one poll's result (the writer side), fenced by ``result.poll_seq``:
    a result whose claim is no longer open changes nothing and comes out as
    ``FeedOutcome(result="fenced")``. A 304 goes to ``not_modified`` (written
    later, in a batch: ``store.record_not_modified_many``), or at once when that
    is None. A bug becomes the feed's error state; a failed write (StorageError)
    is raised, the feed's row as it was."""
    try:
        outcome = _record(store, result, pol, now, rng, not_modified)
    except StorageError:
        raise
    except Exception as e:
        try:
            outcome = _record_error(store, result, _internal(result.url, e), pol, now, rng)
        except StorageError:
            raise
        except Exception as e2:  # even recording the error failed: say so, go on
            error = _internal(result.url, e2)
            log.error("feed %s: %s (cannot even record it)", result.url, error)
            return FeedOutcome(result.url, result.name, "error", error=str(error),
                               seconds=result.seconds)
    return replace(outcome, seconds=result.seconds)


def _record_safely(store: Store, polled: PollResult, pol: decide.PollPolicy, now: datetime,
                   rng: random.Random, not_modified: list[NotModified],
                   trouble: _StorageTrouble) -> tuple[FeedOutcome, bool]:
    """``apply_poll`` inside the feed's boundary: a bug becomes the feed's error
    state ("internal error: Type: message"), a failed write leaves the feed as
    it was (due again next pass); neither stops the pass. Also says whether the
    write was made (or fenced off, as final): False after a failed write."""
    try:
        outcome = apply_poll(store, polled, pol, now, rng, not_modified)
    except StorageError as e:
        return _not_stored(polled, e, trouble), False
    if outcome.result != "not modified":  # a 304 is written later, in a batch
        trouble.ok()
    return outcome, True


def _not_stored(polled: PollResult, e: StorageError, trouble: _StorageTrouble) -> FeedOutcome:
    log.error("feed %s: not stored, tried again next pass: %s", polled.url, e)
    trouble.failed(e)  # raises when the database keeps failing
    return FeedOutcome(polled.url, polled.name, "error", error=f"StorageError: {e}")


NOT_MODIFIED_BATCH = 100  # 304s written per transaction


def _body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


def record_first_fetch(settings: Settings, store: Store, feed: FeedRow, result: FetchResult,
                       parsed: ParsedFeed | None, *, clock: Clock = utcnow) -> None:
    """Store a fetch made outside a pass (``add`` finding a feed) as a poll would:
    items, validators, body hash and next poll time, so the next pass asks
    "changed since?" instead of fetching it again. Unfenced (no claim)."""
    if result.body is None:
        return
    task = replace(PollTask.from_row(feed), poll_seq=None)
    polled = _result_of(task, result, parsed, _body_hash(result.body))
    _record(store, polled, policy(settings), clock(), random.Random(), [])


def _record(store: Store, polled: PollResult, pol: decide.PollPolicy, now: datetime,
            rng: random.Random, not_modified: list[NotModified] | None) -> FeedOutcome:
    if polled.error is not None:
        return _record_error(store, polled, polled.error.to_error(), pol, now, rng)
    headers = polled.headers or {}
    meta = polled.parsed_meta
    next_fetch = decide.next_poll(
        now, pol, headers=headers,
        ttl_minutes=(meta[3] if meta is not None else polled.ttl_minutes),
        random_fraction=rng.random(),
    )
    status = polled.status if polled.status is not None else 200
    recovered = polled.last_error if polled.error_count else None
    if polled.not_modified:
        row = (polled.feed_id, now, status, next_fetch, headers, polled.poll_seq)
        if not_modified is not None:  # written later, in a batch
            log_feed_result(log, polled.url, recovered, None)
            not_modified.append(row)
        elif not store.record_not_modified_many([row]):
            return _fenced(polled)
        else:
            log_feed_result(log, polled.url, recovered, None)
        return FeedOutcome(polled.url, polled.name, "not modified", status,
                           moved_to=polled.permanent_url)
    counts = store.record_feed(
        polled.feed_id, now, status=status, headers=headers,
        body_hash=polled.body_hash or "", parsed=polled.parsed(), items=polled.items,
        next_fetch=next_fetch, poll_seq=polled.poll_seq, document_keys=polled.document_keys,
    )
    if counts.fenced:
        return _fenced(polled)
    log_feed_result(log, polled.url, recovered, None)
    kind = "new" if counts.new or counts.changed else "unchanged"
    return FeedOutcome(polled.url, polled.name, kind, status, counts.new, counts.changed,
                       moved_to=polled.permanent_url)


def _fenced(polled: PollResult) -> FeedOutcome:
    log.info("feed %s: result not recorded: its claim (poll %s) was taken again or "
             "recorded already", polled.url, polled.poll_seq)
    return FeedOutcome(polled.url, polled.name, "fenced", polled.status)


def _record_error(store: Store, polled: PollResult, error: AggregatorError,
                  pol: decide.PollPolicy, now: datetime, rng: random.Random) -> FeedOutcome:
    status = error.status if isinstance(error, HTTPStatusError) else None
    headers = error.headers if isinstance(error, HTTPStatusError) else {}
    # an internal error names its own type: "internal error: OverflowError: ..."
    message = str(error) if type(error) is AggregatorError else f"{type(error).__name__}: {error}"
    gone = status is not None and decide.disables_feed(status)
    try:
        next_fetch = decide.next_poll(
            now, pol, headers=headers, error_count=polled.error_count + 1,
            random_fraction=rng.random(),
        )
    except Exception as e:  # a bug in the rule must not lose the error itself
        _internal(polled.url, e)
        next_fetch = now + pol.interval
    if gone:
        message = "HTTP 410 Gone: the publisher removed this feed; polling stopped"
    if not store.record_error(polled.feed_id, now, status=status, error=message,
                              next_fetch=next_fetch, state="gone" if gone else "error",
                              poll_seq=polled.poll_seq):
        return _fenced(polled)
    log_feed_result(log, polled.url, polled.last_error, message)  # once per state change
    return FeedOutcome(polled.url, polled.name, "gone" if gone else "error", status,
                       error=message)


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
