"""Prometheus metrics for ``/metrics`` (prometheus-client, one registry of our own).

Two kinds, in one registry (never the library's global one, so nothing else a
process imports shows up, and two daemons in one test process don't clash):

- counted by the daemon as it works (``Metrics``: the poll pass, the summaries
  stage, publishing), so they start from zero when it starts, as Prometheus expects
  of counters;
- read from the database at each scrape (``StoreCollector`` -> ``Store.metrics()``
  in store/metrics.py): how the feeds stand, the backlogs, the file's size. They hold
  for ``aggregator serve`` too, which has no pass of its own to count.

    aggregator_polls_total{result,status}          feed polls: result new, not_modified,
                                                   unchanged, error, gone; HTTP status (an
                                                   unregistered one by class: "9xx") or "none"
    aggregator_fetch_duration_seconds              histogram: one feed's fetch (and parse)
    aggregator_items_stored_total{kind}            new / changed items written
    aggregator_articles_total{result}              article pages: ok, failed, too_little_text
    aggregator_summary_duration_seconds            histogram: one summary made and saved
    aggregator_publish_duration_seconds            histogram: one publish of every file
    aggregator_passes_total{result}                poll passes: ok, all_failed, error
    aggregator_pass_duration_seconds               histogram: one poll pass
    aggregator_last_pass_timestamp_seconds         end of the last pass, whatever its result
    aggregator_last_successful_pass_timestamp_seconds   end of the last pass that raised no
                                                   error and where not every polled feed failed
                                                   (nothing due counts); at start, the
                                                   database's last successful fetch
    aggregator_feeds{state}                        active feeds: new, ok, error, gone
    aggregator_feeds_removed                       feeds no longer in feeds.opml (kept)
    aggregator_items                               items stored
    aggregator_summaries_backlog                   items with no summary yet
    aggregator_clustering_backlog                  items not yet in a story
    aggregator_database_bytes                      the SQLite file (pages in use and free)
    aggregator_database_free_bytes                 of which free pages (vacuum would return)
    aggregator_database_wal_bytes                  the write-ahead log beside it
    aggregator_store_up                            1 when the database could be read at this scrape

prometheus-client is imported only when a ``Metrics`` is made (the daemon with
``metrics = true``, ``aggregator serve``), never by ``update`` or ``publish``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.errors import AggregatorError

if TYPE_CHECKING:
    from aggregator.update import FeedOutcome

log = logging.getLogger("aggregator.metrics")

FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SUMMARY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUBLISH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PASS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
FEED_STATES = ("new", "ok", "error", "gone")


def _label(result: str) -> str:
    return result.replace(" ", "_")


_KNOWN_STATUSES = frozenset(s.value for s in HTTPStatus)


def status_label(status: int | None) -> str:
    """A registered HTTP status as itself, any other as its class ("9xx"): a server
    answering 600, 601, ... 999 must not make a new series for each code."""
    if status is None:
        return "none"
    if status in _KNOWN_STATUSES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status <= 999 else "other"


class StoreCollector:
    """The database's figures, read at each scrape through a read-only connection of
    its own (the server's threads share no Store). A database that can't be read
    gives ``aggregator_store_up 0`` and nothing else, never a failed scrape."""

    def __init__(self, db: Path) -> None:
        self.db = Path(db)

    def describe(self) -> list[Any]:
        return []  # registered without being read at once: the file may not exist yet

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from aggregator.store import Store

        up = GaugeMetricFamily("aggregator_store_up",
                               "1 when the database could be read at this scrape")
        try:
            with Store(self.db, readonly=True) as store:
                m = store.metrics()
        except (AggregatorError, sqlite3.Error, OSError) as e:
            log.debug("metrics: cannot read %s: %s", self.db, e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        feeds = GaugeMetricFamily("aggregator_feeds", "Active feeds by state",
                                  labels=["state"])
        for state in sorted({*FEED_STATES, *m.feeds_by_state}):
            feeds.add_metric([state], m.feeds_by_state.get(state, 0))
        yield feeds
        for name, doc, value in (
            ("aggregator_feeds_removed", "Feeds no longer in feeds.opml (rows kept)",
             m.feeds_removed),
            ("aggregator_items", "Items stored", m.items),
            ("aggregator_summaries_backlog", "Items with no summary yet", m.summaries_backlog),
            ("aggregator_clustering_backlog", "Items not yet clustered into a story",
             m.clustering_backlog),
            ("aggregator_database_bytes", "Size of the SQLite database file", m.db_bytes),
            ("aggregator_database_free_bytes", "Free pages in the database file",
             m.free_bytes),
            ("aggregator_database_wal_bytes", "Size of the write-ahead log", m.wal_bytes),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """The daemon's registry. ``counting`` False: the database's figures only
    (``aggregator serve``, which runs no pass)."""

    def __init__(self, db: Path | None, *, counting: bool = True) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # no *_created series beside each counter: noise to us
        self.registry = CollectorRegistry(auto_describe=True)
        self.counting = counting
        if db is not None:
            self.registry.register(StoreCollector(db))  # type: ignore[arg-type]
        if not counting:
            return
        r = self.registry
        self.polls = Counter("aggregator_polls", "Feed polls by result and HTTP status",
                             ["result", "status"], registry=r)
        self.fetch_seconds = Histogram("aggregator_fetch_duration_seconds",
                                       "Seconds to fetch (and parse) one feed",
                                       buckets=FETCH_BUCKETS, registry=r)
        self.items = Counter("aggregator_items_stored", "Items written: new or changed",
                             ["kind"], registry=r)
        self.articles = Counter("aggregator_articles", "Article pages fetched, by result",
                                ["result"], registry=r)
        self.summary_seconds = Histogram("aggregator_summary_duration_seconds",
                                         "Seconds to make and save one summary",
                                         buckets=SUMMARY_BUCKETS, registry=r)
        self.publish_seconds = Histogram("aggregator_publish_duration_seconds",
                                         "Seconds to publish every output file",
                                         buckets=PUBLISH_BUCKETS, registry=r)
        self.passes = Counter("aggregator_passes", "Poll passes by result", ["result"],
                              registry=r)
        self.pass_seconds = Histogram("aggregator_pass_duration_seconds",
                                      "Seconds of one poll pass", buckets=PASS_BUCKETS,
                                      registry=r)
        self.last_pass = Gauge("aggregator_last_pass_timestamp_seconds",
                               "Unix time the last poll pass ended", registry=r)
        self.last_ok = Gauge("aggregator_last_successful_pass_timestamp_seconds",
                             "Unix time the last successful poll pass ended", registry=r)
        for kind in ("new", "changed"):
            self.items.labels(kind)  # zero from the start: rate() needs a first sample
        for result in ("ok", "failed", "too_little_text"):
            self.articles.labels(result)
        for result in ("ok", "all_failed", "error"):
            self.passes.labels(result)

    # --- what the daemon tells ----------------------------------------------------

    def feed_polled(self, outcome: FeedOutcome) -> None:
        self.polls.labels(_label(outcome.result), status_label(outcome.status)).inc()
        if outcome.seconds is not None:
            self.fetch_seconds.observe(outcome.seconds)
        if outcome.new:
            self.items.labels("new").inc(outcome.new)
        if outcome.changed:
            self.items.labels("changed").inc(outcome.changed)

    def article(self, status: str) -> None:
        result = "ok" if status == "ok" else "failed" if status.startswith("failed") \
            else "too_little_text"
        self.articles.labels(result).inc()

    def summarized(self, seconds: float) -> None:
        self.summary_seconds.observe(seconds)

    def published(self, seconds: float) -> None:
        self.publish_seconds.observe(seconds)

    def pass_done(self, seconds: float, result: str, when: float | None = None) -> None:
        """``result``: ok, all_failed or error; ``when``: Unix time it ended."""
        when = time.time() if when is None else when
        self.passes.labels(result).inc()
        self.pass_seconds.observe(seconds)
        self.last_pass.set(when)
        if result == "ok":
            self.last_ok.set(when)

    def last_success(self, when: float) -> None:
        """What the database knew at start: the last successful fetch."""
        self.last_ok.set(when)

    # --- what /metrics answers --------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import exposition, generate_latest

        # the text format every Prometheus reads (our names need none of 1.0.0's escaping)
        ctype = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)
        return generate_latest(self.registry), ctype
