"""The daemon: APScheduler (3.x) drives the passes, signals steer it, systemd
hears about it.

Jobs, each on its own executor so one never waits for another:

    poll       every ``tick`` s: sync feeds.opml, poll the due feeds, store, publish
    summaries  works off the summary backlog (article fetch + summarise), then publishes
    prune      once a day: retention (old items, old article text), then incremental vacuum
    heartbeat  tells the watchdog the scheduler is alive (only under WatchdogSec=)

Signal handlers only set plain attributes (no locks: a handler runs between
two bytecodes of the main thread, maybe inside Event.wait()); the main loop
looks at them five times a second. SIGTERM/SIGINT: stop starting work, let
the jobs finish their current transaction (at most ``STOP_GRACE`` s: after
that we exit anyway, SQLite rolls an unfinished transaction back), close the
database, exit 0; a second one exits at once. SIGHUP: reload the config and
feeds.opml, keeping every bit of state (it lives in the database).

The watchdog pings systemd only while the scheduler runs its heartbeat and no
update pass has gone a whole watchdog interval without finishing a feed: a
pass stuck on a server that never answers stops the pings, a slow pass that
keeps finishing feeds does not.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from aggregator import config
from aggregator.config import Settings
from aggregator.errors import AggregatorError
from aggregator.fetch import Fetcher
from aggregator.notify import Notifier, Watchdog, watchdog_interval
from aggregator.stages.summaries import summarize_pending
from aggregator.store import Store
from aggregator.update import (
    embedded_holder,
    make_fetcher,
    publish_now,
    release_stale_leases,
    run_pass,
    sync_subscriptions,
    utcnow,
)

log = logging.getLogger("aggregator.daemon")

TICK = 30.0  # longest wait between looks at which feeds are due
MIN_TICK = 1.0
SUMMARY_TICK = 15.0
CLOCK_JUMP = 5.0  # s the wall clock may drift from the monotonic one before we reschedule
STOP_GRACE = 6.0  # s for jobs in flight at shutdown; the unit's TimeoutStopSec= is 10
SUMMARY_BATCH = 50
PRUNE_EVERY = 24 * 3600.0  # s between retention passes
PRUNE_FIRST = 600.0  # s after start: not while the first pass and its backlog run
# Settings that only take effect on a restart: a reload keeps the running values.
RESTART_ONLY = ("db", "output", "serve", "host", "port", "metrics")
FETCH_SETTINGS = ("connect_timeout", "timeout", "max_bytes", "max_redirects", "per_host",
                  "user_agent", "workers", "allow_private")


def _metrics(settings: Settings, last_ok: datetime | None) -> Any:
    """The daemon's /metrics registry (metrics.py), or None with ``metrics = false``."""
    if not (settings.metrics and settings.serve):
        return None
    from aggregator.metrics import Metrics

    m = Metrics(settings.db)
    if last_ok is not None:
        m.last_success(last_ok.timestamp())
    return m


def poll_tick(settings: Settings, upper: float = TICK) -> float:
    """Seconds between looks at which feeds are due: a feed on the shortest
    interval is polled at most a quarter of that interval late."""
    return min(upper, max(MIN_TICK, settings.min_interval * 60 / 4))


class _Job:
    """A scheduler job that never overlaps itself and can be asked to run soon.

    While it runs, its trigger is paused: APScheduler would otherwise try to
    start it again at every tick of a long pass and log a warning each time
    (max_instances=1). ``soon()`` runs it now, or once more right after the run
    in progress (a SIGHUP or new items arriving mid-run would otherwise wait a
    whole tick). APScheduler counts a run as over only after it returned, so
    ``finished()`` is called from its EVENT_JOB_EXECUTED/ERROR listener.
    """

    def __init__(self, scheduler: BackgroundScheduler, job_id: str,
                 body: Callable[[], None]) -> None:
        self.scheduler = scheduler
        self.id = job_id
        self.body = body
        self.idle = threading.Event()  # the body is not running
        self.idle.set()
        self._lock = threading.Lock()
        self._running = False  # from the start of a run until APScheduler saw it end
        self._again = False

    def __call__(self) -> None:
        with self._lock:
            self._running = True
            self.idle.clear()
        self._call_scheduler("pause_job")
        try:
            while True:
                with self._lock:
                    self._again = False
                self.body()
                with self._lock:
                    if not self._again:
                        break
        finally:
            self._call_scheduler("resume_job")  # next run: the trigger's next tick
            self.idle.set()

    def finished(self) -> None:
        with self._lock:
            self._running = False
            again, self._again = self._again, False
        if again:  # asked for after the body's last look
            self._call_scheduler("modify_job", next_run_time=datetime.now(UTC))

    def soon(self) -> None:
        with self._lock:
            if self._running:
                self._again = True
                return
        self._call_scheduler("modify_job", next_run_time=datetime.now(UTC))

    def _call_scheduler(self, method: str, **changes: Any) -> None:
        try:
            getattr(self.scheduler, method)(self.id, **changes)
        except Exception:  # noqa: BLE001 - the job is gone only when shutting down
            pass


