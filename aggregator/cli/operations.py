"""Commands that run the pipeline or look after the file: update, run, serve, prune,
vacuum, refetch, resummarize, datasette."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from aggregator import config
from aggregator.cli.output import (
    _existing_db,
    _print_outcomes,
    _print_table,
    _Progress,
    _ProgressBeforeLogs,
    _size,
    _when,
)
from aggregator.errors import AggregatorError, StorageError

log = logging.getLogger("aggregator")


def cmd_update(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.pools import parse_preload, prestart_parsers
    from aggregator.store import Store
    from aggregator.update import make_fetcher, poll_slack, publish_now, run_pass

    # the progress line is for a person at a terminal; with -v the log lines say more
    verbose = str(settings.log_level).upper() == "DEBUG"
    show = _Progress(sys.stdout) if sys.stdout.isatty() and not verbose else None
    with Store(settings.db) as store, make_fetcher(settings) as fetcher, \
            _ProgressBeforeLogs(show):
        prestart_parsers(settings.feeds, store.fetched_feed_count(), settings.parse_processes,
                         parse_preload(settings.summaries))
        result = run_pass(settings, store, fetcher, all_feeds=args.all,
                          early=poll_slack(settings),
                          progress=show.step if show else None,
                          on_due=show.due if show else None)
        if show:
            show.clear()
        _print_outcomes(result.outcomes)
        summarised, status = 0, 0
        if settings.stories:
            try:
                if store.has_unclustered():  # else nothing to import the stage for
                    from aggregator.stages.cluster import cluster_pending

                    cluster_pending(store)
            except StorageError as e:  # the items are stored: say so, go on
                print(f"aggregator: error: stories stopped: {e}", file=sys.stderr)
                status = 1
        if settings.summaries:
            from aggregator.stages.summaries import summarize_pending

            try:
                summarised = summarize_pending(settings, store, fetcher,
                                             counts=show.summaries if show else None)
            except StorageError as e:  # the database stopped taking writes: publish anyway
                if show:
                    show.clear()
                print(f"aggregator: error: summaries stopped: {e}", file=sys.stderr)
                status = 1
            if show:
                show.clear()
        published = []
        unpublished: AggregatorError | None = None
        if settings.publish and (result.new or result.changed or summarised or
                                 not (settings.output / "index.html").exists()):
            try:
                published = publish_now(settings, store)
            except AggregatorError as e:  # the pass is stored: say what, then fail
                unpublished = e
            except OSError as e:
                unpublished = AggregatorError(f"cannot publish to {settings.output}: "
                                              f"{e.strerror or e}")
    print(f"{len(result.outcomes)} feeds polled: {result.new} new items, "
          f"{result.changed} changed, {result.failed} failed; {summarised} summarised"
          + (f"; published to {settings.output}" if published else ""))
    if unpublished is not None:
        print(f"aggregator: error: not published: {unpublished} (the items are stored; "
              "`aggregator publish` writes them once that is fixed)", file=sys.stderr)
        return 1
    return status


def cmd_run(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.daemon import Daemon

    return Daemon(settings, config_file=args.config, flags=_flags(args)).run()


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of this invocation, re-applied on every SIGHUP reload."""
    flags: dict[str, Any] = {"db": args.db, "feeds": args.feeds, "output": args.output}
    if getattr(args, "no_serve", False):
        flags["serve"] = False
    if args.verbose:
        flags["log_level"] = "DEBUG"
    return flags


