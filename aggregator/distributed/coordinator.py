"""The coordinator: the daemon (daemon.py) with its polling and summaries done by
Celery workers. It is the only writer of the SQLite file.

    dispatch (the poll job, every tick and when results free room):
        sync feeds.opml, sweep expired leases, pick due feeds per host, claim them
        (``claim_due(ids=...)``: lease + poll_seq + 1), send one ``aggregator.poll``
        task per feed with the keys it already holds
    results (a thread): consume ``aggregator.results``; apply each result in its own
        transaction, fenced by its poll_seq (``update.apply_poll``), THEN acknowledge
    summaries (the summaries job): send pending items as ``aggregator.extract``
        tasks (an in-memory lease per item, per-host for article pages); the results
        thread applies them (``stages.summaries.apply_article``)

With a ``task_key`` (read at start; a reload keeps the running one) every task
goes out signed (a third argument) and a result is applied only when its ``sig``
is good: one warning line for each other message, acknowledged and dropped.

Everything else (notify, watchdog, reload, serve, publish, stories, prune) is the
daemon's. Work in flight is the leases in the database, so a restarted coordinator
knows it (``leased``) without asking the broker; nothing is released at start.
Killed after a commit and before its acknowledgement, a result comes back after the
visibility timeout and its fence makes it a no-op. The lease outlives the visibility
timeout, so the broker hands a lost task out again before the sweep gives up on it.

SIGTERM: dispatching stops, the results already received are applied and
acknowledged, then the daemon's own shutdown; tasks still queued or running stay
in Redis for the next coordinator (their leases stay valid).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aggregator.config import Settings
from aggregator.daemon import STOP_GRACE, SUMMARY_BATCH, TICK, Daemon
from aggregator.distributed import inbound, safe_url, scrub, signing
from aggregator.distributed.app import (
    EXTRACT_QUEUE,
    POLL_QUEUE,
    make_app,
    transport_options,
)
from aggregator.distributed.tasks import (
    RESULTS,
    UNSIGNED,
    log_id,
    task_payload,
    worker_settings,
)
from aggregator.errors import AggregatorError, OPMLError, StorageError
from aggregator.store import Store
from aggregator.update import (
    NOT_MODIFIED_BATCH,
    _apply_moves,
    policy,
    sync_subscriptions,
    utcnow,
)

log = logging.getLogger("aggregator.coordinator")

QUEUED = "queued"  # lease holder of a claim no worker has started yet
FLUSH_EVERY = 1.0  # s at most between two writes of the batched 304s
SOON_EVERY = 1.0  # s at most between two dispatches asked for by results
# While results keep coming, the files are written and the stories clustered at most this
# often (each publish reads the newest items and rewrites every output file: about half a
# second of CPU at 4,000 items); at once when nothing is left in flight.
PUBLISH_EVERY = 10.0
EXTRACT_COOLDOWN = 300.0  # s an item whose result wrote nothing is not sent again
STORE_TRIES = 3  # a result whose write fails this many times in a row is dropped


def lease_length(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.lease_seconds)


def _host(url: str | None) -> str:
    try:
        return (urlsplit(url or "").hostname or "").lower()
    except ValueError:
        return ""


class Coordinator(Daemon):
    def __init__(self, settings: Settings, *, broker: str, config_file: Path | None = None,
                 flags: dict[str, Any] | None = None, tick: float = TICK) -> None:
        super().__init__(settings, config_file=config_file, flags=flags, tick=tick)
        self.broker = broker
        self._key = settings.task_key  # a reload keeps it: the workers hold the same
        self.app = make_app(broker, visibility_timeout=settings.visibility_timeout)
        if lease_length(settings).total_seconds() <= settings.visibility_timeout:
            log.warning("lease_seconds (%g) is not longer than visibility_timeout (%g): a lost "
                        "task's lease runs out before the broker hands the task out again",
                        lease_length(settings).total_seconds(), settings.visibility_timeout)
        self._rng = random.Random()
        self._results_stop = threading.Event()
        self._results_thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the fields below (dispatch vs results)
        self._dirty = False  # new or changed items (or summaries) since the last publish
        self._more_due = False  # the last dispatch left due feeds for want of room
        self._last_soon = 0.0
        self._last_publish = 0.0  # monotonic
        self._last_sync = -float("inf")  # monotonic time of the last feeds.opml sync
        self._in_flight = 0  # poll tasks out after the last dispatch
        self._applied = 0  # poll results applied since the last dispatch
        self._failed = 0
        self._new = 0
        self._changed = 0
        # item id -> (monotonic deadline, article host or "", dispatch token)
        self._extracting: dict[int, tuple[float, str, str]] = {}
        self._cooldown: dict[int, float] = {}  # item id -> monotonic time it may go again
        self._held: list[Any] = []  # messages whose 304 waits in _not_modified
        self._not_modified: list[Any] = []
        self._last_flush = time.monotonic()
        self._tries: dict[str, int] = {}  # message digest -> failed writes in a row

    # --- dispatch (the daemon's poll job) ----------------------------------------------

    def _poll_once(self) -> None:
        if self._stop.is_set():
            return
        with self._busy("update pass"):
            store = None
            try:
                store = Store(self.settings.db)
                self._dispatch(store)
                self._after_results(store)
            except AggregatorError as e:
                log.error("dispatch failed: %s", e)
            except Exception as e:  # a bug: this dispatch is lost, the schedule goes on
                log.debug("dispatch failed", exc_info=e)
                log.error("dispatch failed: internal error: %s: %s", type(e).__name__, e)
            finally:
                if store is not None:
                    store.close()
        self._status()

    def _dispatch(self, store: Store) -> int:
        """Claim and send what is due, within ``max_in_flight`` and ``per_host``
        counted over every lease in the database (so across all workers)."""
        from aggregator.wire import PollTask

        settings = self.settings
        now = utcnow()
        mono = time.monotonic()
        if mono - self._last_sync >= self.tick:  # not at every dispatch results ask for
            self._last_sync = mono
            try:
                sync_subscriptions(settings, store, now)
            except OPMLError as e:
                log.error("%s; polling the subscriptions already in the database", e)
        store.rewind_schedule(now)
        swept = store.sweep_leases(now, lease_length(settings))
        if swept:
            log.warning("%d leases ran out without a result: those feeds are due again", swept)
        leased = store.leased(now)
        room = settings.max_in_flight - len(leased)
        more = False
        picked: list[int] = []
        if room > 0:
            held = {f.id for f in leased}
            hosts = Counter(_host(f.url) for f in leased)
            min_gap = timedelta(minutes=settings.min_interval)
            for feed in store.due_feeds(now, min_gap=min_gap):
                if feed.id in held:
                    continue
                if len(picked) >= room:
                    more = True
                    break
                host = _host(feed.url)
                if hosts[host] >= settings.per_host:
                    more = True
                    continue
                hosts[host] += 1
                picked.append(feed.id)
        else:
            more = bool(store.due_feeds(now))
        with self._lock:
            self._more_due = more
            self._in_flight = len(leased)
        if not picked:
            return 0
        claimed = store.claim_due(now, holder=QUEUED, lease=lease_length(settings),
                                  ids=picked, min_gap=timedelta(minutes=settings.min_interval))
        limits = worker_settings(settings)
        sent = 0
        try:
            for feed in claimed:
                if self._stop.is_set():
                    break
                task = PollTask.from_row(feed, known=store.known_items(feed.id))
                self.app.send_task("aggregator.poll",
                                   args=self._args("task:poll", task.to_json(), limits),
                                   queue=POLL_QUEUE, routing_key=POLL_QUEUE)
                sent += 1
        except Exception as e:  # noqa: BLE001 - the broker is away: give the claims back
            log.error("cannot send tasks to %s: %s", safe_url(self.broker),
                      scrub(str(e), self.broker))
        finally:
            unsent = [(f.id, f.poll_seq) for f in claimed[sent:]]
            if unsent:
                store.release_claims(unsent)
        if sent:
            with self._lock:
                self._in_flight = len(leased) + sent
            log.debug("dispatched %d feeds (%d in flight)", sent, len(leased) + sent)
        return sent

    def _args(self, purpose: str, task: dict[str, Any], values: dict[str, Any]) -> list[Any]:
        """A task's arguments: signed with the task key (a third one) when there is one."""
        if not self._key:
            return [task, values]
        return [task, values, signing.sign(self._key, purpose, task_payload(task, values))]

    def _after_results(self, store: Store) -> None:
        """What the daemon does after a pass, for the results applied since the
        last dispatch: health, one log line, publish, wake summaries and stories."""
        with self._lock:
            applied, failed, new, changed = self._applied, self._failed, self._new, \
                self._changed
            self._applied = self._failed = self._new = self._changed = 0
            dirty = self._dirty
            idle = self._in_flight == 0 and not self._extracting
            due = dirty and (idle or time.monotonic() - self._last_publish >= PUBLISH_EVERY)
            if due:
                self._dirty = False
        self._passed(polled=applied > 0, all_failed=applied > 0 and failed == applied)
        if applied:
            log.info("results: %d feeds, %d new items, %d changed, %d failed",
                     applied, new, changed, failed)
        if new or changed:
            self._summaries.soon()
        if due and not self._stop.is_set():
            self._last_publish = time.monotonic()
            self._publish(store)
            self._stories.soon()

    # --- summaries (the daemon's summaries job) ------------------------------------------

    def _summarize_backlog(self) -> None:
        from aggregator.stages.summaries import item_to_json, wants_article

        settings = self.settings
        if self._stop.is_set() or not settings.summaries:
            return
        with self._job("summaries") as store:
            now, mono = utcnow(), time.monotonic()
            with self._lock:
                for item_id in [i for i, v in self._extracting.items() if v[0] <= mono]:
                    del self._extracting[item_id]  # lost: its task may still come back
                for item_id in [i for i, t in self._cooldown.items() if t <= mono]:
                    del self._cooldown[item_id]
                busy = set(self._extracting) | set(self._cooldown)
                hosts = Counter(v[1] for v in self._extracting.values() if v[1])
                room = settings.max_in_flight - len(self._extracting)
            if room <= 0:
                return
            pending = store.pending_summaries(
                min(room, SUMMARY_BATCH * 4), now=now if settings.fetch_articles else None,
                exclude=sorted(busy), method=settings.summarizer, window=settings.max_entries)
            values = worker_settings(settings)
            deadline = mono + lease_length(settings).total_seconds()
            for item in pending:
                if self._stop.is_set():
                    break
                host = _host(item.url) if wants_article(item, settings, now) else ""
                if host and hosts[host] >= settings.per_host:
                    continue
                token = uuid.uuid4().hex
                try:
                    task = {"v": 1, "item": item_to_json(item), "dispatch": token}
                    self.app.send_task("aggregator.extract",
                                       args=self._args("task:extract", task, values),
                                       queue=EXTRACT_QUEUE, routing_key=EXTRACT_QUEUE)
                except Exception as e:  # noqa: BLE001 - the broker is away: next time
                    log.error("cannot send tasks to %s: %s", safe_url(self.broker),
                              scrub(str(e), self.broker))
                    break
                if host:
                    hosts[host] += 1
                with self._lock:
                    self._extracting[item.id] = (deadline, host, token)

    # --- results (a thread of its own) -------------------------------------------------

    def _consume(self) -> None:
        """Apply results as they come, each acknowledged only after its commit. A
        lost connection to Redis: the results not acknowledged come back (after the
        visibility timeout), we connect again."""
        from kombu import Connection

        store = Store(self.settings.db)
        try:
            while not self._results_stop.is_set():
                try:
                    with Connection(self.broker, transport_options=transport_options(
                            self.settings.visibility_timeout)) as conn:
                        with conn.Consumer([RESULTS], callbacks=[
                                lambda body, message: self._on_message(store, body, message)],
                                accept=["json"], on_decode_error=self._on_decode_error,
                                prefetch_count=NOT_MODIFIED_BATCH * 2):
                            while not self._results_stop.is_set():
                                try:
                                    conn.drain_events(timeout=0.5)
                                except TimeoutError:  # socket.timeout: nothing came
                                    self._flush(store)
                                    continue
                                if (len(self._held) >= NOT_MODIFIED_BATCH
                                        or time.monotonic() - self._last_flush > FLUSH_EVERY):
                                    self._flush(store)
                            self._flush(store)
                except Exception as e:  # noqa: BLE001 - Redis away, or a bug: again
                    self._held.clear()  # not acknowledged: they come back
                    try:
                        self._flush(store)
                    except Exception:  # noqa: BLE001
                        self._not_modified.clear()
                    if self._results_stop.is_set():
                        break
                    log.warning("results: %s: %s; connecting again", type(e).__name__,
                                scrub(str(e), self.broker))
                    self._results_stop.wait(1.0)
        finally:
            store.close()

    def _on_decode_error(self, message: Any, e: Exception) -> None:
        """A message that is not JSON (or not a content type we accept): dropped
        once, with one line; left unacknowledged it would come back for ever and
        stop every result behind it."""
        log.error("results: a message that cannot be decoded dropped (%s): %s",
                  getattr(message, "content_type", None) or "no content type",
                  str(e)[:200])
        try:
            message.ack()
        except Exception as e2:  # noqa: BLE001 - the connection went: it comes back, dropped again
            log.debug("results: cannot acknowledge a dropped message", exc_info=e2)

    def _on_message(self, store: Store, body: Any, message: Any) -> None:
        if self._key and not signing.verify_body(self._key, body):
            self._unsigned(body)
            message.ack()
            return
        kind = body.get("kind") if isinstance(body, dict) else None
        kind = kind[:40] if isinstance(kind, str) else None
        try:
            with self._busy("results"):
                if kind == "started":
                    store.set_lease_holder(_count(body.get("feed_id")),
                                           _count(body.get("poll_seq")),
                                           inbound.holder(body.get("worker")),
                                           until=utcnow() + lease_length(self.settings))
                elif kind == "poll":
                    if self._apply_poll(store, body["result"]):
                        self._held.append(message)
                        return  # acknowledged once its 304 is written (_flush)
                elif kind == "extract":
                    self._apply_extract(store, body)
                else:
                    log.error("results: a message of unknown kind %r dropped", kind)
        except StorageError as e:  # the write rolled back: the message comes back
            if self._failed_write(message):
                log.error("results: a %s message not stored, tried again: %s", kind, e)
                self._results_stop.wait(0.5)
                message.requeue()
                return
            # the same write failed STORE_TRIES times: a result the database refuses
            # (not a locked file) would loop for ever; its lease runs out instead
            log.error("results: a %s message not stored after %d tries, dropped: %s",
                      kind, STORE_TRIES, e)
        except Exception as e:  # a bug, or a malformed message: dropped (its lease runs out)
            log.debug("results: cannot apply", exc_info=e)
            log.error("results: cannot apply a %s message: %s: %s", kind, type(e).__name__, e)
        if kind != "started":
            _fault_point("exit-after-commit")
        self._tries.pop(_digest(message), None)
        message.ack()
        if self.watchdog:
            self.watchdog.progress("update pass")

    def _unsigned(self, body: Any) -> None:
        """One line for a message whose signature is missing or wrong: its kind and
        feed or item id when they are plain, nothing else of it."""
        d = body if isinstance(body, dict) else {}
        kind = d.get("kind") if d.get("kind") in ("started", "poll", "extract") else "?"
        inner = d.get("result") if isinstance(d.get("result"), dict) else {}
        if kind == "extract":
            what = f"item {log_id(inner.get('item_id'))}"
        else:
            what = f"feed {log_id(d.get('feed_id') if kind == 'started' else inner.get('feed_id'))}"
        log.warning("results: %s message for %s with a %s signature dropped", kind, what,
                    "missing" if d.get("sig") is None else "bad")

    def _failed_write(self, message: Any) -> bool:
        """Count a failed write of this message; True while it may be tried again."""
        key = _digest(message)
        if len(self._tries) > 10_000:  # forgotten, not grown for ever
            self._tries.clear()
        self._tries[key] = n = self._tries.get(key, 0) + 1
        if n >= STORE_TRIES:
            del self._tries[key]
            return False
        return True

    def _apply_poll(self, store: Store, data: dict[str, Any]) -> bool:
        """Apply one PollResult; True when its write waits in the 304 batch."""
        from aggregator.update import apply_poll
        from aggregator.wire import PollResult

        now = utcnow()
        result = PollResult.from_json(data)
        if result.poll_seq is None:  # every task we send answers a claim: refuse the others
            raise ValueError("wire: a poll result without a claim (poll_seq null)")
        result = inbound.result(result, now)  # the worker's cleaning, once more
        before = len(self._not_modified)
        outcome = apply_poll(store, result, policy(self.settings), now, self._rng,
                             self._not_modified)
        if outcome.result == "fenced":
            return False
        if outcome.moved_to:
            feed = store.feed(result.url)
            if feed is None or feed.id != result.feed_id:  # a result naming another feed
                log.error("feed %d: a move of %s, not its URL, ignored", result.feed_id,
                          result.url[:200])
            else:
                _apply_moves(self.settings, store, [(outcome.url, outcome.moved_to)])
        with self._lock:
            self._applied += 1
            self._failed += outcome.result in ("error", "gone")
            self._new += outcome.new
            self._changed += outcome.changed
            if outcome.new or outcome.changed:
                self._dirty = True
        self._progress(outcome)
        self._maybe_dispatch()
        return len(self._not_modified) > before

    def _apply_extract(self, store: Store, body: dict[str, Any]) -> None:
        from aggregator.stages.summaries import ArticleWork, apply_article

        work = ArticleWork.from_json(inbound.article_work(body.get("result")))
        wrote = apply_article(store, work, self.settings, utcnow())
        with self._lock:
            held = self._extracting.get(work.item_id)
            if held is not None and held[2] == body.get("dispatch"):
                del self._extracting[work.item_id]
            if wrote:
                self._dirty = True
            else:
                self._cooldown[work.item_id] = time.monotonic() + EXTRACT_COOLDOWN
        if self.metrics is not None:
            if work.article is not None:
                self.metrics.article(work.article.status)
            if wrote and work.seconds is not None:
                self.metrics.summarized(work.seconds)
        if self.watchdog:
            self.watchdog.progress("summaries")
        if len(self._extracting) < self.settings.max_in_flight // 2:  # room for a batch
            self._summaries.soon()

    def _flush(self, store: Store) -> None:
        """Write the batched 304s in one transaction, then acknowledge their messages."""
        self._last_flush = time.monotonic()
        if self._not_modified:
            try:
                store.record_not_modified_many(self._not_modified)
            except StorageError as e:  # not acknowledged: they come back, asked again
                log.error("%d unchanged feeds not recorded, tried again: %s",
                          len(self._not_modified), e)
                for message in self._held:
                    message.requeue()
                self._held.clear()
                return
            finally:
                self._not_modified.clear()
        held, self._held = self._held, []
        if held:
            _fault_point("exit-after-commit")
        for message in held:
            message.ack()
        with self._lock:
            dirty = self._dirty
        if dirty:
            self._maybe_dispatch(force=True)

    def _maybe_dispatch(self, force: bool = False) -> None:
        """Results free room: dispatch again soon when feeds are waiting for it,
        or publish soon when items came (at most once a SOON_EVERY)."""
        mono = time.monotonic()
        with self._lock:
            wanted = self._more_due or (force and self._dirty)
            if not wanted or mono - self._last_soon < SOON_EVERY or self._stop.is_set():
                return
            self._last_soon = mono
        self._poll.soon()

    # --- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        self._results_thread = threading.Thread(target=self._consume, name="results",
                                                daemon=True)
        self._results_thread.start()
        log.info("coordinator: broker %s, at most %d tasks in flight, tasks %s",
                 _safe_url(self.broker), self.settings.max_in_flight,
                 "signed" if self._key else "not signed")
        if not self._key:
            log.warning(UNSIGNED)
        return super().run()

    def _shutdown(self) -> None:
        self._stop.set()  # no more dispatching: the jobs see it
        started = time.monotonic()
        self._poll.idle.wait(STOP_GRACE / 3)
        self._results_stop.set()
        if self._results_thread is not None:
            self._results_thread.join(max(0.5, STOP_GRACE / 2 - (time.monotonic() - started)))
            if self._results_thread.is_alive():
                log.warning("results: still applying at stop; what is not acknowledged "
                            "comes back to the next coordinator")
        try:
            self.app.close()
        except Exception:  # noqa: BLE001
            pass
        super()._shutdown()


def _count(value: Any) -> int:
    """An id or claim number from a message: an int from 0 to SQLite's largest."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError(f"wire: bad number {value!r:.40}")
    return value


def _digest(message: Any) -> str:
    body = getattr(message, "body", b"")
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    return hashlib.sha256(body if isinstance(body, bytes) else repr(body).encode()).hexdigest()


def _safe_url(url: str) -> str:
    """The broker's URL without its password, for the log."""
    return safe_url(url)


def _fault_point(name: str) -> None:
    """A test's fault injection (tests/test_distributed.py): with
    ``AGGREGATOR_FAULT=exit-after-commit`` the coordinator dies right after a
    result's commit, before its acknowledgement, as a power cut there would."""
    if os.environ.get("AGGREGATOR_FAULT") == name:
        log.warning("AGGREGATOR_FAULT=%s: exiting now", name)
        logging.shutdown()
        os._exit(70)