class Daemon:
    def __init__(self, settings: Settings, *, config_file: Path | None = None,
                 flags: dict[str, Any] | None = None, tick: float = TICK) -> None:
        self.settings = settings
        self.config_file = config_file
        self.flags = flags or {}
        self.max_tick = tick
        self.tick = poll_tick(settings, tick)
        self.notifier = Notifier()
        self._stop = threading.Event()  # set by the main thread; jobs watch it
        self._stop_signal = 0  # set by the signal handlers, read by the main loop
        self._reload_asked = False
        self._publish_lock = threading.Lock()
        self._store_lock = threading.Lock()  # self.store is shared by main, jobs, watchdog
        self._last_pass: datetime | None = None
        self._last_ok: datetime | None = None  # end of the last pass where a feed answered
        self._failing_since: datetime | None = None  # every feed polled since then failed
        self._started = utcnow()
        self.store = Store(settings.db)  # opened first: a bad database stops us before READY
        # /healthz starts from what the database knows, as `aggregator serve`'s does: a
        # restart does not forget the last successful update.
        self._last_ok = self.store.status()["last_success"]
        self.metrics = _metrics(settings, self._last_ok)
        self.fetcher = make_fetcher(settings)
        self._retired: list[Fetcher] = []  # replaced on reload, closed at exit
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(1),  # heartbeat
                "poll": ThreadPoolExecutor(1),
                "summaries": ThreadPoolExecutor(1),
                "stories": ThreadPoolExecutor(1),
                "prune": ThreadPoolExecutor(1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._poll = _Job(self.scheduler, "poll", self._poll_once)
        self._summaries = _Job(self.scheduler, "summaries", self._summarize_backlog)
        self._stories = _Job(self.scheduler, "stories", self._cluster_backlog)
        self._prune = _Job(self.scheduler, "prune", self._prune_once)
        self._jobs = {job.id: job for job in (self._poll, self._summaries, self._stories,
                                              self._prune)}
        self.scheduler.add_listener(self._job_done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        interval = watchdog_interval()
        self.watchdog = Watchdog(self.notifier, self._ping, interval) if interval else None
        self._wall_mark = (time.time(), time.monotonic())
        self._check_timeouts()
        self.server: Any = None

    def _check_timeouts(self) -> None:
        if self.watchdog and self.settings.timeout >= self.watchdog.interval:
            log.warning("timeout (%g s) is not shorter than the watchdog interval (%g s): one "
                        "slow feed can make systemd restart the daemon", self.settings.timeout,
                        self.watchdog.interval)

    # --- signals -------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal:
            os.write(2, b"aggregator: second stop signal, exiting now\n")
            os._exit(1)
        self._stop_signal = signum

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_asked = True

    # --- jobs -----------------------------------------------------------------------

    def _job_done(self, event: JobExecutionEvent) -> None:
        job = self._jobs.get(event.job_id)
        if job is not None:
            job.finished()

    def _busy(self, what: str) -> AbstractContextManager[None]:
        """Hung unless progress() within one watchdog interval (see the module doc)."""
        if self.watchdog is None:
            return nullcontext()
        return self.watchdog.busy(what, self.watchdog.interval)

    def _progress(self, outcome: object = None) -> None:
        if self.metrics is not None and outcome is not None:
            self.metrics.feed_polled(outcome)
        if self.watchdog:
            self.watchdog.progress("update pass")

    def _summary_progress(self) -> None:
        if self.watchdog:
            self.watchdog.progress("summaries")

    def _heartbeat(self) -> None:
        if self.watchdog:
            self.watchdog.beat()

    def _poll_once(self) -> None:
        if self._stop.is_set():
            return
        settings, fetcher = self.settings, self.fetcher
        if settings.parse_processes < 0:  # a resident daemon keeps its memory flat
            settings = settings.replace(parse_processes=0)
        with self._busy("update pass"):
            store = None
            started, outcome = time.monotonic(), "error"
            try:
                store = Store(settings.db)
                result = run_pass(settings, store, fetcher, clock=utcnow,
                                  progress=self._progress,
                                  should_stop=self._stop.is_set, tolerate_bad_opml=True)
                polled = len(result.outcomes)
                all_failed = polled > 0 and result.failed == polled
                outcome = "all_failed" if all_failed else "ok"
                self._passed(polled=polled > 0, all_failed=all_failed)
                if result.outcomes:
                    log.info("pass: %d feeds, %d new items, %d changed, %d failed",
                             len(result.outcomes), result.new, result.changed, result.failed)
                if (result.new or result.changed) and not self._stop.is_set():
                    self._publish(store)
                    self._summaries.soon()
                    self._stories.soon()
            except AggregatorError as e:
                log.error("update pass failed: %s", e)
            except Exception as e:  # a bug: this pass is lost, the schedule goes on
                log.debug("update pass failed", exc_info=e)
                log.error("update pass failed: internal error: %s: %s", type(e).__name__, e)
            finally:
                if store is not None:
                    store.close()
                for f in (fetcher, *self._retired):  # no sockets kept between passes
                    f.close_idle()
                if self.metrics is not None:
                    self.metrics.pass_done(time.monotonic() - started, outcome)
        self._status()

    def _passed(self, *, polled: bool, all_failed: bool) -> None:
        now = utcnow()
        self._last_pass = now
        if polled and not all_failed:
            self._last_ok, self._failing_since = now, None
        elif polled and self._failing_since is None:
            self._failing_since = now

    @contextmanager
    def _job(self, name: str) -> Iterator[Store]:
        """A background job's boundary: its own connection, marked busy for the
        watchdog; any error is one line and the job's next run tries again."""
        store = None
        try:
            store = Store(self.settings.db)
            with self._busy(name):
                yield store
        except AggregatorError as e:
            log.error("%s failed: %s", name, e)
        except Exception as e:  # a bug: the next run tries again
            log.debug("%s failed", name, exc_info=e)
            log.error("%s failed: internal error: %s: %s", name, type(e).__name__, e)
        finally:
            if store is not None:
                store.close()

    def _summarize_backlog(self) -> None:
        settings, fetcher = self.settings, self.fetcher
        if self._stop.is_set() or not settings.summaries:
            return
        with self._job("summaries") as store:
            while not self._stop.is_set():
                n = summarize_pending(settings, store, fetcher, limit=SUMMARY_BATCH,
                                      should_stop=self._stop.is_set,
                                      progress=self._summary_progress, metrics=self.metrics)
                if n:
                    self._publish(store)
                if n < SUMMARY_BATCH:
                    break

    def _cluster_backlog(self) -> None:
        """The clustering stage on its own executor: never on the poll path."""
        if self._stop.is_set() or not self.settings.stories:
            return
        from aggregator.stages.cluster import cluster_pending

        with self._job("stories") as store:
            cluster_pending(store, clock=utcnow, should_stop=self._stop.is_set)

    def _prune_once(self) -> None:
        """Retention on its own executor, in small transactions: never on the poll path."""
        if self._stop.is_set() or not (self.settings.keep_days
                                       or self.settings.keep_article_text_days):
            return
        from aggregator.stages.prune import prune

        with self._job("prune") as store:
            prune(self.settings, store, now=utcnow(), should_stop=self._stop.is_set,
                  progress=self._prune_progress)

    def _prune_progress(self) -> None:
        if self.watchdog:
            self.watchdog.progress("prune")

    def _publish(self, store: Store) -> None:
        if not self.settings.publish:
            return
        with self._publish_lock:
            started = time.monotonic()
            try:
                publish_now(self.settings, store)
                if self.metrics is not None:
                    self.metrics.published(time.monotonic() - started)
            except AggregatorError as e:
                log.error("publish failed: %s", e)
            except OSError as e:
                log.error("publish failed: cannot write %s: %s", self.settings.output, e)
            except Exception as e:  # a bug in publishing must not stop polling
                log.debug("publish failed", exc_info=e)
                log.error("publish failed: internal error: %s: %s", type(e).__name__, e)

    # --- state for people and systemd ------------------------------------------------

    @contextmanager
    def _main_store(self) -> Iterator[Store]:
        with self._store_lock:
            yield self.store

    def _ping(self) -> bool:
        with self._main_store() as store:
            return store.ping()

    def health(self) -> tuple[bool, str]:
        """For /healthz: stalled when no pass ended for ``stalled_after`` minutes,
        or every feed polled in that time failed (a pass with nothing due is
        neither: it proves the loop runs, not that the network works)."""
        limit = timedelta(minutes=self.settings.stalled_after)
        now = utcnow()
        last_pass = self._last_pass or self._started
        if now - last_pass >= limit:
            return False, f"no update pass since {last_pass.isoformat(timespec='seconds')}"
        failing = self._failing_since
        if failing is not None and now - failing >= limit:
            return False, f"every feed failing since {failing.isoformat(timespec='seconds')}"
        if self._last_ok is None:
            return True, "no successful update yet"
        return True, f"last successful update {self._last_ok.isoformat(timespec='seconds')}"

    def status_line(self) -> str:
        with self._main_store() as store:
            st = store.status()
        last = st["last_success"]
        when = last.astimezone(UTC).strftime("%H:%M UTC") if last else "never"
        text = f"{st['feeds']} feeds, {st['items']} items, last update {when}, "
        text += f"{st['failing']} failing"
        if self.server is not None:
            text += f"; serving http://{self.settings.host}:{self.server.port}/"
        return text

    def _status(self) -> None:
        try:
            self.notifier.status(self.status_line())
        except AggregatorError:
            pass

    # --- life cycle ---------------------------------------------------------------------

    def _prepare(self) -> None:
        """Before READY: know the subscriptions (STATUS counts them) and have a page
        to serve even when no feed answers (e.g. no network). The claims of a
        daemon or ``update`` killed before their end are given back first."""
        try:
            with self._main_store() as store:
                release_stale_leases(store)
        except AggregatorError as e:  # they run out by themselves (lease_seconds)
            log.error("cannot give back the claims of a stopped process: %s", e)
        try:
            with self._main_store() as store:
                sync_subscriptions(self.settings, store, utcnow())
        except AggregatorError as e:
            log.error("cannot read the subscriptions: %s", e)
        if not (self.settings.output / "index.html").exists():
            with self._main_store() as store:
                self._publish(store)

    def _start_server(self) -> None:
        if not self.settings.serve:
            return
        from aggregator.serve import serve_in_thread

        self.server = serve_in_thread(
            self.settings.output, self.settings.host, self.settings.port, health=self.health,
            stalled_after=timedelta(minutes=self.settings.stalled_after),
            metrics=self.metrics.render if self.metrics is not None else None,
        )

    def _schedule(self) -> None:
        now = datetime.now(UTC)
        self.scheduler.add_job(self._poll, "interval", seconds=self.tick, id="poll",
                               executor="poll", next_run_time=now)
        self.scheduler.add_job(self._summaries, "interval", seconds=SUMMARY_TICK,
                               id="summaries", executor="summaries",
                               next_run_time=now + timedelta(seconds=1))
        self.scheduler.add_job(self._stories, "interval", seconds=SUMMARY_TICK,
                               id="stories", executor="stories",
                               next_run_time=now + timedelta(seconds=1))
        self.scheduler.add_job(self._prune, "interval", seconds=PRUNE_EVERY, id="prune",
                               executor="prune",
                               next_run_time=now + timedelta(seconds=PRUNE_FIRST))
        if self.watchdog:
            self.scheduler.add_job(self._heartbeat, "interval",
                                   seconds=self.watchdog.interval / 4, id="heartbeat",
                                   next_run_time=now)

    def _watch_clock(self) -> None:
        """Reschedule every job from now when the wall clock jumped.

        APScheduler keeps its run times in wall-clock time: after the clock goes
        back an hour, every job (the polls, the watchdog's heartbeat) would wait an
        hour. Jobs get fresh triggers starting now and the poll runs at once, which
        also covers a jump forward (every due feed is polled once, then the usual
        schedule). Which feeds are due is the database's business: ``run_pass``
        moves back the times of feeds fetched "in the future" (decide.py)."""
        wall, mono = time.time(), time.monotonic()
        jump = (wall - self._wall_mark[0]) - (mono - self._wall_mark[1])
        self._wall_mark = (wall, mono)
        if abs(jump) < CLOCK_JUMP or not self.scheduler.running:
            return
        log.warning("the clock jumped %s by %.0f s: rescheduling from now",
                    "forward" if jump > 0 else "back", abs(jump))
        periods = {"poll": self.tick, "summaries": SUMMARY_TICK, "stories": SUMMARY_TICK,
                   "prune": PRUNE_EVERY}
        if self.watchdog:
            periods["heartbeat"] = self.watchdog.interval / 4
        for job_id, seconds in periods.items():
            try:  # a paused (running) job keeps no run time: it resumes on the new trigger
                self.scheduler.modify_job(job_id, trigger=IntervalTrigger(seconds=seconds,
                                                                          timezone=UTC))
            except Exception:  # noqa: BLE001 - the job is gone only when shutting down
                pass
        if self.watchdog:
            self.scheduler.modify_job("heartbeat", next_run_time=datetime.now(UTC))
        self._poll.soon()
        self._summaries.soon()

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config.load(self.config_file, flags=self.flags)
        except AggregatorError as e:
            log.error("reload: keeping the old settings: %s", e)
            self.notifier.ready(self.status_line())
            return
        kept = {k: getattr(self.settings, k) for k in RESTART_ONLY
                if getattr(new, k) != getattr(self.settings, k)}
        if kept:
            log.warning("reload: %s only change on a restart; keeping the running values",
                        ", ".join(kept))
            new = new.replace(**kept)
        old, self.settings = self.settings, new
        if new.log_level != old.log_level:
            from aggregator.logs import setup_logging

            setup_logging(new.log_level)
        if any(getattr(old, k) != getattr(new, k) for k in FETCH_SETTINGS):
            self._retired.append(self.fetcher)  # a pass may still use it
            self.fetcher = make_fetcher(new)
            self._check_timeouts()
        tick = poll_tick(new, self.max_tick)
        if tick != self.tick:
            self.tick = tick
            # from the next run on; a run in progress picks it up when it resumes
            self.scheduler.modify_job("poll", trigger=IntervalTrigger(seconds=tick, timezone=UTC))
        log.info("reloaded configuration and %s", new.feeds)
        self._poll.soon()
        self.notifier.ready(self.status_line())

    def run(self) -> int:
        self._started = utcnow()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self._prepare()
            self._start_server()
            self._schedule()
            self.scheduler.start()
            status = self.status_line()
            self.notifier.ready(status)
            if self.watchdog:
                self.watchdog.start()
            log.info("started: %s", status)
            if self.server is not None:
                print(f"aggregator: serving http://{self.settings.host}:{self.server.port}/ "
                      f"(files in {self.settings.output}); Ctrl-C stops", flush=True)
            while not self._stop_signal:
                if self._reload_asked:
                    self._reload_asked = False
                    self.reload()
                time.sleep(0.2)
                self._watch_clock()
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping")
        log.info("stopping: finishing the writes in flight")
        self._stop.set()
        started = time.monotonic()
        if self.watchdog:
            self.watchdog.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)  # the jobs see _stop and end their pass
        if self.server is not None:
            self.server.stop()
        deadline = started + STOP_GRACE
        busy = [name for name, job in (("update pass", self._poll),
                                       ("summaries", self._summaries),
                                       ("stories", self._stories),
                                       ("prune", self._prune))
                if not job.idle.wait(max(0.0, deadline - time.monotonic()))]
        if busy:
            # A job is stuck (e.g. waiting for a database another process locks).
            # Its open transaction dies with us and SQLite rolls it back on the next
            # open; the executor's thread would keep the interpreter from exiting.
            log.warning("stopped after %.1f s without waiting for the %s: "
                        "its unfinished transaction is rolled back",
                        time.monotonic() - started, " and ".join(busy))
            self.notifier.close()
            logging.shutdown()
            sys.stdout.flush()
            os._exit(0)
        for fetcher in (self.fetcher, *self._retired):
            fetcher.close()
        try:  # a pass cut short gave its claims back; this is in case it could not
            self.store.release_leases(embedded_holder(), exact=True)
        except AggregatorError as e:
            log.error("cannot give back this process's claims: %s", e)
        self.store.close()
        self.notifier.close()
        log.info("stopped in %.1f s", time.monotonic() - started)