def cmd_serve(args: argparse.Namespace, settings: config.Settings) -> int:
    import signal

    from aggregator.serve import make_server
    from aggregator.store import Store

    stalled_after = timedelta(minutes=settings.stalled_after)

    def health() -> tuple[bool, str]:
        """Healthy while the database shows a recent successful fetch."""
        with Store(settings.db, readonly=True) as store:
            last = store.status()["last_success"]
        if last is None:
            return False, "no successful update yet"
        ok = datetime.now(UTC) - last < stalled_after
        return ok, f"last successful update {last.isoformat(timespec='seconds')}"

    metrics = None
    if settings.metrics:  # the database's figures; no pass runs here to count
        from aggregator.metrics import Metrics

        metrics = Metrics(settings.db, counting=False).render
    with make_server(settings.output, settings.host, settings.port,
                     health=health if settings.db.exists() else None,
                     stalled_after=stalled_after, metrics=metrics) as server:
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(f"aggregator: serving {settings.output} on {server.url}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_prune(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.stages.prune import prune
    from aggregator.store import Store
    from aggregator.update import utcnow

    with Store(_existing_db(settings)) as store:
        report = prune(settings, store, now=utcnow(), dry_run=args.dry_run)
        names = {f.id: f.name for f in store.feeds()}
    cut = report.cutoffs
    verb = "would delete" if report.dry_run else "deleted"
    print(f"{verb} {report.items} items"
          + (f" dated before {_when(cut.items_before)} UTC" if cut.items_before else
             " (keep_days = 0: items are kept forever)")
          + f", and the article text of {report.texts} more"
          + (f" dated before {_when(cut.text_before)} UTC" if cut.text_before else "")
          + f"; kept {report.kept} old items a reader can still see")
    feeds = sorted(set(report.items_by_feed) | set(report.texts_by_feed),
                   key=lambda i: (-report.items_by_feed.get(i, 0), names.get(i, "")))
    if feeds:
        rows = [("ITEMS", "TEXTS", "FEED")]
        rows += [(str(report.items_by_feed.get(i, 0)), str(report.texts_by_feed.get(i, 0)),
                  names.get(i, str(i))) for i in feeds]
        _print_table(rows)
    if not report.dry_run:
        print(f"database {_size(report.size_before)} -> {_size(report.size_after)}")
        if not report.incremental:
            print("the file is not in incremental-vacuum mode yet, so freed pages are reused "
                  "but the file does not shrink: run `aggregator vacuum` once")
    return 0


def cmd_vacuum(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.store import Store

    with Store(_existing_db(settings)) as store:
        before = store.size()
        store.vacuum()
        after = store.size()
    print(f"vacuumed {settings.db}: {_size(before)} -> {_size(after)}")
    return 0


def cmd_refetch(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.stages.rework import refetch
    from aggregator.store import Store
    from aggregator.update import make_fetcher, utcnow

    if (args.url is None) == (args.item is None):
        raise AggregatorError("refetch: give an item's URL or --item ID (one of them)")
    with Store(_existing_db(settings)) as store:
        if args.item is not None:
            ids = [args.item] if store.work_items([args.item]) else []
            what = f"item {args.item}"
        else:
            ids = store.item_ids_by_url(args.url)
            what = f"item with the URL {args.url}"
        if not ids:
            raise AggregatorError(f"no {what} (see `aggregator search`, or items.id)")
        with make_fetcher(settings) as fetcher:
            done = refetch(settings, store, fetcher, ids, utcnow())
        for r in done:
            print(f"item {r.item_id}: article {r.article}; "
                  + ("summarised again" if r.summarised else "summary unchanged")
                  + (f"  <{r.url}>" if r.url else ""))
        _publish_if(settings, store, any(r.summarised for r in done))
    return 0 if all(r.article == "ok" for r in done) else 1


def cmd_resummarize(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator.stages.rework import resummarize
    from aggregator.store import Store
    from aggregator.update import utcnow

    now = utcnow()
    with Store(_existing_db(settings)) as store:
        feed_id = None
        if args.feed is not None:
            feed = store.feed(args.feed)
            if feed is None:
                raise AggregatorError(f"no such feed: {args.feed} (see `aggregator feeds`)")
            feed_id = feed.id
        n = resummarize(settings, store, now=now, feed_id=feed_id,
                        since=now - args.since if args.since else None)
        print(f"{n} items summarised again")
        _publish_if(settings, store, n > 0)
    return 0


def _publish_if(settings: config.Settings, store: Any, changed: bool) -> None:
    from aggregator import update as pipeline

    if settings.publish and changed:
        paths = pipeline.publish_now(settings, store)
        print(f"published to {settings.output} ({len(paths)} files changed)")


def cmd_datasette(args: argparse.Namespace, settings: config.Settings) -> int:
    from aggregator import browse

    db = _existing_db(settings)
    if not browse.is_loopback(args.host):
        print(f"aggregator: warning: Datasette on {args.host} shows every column to anyone "
              "who can reach it, private feed URLs included", file=sys.stderr)
    print(f"aggregator: Datasette on http://{args.host}:{args.port}/ reading {db} "
          "(read-only); Ctrl-C stops", flush=True)
    return browse.serve(db, host=args.host, port=args.port)
