"""The daemon: APScheduler (3.x) drives the passes, signals steer it, systemd
hears about it.

Three jobs, each on its own executor so one never waits for another:

    poll       every ``tick`` s: sync feeds.opml, poll the due feeds, store
    summaries  works off the summary backlog (article fetch + summarise), then publishes
    (publish)  after a poll pass that changed something

Signals only set flags; the main thread acts on them. SIGTERM/SIGINT: stop
starting work, let the jobs finish their current transaction, close the
database, exit 0 (a second one exits at once). SIGHUP: reload the config and
feeds.opml, keeping every bit of state (it lives in the database).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from aggregator import config
from aggregator.config import Settings
from aggregator.errors import AggregatorError
from aggregator.notify import Notifier, Watchdog, watchdog_interval
from aggregator.store import Store
from aggregator.update import make_fetcher, publish_now, run_pass, summarize_pending, utcnow

log = logging.getLogger("aggregator.daemon")

TICK = 30.0  # seconds between looks at which feeds are due
SUMMARY_TICK = 15.0


class Daemon:
    def __init__(self, settings: Settings, *, config_file: Path | None = None,
                 flags: dict[str, Any] | None = None, tick: float = TICK) -> None:
        self.settings = settings
        self.config_file = config_file
        self.flags = flags or {}
        self.tick = tick
        self.notifier = Notifier()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._signals = 0
        self._publish_lock = threading.Lock()
        self._last_pass: datetime | None = None
        self._last_ok: datetime | None = None
        self.store = Store(settings.db)  # opened first: a bad database stops us before READY
        self.fetcher = make_fetcher(settings)
        self.scheduler = BackgroundScheduler(
            executors={
                "poll": ThreadPoolExecutor(1),
                "summaries": ThreadPoolExecutor(1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        interval = watchdog_interval()
        self.watchdog = Watchdog(self.notifier, self.store.ping, interval) if interval else None
        if interval:
            self.tick = min(self.tick, interval / 3)  # each poll tick is a heartbeat
        self.server: Any = None

    # --- signals -------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os.write(2, b"aggregator: second stop signal, exiting now\n")
            os._exit(1)
        self._stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload.set()

    # --- jobs -----------------------------------------------------------------------

    def _poll(self) -> None:
        if self._stop.is_set():
            return
        if self.watchdog:
            self.watchdog.beat()
        store = Store(self.settings.db)
        try:
            busy = (self.watchdog.busy("update pass", max(self.settings.timeout * 2, 60))
                    if self.watchdog else _nothing())
            with busy:
                result = run_pass(
                    self.settings, store, self.fetcher,
                    progress=lambda _: self._alive(),
                    should_stop=self._stop.is_set,
                )
            self._last_pass = utcnow()
            if result.failed < len(result.outcomes) or not result.outcomes:
                self._last_ok = self._last_pass
            if result.outcomes:
                log.info("pass: %d feeds, %d new items, %d changed, %d failed",
                         len(result.outcomes), result.new, result.changed, result.failed)
            if (result.new or result.changed) and not self._stop.is_set():
                self._publish(store)
                self._kick_summaries()
        except AggregatorError as e:
            log.error("update pass failed: %s", e)
        finally:
            store.close()
            self._status()

    def _alive(self) -> None:
        """One more feed done: the pass is moving."""
        if self.watchdog:
            self.watchdog.beat()
            self.watchdog.progress()

    def _summaries(self) -> None:
        if self._stop.is_set() or not self.settings.summaries:
            return
        store = Store(self.settings.db)
        try:
            while not self._stop.is_set():
                n = summarize_pending(self.settings, store, self.fetcher, limit=50,
                                      should_stop=self._stop.is_set)
                if n:
                    self._publish(store)
                if n < 50:
                    break
        except AggregatorError as e:
            log.error("summaries failed: %s", e)
        finally:
            store.close()

    def _kick_summaries(self) -> None:
        try:
            self.scheduler.modify_job("summaries", next_run_time=datetime.now(UTC))
        except Exception:  # noqa: BLE001 - the job is gone only when shutting down
            pass

    def _publish(self, store: Store) -> None:
        if not self.settings.publish:
            return
        with self._publish_lock:
            try:
                publish_now(self.settings, store)
            except AggregatorError as e:
                log.error("publish failed: %s", e)
            except OSError as e:
                log.error("publish failed: cannot write %s: %s", self.settings.output, e)

    # --- state for people and systemd ------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """For /healthz: healthy while passes keep succeeding."""
        last = self._last_ok
        if last is None:
            started = self._started
            ok = utcnow() - started < timedelta(minutes=self.settings.stalled_after)
            return ok, "no successful update yet"
        ok = utcnow() - last < timedelta(minutes=self.settings.stalled_after)
        return ok, f"last successful update {last.isoformat(timespec='seconds')}"

    def status_line(self) -> str:
        st = self.store.status()
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

    def _start_server(self) -> None:
        if not self.settings.serve:
            return
        from aggregator.serve import serve_in_thread

        self.server = serve_in_thread(
            self.settings.output, self.settings.host, self.settings.port, health=self.health,
            stalled_after=timedelta(minutes=self.settings.stalled_after),
        )
        log.info("serving %s on http://%s:%d/", self.settings.output, self.settings.host,
                 self.server.port)

    def _schedule(self) -> None:
        now = datetime.now(UTC)
        self.scheduler.add_job(self._poll, "interval", seconds=self.tick, id="poll",
                               executor="poll", next_run_time=now)
        self.scheduler.add_job(self._summaries, "interval", seconds=SUMMARY_TICK,
                               id="summaries", executor="summaries",
                               next_run_time=now + timedelta(seconds=1))

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config.load(self.config_file, flags=self.flags)
        except AggregatorError as e:
            log.error("reload: keeping the old settings: %s", e)
            self.notifier.ready(self.status_line())
            return
        if new.db != self.settings.db:
            log.warning("reload: a new database path needs a restart; keeping %s",
                        self.settings.db)
            new = new.replace(db=self.settings.db)
        self.settings = new
        log.info("reloaded configuration and %s", new.feeds)
        self.scheduler.modify_job("poll", next_run_time=datetime.now(UTC))
        self.notifier.ready(self.status_line())

    def run(self) -> int:
        self._started = utcnow()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self._start_server()
            self._schedule()
            self.scheduler.start()
            if self.watchdog:
                self.watchdog.start()
            self.notifier.ready(self.status_line())
            log.info("started: %s", self.status_line())
            if self.server is not None:
                print(f"aggregator: serving http://{self.settings.host}:{self.server.port}/ "
                      f"(files in {self.settings.output}); Ctrl-C stops", flush=True)
            while not self._stop.wait(1.0):
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
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
            self.scheduler.shutdown(wait=True)
        if self.server is not None:
            self.server.stop()
        self.fetcher.close()
        self.store.close()
        log.info("stopped in %.1f s", time.monotonic() - started)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
